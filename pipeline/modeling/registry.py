"""The model registry: every model the pipeline can train, baselines included, with what it can do.

The only place that knows model names. Everything else asks it:

* :func:`names` / :func:`get` -> :class:`ModelSpec` (builder, capabilities);
* :func:`check` validates params ``train.models`` and ``hparams.*`` against the builders'
  signatures (an unknown model or hyper-parameter stops the run naming the key);
* :func:`create` builds an untrained :class:`~pipeline.modeling.base.Classifier`.

Importing this module is cheap (no torch); builders are imported when used.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from pipeline.core.config import Params
    from pipeline.modeling.base import Classifier

SHAPE_ARGS = ("n_features", "n_classes", "window")


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: where its builder lives and what it can do."""

    name: str
    builder: str  # "module:attribute", called as builder(n_features, n_classes, window, **hparams)
    description: str
    neural: bool = True  # a torch module trained by gradient descent (gradients give attributions)
    attention: bool = False  # gives attention weights over time
    baseline: bool = False  # a reference the report compares every model against
    # its fit sits in long native calls that hold the GIL (no signal handler runs until they return):
    # fitted in child processes only, which a stopped stage terminates (README "Bad input ... faults")
    native_fit: bool = False

    def load_builder(self) -> Callable[..., Any]:
        module, attr = self.builder.split(":")
        return getattr(importlib.import_module(module), attr)

    def hparam_names(self) -> dict[str, Any]:
        """The hyper-parameters the builder takes, with their defaults (every network also takes
        :data:`NEURAL_HPARAMS`)."""
        sig = inspect.signature(self.load_builder())
        own = {
            n: p.default
            for n, p in sig.parameters.items()
            if n not in SHAPE_ARGS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
        return {**own, **NEURAL_HPARAMS} if self.neural else own


# The grid of a model's hyper-parameters tried inside each fold (pipeline/modeling/tuning.py)
TUNE_KEY = "tune"

# Hyper-parameters of every network, applied around its builder's module (pipeline/modeling/zoo.py):
# derivatives: each feature's step-to-step change as extra input channels; scales: moving mean and
# standard deviation of each feature over these numbers of steps as extra channels (ExtraChannels).
NEURAL_HPARAMS: dict[str, Any] = {"derivatives": False, "scales": []}


_ZOO = "pipeline.modeling.zoo"
_BASE = "pipeline.modeling.baselines"
SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("majority", f"{_BASE}:Majority", "the most frequent training class", neural=False, baseline=True),
        ModelSpec(
            "stats_lr",
            f"{_BASE}:StatsLogReg",
            "logistic regression on per-window statistics",
            neural=False,
            baseline=True,
        ),
        ModelSpec(
            "stats_gbm",
            f"{_BASE}:StatsGBM",
            "gradient-boosted trees on per-window statistics",
            neural=False,
            baseline=True,
        ),
        ModelSpec(
            "minirocket",
            f"{_BASE}:MiniRocket",
            "MiniRocket random convolutions + ridge classifier (sktime)",
            neural=False,
            baseline=True,
            native_fit=True,  # the ridge's eigendecomposition: minutes on thousands of windows
        ),
        ModelSpec("rnn", f"{_ZOO}:rnn", "Elman RNN, last hidden state"),
        ModelSpec("gru", f"{_ZOO}:gru", "GRU, last hidden state"),
        ModelSpec("lstm", f"{_ZOO}:lstm", "LSTM, last hidden state"),
        ModelSpec("lstm_state", f"{_ZOO}:lstm_state", "LSTM, last cell state"),
        ModelSpec("stacked_lstm", f"{_ZOO}:stacked_lstm", "stacked LSTM"),
        ModelSpec("bilstm", f"{_ZOO}:bilstm", "bidirectional LSTM"),
        ModelSpec("stacked_bilstm", f"{_ZOO}:stacked_bilstm", "stacked bidirectional LSTM"),
        ModelSpec("lstm_attn", f"{_ZOO}:lstm_attn", "LSTM + additive attention", attention=True),
        ModelSpec("bilstm_attn", f"{_ZOO}:bilstm_attn", "Bi-LSTM + additive attention", attention=True),
        ModelSpec(
            "stacked_bilstm_attn",
            f"{_ZOO}:stacked_bilstm_attn",
            "2 LSTM -> Bi-LSTM -> dense -> additive attention",
            attention=True,
        ),
        ModelSpec("transformer", f"{_ZOO}:transformer", "small transformer encoder, mean-pooled"),
        ModelSpec("fcn", f"{_ZOO}:fcn", "fully convolutional network (3 conv blocks, global pooling)"),
        ModelSpec("cnn_lstm", f"{_ZOO}:cnn_lstm", "temporal convolutions feeding an LSTM"),
    )
}


def names() -> list[str]:
    """Every registered model, in registry order (baselines first)."""
    return list(SPECS)


def get(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ModelError(f"unknown model '{name}'; registered models: {names()}")
    return SPECS[name]


def check(params: Params, only: str | None = None) -> None:
    """``train.models`` and ``hparams.*`` (or just ``hparams.<only>``) against the registry; raises
    :class:`ConfigError` naming the key."""
    for i, name in enumerate(params.train.models):
        if name not in SPECS:
            raise ConfigError(f"params key 'train.models[{i}]' is '{name}', not a registered model; known: {names()}")
    for name, hp in params.hparams.items():
        if only is not None and name != only:
            continue
        if name not in SPECS:
            raise ConfigError(f"params key 'hparams.{name}' is not a registered model; known: {names()}")
        if not isinstance(hp, Mapping):
            raise ConfigError(f"params key 'hparams.{name}' must be a mapping of keyword arguments, got {hp!r}")
        accepted = SPECS[name].hparam_names()
        for key in hp:
            if key == TUNE_KEY:
                _check_grid(name, hp[key], accepted)
            elif key not in accepted:
                raise ConfigError(
                    f"params key 'hparams.{name}.{key}' is not a hyper-parameter of '{name}'; "
                    f"it takes {sorted(accepted) or 'none'}"
                )
        if "derivatives" in hp and not isinstance(hp["derivatives"], bool):
            raise ConfigError(
                f"params key 'hparams.{name}.derivatives' must be true or false, got {hp['derivatives']!r}"
            )
        options = [hp["scales"]] if "scales" in hp else []
        options += list(hp.get(TUNE_KEY, {}).get("scales", []))  # the grid's values (a mapping of lists)
        for scales in options:
            _check_scales(name, scales)


def _check_scales(name: str, scales: Any) -> None:
    """``hparams.<name>.scales``: a list of moving-window lengths (steps), each at least 2."""
    if not isinstance(scales, list) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in scales
    ):
        raise ConfigError(
            f"params key 'hparams.{name}.scales' must be a list of window lengths in steps, each at least 2 "
            f"(e.g. [5, 15]; [] for none), got {scales!r}"
        )


def _check_grid(name: str, grid: Any, accepted: dict[str, Any]) -> None:
    """``hparams.<name>.tune``: a mapping of the model's hyper-parameters to lists of values."""
    where = f"params key 'hparams.{name}.{TUNE_KEY}'"
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{where} must map hyper-parameters to lists of values to try, e.g. {{hidden: [16, 32]}}")
    for key, values in grid.items():
        if key not in accepted:
            raise ConfigError(
                f"{where}.{key}: not a hyper-parameter of '{name}'; it takes {sorted(accepted) or 'none'}"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.{key} must be a non-empty list of values to try, got {values!r}")


def create(
    name: str, n_features: int, n_classes: int, window: int, hparams: Mapping[str, Any], seed: int = 0
) -> Classifier:
    """An untrained classifier (seeded: the same seed gives the same initial weights)."""

    spec = get(name)
    hparams = {k: v for k, v in hparams.items() if k != TUNE_KEY}  # the grid is for tuning, not the builder
    if spec.neural:
        import torch

        from pipeline.modeling.neural import NeuralClassifier

        torch.manual_seed(seed)
        own = {k: v for k, v in hparams.items() if k not in NEURAL_HPARAMS}
        common = {**NEURAL_HPARAMS, **{k: v for k, v in hparams.items() if k in NEURAL_HPARAMS}}
        derivatives, scales = common["derivatives"], tuple(common["scales"])
        if derivatives or scales:
            from pipeline.modeling.zoo import ExtraChannels

            channels = ExtraChannels.channels(n_features, derivatives, scales)
            body = spec.load_builder()(channels, n_classes, window, **own)
            module = ExtraChannels(body, window, derivatives, scales)
        else:
            module = spec.load_builder()(n_features, n_classes, window, **own)
        model: Classifier = NeuralClassifier(module)
    else:
        model = spec.load_builder()(n_features, n_classes, window, **hparams)
    return model
