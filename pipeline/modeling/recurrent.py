"""Recurrent layers (LSTM, GRU, tanh RNN) whose forward and backward passes are our own numpy code.

torch's CPU recurrent layers run oneDNN kernels, which are generated for the CPU at run time:
their speed and, capped at the instruction sets Intel and AMD share, also their blocking (the
order of the sums) follow the CPU they find. Here every step is one pinned OpenBLAS product
(pipeline/core/cpu.py) and a few numpy element-wise loops (AVX2 on every x86-64 CPU that has it),
so the same seed trains the same bytes on any such CPU. Both directions of a bidirectional layer
advance in the same numpy calls; back-propagation through time is written out (no autograd graph
per step) and the weight gradients are one product over all steps.

Same equations, parameter shapes (stacked over directions) and initialisation as torch's
``nn.LSTM``/``nn.GRU``/``nn.RNN`` with ``batch_first=True``; tests/test_recurrent.py checks the
values and gradients against them. Under ``torch.jit.trace`` (``driver-pipeline export``) a
plain torch loop with the same parameters runs instead, so the exported file needs nothing but
LibTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pipeline.modeling import kernels

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _forward(cell: str, xw: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray) -> dict:
    """Every step of a layer (pipeline/modeling/kernels.py). xw: (T, D, G, B) input projections plus
    the biases (GRU: the input bias only); w_hh: (D, G, H). Returns what back-propagation needs;
    the states ``hs`` (T+1, D, H, B) start with the zero initial state."""
    t_len, d, _, b = xw.shape
    h = w_hh.shape[-1]
    st = {"hs": np.zeros((t_len + 1, d, h, b), xw.dtype)}
    if cell == "lstm":
        st["cs"], st["acts"] = np.zeros_like(st["hs"]), np.empty_like(xw)
        st["tc"] = np.empty((t_len, d, h, b), xw.dtype)
        kernels.lstm_forward(xw, w_hh, st["hs"], st["cs"], st["acts"], st["tc"])
    elif cell == "gru":
        st["acts"], st["ghn"] = np.empty_like(xw), np.empty((t_len, d, h, b), xw.dtype)
        kernels.gru_forward(xw, w_hh, b_hh, st["hs"], st["acts"], st["ghn"])
    else:
        kernels.rnn_forward(xw, w_hh, st["hs"])
    return st


def _backward(cell: str, st: dict, w_hh: np.ndarray, dh_out: np.ndarray, dh_n: np.ndarray, dc_n) -> tuple:
    """(d input projections, d hidden projections), each (T, D, G, B), from the gradients of the
    outputs (T, D, H, B) and of the final states (D, H, B, new arrays: overwritten); one array for
    both but in the GRU."""
    if cell == "lstm":
        dg = np.empty_like(st["acts"])
        kernels.lstm_backward(w_hh, st["acts"], st["cs"], st["tc"], dh_out, dh_n, dc_n, dg)
        return dg, dg
    if cell == "gru":
        dgi, dgh = np.empty_like(st["acts"]), np.empty_like(st["acts"])
        kernels.gru_backward(w_hh, st["acts"], st["hs"], st["ghn"], dh_out, dh_n, dgi, dgh)
        return dgi, dgh
    dg = np.empty_like(dh_out)
    kernels.rnn_backward(w_hh, st["hs"], dh_out, dh_n, dg)
    return dg, dg


def _steps(y: np.ndarray, directions: int) -> np.ndarray:
    """(B, T, K) -> (T, D, K, B), the reverse direction flipped in time."""
    yt = y.transpose(1, 2, 0)
    return np.ascontiguousarray(np.stack([yt, yt[::-1]][:directions], axis=1))


def _batch_first(y: np.ndarray) -> np.ndarray:
    """(T, D, K, B) -> (B, T, D*K), the reverse direction flipped back."""
    parts = [y[:, 0]] + ([y[::-1, 1]] if y.shape[1] == 2 else [])
    return np.ascontiguousarray(np.concatenate(parts, axis=1).transpose(2, 0, 1))


def _rows(y: np.ndarray) -> np.ndarray:
    """(T, D, K, B) -> (D, K, T*B): every step and window as one column."""
    t_len, d, k, b = y.shape
    return np.ascontiguousarray(y.transpose(1, 2, 0, 3)).reshape(d, k, t_len * b)


def _final(y: np.ndarray) -> np.ndarray:
    """(D, K, B) <-> (D, B, K), always a new array (the backward kernels overwrite theirs)."""
    return np.array(y.transpose(0, 2, 1), order="C")


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell: str, x, w_ih, w_hh, b_ih, b_hh):
        n = lambda t: t.detach().contiguous().numpy()  # noqa: E731
        wi, wh, bi, bh = n(w_ih), n(w_hh), n(b_ih), n(b_hh)
        d, (b, t_len) = wi.shape[0], x.shape[:2]
        xd = _rows(_steps(n(x), d))  # (D, F, T*B)
        xw = np.matmul(wi, xd)  # (D, G, T*B): one product for every step
        xw += bi[:, :, None]
        if cell != "gru":
            xw += bh[:, :, None]
        xw = np.ascontiguousarray(xw.reshape(d, -1, t_len, b).transpose(2, 0, 1, 3))  # (T, D, G, B)
        st = _forward(cell, xw, wh, bh)
        ctx.cell, ctx.state, ctx.xd, ctx.w = cell, st, xd, (wi, wh)
        hs = st["hs"]
        outs = [torch.from_numpy(_batch_first(hs[1:])), torch.from_numpy(_final(hs[-1]))]
        if cell == "lstm":
            outs.append(torch.from_numpy(_final(st["cs"][-1])))
        return tuple(outs)

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn=None):
        st, xd, (wi, wh) = ctx.state, ctx.xd, ctx.w
        d, h = wi.shape[0], wh.shape[-1]
        dy = d_out.detach().numpy()  # (B, T, D*H)
        dh_out = _steps(dy[..., :h], 1)
        if d == 2:
            dh_out = np.concatenate([dh_out, _steps(dy[..., h:], 2)[:, 1:]], axis=1)
        dc_n = _final(d_cn.numpy()) if ctx.cell == "lstm" else None
        dgi, dgh = _backward(ctx.cell, st, wh, np.ascontiguousarray(dh_out), _final(d_hn.numpy()), dc_n)
        gi = _rows(dgi)  # (D, G, T*B)
        gh = gi if dgh is dgi else _rows(dgh)
        b, t_len = dy.shape[:2]
        dx = None
        if ctx.needs_input_grad[1]:  # not for a first layer: the windows need no gradient
            dx = np.matmul(wi.transpose(0, 2, 1), gi).reshape(d, -1, t_len, b)  # (D, F, T, B)
            dx = (dx[0] + dx[1][:, ::-1] if d == 2 else dx[0]).transpose(2, 1, 0)
        grads = (
            dx,
            np.matmul(gi, xd.transpose(0, 2, 1)),
            np.matmul(gh, _rows(st["hs"][:-1]).transpose(0, 2, 1)),
            gi.sum(axis=2),
            gh.sum(axis=2),
        )
        return (None, *(None if g is None else torch.from_numpy(np.ascontiguousarray(g)) for g in grads))


class Recurrent(nn.Module):
    """One recurrent layer over (B, T, F), batch first: like ``nn.LSTM``/``nn.GRU``/``nn.RNN``
    (one layer, zero initial state). Returns ``(outputs (B, T, D*H), state)`` with state
    ``h_n`` (D, B, H), or ``(h_n, c_n)`` for the LSTM, D = 2 when bidirectional."""

    def __init__(self, cell: str, n_in: int, hidden: int, bidirectional: bool = False) -> None:
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"unknown recurrent cell '{cell}' (one of {', '.join(GATES)})")
        self.cell, self.hidden, self.directions = cell, hidden, 2 if bidirectional else 1
        g = GATES[cell] * hidden
        self.weight_ih = nn.Parameter(torch.empty(self.directions, g, n_in))
        self.weight_hh = nn.Parameter(torch.empty(self.directions, g, hidden))
        self.bias_ih = nn.Parameter(torch.empty(self.directions, g))
        self.bias_hh = nn.Parameter(torch.empty(self.directions, g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden)  # as torch's recurrent layers
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        n_in = self.weight_ih.shape[-1]
        return f"{self.cell}, {n_in}, {self.hidden}, bidirectional={self.directions == 2}"

    def forward(self, x: torch.Tensor):
        if torch.jit.is_tracing() or torch.jit.is_scripting() or x.device.type != "cpu":
            return self.reference(x)  # export, or a GPU (train.device): the plain torch loop
        outs = _Recurrence.apply(self.cell, x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return outs[0], (outs[1], outs[2]) if self.cell == "lstm" else outs[1]

    def reference(self, x: torch.Tensor):
        """The same layer as a plain torch loop (for export, and as the tests' reference)."""
        h_all, finals = [], []
        for d in range(self.directions):
            seq = x if d == 0 else x.flip(1)
            xw = seq @ self.weight_ih[d].T + self.bias_ih[d]
            h = x.new_zeros(x.shape[0], self.hidden)
            c = h
            steps = []
            for t in range(x.shape[1]):
                gh = h @ self.weight_hh[d].T + self.bias_hh[d]
                if self.cell == "lstm":
                    i, f, g, o = (xw[:, t] + gh).chunk(4, dim=-1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                elif self.cell == "gru":
                    xr, xz, xn = xw[:, t].chunk(3, dim=-1)
                    hr, hz, hn = gh.chunk(3, dim=-1)
                    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                    n = torch.tanh(xn + r * hn)
                    h = n + z * (h - n)
                else:
                    h = torch.tanh(xw[:, t] + gh)
                steps.append(h)
            y = torch.stack(steps, dim=1)
            h_all.append(y if d == 0 else y.flip(1))
            finals.append((h, c))
        out = torch.cat(h_all, dim=-1)
        h_n = torch.stack([f[0] for f in finals])
        return out, (h_n, torch.stack([f[1] for f in finals])) if self.cell == "lstm" else h_n
