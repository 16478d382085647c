"""The zoo's convolution (pipeline/modeling/zoo.Conv1d: one pinned product, forward and backward in
numpy) computes torch's ``nn.Conv1d``: the same outputs and gradients of input, kernel and bias,
with and without padding and bias, in float64 and float32; the torch-ops path used for export and
GPUs agrees with it."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.modeling.zoo import Conv1d  # noqa: E402

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [4, 1])  # one window: predict, monitor, latency
@pytest.mark.parametrize(("kernel", "padding", "bias"), [(5, 2, True), (8, 0, False), (3, 1, False), (1, 0, True)])
def test_same_values_and_gradients_as_torch(kernel, padding, bias, dtype, batch):
    torch.manual_seed(0)
    ours = Conv1d(6, 9, kernel, padding=padding, bias=bias).to(dtype)
    ref = torch.nn.Conv1d(6, 9, kernel, padding=padding, bias=bias).to(dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 6, 17, dtype=dtype, requires_grad=True)
    y, y_ref = ours(x), ref(x)
    tol = TOL[dtype]
    assert y.shape == y_ref.shape == (batch, 9, 17 + 2 * padding - kernel + 1)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    w = torch.arange(y.numel(), dtype=dtype).view_as(y).sin()  # every output weighted differently
    params = list(ours.parameters())
    grads = torch.autograd.grad((y * w).sum(), [x, *params])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, *ref.parameters()])
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=10 * tol, atol=10 * tol)


def test_a_transposed_input_and_the_export_path_agree():
    """Inputs arrive as transposed views (B, T, F) -> (B, F, T); tracing takes the torch-ops path."""
    torch.manual_seed(1)
    conv = Conv1d(5, 7, 5, padding=2)
    x = torch.randn(3, 11, 5).transpose(1, 2)
    with torch.no_grad():
        y = conv(x)
        torch.testing.assert_close(conv.reference(x.transpose(1, 2), (2, 2)).transpose(1, 2), y, rtol=1e-5, atol=1e-6)
        traced = torch.jit.trace(conv, x, check_trace=False)
        torch.testing.assert_close(traced(x), y, rtol=1e-5, atol=1e-6)


def test_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError, match="stride 1, dilation 1, groups 1"):
        Conv1d(4, 4, 3, stride=2)(torch.randn(1, 4, 9))
    with pytest.raises(ValueError, match="padding given in steps"):
        Conv1d(4, 4, 3, padding="same")(torch.randn(1, 4, 9))


@pytest.mark.parametrize("pad", [(3, 4), (0, 0), (2, 1)])  # fcn's "same" padding of an even kernel: (3, 4)
def test_channels_last_is_the_same_convolution(pad):
    """The models' entry (B, T, C) -> (B, T', out), asymmetric padding included, against nn.Conv1d on
    the padded, transposed input: values and the gradients of input, kernel and bias."""
    torch.manual_seed(2)
    ours = Conv1d(6, 9, 8).double()
    ref = torch.nn.Conv1d(6, 9, 8).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 20, 6, dtype=torch.float64, requires_grad=True)
    y = ours.channels_last(x, pad)
    y_ref = ref(torch.nn.functional.pad(x.transpose(1, 2), pad)).transpose(1, 2)
    assert y.shape == y_ref.shape == (3, 20 + sum(pad) - 7, 9)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    w = torch.arange(y.numel(), dtype=torch.float64).view_as(y).cos()
    grads = torch.autograd.grad((y * w).sum(), [x, *ours.parameters()])
    grads_ref = torch.autograd.grad((y_ref * w).sum(), [x, *ref.parameters()])
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-11, atol=1e-11)
