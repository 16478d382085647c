"""A trained model, loaded once: class probabilities, attention weights, attributions, latency.

    predictor = Predictor.load(Path("models/gru"))
    prob = predictor.proba(x)            # (N, C), x (N, T, F) windows as the windows stage stores them

The model's own z-score (fitted on its training windows, stored in its card) is applied here,
so callers pass windows as stored (NaN = not observed).

Used by evaluate (and by prediction on new videos): one load per process, whatever the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contracts.model import ModelCard, read_card, read_weights
from pipeline.contracts.windows import Normaliser
from pipeline.core.errors import ModelError
from pipeline.modeling import registry
from pipeline.modeling.base import Classifier, softmax


@dataclass
class Predictor:
    card: ModelCard
    spec: registry.ModelSpec
    model: Classifier
    normaliser: Normaliser

    @classmethod
    def load(cls, model_dir: Path) -> Predictor:
        card = read_card(model_dir)
        spec = registry.get(card.model)
        model = registry.create(card.model, card.n_features, card.n_classes, card.window, card.hparams)
        if card.weights != model.weights_file:
            raise ModelError(f"{model_dir}: weights file '{card.weights}' is not what '{card.model}' writes")
        model.load_state(read_weights(model_dir, card))
        norm = card.normalisation
        if "mean" not in norm or len(norm["mean"]) != card.n_features:
            raise ModelError(f"{model_dir}/config.json has no normalisation for its features; retrain the model")
        return cls(card, spec, model, Normaliser.from_dict(norm))

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    def _check(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[1:] != (self.card.window, self.card.n_features):
            raise ModelError(
                f"model '{self.card.model}' reads windows of shape (N, {self.card.window}, {self.card.n_features}), "
                f"got {x.shape}"
            )
        return self.normaliser.apply(x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.model.logits(self._check(x))

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C), in :attr:`classes` order."""
        return softmax(self.logits(x))

    def attention(self, x: np.ndarray) -> np.ndarray | None:
        """Attention weights over time (N, T), or None for a model without attention."""
        return self.model.attention(self._check(x)) if self.spec.attention else None

    def attributions(self, x: np.ndarray, target: np.ndarray, steps: int = 32) -> np.ndarray | None:
        """|Integrated Gradients| (N, T, F) for ``target`` classes, or None for non-neural models."""
        return self.model.attributions(self._check(x), target, steps) if self.spec.neural else None

    def n_parameters(self) -> int:
        return self.model.n_parameters()

    def latency_ms(self, x: np.ndarray, repeats: int = 50) -> float:
        """Median CPU time to classify ONE stored window (batch of 1, z-score included), after warm-up."""
        one = np.ascontiguousarray(x[:1])
        for _ in range(5):
            self.logits(one)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.logits(one)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)
