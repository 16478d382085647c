"""Recurrent layers (LSTM, GRU, tanh RNN) whose forward and backward passes are our own code.

torch's CPU recurrent layers run oneDNN kernels, which are generated for the CPU at run time:
their speed and, capped at the instruction sets Intel and AMD share, also their blocking (the
order of the sums) follow the CPU they find. Here the input projections of every step are one
product (pipeline/modeling/kernels.matmul: the same bytes on every CPU), the time loops compiled
code that sums in one fixed order (pipeline/modeling/kernels.py: forward, and back-propagation
through time without an autograd graph per step), and the weight gradients one product over all
steps; so the same seed trains the same bytes on any such CPU. The arrays stay batch first, as
torch hands them over: no layout copies.

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


def _forward(cell: str, xa: np.ndarray, wh: np.ndarray, bi: np.ndarray, bh: np.ndarray) -> tuple[np.ndarray, dict]:
    """Every step of a layer (pipeline/modeling/kernels.py). xa (B, T, D, G): the input projections
    (overwritten with the activations); wh (D, G, H); bi, bh (D, G). Returns the outputs (B, T, D*H)
    and what back-propagation and the caller need: the start states ``hp`` (B, T, D, H) of every step,
    the final states ``h_n`` (and ``c_n``) (D, B, H)."""
    b, t_len, d, _ = xa.shape
    h = wh.shape[-1]
    wt = np.ascontiguousarray(wh.transpose(0, 2, 1))  # (D, H, G): the rows the compiled product sweeps
    out = np.empty((b, t_len, d * h), xa.dtype)
    st = {"acts": xa, "hp": np.empty((b, t_len, d, h), xa.dtype), "h_n": np.empty((d, b, h), xa.dtype)}
    if cell == "lstm":
        st["cp"], st["tc"], st["c_n"] = np.empty_like(st["hp"]), np.empty_like(st["hp"]), np.empty_like(st["h_n"])
        kernels.lstm_forward(xa, bi + bh, wt, out, st["hp"], st["cp"], st["tc"], st["h_n"], st["c_n"])
    elif cell == "gru":
        st["ghn"] = np.empty_like(st["hp"])
        kernels.gru_forward(xa, bi, bh, wt, out, st["hp"], st["ghn"], st["h_n"])
    else:
        kernels.rnn_forward(xa, bi + bh, wt, out, st["hp"], st["h_n"])
        st["out"] = out.copy()  # the caller may change the returned outputs
    return out, st


def _backward(cell: str, st: dict, wh: np.ndarray, dy: np.ndarray, dh: np.ndarray, dc) -> tuple:
    """(d input projections, d hidden projections), each (B, T, D, G), from the gradients of the
    outputs (B, T, D*H) and of the final states (D, B, H; new arrays: overwritten); one array for
    both but in the GRU."""
    acts = st["acts"]
    if cell == "lstm":
        dg = np.empty_like(acts)
        kernels.lstm_backward(wh, acts, st["cp"], st["tc"], dy, dh, dc, dg)
        return dg, dg
    if cell == "gru":
        dgi, dgh = np.empty_like(acts), np.empty_like(acts)
        kernels.gru_backward(wh, acts, st["hp"], st["ghn"], dy, dh, dgi, dgh)
        return dgi, dgh
    dg = np.empty_like(acts)
    kernels.rnn_backward(wh, st["out"], dy, dh, dg)
    return dg, dg


def _rows(y: np.ndarray, d: int) -> np.ndarray:
    """Direction d of (B, T, D, K) as (B*T, K) rows: a view (row stride D*K), no copy."""
    b, t_len, _, k = y.shape
    return y[:, :, d].reshape(b * t_len, k)


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cell: str, x, w_ih, w_hh, b_ih, b_hh):
        n = lambda t: t.detach().contiguous().numpy()  # noqa: E731
        wi, wh, bi, bh = n(w_ih), n(w_hh), n(b_ih), n(b_hh)
        (d, g, f), (b, t_len) = wi.shape, x.shape[:2]
        x2 = n(x).reshape(b * t_len, f)
        xa = kernels.product(x2, wi.reshape(d * g, f).T).reshape(b, t_len, d, g)  # one product for every step
        out, st = _forward(cell, xa, wh, bi, bh)
        ctx.save_for_backward(x)  # for the weight gradient; autograd refuses it if x is changed in place
        ctx.cell, ctx.state, ctx.w = cell, st, (wi, wh)
        outs = [torch.from_numpy(out), torch.from_numpy(st["h_n"])]
        if cell == "lstm":
            outs.append(torch.from_numpy(st["c_n"]))
        return tuple(outs)

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn=None):
        st, (wi, wh) = ctx.state, ctx.w
        d, g, f = wi.shape
        dy = np.ascontiguousarray(d_out.detach().numpy())  # (B, T, D*H)
        b, t_len = dy.shape[:2]
        x2 = ctx.saved_tensors[0].detach().contiguous().numpy().reshape(b * t_len, f)
        dc = np.array(d_cn.numpy()) if ctx.cell == "lstm" else None  # copies: the kernels overwrite them
        dgi, dgh = _backward(ctx.cell, st, wh, dy, np.array(d_hn.numpy()), dc)
        gi = dgi.reshape(b * t_len, d * g)
        dx = None
        if ctx.needs_input_grad[1]:  # not for a first layer: the windows need no gradient
            dx = kernels.product(gi, wi.reshape(d * g, f)).reshape(b, t_len, f)
        db_ih = gi.sum(axis=0).reshape(d, g)  # LSTM, RNN: also the hidden bias's (a copy: clipping scales in place)
        grads = (
            dx,
            kernels.product(gi.T, x2).reshape(d, g, f),
            np.stack([kernels.product(_rows(dgh, k).T, _rows(st["hp"], k)) for k in range(d)]),
            db_ih,
            db_ih.copy() if dgh is dgi else dgh.reshape(b * t_len, d * g).sum(axis=0).reshape(d, g),
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
