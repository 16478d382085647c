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
    "fcn",
}
ATTENTION = {"lstm_attn", "bilstm_attn", "stacked_bilstm_attn"}


def test_one_registry_knows_every_model_and_what_it_can_do():
    assert set(registry.names()) == NEURAL | {"majority", "stats_lr", "stats_gbm", "minirocket"}
    assert {n for n in registry.names() if registry.get(n).neural} == NEURAL
    assert {n for n in registry.names() if registry.get(n).attention} == ATTENTION
    assert {n for n in registry.names() if registry.get(n).baseline} == {
        "majority",
        "stats_lr",
        "stats_gbm",
        "minirocket",
    }
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


@pytest.mark.parametrize("n_seen", [4, 2])
def test_stored_boosted_trees_predict_what_scikit_learn_predicts(n_seen):
    """The GBM baseline is stored as JSON trees and evaluated by our own walker: it must agree with
    scikit-learn's own raw scores (multiclass, and binary when only two classes were seen)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from pipeline.core.config import TrainParams
    from pipeline.modeling.base import window_stats

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12, 5)).astype(np.float32)
    y = np.arange(300) % n_seen
    x[y == 1, :, 0] += 1.0
    x[:7, :, 2] = np.nan  # NaN statistics take the learned missing-value branch
    model = registry.create("stats_gbm", 5, 4, 12, {"max_iter": 30}, seed=0)
    model.fit((x, y), (x[:40], y[:40]), 4, TrainParams(class_weights=False))
    ref = HistGradientBoostingClassifier(**model.settings, early_stopping=False, random_state=0)
    ref.fit(window_stats(x), y)
    np.testing.assert_allclose(model.raw(window_stats(x).astype(np.float64)), ref._raw_predict(window_stats(x)))
    again = registry.create("stats_gbm", 5, 4, 12, {"max_iter": 30}, seed=1)
    again.load_state(model.state_bytes())
    logits = again.logits(x)
    assert logits.shape == (300, 4) and (logits[:, n_seen:] < -1e8).all()  # unseen classes never win
    np.testing.assert_array_equal(logits.argmax(1), ref.predict(window_stats(x)))


def test_minirocket_state_reproduces_sktimes_transform_and_predictions():
    """The stored MiniRocket calls sktime's numba kernel with its JSON parameters: the features must
    equal what sktime's own fitted transformer gives (an sktime upgrade that breaks this fails here)."""
    from sktime.transformations.rocket import MiniRocketMultivariate

    from pipeline.core.config import TrainParams

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20, 4)).astype(np.float32)
    y = np.arange(60) % 3
    x[y == 1, :, 0] += np.sin(np.linspace(0, 6, 20)).astype(np.float32)
    model = registry.create("minirocket", 4, 3, 20, {"num_kernels": 336}, seed=0)
    model.fit((x, y), (x[:20], y[:20]), 3, TrainParams())
    ref = MiniRocketMultivariate(num_kernels=336, random_state=0, n_jobs=1).fit(x.transpose(0, 2, 1))
    np.testing.assert_array_equal(model._features(x), np.asarray(ref.transform(x.transpose(0, 2, 1)), np.float64))
    again = registry.create("minirocket", 4, 3, 20, {"num_kernels": 336}, seed=5)
    again.load_state(model.state_bytes())
    np.testing.assert_array_equal(again.logits(x), model.logits(x))
    with pytest.raises(ModelError, match="at least 9 time steps"):
        registry.create("minirocket", 4, 3, 8, {}, seed=0).fit((x[:, :8], y), (x[:5, :8], y[:5]), 3, TrainParams())


@pytest.mark.parametrize("name", ["stats_gbm", "stats_lr", "fcn"])
def test_scoring_runs_in_batches_and_gives_the_bytes_of_one_pass(name, monkeypatch):
    """Scores of many windows are computed SCORE_BATCH at a time (memory of one batch, not of the data
    set); the rows of a model's scores do not depend on the rows beside them, so the bytes are those of
    one pass over everything."""
    from pipeline.core.config import TrainParams
    from pipeline.modeling import base

    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 12, 4)).astype(np.float32)
    y = (x[:, :, 0].mean(1) > 0).astype(np.int64) + (x[:, :, 1].mean(1) > 0)
    model = registry.create(name, 4, 3, 12, {}, seed=0)
    model.fit((x[:600], y[:600]), (x[600:], y[600:]), 3, TrainParams(epochs=2))
    one_pass = model._logits(x)
    monkeypatch.setattr(base, "SCORE_BATCH", 128)
    sizes = []
    real = model._logits
    monkeypatch.setattr(model, "_logits", lambda part: sizes.append(len(part)) or real(part))
    batched = model.logits(x)
    assert sizes == [128] * 5 + [60]
    if name == "fcn":  # a network: the same within float32 rounding (kernels may block rows differently)
        np.testing.assert_allclose(batched, one_pass, rtol=1e-5, atol=1e-6)
    else:
        assert batched.tobytes() == one_pass.tobytes()
