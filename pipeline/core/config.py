"""params.yaml -> typed, frozen dataclasses.

Loaded once at a stage's start-up. Unknown keys, missing sections and wrong types
raise :class:`ConfigError` naming the dotted key, before any work is done.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import ConfigError

__all__ = ["ConfigError", "Params", "load_params", "parse_params"]


TASKS = ("distraction", "drowsiness")  # README "Tasks": what the demo synthesises and what the windows must hold


@dataclass(frozen=True)
class DataParams:
    task: str = "distraction"
    raw_dir: str = "data/demo"
    labels_file: str = "labels.csv"
    classes: tuple[str, ...] = ("normal", "phonecall", "text", "yawn")
    # a data set's own labels -> one of ``classes`` ("" drops those rows); written by `driver-pipeline import`
    label_map: dict[str, str] = field(default_factory=dict)

    @property
    def labels_path(self) -> Path:
        return Path(self.raw_dir) / self.labels_file


@dataclass(frozen=True)
class DemoParams:
    subjects: int = 10
    clips_per_class: int = 2
    seconds: float = 12.0
    fps: int = 15
    width: int = 320
    height: int = 240
    seed: int = 7


@dataclass(frozen=True)
class FramesParams:
    fps: float = 15
    canvas: int = 320
    min_src_fps: float = 5.0
    max_gap_s: float = 0.5
    workers: int = 0


@dataclass(frozen=True)
class LandmarksParams:
    hands: bool = True
    hands_complexity: int = 0
    hands_every: int = 5
    max_faces: int = 3
    driver_region: tuple[float, ...] = (0.0, 0.0, 1.0, 1.0)
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    min_face_fraction: float = 0.2
    workers: int = 0


@dataclass(frozen=True)
class FeaturesParams:
    max_gap_frames: int = 3
    drowsy_window_s: float = 60.0
    blink_closure: float = 0.5
    blink_max_s: float = 0.5
    yawn_mar: float = 0.5
    yawn_min_s: float = 1.0
    smooth: bool = True
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.05


@dataclass(frozen=True)
class WindowsParams:
    size: int = 90
    stride: int = 10
    features: tuple[str, ...] = (
        "ear_left",
        "ear_right",
        "mar",
        "yaw",
        "pitch",
        "roll",
        "gaze_x",
        "gaze_y",
        "face_present",
        "hand_present",
        "hand_face_dist",
        "hand_ear_dist",
    )
    pool: int = 1  # frames averaged into one model time step (long drowsiness windows: minutes at 1 step/s)
    min_face_fraction: float = 0.8
    drop_mixed: bool = True
    subject_baseline: bool = True
    cv_folds: int = 6  # subject-grouped cross-validation folds
    split_seed: int = 7


@dataclass(frozen=True)
class ValidateParams:
    min_video_face_fraction: float = 0.9
    max_class_imbalance: float = 3.0


@dataclass(frozen=True)
class TrainParams:
    models: tuple[str, ...] = ("majority", "stats_lr", "gru")  # names from pipeline/modeling/registry.py
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    class_weights: bool = True
    # networks' mini-batches: shuffle (every training window once per epoch) or balanced (as many
    # windows per epoch, drawn with replacement, every class equally likely; the loss is then unweighted)
    sampling: str = "shuffle"
    patience: int = 12
    min_epochs: int = 1  # the weights of an earlier epoch are never kept, and training never stops before
    smooth_epochs: int = 1  # early stopping follows the mean validation macro-F1 of this many epochs
    seeds: int = 1  # networks: fits per fold with seeds seed, seed+1, ...; the median by validation score is kept
    tune_budget: int = 8  # a grid (hparams.<model>.tune): at most this many candidates (pipeline/modeling/tuning.py)
    tune_inner_folds: int = 2  # ... each scored on this many inner folds of each outer fold's training side
    grad_clip: float = 1.0
    jitter: float = 0.0  # augmentation: Gaussian noise (sd, in z-score units) added to each training batch
    scaling: float = 0.0  # augmentation: each window's features scaled by 1 + N(0, sd)
    seed: int = 0
    device: str = "cpu"  # cpu (same bytes on any x86-64 CPU), auto (a GPU if torch finds one), cuda, cuda:N
    threads: int = 1  # per fit; fixed, so results do not depend on the machine's core count (modeling/numerics.py)
    workers: int = 0  # cross-validation folds trained at once (0 = all cores); does not change the results


@dataclass(frozen=True)
class ParallelParams:
    dask_address: str = ""  # e.g. "tcp://10.0.0.5:8786": run frames/landmarks per video on that Dask cluster


@dataclass(frozen=True)
class EvaluateParams:
    alert_precision: float = 0.9  # real-time alerting: best recall with precision >= this
    report_recall: float = 0.9  # post-hoc reporting: best precision with recall >= this
    explain_windows: int = 200  # test windows explained with Integrated Gradients (cost grows with it)


@dataclass(frozen=True)
class ScheduleParams:
    """When the Prefect deployment re-runs the pipeline besides on changes (flows/, README)."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    watch_interval_s: float = 2.0  # how often the watcher polls the raw folder and params.yaml
    settle_s: float = 5.0  # quiet time before a change is reported (a video still being copied keeps changing)
    lock_wait_s: float = 1800.0  # a run waits this long for another run on the same workspace, then skips
    inbox: str = "data/inbox"  # the inbox deployment scores new videos dropped here ...
    inbox_out: str = "predictions/inbox"  # ... into <inbox_out>/<run time>/
    inbox_every_s: float = 300.0  # ... this often
    inbox_mode: str = "report"  # operating mode of its alerts: report (recall first) or alert


@dataclass(frozen=True)
class ApplyParams:
    calibration_s: float = 20.0  # a new driver's baseline: median of their first seconds with a face
    alert_clear_s: float = 2.0  # an alert ends after its probability stayed below threshold this long
    quiet_class: str = ""  # the class that never alerts ("" = the first of data.classes, e.g. normal)


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    demo: DemoParams = field(default_factory=DemoParams)
    frames: FramesParams = field(default_factory=FramesParams)
    landmarks: LandmarksParams = field(default_factory=LandmarksParams)
    features: FeaturesParams = field(default_factory=FeaturesParams)
    windows: WindowsParams = field(default_factory=WindowsParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    parallel: ParallelParams = field(default_factory=ParallelParams)
    schedule: ScheduleParams = field(default_factory=ScheduleParams)
    apply: ApplyParams = field(default_factory=ApplyParams)
    hparams: dict[str, dict] = field(default_factory=dict)  # per model name: constructor keyword arguments


_CHECKS: dict[str, tuple[str, Any]] = {
    # dotted key -> (human rule, predicate)
    "demo.subjects": ("must be >= 1", lambda v: v >= 1),
    "demo.clips_per_class": ("must be >= 1", lambda v: v >= 1),
    "demo.seconds": ("must be > 0", lambda v: v > 0),
    "demo.fps": ("must be > 0", lambda v: v > 0),
    "frames.fps": ("must be > 0", lambda v: v > 0),
    "frames.canvas": ("must be >= 64", lambda v: v >= 64),
    "frames.workers": ("must be >= 0", lambda v: v >= 0),
    "landmarks.workers": ("must be >= 0", lambda v: v >= 0),
    "landmarks.hands_complexity": ("must be 0 or 1", lambda v: v in (0, 1)),
    "landmarks.min_face_fraction": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "landmarks.hands_every": ("must be >= 1 (1 = Hands on every frame)", lambda v: v >= 1),
    "landmarks.max_faces": ("must be in 1..5", lambda v: 1 <= v <= 5),
    "landmarks.driver_region": (
        "must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions of the frame)",
        lambda v: len(v) == 4 and 0 <= v[0] < v[2] <= 1 and 0 <= v[1] < v[3] <= 1,
    ),
    "frames.min_src_fps": ("must be > 0", lambda v: v > 0),
    "frames.max_gap_s": ("must be > 0", lambda v: v > 0),
    "features.max_gap_frames": ("must be >= 0", lambda v: v >= 0),
    "features.drowsy_window_s": ("must be > 0", lambda v: v > 0),
    "features.blink_closure": ("must be in (0, 1)", lambda v: 0 < v < 1),
    "features.blink_max_s": ("must be > 0", lambda v: v > 0),
    "features.yawn_mar": ("must be > 0", lambda v: v > 0),
    "features.yawn_min_s": ("must be > 0", lambda v: v > 0),
    "features.smooth_min_cutoff": ("must be > 0 (Hz)", lambda v: v > 0),
    "features.smooth_beta": ("must be >= 0", lambda v: v >= 0),
    "windows.size": ("must be >= 2", lambda v: v >= 2),
    "windows.stride": ("must be >= 1", lambda v: v >= 1),
    "windows.pool": ("must be >= 1 (1 = every frame is a time step)", lambda v: v >= 1),
    "data.task": (f"must be one of {list(TASKS)}", lambda v: v in TASKS),
    "data.classes": ("must hold at least 2 distinct names", lambda v: len(set(v)) >= 2),
    "data.label_map": (
        "must map labels to class names (strings; '' drops the label)",
        lambda v: all(isinstance(x, str) for x in v.values()),
    ),
    "windows.min_face_fraction": ("must be in [0, 1]", lambda v: 0 <= v <= 1),
    "windows.cv_folds": ("must be >= 3 (one fold scored, one for early stopping, the rest train)", lambda v: v >= 3),
    "windows.features": ("must name at least one feature, each once", lambda v: len(v) == len(set(v)) > 0),
    # names and hyper-parameters are checked against the model registry: pipeline.modeling.registry.check
    "train.models": ("must name at least one model, each once", lambda v: len(v) == len(set(v)) > 0),
    "train.epochs": ("must be >= 1", lambda v: v >= 1),
    "train.batch_size": ("must be >= 1", lambda v: v >= 1),
    "train.lr": ("must be > 0", lambda v: v > 0),
    "train.label_smoothing": ("must be in [0, 1)", lambda v: 0 <= v < 1),
    "train.threads": ("must be >= 1", lambda v: v >= 1),
    "train.min_epochs": ("must be >= 1", lambda v: v >= 1),
    "train.smooth_epochs": ("must be >= 1", lambda v: v >= 1),
    "train.seeds": ("must be >= 1", lambda v: v >= 1),
    "train.tune_budget": ("must be >= 1", lambda v: v >= 1),
    "train.tune_inner_folds": ("must be >= 1", lambda v: v >= 1),
    "train.device": (
        "must be cpu, auto (a GPU when torch finds one, else the CPU), cuda or cuda:N",
        lambda v: v in ("cpu", "auto", "cuda") or re.fullmatch(r"cuda:\d+", v) is not None,
    ),
    "train.sampling": ("must be shuffle or balanced", lambda v: v in ("shuffle", "balanced")),
    "train.workers": ("must be >= 0", lambda v: v >= 0),
    "train.jitter": ("must be >= 0", lambda v: v >= 0),
    "train.scaling": ("must be >= 0", lambda v: v >= 0),
    "schedule.cron": ("must be a cron string of 5 fields, e.g. '0 3 * * *'", lambda v: len(v.split()) == 5),
    "schedule.watch_interval_s": ("must be > 0", lambda v: v > 0),
    "schedule.settle_s": ("must be >= 0", lambda v: v >= 0),
    "schedule.lock_wait_s": ("must be >= 0", lambda v: v >= 0),
    "schedule.inbox_every_s": ("must be >= 10", lambda v: v >= 10),
    "schedule.inbox_mode": ("must be alert or report", lambda v: v in ("alert", "report")),
    "apply.calibration_s": ("must be > 0", lambda v: v > 0),
    "apply.alert_clear_s": ("must be >= 0", lambda v: v >= 0),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"params key '{key}' must be a list, got {type(value).__name__}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"params key '{key}' has the wrong type: {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"params key '{key}' must be a mapping, got {type(value).__name__}")
        return {str(k): v for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"params key '{key}' must be null")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"params key '{key}' must be a {tp.__name__}, got a boolean")
    if not isinstance(value, tp):
        raise ConfigError(f"params key '{key}' must be a {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params section '{prefix}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(f"unknown params key {where}; known keys here: {sorted(names)}")
    kwargs = {}
    for name in names & set(raw):
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], tp, key)
            if key in _CHECKS:
                rule, ok = _CHECKS[key]
                if not ok(kwargs[name]):
                    raise ConfigError(f"params key '{key}' {rule}, got {raw[name]!r}")
    return cls(**kwargs)


def parse_params(raw: dict[str, Any]) -> Params:
    """Build :class:`Params` from a parsed YAML mapping, checking every key (and keys that must agree)."""
    params = _build(Params, raw, "")
    w = params.windows
    if w.size % w.pool:
        raise ConfigError(
            f"params key 'windows.size' ({w.size} frames) must be a multiple of 'windows.pool' ({w.pool}): "
            f"each model time step averages windows.pool frames; e.g. windows.size {w.size - w.size % w.pool or w.pool}"
        )
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check ``path``; raises :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_params(raw)


def resolve_workers(n: int) -> int:
    """0 means all cores."""
    return n if n > 0 else max(1, os.cpu_count() or 1)
