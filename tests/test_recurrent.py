"""Our recurrent kernels (pipeline/modeling/recurrent.py) compute torch's LSTM, GRU and tanh RNN:
the same outputs, final states and gradients as ``nn.LSTM``/``nn.GRU``/``nn.RNN`` given the same
weights, in both directions, and the torch loop used for export agrees with them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.modeling.recurrent import Recurrent  # noqa: E402

TORCH = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def torch_twin(m: Recurrent) -> torch.nn.RNNBase:
    t = TORCH[m.cell](m.weight_ih.shape[-1], m.hidden, batch_first=True, bidirectional=m.directions == 2)
    t = t.to(m.weight_ih.dtype)
    with torch.no_grad():
        for d in range(m.directions):
            sfx = "_reverse" if d else ""
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(t, f"{name}_l0{sfx}").copy_(getattr(m, name)[d])
    return t


def loss_of(out, state, cell: str):
    """A loss that weighs every output step and both final states differently."""
    w = torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()
    h_n = state[0] if cell == "lstm" else state
    loss = (out * w).sum() + h_n.square().sum()
    return loss + state[1].pow(3).sum() if cell == "lstm" else loss


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_same_values_and_gradients_as_torch(cell, bidirectional, dtype):
    torch.manual_seed(0)
    m = Recurrent(cell, 5, 7, bidirectional).to(dtype)
    twin = torch_twin(m)
    x = torch.randn(3, 11, 5, dtype=dtype, requires_grad=True)
    out, state = m(x)
    ref_out, ref_state = twin(x)
    assert out.shape == ref_out.shape == (3, 11, 7 * m.directions) and out.dtype == dtype
    tol = TOL[dtype]
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    for a, b in zip(state if cell == "lstm" else [state], ref_state if cell == "lstm" else [ref_state], strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    params = [m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh]
    grads = torch.autograd.grad(loss_of(out, state, cell), [x, *params])
    ref = torch.autograd.grad(loss_of(ref_out, ref_state, cell), [x, *twin.parameters()])
    torch.testing.assert_close(grads[0], ref[0], rtol=tol, atol=tol)
    per_direction = ref[1:]  # torch: w_ih, w_hh, b_ih, b_hh of each direction in turn
    for k, g in enumerate(grads[1:]):
        expected = torch.stack([per_direction[4 * d + k] for d in range(m.directions)])
        torch.testing.assert_close(g, expected, rtol=10 * tol, atol=10 * tol)


class Outputs(torch.nn.Module):
    def __init__(self, layer: Recurrent) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_export_loop_computes_the_same_layer(cell):
    torch.manual_seed(1)
    m = Recurrent(cell, 4, 6, bidirectional=True)
    x = torch.randn(2, 9, 4)
    with torch.no_grad():
        out, _ = m(x)
        traced = torch.jit.trace(Outputs(m), x, check_trace=False)
        torch.testing.assert_close(traced(x), out, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(m.reference(x)[0], out, rtol=1e-5, atol=1e-6)


def test_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match="unknown recurrent cell 'lstmx'"):
        Recurrent("lstmx", 3, 4)


def test_an_input_changed_in_place_before_backward_is_refused():
    """The weight gradients need the layer's input as it was: autograd refuses a backward pass after
    an in-place change of it (instead of computing wrong gradients silently)."""
    m = Recurrent("lstm", 5, 7, bidirectional=True)
    x = torch.nn.Linear(5, 5)(torch.randn(3, 11, 5))
    out, _ = m(x)
    x.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
