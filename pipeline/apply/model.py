"""A trained model as the apply commands use it: probabilities for windows, the settings that
measured its training video, and its operating thresholds. Loaded once, from either

* a trained model folder (``models/<name>``: config.json + weights, through the same
  :class:`~pipeline.modeling.predictor.Predictor` as evaluation) with the thresholds of its
  evaluation (``reports/models/<name>/metrics.json``), or
* an exported TorchScript file (pipeline/apply/export.py) that carries all of that inside.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.apply.events import MODES, thresholds_from_metrics, unreachable
from pipeline.contracts.model import ModelCard, input_params
from pipeline.contracts.recommendation import recommended_model
from pipeline.core.config import Params
from pipeline.core.errors import ModelError
from pipeline.core.files import read_json

EXPORT_FORMAT = "driver-model-export/1"
EXPORT_META = "driver_model.json"  # the metadata file inside an exported TorchScript archive


@dataclass
class AppliedModel:
    name: str
    card: ModelCard
    params: Params  # frames / landmarks / features / windows settings of the training data
    thresholds: dict[str, dict[str, float]]  # mode -> class -> probability threshold
    unreachable: dict[str, list[str]]  # mode -> classes whose target was never reached (never alert)
    source: str  # where it was loaded from
    _proba: Callable[[np.ndarray], np.ndarray]

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def window(self) -> int:
        """Frames per window (the card counts time steps of ``pool`` frames each)."""
        return self.card.window * self.pool

    @property
    def pool(self) -> int:
        return self.params.windows.pool

    @property
    def subject_baseline(self) -> bool:
        return bool(self.card.normalisation.get("subject_baseline", False))

    def proba(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Class probabilities (N, C) for windows (N, T, F) as the windows stage stores them."""
        if len(x) == 0:
            return np.zeros((0, len(self.classes)))
        return np.concatenate([self._proba(x[i : i + batch]) for i in range(0, len(x), batch)])

    @property
    def knows_familiarity(self) -> bool:
        return bool(self.card.familiarity)

    def unfamiliar(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per window (N, T, F, as the windows stage stores them): the distance from the training windows
        relative to the card's cut-off, and whether it is beyond it (pipeline/modeling/familiarity.py).
        A model trained before the score existed: zeros, never unfamiliar."""
        if not self.card.familiarity:
            return np.zeros(len(x)), np.zeros(len(x), bool)
        from pipeline.modeling.familiarity import unfamiliar

        return unfamiliar(self.card.familiarity, x)

    def export_meta(self) -> dict:
        return {
            "format": EXPORT_FORMAT,
            "name": self.name,
            "card": dataclasses.asdict(self.card),
            "thresholds": self.thresholds,
            "unreachable": self.unreachable,
        }


def from_folder(model_dir: Path, metrics_path: Path) -> AppliedModel:
    """A trained model folder and its evaluation's metrics.json."""
    from pipeline.modeling.predictor import Predictor

    pred = Predictor.load(model_dir)
    card = pred.card
    params = input_params(card, f"{model_dir}/config.json")
    if not metrics_path.exists():
        raise ModelError(
            f"{metrics_path} not found: the operating thresholds come from the model's evaluation; "
            f"run `dvc repro evaluate@{card.model}` first"
        )
    metrics = read_json(metrics_path)
    thresholds = {m: thresholds_from_metrics(metrics, m, list(card.classes), str(metrics_path)) for m in MODES}
    return AppliedModel(
        name=Path(model_dir).name,
        card=card,
        params=params,
        thresholds=thresholds,
        unreachable={m: unreachable(metrics, m) for m in MODES},
        source=str(model_dir),
        _proba=pred.proba,
    )


def from_export(path: Path) -> AppliedModel:
    """An exported TorchScript file (:func:`pipeline.apply.export.export`)."""
    import torch

    extra = {EXPORT_META: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError / ValueError on a foreign file
        raise ModelError(f"{path} is not an exported model of this pipeline ({type(exc).__name__}: {exc})") from exc
    try:
        meta = json.loads(extra[EXPORT_META])
    except json.JSONDecodeError:
        meta = {}
    if meta.get("format") != EXPORT_FORMAT:
        raise ModelError(f"{path} has no {EXPORT_FORMAT} metadata; export the model again (driver-pipeline export)")
    known = {f.name for f in dataclasses.fields(ModelCard)}
    raw = {k: v for k, v in meta["card"].items() if k in known}
    card = dataclasses.replace(ModelCard(**raw), features=tuple(raw["features"]), classes=tuple(raw["classes"]))
    module.eval()

    def proba(x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[1:] != (card.window, card.n_features):
            raise ModelError(f"{path} reads windows of shape (N, {card.window}, {card.n_features}), got {x.shape}")
        with torch.no_grad():
            return module(torch.from_numpy(np.array(x, np.float32))).double().numpy()  # a writable copy

    return AppliedModel(
        name=meta["name"],
        card=card,
        params=input_params(card, str(path)),
        thresholds=meta["thresholds"],
        unreachable=meta.get("unreachable", {}),
        source=str(path),
        _proba=proba,
    )


def load_model(model: str | None, mode: str, models_dir: Path, reports_dir: Path) -> AppliedModel:
    """``model``: an exported file (``*.pt``), a trained model's name, or None for the model the
    report recommends for ``mode``."""
    if model and (model.endswith(".pt") or Path(model).is_file()):
        if not Path(model).is_file():
            raise ModelError(f"exported model {model} not found")
        return from_export(Path(model))
    name = model or recommended_model(reports_dir, mode)
    folder = Path(models_dir) / name
    if not folder.is_dir():
        have = (
            sorted(p.parent.name for p in Path(models_dir).glob("*/config.json")) if Path(models_dir).is_dir() else []
        )
        trained = ", ".join(have) if have else "none yet: run `dvc repro`"
        raise ModelError(f"no trained model '{name}' in {models_dir} (trained: {trained})")
    return from_folder(folder, Path(reports_dir) / "models" / name / "metrics.json")
