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

GATES = {"lstm": 4, "gru": 3, "rnn": 1}


# --- numpy kernels --------------------------------------------------------------------------------
# Layout: (T, D, G, B), steps x directions x gate rows x batch, the reverse direction already flipped
# in time. A step's product is W_hh (D, G, H) @ h (D, H, B); a step's arrays are contiguous blocks.
# Activations come from numpy's own exp (its AVX2 loop on every such CPU; numpy's tanh would call
# the C library, whose tanhf differs between glibc versions and is 4x slower here):
# sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1. The factors -1 and -2 are folded into
# the weights of each gate's rows (scaling by powers of two is exact).
def _sigmoid_of_neg(a: np.ndarray) -> None:
    """a holds -x; becomes sigmoid(x), in place."""
    np.exp(a, out=a)
    a += 1
    np.reciprocal(a, out=a)


def _tanh(a: np.ndarray) -> None:
    """a becomes tanh(a), in place."""
    a *= -2
    _sigmoid_of_neg(a)
    a *= 2
    a -= 1


def _fold(cell: str, hidden: int, dtype) -> np.ndarray:
    """Per gate row (a column): -1 for sigmoid gates, -2 for tanh gates (see above)."""
    sig = {"lstm": (1, 1, 0, 1), "gru": (1, 1, 0), "rnn": (0,)}[cell]
    return np.repeat(np.where(np.array(sig) == 1, -1.0, -2.0), hidden).astype(dtype)[:, None]


def lstm_forward(xw: np.ndarray, w_hh: np.ndarray) -> dict:
    """xw: (T, D, 4H, B) input projections plus both biases; w_hh: (D, 4H, H). Gates i, f, g, o."""
    t_len, d, g4, b = xw.shape
    h = g4 // 4
    fold = _fold("lstm", h, xw.dtype)
    xw, w = xw * fold, w_hh * fold
    hs = np.zeros((t_len + 1, d, h, b), xw.dtype)  # hs[s]: the state before step s
    cs = np.zeros((t_len + 1, d, h, b), xw.dtype)
    acts = np.empty((t_len, d, g4, b), xw.dtype)  # the gates after their activations
    tc = np.empty((t_len, d, h, b), xw.dtype)  # tanh(c)
    ig = np.empty((d, h, b), xw.dtype)
    with np.errstate(over="ignore"):  # exp(large) = inf gives sigmoid 0, as it should
        for s in range(t_len):
            a = acts[s]
            np.matmul(w, hs[s], out=a)
            a += xw[s]
            _sigmoid_of_neg(a)
            g = a[:, 2 * h : 3 * h]
            g *= 2
            g -= 1
            np.multiply(a[:, h : 2 * h], cs[s], out=cs[s + 1])  # f * c
            np.multiply(a[:, :h], g, out=ig)  # i * g
            cs[s + 1] += ig
            tc[s] = cs[s + 1]
            _tanh(tc[s])
            np.multiply(a[:, 3 * h :], tc[s], out=hs[s + 1])
    return {"hs": hs, "cs": cs, "acts": acts, "tc": tc}


def lstm_backward(st: dict, w_hh_t: np.ndarray, dh_out: np.ndarray, dh_n: np.ndarray, dc_n: np.ndarray) -> np.ndarray:
    """d pre-activations (T, D, 4H, B) from the gradients of the outputs (T, D, H, B) and of the final
    states (D, H, B); w_hh_t: (D, H, 4H)."""
    acts, tc, cs = st["acts"], st["tc"], st["cs"]
    t_len, d, g4, b = acts.shape
    h = g4 // 4
    i, f, g, o = (acts[:, :, k * h : (k + 1) * h] for k in range(4))
    k = np.empty((t_len, d, 4, h, b), acts.dtype)  # d pre-activation = dc (i, f, g) or dh (o) times k
    k[:, :, 0] = g * i * (1 - i)
    k[:, :, 1] = cs[:-1] * f * (1 - f)
    k[:, :, 2] = i * (1 - g * g)
    k[:, :, 3] = tc * o * (1 - o)
    oc = o * (1 - tc * tc)  # dc/dh through h = o * tanh(c)
    dg = np.empty((t_len, d, 4, h, b), acts.dtype)
    dh, dc = dh_n.copy(), dc_n.copy()
    tmp = np.empty_like(dh)
    for s in range(t_len - 1, -1, -1):
        dh += dh_out[s]
        np.multiply(dh, oc[s], out=tmp)
        dc += tmp
        np.multiply(dc[:, None], k[s, :, :3], out=dg[s, :, :3])
        np.multiply(dh, k[s, :, 3], out=dg[s, :, 3])
        dc *= f[s]
        np.matmul(w_hh_t, dg[s].reshape(d, g4, b), out=dh)
    return dg.reshape(t_len, d, g4, b)


def gru_forward(xw: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray) -> dict:
    """xw: (T, D, 3H, B) input projections plus the input bias; w_hh: (D, 3H, H); b_hh: (D, 3H).
    Gates r, z, n: n = tanh(xw_n + r * (W_hn h + b_hn)), h' = n + z * (h - n)."""
    t_len, d, g3, b = xw.shape
    h = g3 // 3
    fold = _fold("gru", h, xw.dtype)
    xw = xw * fold
    w, bias = w_hh * fold, b_hh[:, :, None] * fold
    hs = np.zeros((t_len + 1, d, h, b), xw.dtype)
    acts = np.empty((t_len, d, g3, b), xw.dtype)  # r, z, n after their activations
    ghn = np.empty((t_len, d, h, b), xw.dtype)  # -2 (W_hn h + b_hn)
    gh = np.empty((d, g3, b), xw.dtype)
    with np.errstate(over="ignore"):
        for s in range(t_len):
            a = acts[s]
            rz, n = a[:, : 2 * h], a[:, 2 * h :]
            np.matmul(w, hs[s], out=gh)
            gh += bias
            np.add(xw[s, :, : 2 * h], gh[:, : 2 * h], out=rz)
            _sigmoid_of_neg(rz)
            ghn[s] = gh[:, 2 * h :]
            np.multiply(a[:, :h], ghn[s], out=n)
            n += xw[s, :, 2 * h :]
            _sigmoid_of_neg(n)  # n held -2x: now sigmoid(2x)
            n *= 2
            n -= 1
            np.subtract(hs[s], n, out=hs[s + 1])
            hs[s + 1] *= a[:, h : 2 * h]
            hs[s + 1] += n
    ghn *= -0.5
    return {"hs": hs, "acts": acts, "ghn": ghn}


def gru_backward(st: dict, w_hh_t: np.ndarray, dh_out: np.ndarray, dh_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d input projections, d hidden projections), each (T, D, 3H, B)."""
    acts, hs, ghn = st["acts"], st["hs"], st["ghn"]
    t_len, d, g3, b = acts.shape
    h = g3 // 3
    r, z, n = (acts[:, :, k * h : (k + 1) * h] for k in range(3))
    kn = (1 - z) * (1 - n * n)
    kz = (hs[:-1] - n) * z * (1 - z)
    kr = ghn * r * (1 - r)
    dgi = np.empty((t_len, d, g3, b), acts.dtype)
    dgh = np.empty((t_len, d, g3, b), acts.dtype)
    dh = dh_n.copy()
    mm = np.empty_like(dh)
    for s in range(t_len - 1, -1, -1):
        dh += dh_out[s]
        gi, gh = dgi[s], dgh[s]
        np.multiply(dh, kn[s], out=gi[:, 2 * h :])
        np.multiply(dh, kz[s], out=gi[:, h : 2 * h])
        np.multiply(gi[:, 2 * h :], kr[s], out=gi[:, :h])
        gh[:, : 2 * h] = gi[:, : 2 * h]
        np.multiply(gi[:, 2 * h :], r[s], out=gh[:, 2 * h :])
        np.matmul(w_hh_t, gh, out=mm)
        dh *= z[s]
        dh += mm
    return dgi, dgh


def rnn_forward(xw: np.ndarray, w_hh: np.ndarray) -> dict:
    """xw: (T, D, H, B) input projections plus both biases; h' = tanh(xw + W_hh h)."""
    t_len, d, h, b = xw.shape
    xw, w = xw * -2, w_hh * -2
    hs = np.zeros((t_len + 1, d, h, b), xw.dtype)
    with np.errstate(over="ignore"):
        for s in range(t_len):
            out = hs[s + 1]
            np.matmul(w, hs[s], out=out)
            out += xw[s]
            _sigmoid_of_neg(out)
            out *= 2
            out -= 1
    return {"hs": hs}


def rnn_backward(st: dict, w_hh_t: np.ndarray, dh_out: np.ndarray, dh_n: np.ndarray) -> np.ndarray:
    hs = st["hs"]
    k = 1 - hs[1:] * hs[1:]
    dg = np.empty_like(k)
    dh = dh_n.copy()
    for s in range(len(k) - 1, -1, -1):
        dh += dh_out[s]
        np.multiply(dh, k[s], out=dg[s])
        np.matmul(w_hh_t, dg[s], out=dh)
    return dg


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
    """(D, K, B) <-> (D, B, K)."""
    return np.ascontiguousarray(y.transpose(0, 2, 1))


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
        if cell == "gru":
            st = gru_forward(xw, wh, bh)
        else:
            st = lstm_forward(xw, wh) if cell == "lstm" else rnn_forward(xw, wh)
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
        wh_t = _final(wh)
        if ctx.cell == "lstm":
            dgi = dgh = lstm_backward(st, wh_t, dh_out, _final(d_hn.numpy()), _final(d_cn.numpy()))
        elif ctx.cell == "gru":
            dgi, dgh = gru_backward(st, wh_t, dh_out, _final(d_hn.numpy()))
        else:
            dgi = dgh = rnn_backward(st, wh_t, dh_out, _final(d_hn.numpy()))
        gi = _rows(dgi)  # (D, G, T*B)
        gh = gi if dgh is dgi else _rows(dgh)
        b, t_len = dy.shape[:2]
        dx = np.matmul(wi.transpose(0, 2, 1), gi).reshape(d, -1, t_len, b)  # (D, F, T, B)
        dx = dx[0] + dx[1][:, ::-1] if d == 2 else dx[0]
        grads = (
            dx.transpose(2, 1, 0),
            np.matmul(gi, xd.transpose(0, 2, 1)),
            np.matmul(gh, _rows(st["hs"][:-1]).transpose(0, 2, 1)),
            gi.sum(axis=2),
            gh.sum(axis=2),
        )
        return (None, *(torch.from_numpy(np.ascontiguousarray(g)) for g in grads))


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
