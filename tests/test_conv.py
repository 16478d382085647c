"""The zoo's convolution (pipeline/modeling/zoo.Conv1d: one product on our own kernels, forward and
backward) computes torch's ``nn.Conv1d``: the same outputs and gradients of input, kernel and bias,
with and without padding and bias, in float64 and float32; the torch-ops path used for export and
GPUs agrees with it; the product (pipeline/modeling/kernels.matmul) is one fused multiply-add chain
per element."""

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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("m", "k", "n"), [(29, 1100, 77), (13, 5, 3), (1, 1, 1), (4, 0, 6), (2880, 40, 64)])
def test_the_product_is_one_fused_multiply_add_chain_per_element(m, k, n, dtype):
    """kernels.matmul: every element the chain fma(a[i, K-1], b[K-1, j], ... fma(a[i, 0], b[0, j], 0)),
    whatever the tile or block it falls in (sizes off every tile; k across blocks; a strided, as the
    weight gradient passes it): the CPU-independent definition the fingerprint relies on."""
    import numpy as np
    from numba import njit

    from pipeline.modeling import kernels

    @njit(cache=False)
    def chains(a, b, out):
        for i in range(a.shape[0]):
            for j in range(b.shape[1]):
                s = a.dtype.type(0)
                for kk in range(a.shape[1]):
                    s = kernels.fma(a[i, kk], b[kk, j], s)
                out[i, j] = s

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(k, m)).astype(dtype).T, rng.normal(size=(k, n)).astype(dtype)
    got, want = np.full((m, n), np.nan, dtype), np.zeros((m, n), dtype)
    kernels.matmul(a, b, got)
    chains(a, b, want)
    assert got.tobytes() == want.tobytes()
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-3, atol=1e-3)


def test_the_product_refuses_shapes_that_do_not_match():
    import numpy as np

    from pipeline.modeling import kernels

    a, b = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match="shapes do not match"):
        kernels.matmul(a, b, np.empty((3, 2), np.float32))
    with pytest.raises(ValueError, match="contiguous rows"):
        kernels.matmul(a, np.ones((2, 4), np.float32).T, np.empty((3, 2), np.float32))


def test_inference_and_training_give_the_same_convolution_and_a_second_backward_is_refused():
    """The shifted copies go back to a scratch pool after the backward pass (or at once without
    gradients): the same values either way, and a second backward through the graph, which would
    read reused memory, stops with a clear error instead."""
    torch.manual_seed(3)
    conv = Conv1d(6, 9, 5)
    x = torch.randn(4, 30, 6, requires_grad=True)
    y = conv.channels_last(x, (2, 2))
    with torch.no_grad():
        y_inf = conv.channels_last(x, (2, 2))
    assert torch.equal(y, y_inf)
    y.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        y.sum().backward()


def test_the_scratch_pool_keeps_at_most_its_bound():
    """Arrays of a training step are reused; a scoring batch's larger arrays are not kept."""
    import numpy as np

    from pipeline.modeling.zoo import _Scratch

    pool = _Scratch(max_bytes=1000)
    a = pool.take((10, 10), np.float32)  # 400 bytes
    pool.give(a)
    assert pool.take((10, 10), np.float32) is a  # reused
    pool.give(a)
    big = np.empty((20, 20), np.float32)  # 1600 bytes: over the bound
    pool.give(big)
    assert pool.held == 400
    assert pool.take((20, 20), np.float32) is not big
