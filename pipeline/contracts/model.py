"""The trained-model contract: ``models/<name>/config.json`` + the model's weights file.

``config.json`` (:class:`ModelCard`): ``model`` (a registry name), ``n_features``,
``n_classes``, ``window``, ``features`` and ``classes`` (names, in the order the model
reads and writes them), ``hparams``, ``parameters`` (trainable count), ``weights`` (the
file beside it: ``model.pt``, a torch state dict loaded with ``weights_only=True``, or
``baseline.json``), ``normalisation`` (``subject_baseline``: whether each driver's own
median was subtracted; ``mean``/``std``: the z-score fitted on the model's training
windows, applied by :class:`~pipeline.modeling.predictor.Predictor`, so new windows are
prepared exactly as the training ones) and ``epochs``. Nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelError
from pipeline.core.files import atomic_path, read_json, write_json


@dataclass(frozen=True)
class ModelCard:
    model: str
    n_features: int
    n_classes: int
    window: int
    features: tuple[str, ...]
    classes: tuple[str, ...]
    hparams: dict[str, Any]
    weights: str
    parameters: int = 0
    normalisation: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0  # epochs the weights were trained for

    @classmethod
    def for_windows(cls, model: str, meta: dict[str, Any], hparams: dict[str, Any], weights: str) -> ModelCard:
        """The card of a model trained on windows described by ``meta`` (windows meta.json)."""
        return cls(
            model=model,
            n_features=len(meta["features"]),
            n_classes=len(meta["classes"]),
            window=int(meta["window"]),
            features=tuple(meta["features"]),
            classes=tuple(meta["classes"]),
            hparams=dict(hparams),
            weights=weights,
        )

    def check_windows(self, meta: dict[str, Any], where: str) -> None:
        """Refuse windows the model was not trained for (other features, classes or length)."""
        for key, mine, theirs in (
            ("features", list(self.features), list(meta["features"])),
            ("classes", list(self.classes), list(meta["classes"])),
            ("window", self.window, int(meta["window"])),
        ):
            if mine != theirs:
                raise ModelError(
                    f"model '{self.model}' was trained with {key} {mine}, but {where} has {theirs}; "
                    f"retrain it (dvc repro train@{self.model}) or use windows made with the same params"
                )


def write_card(model_dir: Path, card: ModelCard) -> None:
    write_json(model_dir / "config.json", dataclasses.asdict(card))


def read_card(model_dir: Path) -> ModelCard:
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise ModelError(f"{path} not found: train the model first (dvc repro train@{Path(model_dir).name})")
    raw = read_json(path)
    known = {f.name for f in dataclasses.fields(ModelCard)}
    try:
        card = ModelCard(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:
        raise ModelError(f"{path} is not a model card of this pipeline ({exc}); retrain the model") from exc
    return dataclasses.replace(card, features=tuple(card.features), classes=tuple(card.classes))


def write_weights(model_dir: Path, name: str, data: bytes) -> None:
    with atomic_path(Path(model_dir) / name) as tmp:
        tmp.write_bytes(data)


def read_weights(model_dir: Path, card: ModelCard) -> bytes:
    path = Path(model_dir) / card.weights
    if not path.exists():
        raise ModelError(f"{path} not found beside its config.json; retrain the model (dvc repro train@{card.model})")
    return path.read_bytes()
