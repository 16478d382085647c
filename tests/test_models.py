"""The model registry: every model (baselines included), one constructor shape, capabilities,
params checked against the builders, and one predictor that loads a model once (weights_only)."""

import numpy as np
import pytest
import torch

from pipeline.core.config import parse_params
from pipeline.core.errors import ConfigError, ModelError
from pipeline.modeling import registry

NEURAL = {
    "rnn",
    "gru",
    "lstm",
    "lstm_state",
    "stacked_lstm",
    "bilstm",
    "stacked_bilstm",
    "lstm_attn",
    "bilstm_attn",
    "stacked_bilstm_attn",
    "transformer",
    "cnn_lstm",
}
ATTENTION = {"lstm_attn", "bilstm_attn", "stacked_bilstm_attn"}


def test_one_registry_knows_every_model_and_what_it_can_do():
    assert set(registry.names()) == NEURAL | {"majority", "stats_lr"}
    assert {n for n in registry.names() if registry.get(n).neural} == NEURAL
    assert {n for n in registry.names() if registry.get(n).attention} == ATTENTION
    assert {n for n in registry.names() if registry.get(n).baseline} == {"majority", "stats_lr"}
    with pytest.raises(ModelError, match="unknown model 'lstmm'"):
        registry.get("lstmm")


@pytest.mark.parametrize("name", sorted(NEURAL))
def test_shapes_gradients_and_attention(name):
    model = registry.create(name, 7, 3, 20, {}, seed=0)
    x = torch.randn(5, 20, 7)
    module = model.module.train()
    logits = module(x)
    assert logits.shape == (5, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    module.eval()
    if name in ATTENTION:
        w = model.attention(x.numpy())
        assert w.shape == (5, 20)
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    else:
        with pytest.raises(ModelError, match="no attention"):
            model.attention(x.numpy())


def test_lstm_state_reads_the_cell_state():
    a = registry.create("lstm_state", 4, 2, 10, {"hidden": 8}, seed=0)
    b = registry.create("lstm", 4, 2, 10, {"hidden": 8}, seed=0)
    b.module.load_state_dict(a.module.state_dict())  # same weights, different readout
    x = np.random.default_rng(0).normal(size=(3, 10, 4)).astype(np.float32)
    assert not np.allclose(a.logits(x), b.logits(x))


def test_params_are_checked_against_the_builders():
    ok = parse_params({"train": {"models": ["majority", "gru"]}, "hparams": {"gru": {"hidden": 8}}})
    registry.check(ok)
    cases = [
        ({"train": {"models": ["lstmm"]}}, r"'train\.models\[0\]' is 'lstmm'"),
        ({"hparams": {"lstmm": {"hidden": 3}}}, r"'hparams\.lstmm' is not a registered model"),
        ({"hparams": {"gru": {"hiden": 3}}}, r"'hparams\.gru\.hiden' is not a hyper-parameter of 'gru'.*'hidden'"),
        ({"hparams": {"majority": {"C": 1.0}}}, r"'hparams\.majority\.C'.*takes none"),
        ({"hparams": {"gru": [1, 2]}}, r"'hparams\.gru' must be a mapping"),
    ]
    for raw, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            registry.check(parse_params(raw))


def test_every_default_hparam_set_builds():
    for name in registry.names():
        spec = registry.get(name)
        model = registry.create(name, 6, 4, 12, spec.hparam_names(), seed=0)
        if spec.neural:  # baselines have nothing to score with before fit (tests/test_train.py)
            assert model.logits(np.zeros((2, 12, 6), np.float32)).shape == (2, 4)


def test_seeded_creation_is_repeatable_and_state_round_trips(tmp_path):
    a = registry.create("bilstm_attn", 6, 4, 12, {"hidden": 8}, seed=3)
    b = registry.create("bilstm_attn", 6, 4, 12, {"hidden": 8}, seed=3)
    assert a.state_bytes() == b.state_bytes()
    c = registry.create("bilstm_attn", 6, 4, 12, {"hidden": 8}, seed=4)
    c.load_state(a.state_bytes())
    x = np.random.default_rng(0).normal(size=(2, 12, 6)).astype(np.float32)
    np.testing.assert_array_equal(c.logits(x), a.logits(x))
    assert c.n_parameters() == a.n_parameters() > 0
