"""The model registry: one constructor shape, (B, T, F) -> logits, attention weights, safe save/load."""

import pytest
import torch

from pipeline import models as M

EXPECTED = {"rnn", "gru", "lstm", "lstm_state", "stacked_lstm", "bilstm", "stacked_bilstm", "lstm_attn",
            "bilstm_attn", "stacked_bilstm_attn", "transformer", "cnn_lstm"}  # fmt: skip


def test_every_architecture_of_the_issue_is_registered():
    assert set(M.list_models()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = M.create_model(name, n_features=7, n_classes=3, window=20, hidden=16) if name not in (
        "transformer", "cnn_lstm") else M.create_model(name, 7, 3, 20)  # fmt: skip
    x = torch.randn(5, 20, 7)
    logits = model(x)
    assert logits.shape == (5, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if name in M.ATTENTION_MODELS:
        model.eval()
        out, w = model(x, return_attention=True)
        assert w.shape == (5, 20)
        torch.testing.assert_close(w.sum(1), torch.ones(5))
        torch.testing.assert_close(out, model(x))


def test_lstm_state_reads_the_cell_state():
    torch.manual_seed(0)
    a = M.create_model("lstm_state", 4, 2, 10, hidden=8)
    b = M.create_model("lstm", 4, 2, 10, hidden=8)
    b.load_state_dict(a.state_dict())  # same weights, different readout
    x = torch.randn(3, 10, 4)
    assert not torch.allclose(a.eval()(x), b.eval()(x))


def test_unknown_name_and_hparam_are_named():
    with pytest.raises(KeyError, match="unknown model 'lstmm'"):
        M.create_model("lstmm", 4, 2, 10)
    with pytest.raises(TypeError, match=r"model 'gru'.*hiden"):
        M.create_model("gru", 4, 2, 10, hiden=8)


def test_save_and_load_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = M.create_model("bilstm_attn", 6, 4, 12, hidden=8).eval()
    cfg = {"model": "bilstm_attn", "n_features": 6, "n_classes": 4, "window": 12, "hparams": {"hidden": 8}}
    M.save(model, cfg, tmp_path)
    loaded, cfg2 = M.load(tmp_path)
    x = torch.randn(2, 12, 6)
    torch.testing.assert_close(loaded(x), model(x))
    assert cfg2 == cfg
    assert M.n_parameters(loaded) == M.n_parameters(model) > 0
