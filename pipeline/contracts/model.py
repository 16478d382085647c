"""The trained-model contract: ``models/<name>/config.json`` + the model's weights file.

``config.json`` (:class:`ModelCard`): ``model`` (a registry name), ``n_features``,
``n_classes``, ``window``, ``features`` and ``classes`` (names, in the order the model
reads and writes them), ``hparams``, ``parameters`` (trainable count), ``weights`` (the
file beside it: ``model.pt``, a torch state dict loaded with ``weights_only=True``, or
``baseline.json``), ``normalisation`` (``subject_baseline``: whether each driver's own
median was subtracted; ``mean``/``std``: the z-score fitted on the model's training
windows, applied by :class:`~pipeline.modeling.predictor.Predictor`, so new windows are
prepared exactly as the training ones), ``epochs`` and ``inputs``: the settings that turned
video into the training windows (``frames``, ``landmarks``, ``features`` sections of params.yaml,
``stride``, ``pool`` and ``min_face_fraction`` of the windows), so a model applied to new video
(pipeline/apply) measures it exactly as its training data was measured, whatever params.yaml
says on that machine; ``familiarity``: how far a window may lie from the training windows before
pipeline/apply calls it unfamiliar (pipeline/modeling/familiarity.py: robust scaling, class
centres, shrunk precision matrix, the out-of-fold cut-off). Nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ModelError
from pipeline.core.files import atomic_path, read_json, write_json

if TYPE_CHECKING:
    from pipeline.core.config import Params


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
    inputs: dict[str, Any] = field(default_factory=dict)  # how video became its windows (see module doc)
    familiarity: dict[str, Any] = field(default_factory=dict)  # unfamiliar-input score (see module doc)

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


INPUT_SECTIONS = ("frames", "landmarks", "features")


def inputs_of(params: Params) -> dict[str, Any]:
    """The card's ``inputs``: what made the windows from video (run-time knobs such as workers left out)."""
    out: dict[str, Any] = {
        sec: {k: v for k, v in dataclasses.asdict(getattr(params, sec)).items() if k != "workers"}
        for sec in INPUT_SECTIONS
    }
    out["stride"] = params.windows.stride
    out["pool"] = params.windows.pool
    out["min_face_fraction"] = params.windows.min_face_fraction
    return json_safe(out)


def json_safe(obj: Any) -> Any:
    """Tuples as lists, as they come back from JSON."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def input_params(card: ModelCard, where: str) -> Params:
    """Typed params (frames, landmarks, features, windows) that made the model's training windows.

    Refuses a model whose card does not say (trained by an older pipeline) or names features
    this code does not compute.
    """
    from pipeline.contracts.features import REGISTRY
    from pipeline.core.config import parse_params
    from pipeline.core.errors import ConfigError

    if not card.inputs:
        raise ModelError(
            f"{where}: the model card does not record how its training video was measured (trained before "
            f"prediction existed); retrain it (dvc repro train@{card.model})"
        )
    unknown = [f for f in card.features if f not in REGISTRY]
    if unknown:
        raise ModelError(
            f"{where}: model '{card.model}' reads features {unknown} that this pipeline does not compute "
            f"(known: {list(REGISTRY)}); it was trained on other features: retrain it with windows.features "
            "from the registry"
        )
    raw = {sec: card.inputs[sec] for sec in INPUT_SECTIONS if sec in card.inputs}
    raw["windows"] = {
        "size": card.window * card.inputs.get("pool", 1),  # frames; card.window counts time steps
        "pool": card.inputs.get("pool", 1),
        "stride": card.inputs.get("stride", 10),
        "features": list(card.features),
        "min_face_fraction": card.inputs.get("min_face_fraction", 0.8),
        "subject_baseline": bool(card.normalisation.get("subject_baseline", False)),
    }
    raw["data"] = {"classes": list(card.classes)}
    try:
        return parse_params(raw)
    except ConfigError as exc:
        raise ModelError(
            f"{where}: the model card's inputs are not this pipeline's settings ({exc}); retrain it"
        ) from exc


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
