"""What every model of the registry is: a :class:`Classifier` over windows (N, T, F)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipeline.core.errors import ModelError

if TYPE_CHECKING:
    from pipeline.contracts.windows import Values
    from pipeline.core.config import TrainParams

# x (N, T, F) float32: an array, or windows read batch by batch (pipeline/contracts/windows.py Rows);
# y (N,) class index. A model reads x in batches (x[a:b], x[rows]) and never copies it whole.
Split = tuple["Values", np.ndarray]
# Windows scored at once. Measured before batching, at 10 hours of video: gradient boosting held
# 41-46 KB per window while scoring (a window is 4.3 KB), the fcn 124-129 KB. A constant, not a
# setting: a network's scores may depend on how rows are batched, and the bytes must not.
SCORE_BATCH = 1024


class Classifier(ABC):
    """Fit on windows, give class scores, save and load without pickle.

    Optional capabilities (the registry's ModelSpec says which a model has): attention
    weights over time and gradient attributions.
    """

    weights_file: ClassVar[str]

    @abstractmethod
    def fit(
        self, train: Split, val: Split, n_classes: int, cfg: TrainParams, stop_after: int | None = None
    ) -> list[dict[str, Any]]:
        """Train; returns one log row per epoch (``epoch``, ``train_f1``, ``val_f1``, ...).

        ``val`` may be empty (the final model on all subjects): models that select on
        validation then train ``stop_after`` epochs; the others ignore both."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised class scores (N, C), ``SCORE_BATCH`` windows at a time: scoring needs memory
        for one batch (a network's activations, every tree's node per window), not for the data set."""
        if len(x) <= SCORE_BATCH:
            return self._logits(np.asarray(x[:]))
        return np.concatenate([self._logits(x[i : i + SCORE_BATCH]) for i in range(0, len(x), SCORE_BATCH)])

    @abstractmethod
    def _logits(self, x: np.ndarray) -> np.ndarray:
        """Unnormalised class scores (N, C) of at most ``SCORE_BATCH`` windows."""

    @abstractmethod
    def state_bytes(self) -> bytes:
        """The weights file's bytes (deterministic for the same weights)."""

    @abstractmethod
    def load_state(self, data: bytes) -> None:
        """Restore weights written by :meth:`state_bytes` (no code is executed)."""

    def n_parameters(self) -> int:
        return 0

    def attention(self, x: np.ndarray) -> np.ndarray:
        raise ModelError(f"{type(self).__name__} has no attention weights")

    def attributions(self, x: np.ndarray, target: np.ndarray, steps: int = 32) -> np.ndarray:
        raise ModelError(f"{type(self).__name__} has no gradient attributions")


def selection_key(history: list[dict[str, Any]], i: int, smooth: int) -> tuple[float, float]:
    """What early stopping maximises at epoch ``i`` (0-based) of ``history``: the mean validation
    macro-F1 of the last ``smooth`` epochs up to ``i``, ties to the lower mean validation loss. One
    lucky epoch (a noisy validation fold) does not win on its own."""
    rows = history[max(0, i - smooth + 1) : i + 1]
    return (
        float(np.mean([h["val_f1"] for h in rows])),
        -float(np.mean([h.get("val_loss", 0.0) for h in rows])),
    )


def first_selectable(n_epochs: int, min_epochs: int) -> int:
    """The first epoch (0-based) whose weights may be kept: ``min_epochs`` in, or the last one."""
    return max(0, min(min_epochs, n_epochs) - 1)


def selected_epoch(history: list[dict[str, Any]], smooth: int, min_epochs: int, n_epochs: int) -> int:
    """The 1-based epoch whose weights a fit kept (as :meth:`NeuralClassifier.fit` chose it online):
    the best :func:`selection_key` from :func:`first_selectable` on, ties to the earlier epoch;
    the last epoch when none was validated."""
    first = first_selectable(n_epochs, min_epochs)
    scored = [i for i, h in enumerate(history) if i >= first and np.isfinite(h.get("val_f1", np.nan))]
    if not scored:
        return len(history)
    return max(scored, key=lambda i: (selection_key(history, i, smooth), -i)) + 1


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency, scaled to mean 1 (absent classes get weight 1)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 1.0)
    return (w / w.mean()).astype(np.float32)


def window_stats(x: Values) -> np.ndarray:
    """Per-window statistics (mean, std, min, max, last - first of every feature): (N, 5F), computed
    in batches of windows (``x`` may be larger than memory)."""
    from pipeline.contracts.windows import map_batches

    def stats(b: np.ndarray) -> np.ndarray:
        return np.concatenate([b.mean(1), b.std(1), b.min(1), b.max(1), b[:, -1] - b[:, 0]], axis=1)

    return map_batches(stats, x)
