"""Inputs the networks can use (issue "models that learn on real data"): each feature's change as an
extra channel (``hparams.<model>.derivatives``), its moving mean and spread at several time scales
(``hparams.<model>.scales``) and class-balanced mini-batches (``train.sampling``)."""

import numpy as np
import pytest
import torch

from pipeline.contracts.predictions import read_oof
from pipeline.contracts.windows import read_windows
from pipeline.core.config import parse_params
from pipeline.core.errors import ConfigError
from pipeline.modeling import registry, tuning
from pipeline.modeling.base import macro_f1
from pipeline.modeling.neural import epoch_order
from pipeline.modeling.predictor import Predictor
from pipeline.modeling.zoo import ExtraChannels
from pipeline.stages import train as T
from tests.test_train import make_set


def test_balanced_batches_draw_every_class_about_equally_often_and_shuffle_sees_each_window_once():
    y = np.r_[np.zeros(600), np.ones(60), np.full(15, 2)].astype(np.int64)
    gen = torch.Generator().manual_seed(0)
    order = epoch_order(y, 4, "balanced", gen).numpy()  # class 3 has no window here: never drawn
    share = np.bincount(y[order], minlength=4) / len(order)
    assert len(order) == len(y) and np.allclose(share[:3], 1 / 3, atol=0.05) and share[3] == 0
    assert len(np.unique(order[y[order] == 2])) == 15  # the rare class: all of its windows, many times
    assert sorted(epoch_order(y, 4, "shuffle", gen).tolist()) == list(range(len(y)))
    again = epoch_order(y, 4, "balanced", torch.Generator().manual_seed(0)).numpy()
    assert (again == order).all()  # seeded: the same batches every run


def test_the_derivative_channels_are_each_features_step_to_step_change():
    x = torch.randn(4, 6, 3)
    z = ExtraChannels(torch.nn.Identity(), 6, derivatives=True).inputs(x)
    assert z.shape == (4, 6, 6) and torch.equal(z[..., :3], x) and (z[:, 0, 3:] == 0).all()
    assert torch.equal(z[:, 1:, 3:], x[:, 1:] - x[:, :-1])
    model = registry.create("gru", 3, 2, 6, {"hidden": 4, "derivatives": True})
    assert model.logits(x.numpy()).shape == (4, 2)
    plain = registry.create("gru", 3, 2, 6, {"hidden": 4})
    assert model.n_parameters() > plain.n_parameters()  # the body takes twice the inputs
    with pytest.raises(ConfigError, match=r"'hparams\.gru\.derivatives' must be true or false"):
        registry.check(parse_params({"train": {"models": ["gru"]}, "hparams": {"gru": {"derivatives": "yes"}}}))
    with pytest.raises(ConfigError, match=r"'hparams\.stats_lr\.derivatives' is not a hyper-parameter"):
        registry.check(
            parse_params({"train": {"models": ["stats_lr"]}, "hparams": {"stats_lr": {"derivatives": True}}})
        )
    with pytest.raises(ConfigError, match=r"'train\.sampling' .*must be shuffle or balanced"):
        parse_params({"train": {"sampling": "oversample"}})


def test_the_scale_channels_are_each_features_moving_mean_and_spread():
    x = torch.randn(2, 8, 3, dtype=torch.float32)
    layer = ExtraChannels(torch.nn.Identity(), 8, scales=(3, 8))
    z = layer.inputs(x)
    assert z.shape == (2, 8, 3 * 5) and torch.equal(z[..., :3], x)
    xs = x.numpy().astype(np.float64)
    for s, k in enumerate((3, 8)):
        for t in range(8):
            lo = min(max(0, t - (k - 1) // 2), 8 - k)  # k steps around t, shifted inward at the edges
            w = xs[:, lo : lo + k]
            mean, sd = z[:, t, 3 + 6 * s : 6 + 6 * s].numpy(), z[:, t, 6 + 6 * s : 9 + 6 * s].numpy()
            np.testing.assert_allclose(mean, w.mean(1), atol=1e-5)
            np.testing.assert_allclose(sd, np.sqrt(w.var(1) + 1e-6), atol=1e-4)
    # a whole-window scale: every step carries the window's own mean, so a level shift moves it alone
    assert torch.allclose(z[:, 0, 9:12], x.mean(1), atol=1e-5) and torch.allclose(z[:, 5, 9:12], z[:, 0, 9:12])
    model = registry.create("fcn", 3, 2, 8, {"channels": 4, "scales": [3, 8], "derivatives": True})
    assert model.logits(x.numpy()).shape == (2, 2) and model.module.body.body[1].in_channels == 3 * 6
    assert not model.module.state_dict().keys() - {k for k in model.module.state_dict() if k.startswith("body.")}
    for bad in ([1], "5", [2.5], 3):
        with pytest.raises(ConfigError, match=r"'hparams\.gru\.scales' must be a list of window lengths"):
            registry.check(parse_params({"train": {"models": ["gru"]}, "hparams": {"gru": {"scales": bad}}}))
    grid = {"scales": [5], "tune": {"scales": [[], [3, 8]]}}  # a tunable choice: none or two scales
    registry.check(parse_params({"train": {"models": ["gru"]}, "hparams": {"gru": grid}}))
    assert [c["scales"] for c in tuning.candidates(grid, 8, 0)] == [[], [3, 8]]
    with pytest.raises(ConfigError, match=r"'hparams\.gru\.scales' must be a list"):  # inside a tuning grid too
        registry.check(
            parse_params({"train": {"models": ["gru"]}, "hparams": {"gru": {"tune": {"scales": [[], [1]]}}}})
        )


def test_a_network_with_extra_channels_and_balanced_batches_trains_explains_and_exports(tmp_path):
    """Through the real train stage, then loaded as predict / monitor / export load it."""
    from pipeline.apply.export import build

    wdir = make_set(tmp_path / "w")
    x, _, _, _ = read_windows(wdir)
    p = parse_params(
        {
            "train": {"models": ["bilstm_attn"], "epochs": 10, "patience": 10, "lr": 0.01, "sampling": "balanced"},
            "hparams": {"bilstm_attn": {"hidden": 8, "derivatives": True, "scales": [3]}},
        }
    )
    T.run(p, "bilstm_attn", wdir, tmp_path / "models", tmp_path / "reports")
    oy, proba, _, _ = read_oof(tmp_path / "models" / "bilstm_attn" / "oof.parquet")
    assert macro_f1(oy, proba.argmax(1), 3) > 0.75  # out of fold, on subjects never seen (chance 0.33)
    pred = Predictor.load(tmp_path / "models" / "bilstm_attn")
    assert isinstance(pred.model.module, ExtraChannels) and pred.card.hparams["derivatives"] is True
    assert pred.card.hparams["scales"] == [3] and pred.model.module.scales == (3,)
    assert pred.attention(x[:5]).shape == (5, x.shape[1])  # attention of the body, over the window's steps
    assert pred.attributions(x[:3], np.zeros(3, np.int64), steps=4).shape == (3, *x.shape[1:])  # per input
    with torch.no_grad():
        exported = build(tmp_path / "models" / "bilstm_attn")(torch.from_numpy(x[:20])).numpy()
    np.testing.assert_allclose(exported, pred.proba(x[:20]), atol=1e-5)
