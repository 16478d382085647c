"""The neural zoo: sequence classifiers with one constructor shape.

Every architecture is ``builder(n_features, n_classes, window, **hparams)`` and maps ``x`` of
shape (B, T, F) to logits (B, C). Attention models also give their weights over time:
``model(x, return_attention=True) -> (logits, weights (B, T))``. The hyper-parameters each
builder takes are its keyword arguments: params ``hparams.<model>`` is checked against them
at start-up (pipeline/modeling/registry.py names the builders; this module imports torch).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from pipeline.modeling import kernels
from pipeline.modeling.recurrent import Recurrent


# --- building blocks -------------------------------------------------------------------------
class Dropout(nn.Module):
    """Inverted dropout whose mask is the same on every CPU vendor for the same seed.

    ``nn.Dropout`` draws its mask with ATen's ``bernoulli_(p)``, which uses MKL's VSL generator
    on Intel processors and ATen's own generator on all others (a vendor check in
    aten/src/ATen/native/cpu/DistributionKernels.cpp): the same seed trained other models on
    Intel than on AMD. ``torch.rand`` takes one code path everywhere.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # u >= p keeps (probability 1 - p): floor(u + 1 - p) is 1 there and 0 elsewhere, in place
        mask = torch.rand(x.shape, dtype=x.dtype, device=x.device).add_(1.0 - self.p).floor_()
        return x * mask.mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AdditiveAttention(nn.Module):
    """Bahdanau-style attention over time: a_t = softmax_t(v . tanh(W h_t))."""

    def __init__(self, dim: int, attn_dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # h: (B, T, D)
        scores = self.v(torch.tanh(self.proj(h))).squeeze(-1)  # (B, T)
        weights = torch.softmax(scores, dim=1)  # (B, T)
        context = torch.bmm(weights.unsqueeze(1), h).squeeze(1)  # (B, D)
        return context, weights


class _Scratch:
    """Arrays the convolution needs only inside one training step (its shifted copies and their
    gradient: megabytes per layer), kept for the next step: a fresh array of that size is new
    memory from the system, whose first touch costs a page fault every 4 KB (measured: a third of
    fcn's convolution time). Bounded: at most ``max_bytes`` held (a training step's arrays fit;
    scoring batches of a thousand windows are larger and are not kept, so they never pin memory)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.free: dict[tuple, list[np.ndarray]] = {}
        self.held = 0
        self.max_bytes = max_bytes
        self.lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        with self.lock:
            arrays = self.free.get((shape, np.dtype(dtype)))
            if arrays:
                a = arrays.pop()
                self.held -= a.nbytes
                return a
        return np.empty(shape, dtype)

    def give(self, a: np.ndarray) -> None:
        with self.lock:
            if self.held + a.nbytes <= self.max_bytes:
                self.free.setdefault((a.shape, a.dtype), []).append(a)
                self.held += a.nbytes


_SCRATCH = _Scratch()


class _Conv1dProduct(torch.autograd.Function):
    """A 1-d convolution (stride 1) of channels-last windows, (B, T, C) -> (B, T', out), as one matrix
    product: the k shifted copies of the input side by side, zero-padded (B*T', k*C), times the
    kernel (k*C, out); back, the kernel's gradient is one product and the input's one product and
    one compiled pass. Products and passes are pipeline/modeling/kernels.py's (the products: one
    fused multiply-add chain per element, the same bytes on every CPU; on AVX-512 at its width).
    Built on torch ops, autograd gave every shifted slice a zero-filled gradient of the whole input
    and the output a transposed layout that made batch norm and ReLU take slow paths. Channels last, as the windows
    come and the LSTM takes them: no transposing copies around the product."""

    @staticmethod
    def forward(ctx, x, weight, bias, pad: tuple[int, int]):
        xn = x.detach().numpy()
        b, t, c = xn.shape
        out, _, k = weight.shape
        t_out = t + pad[0] + pad[1] - k + 1
        cols = _SCRATCH.take((b * t_out, k * c), xn.dtype)
        kernels.conv_columns(xn, k, pad[0], cols)
        wt = np.ascontiguousarray(weight.detach().numpy().transpose(2, 1, 0)).reshape(k * c, out)  # shift-major
        y = np.empty((b * t_out, out), xn.dtype)
        kernels.matmul(cols, wt, y)
        if bias is not None:
            y += bias.detach().numpy()
        if any(ctx.needs_input_grad):
            ctx.save = (cols, wt, (b, t, c, k, t_out, pad), bias is not None)
        else:  # inference: nothing to keep
            _SCRATCH.give(cols)
        return torch.from_numpy(y.reshape(b, t_out, out))

    @staticmethod
    def backward(ctx, dy):
        if ctx.save is None:  # its columns went back to _SCRATCH after the first backward
            raise RuntimeError("zoo.Conv1d: a second backward through the same graph (retain_graph) is not supported")
        cols, wt, (b, t, c, k, t_out, pad), has_bias = ctx.save
        ctx.save = None
        out = wt.shape[1]
        dyt = np.ascontiguousarray(dy.detach().numpy()).reshape(b * t_out, out)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:  # not for a first layer: the windows need no gradient
            dcols = _SCRATCH.take((b * t_out, k * c), dyt.dtype)
            kernels.matmul(dyt, np.ascontiguousarray(wt.T), dcols)
            dx = np.empty((b, t, c), dyt.dtype)
            kernels.conv_input_grad(dcols, k, pad[0], dx)
            _SCRATCH.give(dcols)
            dx = torch.from_numpy(dx)
        if ctx.needs_input_grad[1]:
            dwt = np.empty((k * c, out), dyt.dtype)  # as wt: (k*C, out)
            kernels.matmul(cols.T, dyt, dwt)
            dw = torch.from_numpy(np.ascontiguousarray(dwt.reshape(k, c, out).transpose(2, 1, 0)))  # (out, C, k)
        if has_bias and ctx.needs_input_grad[2]:
            db = torch.from_numpy(dyt.sum(axis=0))
        _SCRATCH.give(cols)
        return dx, dw, db, None


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` (stride 1, zero padding) computed as one matrix product (:class:`_Conv1dProduct`):
    the product runs on our own CPU-independent kernels, oneDNN's convolutions would not. Same
    parameters and result as ``nn.Conv1d`` up to rounding. The zoo's models call :meth:`channels_last`
    (windows (B, T, C) as they come, no transposes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, out, T'), as ``nn.Conv1d``."""
        return self.channels_last(x.transpose(1, 2), self.padding * 2).transpose(1, 2)

    def channels_last(self, x: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
        """(B, T, C) -> (B, T', out), the time axis zero-padded by ``pad`` (before, after)."""
        if self.stride != (1,) or self.dilation != (1,) or self.groups != 1 or isinstance(self.padding, str):
            raise ValueError("Conv1d supports stride 1, dilation 1, groups 1 and padding given in steps")
        if torch.jit.is_tracing() or torch.jit.is_scripting() or x.device.type != "cpu":
            return self.reference(x, pad)  # export, or a GPU: torch ops
        return _Conv1dProduct.apply(x, self.weight, self.bias, tuple(pad))

    def reference(self, x: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
        """The same convolution from torch ops, channels last (export, GPU, and the tests' reference)."""
        k = self.kernel_size[0]
        xt = nn.functional.pad(x, (0, 0, *pad))  # (B, T + padding, C)
        t_out = xt.shape[1] - k + 1
        cols = torch.cat([xt[:, j : j + t_out] for j in range(k)], dim=2)  # (B, T', k*C), shift-major
        w = self.weight.permute(0, 2, 1).reshape(self.out_channels, -1)  # (out, k*C), same order
        return nn.functional.linear(cols, w, self.bias)  # (B, T', out)


class StackedRNN(nn.Module):
    """``layers`` recurrent layers (pipeline/modeling/recurrent.py: our own kernels, the same bytes on
    every CPU) with :class:`Dropout` between them. Returns the last layer's outputs and final state,
    like a one-layer torch RNN."""

    def __init__(self, cell: str, n_in: int, hidden: int, layers: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        width = hidden * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            Recurrent(cell, n_in if i == 0 else width, hidden, bidirectional) for i in range(layers)
        )
        self.drop = Dropout(dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor):
        for i, layer in enumerate(self.layers):
            x, state = layer(self.drop(x) if i else x)
        return x, state


class _RecurrentClassifier(nn.Module):
    """A recurrent encoder + linear head, reading the last step's hidden (or cell) state."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        window: int,
        cell: str = "lstm",
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.2,
        readout: str = "hidden",
    ) -> None:
        super().__init__()
        self.cell, self.readout, self.bidirectional = cell, readout, bidirectional
        self.rnn = StackedRNN(cell, n_features, hidden, layers, bidirectional, dropout)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F)
        _, state = self.rnn(x)
        h = state[1] if self.readout == "cell" else (state[0] if self.cell == "lstm" else state)  # (L*D, B, H)
        last = torch.cat([h[-2], h[-1]], dim=-1) if self.bidirectional else h[-1]  # (B, H*D)
        return self.head(self.drop(last))


class _AttentionRecurrent(nn.Module):
    """(stacked) (Bi-)LSTM -> optional time-distributed dense -> additive attention -> head."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        window: int,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        pre_layers: int = 0,
        dense: int = 0,
        attn_dim: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.pre = StackedRNN("lstm", n_features, hidden, pre_layers, False, dropout) if pre_layers else None
        d_in = hidden if pre_layers else n_features
        self.rnn = StackedRNN("lstm", d_in, hidden, layers, bidirectional, dropout)
        d = hidden * (2 if bidirectional else 1)
        self.dense = nn.Sequential(nn.Linear(d, dense), nn.Tanh()) if dense else None
        d = dense or d
        self.attn = AdditiveAttention(d, attn_dim)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        # x: (B, T, F)
        h = self.pre(x)[0] if self.pre is not None else x  # (B, T, H)
        h = self.rnn(h)[0]  # (B, T, D)
        if self.dense is not None:
            h = self.dense(h)  # time-distributed: (B, T, dense)
        context, weights = self.attn(h)  # (B, D), (B, T)
        logits = self.head(self.drop(context))
        return (logits, weights) if return_attention else logits


# --- the zoo ---------------------------------------------------------------------------------
def rnn(n_features: int, n_classes: int, window: int, hidden: int = 64, dropout: float = 0.2) -> nn.Module:
    return _RecurrentClassifier(n_features, n_classes, window, cell="rnn", hidden=hidden, dropout=dropout)


def gru(n_features: int, n_classes: int, window: int, hidden: int = 64, dropout: float = 0.2) -> nn.Module:
    return _RecurrentClassifier(n_features, n_classes, window, cell="gru", hidden=hidden, dropout=dropout)


def lstm(n_features: int, n_classes: int, window: int, hidden: int = 64, dropout: float = 0.2) -> nn.Module:
    return _RecurrentClassifier(n_features, n_classes, window, cell="lstm", hidden=hidden, dropout=dropout)


def lstm_state(n_features: int, n_classes: int, window: int, hidden: int = 64, dropout: float = 0.2) -> nn.Module:
    """Classifies from the final CELL state instead of the hidden state."""
    return _RecurrentClassifier(
        n_features, n_classes, window, cell="lstm", readout="cell", hidden=hidden, dropout=dropout
    )


def stacked_lstm(
    n_features: int, n_classes: int, window: int, hidden: int = 64, layers: int = 2, dropout: float = 0.2
) -> nn.Module:
    return _RecurrentClassifier(
        n_features, n_classes, window, cell="lstm", hidden=hidden, layers=layers, dropout=dropout
    )


def bilstm(n_features: int, n_classes: int, window: int, hidden: int = 64, dropout: float = 0.2) -> nn.Module:
    return _RecurrentClassifier(
        n_features, n_classes, window, cell="lstm", bidirectional=True, hidden=hidden, dropout=dropout
    )


def stacked_bilstm(
    n_features: int, n_classes: int, window: int, hidden: int = 64, layers: int = 2, dropout: float = 0.2
) -> nn.Module:
    return _RecurrentClassifier(
        n_features, n_classes, window, cell="lstm", bidirectional=True, hidden=hidden, layers=layers, dropout=dropout
    )


def lstm_attn(
    n_features: int, n_classes: int, window: int, hidden: int = 64, attn_dim: int = 64, dropout: float = 0.2
) -> nn.Module:
    return _AttentionRecurrent(n_features, n_classes, window, hidden=hidden, attn_dim=attn_dim, dropout=dropout)


def bilstm_attn(
    n_features: int, n_classes: int, window: int, hidden: int = 64, attn_dim: int = 64, dropout: float = 0.2
) -> nn.Module:
    return _AttentionRecurrent(
        n_features, n_classes, window, bidirectional=True, hidden=hidden, attn_dim=attn_dim, dropout=dropout
    )


def stacked_bilstm_attn(
    n_features: int,
    n_classes: int,
    window: int,
    hidden: int = 64,
    pre_layers: int = 2,
    dense: int = 64,
    attn_dim: int = 64,
    dropout: float = 0.2,
) -> nn.Module:
    """2 LSTM layers -> Bi-LSTM -> time-distributed dense -> additive attention."""
    return _AttentionRecurrent(
        n_features,
        n_classes,
        window,
        bidirectional=True,
        hidden=hidden,
        pre_layers=pre_layers,
        dense=dense,
        attn_dim=attn_dim,
        dropout=dropout,
    )


class EncoderBlock(nn.Module):
    """A pre-norm self-attention block, as ``nn.TransformerEncoderLayer(norm_first=True)`` (ReLU
    feed-forward, dropout on attention weights and both residual branches) but with explicit
    attention and :class:`Dropout`: torch's layer draws its dropout masks with the vendor-dependent
    ``bernoulli_`` and, at inference, runs a fused fast path with other arithmetic than training."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff1, self.ff2 = nn.Linear(d_model, ff), nn.Linear(ff, d_model)
        self.attn_drop, self.drop1, self.drop2, self.drop_ff = (Dropout(dropout) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        w = torch.softmax((q * (d // self.heads) ** -0.5) @ k.transpose(-1, -2), dim=-1)  # (B, heads, T, T)
        a = (self.attn_drop(w) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop1(self.out(a))
        return x + self.drop2(self.ff2(self.drop_ff(torch.relu(self.ff1(self.norm2(x))))))


class SmallTransformer(nn.Module):
    """Linear embedding + learned positional embedding + self-attention encoder blocks, mean-pooled."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        window: int,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, d_model)
        self.pos = nn.Parameter(torch.zeros(1, window, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.encoder = nn.Sequential(*(EncoderBlock(d_model, heads, ff, dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, F)
        h = self.embed(x) + self.pos[:, : x.shape[1]]  # (B, T, D)
        h = self.encoder(h)  # (B, T, D)
        return self.head(self.norm(h.mean(dim=1)))


class CNNLSTM(nn.Module):
    """Temporal convolutions (local motion patterns) feeding an LSTM."""

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        window: int,
        channels: int = 64,
        kernel: int = 5,
        hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            Conv1d(n_features, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool1d(2),
        )
        self.rnn = Recurrent("lstm", channels, hidden)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, act1, conv2, act2, pool = self.conv  # channels last throughout: x (B, T, F)
        h = act1(conv1.channels_last(x, conv1.padding * 2))
        h = act2(conv2.channels_last(h, conv2.padding * 2))
        (b, t, c), k = h.shape, pool.kernel_size
        h = h[:, : t // k * k].reshape(b, t // k, k, c).amax(2)  # the max pool over time: (B, T/k, C)
        _, (hn, _) = self.rnn(h)
        return self.head(self.drop(hn[-1]))


class FCN(nn.Module):
    """Fully convolutional network (Wang, Yan & Oates 2017): three conv-BN-ReLU blocks with
    kernels 8, 5, 3 and channels c, 2c, c, then global average pooling over time."""

    def __init__(self, n_features: int, n_classes: int, channels: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        widths = (channels, 2 * channels, channels)
        layers: list[nn.Module] = []
        c_in = n_features
        for c, k in zip(widths, (8, 5, 3), strict=True):
            pad = nn.ConstantPad1d(((k - 1) // 2, k // 2), 0.0)  # "same" length, also for the even kernel
            layers += [pad, Conv1d(c_in, c, k, bias=False), nn.BatchNorm1d(c), nn.ReLU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.drop = Dropout(dropout)
        self.head = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, layers = x, list(self.body)  # channels last throughout: x (B, T, F)
        for i in range(0, len(layers), 4):
            pad, conv, bn, act = layers[i : i + 4]
            h = conv.channels_last(h, pad.padding)
            b, t, c = h.shape
            h = act(bn(h.reshape(b * t, c))).reshape(b, t, c)  # batch norm over windows and time
        return self.head(self.drop(h.mean(1)))


def transformer(
    n_features: int,
    n_classes: int,
    window: int,
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    ff: int = 128,
    dropout: float = 0.1,
) -> nn.Module:
    return SmallTransformer(n_features, n_classes, window, d_model, heads, layers, ff, dropout)


def cnn_lstm(
    n_features: int,
    n_classes: int,
    window: int,
    channels: int = 64,
    kernel: int = 5,
    hidden: int = 64,
    dropout: float = 0.2,
) -> nn.Module:
    return CNNLSTM(n_features, n_classes, window, channels, kernel, hidden, dropout)


def fcn(n_features: int, n_classes: int, window: int, channels: int = 128, dropout: float = 0.2) -> nn.Module:
    return FCN(n_features, n_classes, channels, dropout)


def moving_average(window: int, k: int) -> torch.Tensor:
    """(window, window) matrix of a centred moving average over ``k`` steps (shifted inward at the edges)."""
    a = torch.zeros(window, window)
    for t in range(window):
        lo = max(0, t - (k - 1) // 2)
        hi = min(window, lo + k)
        lo = max(0, hi - k)
        a[t, lo:hi] = 1.0 / (hi - lo)
    return a


class ExtraChannels(nn.Module):
    """Any network of the zoo fed extra channels computed from its window (``hparams.<model>``):

    * ``derivatives``: each feature's step-to-step change (the first step's 0). The windows arrive
      z-scored, so a change is in units of the feature's spread: a head turning, the lids closing,
      a hand rising show as a pulse whatever the driver's resting pose;
    * ``scales: [k, ...]``: each feature's moving mean and moving standard deviation over ``k`` steps
      (centred): the level and the unsteadiness of a signal at the time scales given, e.g. a blink
      rate drifting up over half a window, which a network otherwise has to learn to average out.

    (N, T, F) -> ``body`` on (N, T, F * (1 + derivatives + 2 * len(scales))). Inside the model, so
    predict, monitor and export apply it too; the averaging matrices are fixed, not weights."""

    def __init__(self, body: nn.Module, window: int, derivatives: bool = False, scales: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.body = body
        self.derivatives = derivatives
        self.scales = tuple(scales)
        mats = torch.stack([moving_average(window, k) for k in self.scales]) if self.scales else torch.zeros(0)
        self.register_buffer("averages", mats, persistent=False)

    @staticmethod
    def channels(n_features: int, derivatives: bool, scales: tuple[int, ...]) -> int:
        return n_features * (1 + int(derivatives) + 2 * len(scales))

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x]
        if self.derivatives:
            parts.append(torch.diff(x, dim=1, prepend=x[:, :1]))
        for i in range(len(self.scales)):  # a fixed count (traced export: no loop over a tensor)
            a = self.averages[i]
            mean = torch.matmul(a, x)
            var = (torch.matmul(a, x * x) - mean * mean).clamp_min(0.0)
            parts += [mean, (var + 1e-6).sqrt()]  # + 1e-6: a finite gradient where a signal is flat
        return torch.cat(parts, dim=-1)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            return self.body(self.inputs(x), return_attention=True)
        return self.body(self.inputs(x))

    def extra_repr(self) -> str:
        return f"derivatives={self.derivatives}, scales={list(self.scales)}"


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
