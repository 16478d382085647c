"""Real drowsiness data through the project's own training: the UTA-RLDD blink sequences.

The data: the blink features published with "A Realistic Dataset and Baseline Temporal Model for
Early Drowsiness Detection" (Ghoddoosian, Galib, Athitsos, CVPRW 2019), in the paper's repository
(github.com/rezaghoddoosian/Early-Drowsiness-Detection): ``BlinksTest_30_Fold{1..5}.npy`` (windows of
30 consecutive blinks x 4 features: frequency, amplitude, duration, eye-opening velocity, each
z-scored per participant against the participant's own alert video by the authors; stride 2 blinks)
and ``LabelsTest_30_Fold{1..5}.npy`` (0 alert, 5 low vigilant, 10 drowsy). Every participant is in
exactly one test fold, so the five test folds together are the whole set: 60 participants, 8,661
windows, the paper's participant-disjoint folds (its HM-LSTM: 65.2 % accuracy over the folds).
The data are not shipped here; clone the repository and pass its folder as ``--source``.

What this does: writes the set in the project's windows format (``--out``/windows: participants
recovered from the file order, see ``participants``; the zero padding of short videos becomes NaN,
i.e. not observed), then trains each model / variant with the train stage's own code (params.yaml
with the overrides given) and prints, per variant, the pooled out-of-fold macro-F1 with its 95 %
interval (bootstrap over participants), the mean of the folds' macro-F1, accuracy, ``running``: the
macro-F1 when each window's probabilities are averaged with those of every earlier window of its
video (a post-hoc report's view; the label is one per video), and the paired difference to
``stats_gbm`` (tie unless the interval excludes 0). ``--reuse`` scores variants already trained in
``--out`` again without training them.

    python bench/real_blinks.py --source ~/Early-Drowsiness-Detection
    python bench/real_blinks.py --source DIR --variants stats_gbm gru gru+d:hparams.gru.derivatives=true
    python bench/real_blinks.py --source DIR --variants fcn --set train.seeds=3 --set train.epochs=60

A variant is ``model`` or ``label:key=value,key=value`` whose label starts with the model's name
(``gru+d`` trains ``gru``). Values are YAML (``true``, ``3``, ``[16, 32]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["alert", "low_vigilant", "drowsy"]
LEVELS = {0.0: 0, 5.0: 1, 10.0: 2}
FEATURES = ["blink_frequency", "blink_amplitude", "blink_duration", "eye_opening_velocity"]
FOLDS = 5
STRIDE = 2  # blinks between consecutive windows (the paper's Preprocessing.py)


def participants(labels: np.ndarray) -> np.ndarray:
    """Participant number (within the fold) of each window. The paper's files hold, per participant,
    the alert, then the low-vigilant, then the drowsy windows; a participant starts where the level
    goes down (drowsy -> alert)."""
    levels = np.asarray(labels, dtype=float).reshape(-1)
    return np.concatenate([[0], np.cumsum(np.diff(levels) < 0)]).astype(int)


def sequences(x: np.ndarray, y: np.ndarray) -> list[tuple[int, float, np.ndarray]]:
    """Each (participant, level) video's whole blink sequence, rebuilt from its windows (30 blinks,
    stride 2: window i holds blinks 2i .. 2i + 29; a last blink past the final stride is not in the
    files): [(participant, level, (L, 4))]. A video of fewer than 30 blinks keeps its one window, its
    padding NaN."""
    who = participants(y)
    out, start = [], 0
    for i in range(1, len(y) + 1):
        if i < len(y) and who[i] == who[i - 1] and y[i] == y[i - 1]:
            continue
        w = x[start:i]
        seq = np.concatenate([w[0], *(v[-STRIDE:] for v in w[1:])]) if len(w) > 1 else w[0]
        out.append((int(who[start]), float(y[start]), seq))
        start = i
    return out


def windows_of(seq: np.ndarray, window: int) -> list[tuple[int, np.ndarray]]:
    """(first blink, (window, 4)) at stride 2, as the paper cut them; a shorter video: one window,
    NaN in front."""
    if len(seq) <= window:
        pad = np.full((window - len(seq), seq.shape[1]), np.nan)
        return [(0, np.concatenate([pad, seq]))]
    return [(s, seq[s : s + window]) for s in range(0, len(seq) - window + 1, STRIDE)]


def convert(source: Path, out: Path, window: int = 30) -> dict:
    """The paper's five test folds -> ``out`` in the windows format, windows of ``window`` blinks
    (30: the paper's own windows, byte for byte); returns meta.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    xs, rows = [], []
    for f in range(FOLDS):
        bx = source / f"BlinksTest_30_Fold{f + 1}.npy"
        by = source / f"LabelsTest_30_Fold{f + 1}.npy"
        for p in (bx, by):
            if not p.exists():
                sys.exit(f"error: {p} not found: --source must be the paper's repository folder (see --help)")
        x = np.load(bx, allow_pickle=False).astype(np.float64)
        y = np.load(by, allow_pickle=False).reshape(-1)
        if x.ndim != 3 or x.shape[1:] != (30, 4) or len(x) != len(y) or not set(y) <= set(LEVELS):
            sys.exit(f"error: {bx} / {by}: expected (N, 30, 4) windows and labels 0/5/10, got {x.shape}, {set(y)}")
        padding = (x == 0).all(axis=2)  # a video with fewer than 30 blinks: zero rows in front, not blinks
        x[padding] = np.nan
        for who, level_code, seq in sequences(x, y):
            subject = f"f{f + 1}p{who:02d}"
            level = CLASSES[LEVELS[level_code]]
            for first, values in windows_of(seq, window):
                rows.append(
                    {
                        "window_id": f"{subject}_{level}_{first:04d}",
                        "video": f"{subject}_{level}",
                        "subject": subject,
                        "label": level,
                        "fold": f,
                        "start_frame": first,
                        "end_frame": first + window - 1,
                        "start_t": float(first),  # blinks, not seconds: the data carry no time stamps
                        "end_t": float(first + window - 1),
                    }
                )
                xs.append(values.astype(np.float32))
    x = np.stack(xs)
    out.mkdir(parents=True, exist_ok=True)
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["fold"] = np.asarray(cols["fold"], np.int16)
    cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), window * len(FEATURES))
    pq.write_table(pa.table(cols), out / "windows.parquet")
    meta = {
        "format": "driver-windows/2",
        "features": FEATURES,
        "classes": CLASSES,
        "window": window,
        "folds": FOLDS,
        "task": "drowsiness",
        "normalisation": {"subject_baseline": False},  # the authors' per-participant z-score is in the data
        "source": "UTA-RLDD blink features, Ghoddoosian et al. 2019, test folds 1-5",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    subjects = sorted(set(cols["subject"]))
    print(f"windows: {len(rows)} windows, {len(subjects)} participants, {FOLDS} folds -> {out}")
    return meta


def parse_variant(spec: str) -> tuple[str, str, dict]:
    """``label[:k=v,k=v]`` -> (label, model, {dotted key: value})."""
    import yaml

    from pipeline.modeling import registry

    label, _, rest = spec.partition(":")
    model = next((m for m in sorted(registry.names(), key=len, reverse=True) if label.startswith(m)), None)
    if model is None:
        sys.exit(f"error: variant '{spec}': its label must start with a model name ({', '.join(registry.names())})")
    items, depth, cur = [], 0, ""
    for ch in rest:  # commas inside [...] or {...} belong to the value
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    sets = {}
    for item in filter(None, [*items, cur]):
        key, _, value = item.partition("=")
        sets[key.strip()] = yaml.safe_load(value)
    return label, model, sets


def with_overrides(raw: dict, sets: dict) -> dict:
    import copy

    raw = copy.deepcopy(raw)
    for key, value in sets.items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return raw


def score(models_dir: Path, name: str) -> dict:
    """Pooled macro-F1 (interval over participants), per-fold mean, accuracy of one trained variant."""
    from pipeline.contracts.predictions import read_oof
    from pipeline.evaluation.intervals import subject_bootstrap
    from pipeline.modeling.base import macro_f1

    y, proba, index, classes = read_oof(models_dir / name / "oof.parquet")
    pred = proba.argmax(1)
    iv = subject_bootstrap(y, pred, index["subject"].astype(str).to_numpy(), classes)["macro_f1"]
    folds = index["fold"].to_numpy()
    per_fold = [macro_f1(y[folds == f], pred[folds == f], len(classes)) for f in sorted(set(folds))]
    running = running_mean(proba, index).argmax(1)
    return {
        "pred": pred,
        "y": y,
        "subjects": index["subject"].astype(str).to_numpy(),
        "f1": iv.point,
        "lo": iv.lo,
        "hi": iv.hi,
        "fold_mean": float(np.mean(per_fold)),
        "folds": per_fold,
        "acc": float((pred == y).mean()),
        "running": macro_f1(y, running, len(classes)),
        "running_pred": running,
    }


def running_mean(proba: np.ndarray, index) -> np.ndarray:
    """Each window's probabilities averaged with those of every earlier window of its video (a
    post-hoc report's "so far in this recording"; the label is one per video here)."""
    out = np.empty_like(proba)
    start = index["start_t"].to_numpy()
    for rows in index.groupby("video", sort=False).indices.values():
        rows = rows[np.argsort(start[rows], kind="stable")]
        out[rows] = np.cumsum(proba[rows], axis=0) / np.arange(1, len(rows) + 1)[:, None]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True, help="folder with BlinksTest_30_Fold*.npy")
    ap.add_argument("--out", type=Path, default=Path("/tmp/real_blinks"))
    ap.add_argument("--variants", nargs="+", default=["majority", "stats_lr", "stats_gbm", "gru", "fcn"])
    ap.add_argument("--window", type=int, default=30, help="blinks per window (30: the paper's windows)")
    ap.add_argument("--reuse", action="store_true", help="score a variant already trained in --out again")
    ap.add_argument("--set", action="append", default=[], help="override for every variant: key=value")
    args = ap.parse_args()

    import yaml

    from pipeline.core.config import parse_params
    from pipeline.core.runtime import bounded_heap
    from pipeline.evaluation.intervals import paired_difference
    from pipeline.modeling import numerics
    from pipeline.stages import train

    bounded_heap()
    numerics.pin(1)  # as the train stage does: the same bytes on any x86-64 CPU
    windows = args.out / "windows"
    convert(args.source.expanduser(), windows, args.window)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    common = dict(parse_variant("majority:" + ",".join(args.set))[2])
    results: dict[str, dict] = {}
    for spec in args.variants:
        label, model, sets = parse_variant(spec)
        raw = with_overrides(base, {**common, **sets})
        raw["train"]["models"] = sorted(set(raw["train"]["models"]) | {model})
        params = parse_params(raw)
        models_dir = args.out / "models" / label
        t0 = time.perf_counter()
        if not (args.reuse and (models_dir / model / "oof.parquet").exists()):
            train.run(params, model, windows, models_dir, args.out / "reports" / label)
        results[label] = score(models_dir, model) | {"seconds": time.perf_counter() - t0, "sets": sets}
        r = results[label]
        iv = f"{r['f1']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
        print(f"{label}: macro-F1 {iv} acc {r['acc']:.3f} ({r['seconds']:.0f} s)", flush=True)
    ref = next((k for k in results if k == "stats_gbm"), None)
    first = next(iter(results.values()))
    n_subjects = len(set(first["subjects"]))
    print(f"\nUTA-RLDD blinks: {len(first['y'])} windows, {n_subjects} participants, the paper's 5 folds")
    print(f"overrides for all: {common or 'none'}")
    head = f"{'variant':<24} {'pooled macro-F1 [95% CI]':<26} {'fold mean':>9} {'accuracy':>8} {'running':>7}"
    print(head + (f"  {'vs stats_gbm [95% CI]':<28}  {'running vs stats_gbm':<28}" if ref else "") + f" {'time':>6}")
    for label, r in results.items():
        iv = f"{r['f1']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
        line = f"{label:<24} {iv:<26} {r['fold_mean']:>9.3f} {r['acc']:>8.3f} {r['running']:>7.3f}"
        if ref:
            d = paired_difference(r["y"], r["pred"], results[ref]["pred"], r["subjects"], len(CLASSES))
            verdict = "better" if d.lo > 0 else "worse" if d.hi < 0 else "tie"
            diff = f"{d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] {verdict}"
            line += f"  {diff if label != ref else '(reference)':<28}"
            d = paired_difference(r["y"], r["running_pred"], results[ref]["running_pred"], r["subjects"], len(CLASSES))
            verdict = "better" if d.lo > 0 else "worse" if d.hi < 0 else "tie"
            diff = f"{d.point:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}] {verdict}"
            line += f"  {diff if label != ref else '':<28}"
        print(line + f" {r['seconds']:>5.0f}s")


if __name__ == "__main__":
    main()
