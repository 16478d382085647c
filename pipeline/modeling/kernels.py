"""Compiled time loops of the recurrent layers (pipeline/modeling/recurrent.py): one call runs
every step of a layer's forward pass, one call its back-propagation through time; and the zoo's
convolution (pipeline/modeling/zoo.py): its matrix products (:func:`matmul`) and passes.

The same bytes on every x86-64 CPU because nothing here depends on the CPU it runs on:

* no ``fastmath``: LLVM keeps every sum in the order written and contracts no product, whatever
  the target numba compiles for (AVX2 or AVX-512 vectors: ``NUMBA_CPU_NAME``, pipeline/core/cpu.py);
  a loop vectorised 8 or 16 wide computes each element with the same operations;
* products are written out as chains of fused multiply-adds (``llvm.fma``: one rounding, by
  IEEE 754 the same result on every CPU with FMA), summed in a fixed order;
* ``exp`` is our own (range reduction + a polynomial, both in fused multiply-adds; ``2**n`` set
  in the exponent bits), not the C library's (glibc's ``expf`` differs between releases and
  picks an FMA or non-FMA variant by CPU) nor numpy's (an AVX2 or AVX-512 loop by CPU).
  Accurate to about 1 unit in the last place in float32 and float64;
* sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 sigmoid(2x) - 1.

Layout: batch first, as torch hands the windows over (below, before the LSTM). Gate order as torch:
LSTM i, f, g, o; GRU r, z, n. Replaces ~17 numpy calls per step, whose call overhead dominated at the
zoo's sizes (batch 32, hidden 32), and the layout copies around them.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from pipeline.core.cpu import NUMBA_AVX512

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma: the FMA instruction). Compiled for baseline x86-64 (a CPU
    without AVX2/FMA, where the pipeline's bytes differ anyway: pipeline/core/cpu.py), a multiply
    and an add instead: LLVM would call the C library's software fmaf, 18x slower."""
    if isinstance(a, types.Float) and a == b == c:

        def codegen(context, builder, sig, args):
            if config.CPU_NAME == "generic":
                return builder.fadd(builder.fmul(args[0], args[1]), args[2])
            return builder.fma(*args)

        return a(a, b, c), codegen
    return None


@intrinsic
def _bits(typingctx, x):
    """The bits of a float as the integer of its width."""
    if x in (types.float32, types.float64):
        it = types.int32 if x == types.float32 else types.int64

        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(it))

        return it(x), codegen
    return None


@intrinsic
def _float(typingctx, i, like):
    """Integer bits (cut to the float's width: numba widens int32 arithmetic to int64) -> the float
    of ``like``'s type."""
    if isinstance(i, types.Integer) and like in (types.float32, types.float64):

        def codegen(context, builder, sig, args):
            width = ir.IntType(like.bitwidth)
            v = args[0]
            if i.bitwidth > like.bitwidth:
                v = builder.trunc(v, width)
            elif i.bitwidth < like.bitwidth:
                v = builder.sext(v, width)
            return builder.bitcast(v, context.get_value_type(like))

        return like(i, like), codegen
    return None


def exp(x):  # pragma: no cover - compiled through the overload below
    raise NotImplementedError("compiled only")


def _exp_consts(dtype) -> tuple:
    f = np.dtype(dtype).type
    ln2_hi = f(np.log(2.0))
    ln2_lo = f(np.log(2.0) - np.float64(ln2_hi))
    if f is np.float32:  # |x| range keeps 2**n a normal number; Taylor terms to r**7 (|r| <= ln2 / 2)
        mant, bias, lo, hi, terms = 23, 127, -87.0, 88.0, 8
    else:
        mant, bias, lo, hi, terms = 52, 1023, -708.0, 709.0, 14
    coef = tuple(f(1.0 / np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(terms))
    magic = f(1.5 * 2.0**mant)  # x / ln2 + magic rounds to an integer, kept in the low bits
    return f(lo), f(hi), f(1.0 / np.log(2.0)), magic, ln2_hi, ln2_lo, coef[::-1], mant, bias


def _horner(coef: tuple):
    """A compiled polynomial, highest power first, written out (no loop for numba to keep)."""
    c = coef
    if len(c) == 8:  # float32

        def poly(r):
            p = fma(fma(fma(c[0], r, c[1]), r, c[2]), r, c[3])
            return fma(fma(fma(fma(p, r, c[4]), r, c[5]), r, c[6]), r, c[7])

    else:

        def poly(r):
            p = fma(fma(fma(fma(fma(c[0], r, c[1]), r, c[2]), r, c[3]), r, c[4]), r, c[5])
            p = fma(fma(fma(fma(p, r, c[6]), r, c[7]), r, c[8]), r, c[9])
            return fma(fma(fma(fma(p, r, c[10]), r, c[11]), r, c[12]), r, c[13])

    return njit(inline="always")(poly)


_POLY = {}


@overload(exp, inline="always")
def _exp_impl(x):
    if x not in (types.float32, types.float64):
        return None
    dtype = np.float32 if x == types.float32 else np.float64
    lo, hi, log2e, magic, ln2_hi, ln2_lo, coef, mant, bias = _exp_consts(dtype)
    poly = _POLY.setdefault(dtype, _horner(coef))
    it = np.int32 if x == types.float32 else np.int64
    magic_bits = int(np.array(magic).view(it))

    def impl(x):
        x = max(min(x, hi), lo)
        t = fma(x, log2e, magic)
        n = t - magic  # round(x / ln2), exactly
        r = fma(-n, ln2_hi, x)
        r = fma(-n, ln2_lo, r)
        k = _bits(t) - it(magic_bits)
        return poly(r) * _float((k + it(bias)) << it(mant), x)

    return impl


# numba computes ``1 - x`` with an integer literal in float64 even for a float32 x: every constant
# below is typed like the data (``one``).
@njit(inline="always")
def sigmoid(x, one):
    return one / (one + exp(-x))


@njit(inline="always")
def tanh(x, one):
    two = one + one
    return two / (one + exp(-two * x)) - one


@njit(inline="always")
def _product(w, src, s0, s1, dst, r0, r1, pair: bool, acc: bool):
    """dst[r] (+)= sum over k of src[s + (k,)] * w[k], for the rows (s, r) = (s0, r0) and, if ``pair``,
    (s1, r1) too (s, r: index tuples of a row): k in order, one rounding per term. Sweeps of four
    terms: an element is loaded and stored once per four terms, and two windows share each load of w.
    The loop over w's columns is what the compiler vectorises; every element's sum is the same chain
    whatever the vector width."""
    k_n, g_n = w.shape
    if not acc:
        for g in range(g_n):
            dst[r0 + (g,)] = 0
        if pair:
            for g in range(g_n):
                dst[r1 + (g,)] = 0
    k = 0
    if pair:
        while k + 4 <= k_n:
            a0, a1, a2, a3 = src[s0 + (k,)], src[s0 + (k + 1,)], src[s0 + (k + 2,)], src[s0 + (k + 3,)]
            c0, c1, c2, c3 = src[s1 + (k,)], src[s1 + (k + 1,)], src[s1 + (k + 2,)], src[s1 + (k + 3,)]
            for g in range(g_n):
                w0, w1, w2, w3 = w[k, g], w[k + 1, g], w[k + 2, g], w[k + 3, g]
                dst[r0 + (g,)] = fma(a3, w3, fma(a2, w2, fma(a1, w1, fma(a0, w0, dst[r0 + (g,)]))))
                dst[r1 + (g,)] = fma(c3, w3, fma(c2, w2, fma(c1, w1, fma(c0, w0, dst[r1 + (g,)]))))
            k += 4
        while k < k_n:
            ak, ck = src[s0 + (k,)], src[s1 + (k,)]
            for g in range(g_n):
                dst[r0 + (g,)] = fma(ak, w[k, g], dst[r0 + (g,)])
                dst[r1 + (g,)] = fma(ck, w[k, g], dst[r1 + (g,)])
            k += 1
    else:
        while k + 4 <= k_n:
            a0, a1, a2, a3 = src[s0 + (k,)], src[s0 + (k + 1,)], src[s0 + (k + 2,)], src[s0 + (k + 3,)]
            for g in range(g_n):
                v = fma(a1, w[k + 1, g], fma(a0, w[k, g], dst[r0 + (g,)]))
                dst[r0 + (g,)] = fma(a3, w[k + 3, g], fma(a2, w[k + 2, g], v))
            k += 4
        while k < k_n:
            ak = src[s0 + (k,)]
            for g in range(g_n):
                dst[r0 + (g,)] = fma(ak, w[k, g], dst[r0 + (g,)])
            k += 1


# Layout: the one torch hands over and takes back, batch first: (B, T, D, X) = windows x time x
# directions x (gate rows or hidden units), time in the window's order; direction 1 runs it backwards
# (its step s is time T-1-s). The input projections of every step are one product before these loops
# and the weight gradients one product after them (pipeline/modeling/recurrent.py), on the rows (b, t)
# of these arrays without a copy. One window's recurrence does not depend on another's: windows run
# two at a time (``_pairs``) through all their steps. The loops index whole arrays: a view per step
# costs reference counting that took as long as the arithmetic.
@njit(inline="always")
def _time(d, s, t_n):
    return s if d == 0 else t_n - 1 - s


@njit(inline="always")
def _pairs(b_n):
    """(first window, windows in this group: 2, or 1 for the last of an odd batch)."""
    return [(b0, min(2, b_n - b0)) for b0 in range(0, b_n, 2)]


# --- LSTM: i, f, g, o ---------------------------------------------------------------------------------
@njit(**_JIT)
def lstm_forward(xa, bias, wt, out, hp, cp, tc, h_fin, c_fin):
    """xa (B, T, D, 4H): the input projections x W_ih^T, overwritten with the gates after their
    activations; bias (D, 4H): b_ih + b_hh; wt (D, H, 4H): W_hh transposed. Fills out (B, T, D*H): the
    outputs; hp, cp (B, T, D, H): the hidden and cell state each step starts from; tc (B, T, D, H):
    tanh(c); h_fin, c_fin (D, B, H): the final states."""
    one = xa.dtype.type(1)
    b_n, t_n, d_n, g_n = xa.shape
    h_n = g_n // 4
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for b in range(b0, b0 + nb):
                for j in range(h_n):
                    hp[b, _time(d, 0, t_n), d, j] = 0
                    cp[b, _time(d, 0, t_n), d, j] = 0
            for s in range(t_n):
                t, tn, last = _time(d, s, t_n), _time(d, s + 1, t_n), s + 1 == t_n
                for b in range(b0, b0 + nb):
                    for g in range(g_n):
                        xa[b, t, d, g] += bias[d, g]
                i0, i1 = (b0, t, d), (b0 + nb - 1, t, d)
                _product(wt[d], hp, i0, i1, xa, i0, i1, nb == 2, True)
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        i = sigmoid(xa[b, t, d, j], one)
                        f = sigmoid(xa[b, t, d, h_n + j], one)
                        g = tanh(xa[b, t, d, 2 * h_n + j], one)
                        o = sigmoid(xa[b, t, d, 3 * h_n + j], one)
                        c = fma(f, cp[b, t, d, j], i * g)
                        th = tanh(c, one)
                        xa[b, t, d, j], xa[b, t, d, h_n + j], xa[b, t, d, 2 * h_n + j] = i, f, g
                        xa[b, t, d, 3 * h_n + j] = o
                        tc[b, t, d, j] = th
                        out[b, t, d * h_n + j] = o * th
                        if last:
                            c_fin[d, b, j], h_fin[d, b, j] = c, o * th
                        else:
                            cp[b, tn, d, j], hp[b, tn, d, j] = c, o * th


@njit(**_JIT)
def lstm_backward(w, acts, cp, tc, dy, dh, dc, dg):
    """Back-propagation through time. w (D, 4H, H): W_hh; dy (B, T, D*H): the gradients of the
    outputs; dh, dc (D, B, H): of the final states, on entry (overwritten). Fills dg (B, T, D, 4H): the
    gradients of the gate pre-activations."""
    one = acts.dtype.type(1)
    b_n, t_n, d_n, g_n = acts.shape
    h_n = g_n // 4
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for s in range(t_n - 1, -1, -1):
                t = _time(d, s, t_n)
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        i, f = acts[b, t, d, j], acts[b, t, d, h_n + j]
                        g, o = acts[b, t, d, 2 * h_n + j], acts[b, t, d, 3 * h_n + j]
                        th = tc[b, t, d, j]
                        dhb = dh[d, b, j] + dy[b, t, d * h_n + j]
                        dcb = fma(dhb, o * (one - th * th), dc[d, b, j])
                        dg[b, t, d, j] = dcb * (g * i * (one - i))
                        dg[b, t, d, h_n + j] = dcb * (cp[b, t, d, j] * f * (one - f))
                        dg[b, t, d, 2 * h_n + j] = dcb * (i * (one - g * g))
                        dg[b, t, d, 3 * h_n + j] = dhb * (th * o * (one - o))
                        dc[d, b, j] = dcb * f
                _product(w[d], dg, (b0, t, d), (b0 + nb - 1, t, d), dh, (d, b0), (d, b0 + nb - 1), nb == 2, False)


# --- GRU: r, z, n --------------------------------------------------------------------------------------
@njit(**_JIT)
def gru_forward(xa, b_ih, b_hh, wt, out, hp, ghn, h_fin):
    """xa (B, T, D, 3H): the input projections x W_ih^T, overwritten with r, z, n; b_ih, b_hh (D, 3H);
    wt (D, H, 3H): W_hh transposed. n = tanh(x_n + b_in + r * (W_hn h + b_hn)), h' = n + z * (h - n).
    Fills out (B, T, D*H); hp (B, T, D, H): the state each step starts from; ghn (B, T, D, H):
    W_hn h + b_hn; h_fin (D, B, H): the final state."""
    one = xa.dtype.type(1)
    b_n, t_n, d_n, g_n = xa.shape
    h_n = g_n // 3
    gh = np.empty((2, g_n), xa.dtype)  # W_hh h + b_hh of the two windows
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for b in range(b0, b0 + nb):
                for j in range(h_n):
                    hp[b, _time(d, 0, t_n), d, j] = 0
            for s in range(t_n):
                t, tn, last = _time(d, s, t_n), _time(d, s + 1, t_n), s + 1 == t_n
                for b in range(b0, b0 + nb):
                    for g in range(g_n):
                        xa[b, t, d, g] += b_ih[d, g]
                        gh[b - b0, g] = b_hh[d, g]
                _product(wt[d], hp, (b0, t, d), (b0 + nb - 1, t, d), gh, (0,), (nb - 1,), nb == 2, True)
                for b in range(b0, b0 + nb):
                    k = b - b0
                    for j in range(h_n):
                        r = sigmoid(xa[b, t, d, j] + gh[k, j], one)
                        z = sigmoid(xa[b, t, d, h_n + j] + gh[k, h_n + j], one)
                        hn = gh[k, 2 * h_n + j]
                        n = tanh(fma(r, hn, xa[b, t, d, 2 * h_n + j]), one)
                        xa[b, t, d, j], xa[b, t, d, h_n + j], xa[b, t, d, 2 * h_n + j] = r, z, n
                        ghn[b, t, d, j] = hn
                        h = fma(z, hp[b, t, d, j] - n, n)
                        out[b, t, d * h_n + j] = h
                        if last:
                            h_fin[d, b, j] = h
                        else:
                            hp[b, tn, d, j] = h


@njit(**_JIT)
def gru_backward(w, acts, hp, ghn, dy, dh, dgi, dgh):
    """w (D, 3H, H): W_hh; dh (D, B, H): the gradient of the final state on entry (overwritten). Fills
    dgi, dgh (B, T, D, 3H): the gradients of the input and hidden projections."""
    one = acts.dtype.type(1)
    b_n, t_n, d_n, g_n = acts.shape
    h_n = g_n // 3
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for s in range(t_n - 1, -1, -1):
                t = _time(d, s, t_n)
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        r, z, n = acts[b, t, d, j], acts[b, t, d, h_n + j], acts[b, t, d, 2 * h_n + j]
                        dhb = dh[d, b, j] + dy[b, t, d * h_n + j]
                        dn = dhb * ((one - z) * (one - n * n))
                        dz = dhb * ((hp[b, t, d, j] - n) * z * (one - z))
                        dr = dn * (ghn[b, t, d, j] * r * (one - r))
                        dgi[b, t, d, j], dgi[b, t, d, h_n + j], dgi[b, t, d, 2 * h_n + j] = dr, dz, dn
                        dgh[b, t, d, j], dgh[b, t, d, h_n + j], dgh[b, t, d, 2 * h_n + j] = dr, dz, dn * r
                        dh[d, b, j] = dhb * z
                _product(w[d], dgh, (b0, t, d), (b0 + nb - 1, t, d), dh, (d, b0), (d, b0 + nb - 1), nb == 2, True)


# --- tanh RNN -----------------------------------------------------------------------------------------
@njit(**_JIT)
def rnn_forward(xa, bias, wt, out, hp, h_fin):
    """xa (B, T, D, H): the input projections x W_ih^T (overwritten); bias (D, H): b_ih + b_hh;
    wt (D, H, H): W_hh transposed. h' = tanh(x W_ih^T + bias + W_hh h). Fills out (B, T, D*H);
    hp (B, T, D, H): the state each step starts from; h_fin (D, B, H): the final state."""
    one = xa.dtype.type(1)
    b_n, t_n, d_n, h_n = xa.shape
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for b in range(b0, b0 + nb):
                for j in range(h_n):
                    hp[b, _time(d, 0, t_n), d, j] = 0
            for s in range(t_n):
                t, tn, last = _time(d, s, t_n), _time(d, s + 1, t_n), s + 1 == t_n
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        xa[b, t, d, j] += bias[d, j]
                i0, i1 = (b0, t, d), (b0 + nb - 1, t, d)
                _product(wt[d], hp, i0, i1, xa, i0, i1, nb == 2, True)
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        h = tanh(xa[b, t, d, j], one)
                        out[b, t, d * h_n + j] = h
                        if last:
                            h_fin[d, b, j] = h
                        else:
                            hp[b, tn, d, j] = h


@njit(**_JIT)
def rnn_backward(w, out, dy, dh, dg):
    """w (D, H, H): W_hh; out (B, T, D*H): the outputs; dh (D, B, H): the gradient of the final state
    on entry (overwritten). Fills dg (B, T, D, H)."""
    one = dg.dtype.type(1)
    b_n, t_n, d_n, h_n = dg.shape
    for d in range(d_n):
        for b0, nb in _pairs(b_n):
            for s in range(t_n - 1, -1, -1):
                t = _time(d, s, t_n)
                for b in range(b0, b0 + nb):
                    for j in range(h_n):
                        y = out[b, t, d * h_n + j]
                        dg[b, t, d, j] = (dh[d, b, j] + dy[b, t, d * h_n + j]) * (one - y * y)
                _product(w[d], dg, (b0, t, d), (b0 + nb - 1, t, d), dh, (d, b0), (d, b0 + nb - 1), nb == 2, False)


# --- convolution (pipeline/modeling/zoo.py: _Conv1dProduct) ------------------------------------------
@njit(**_JIT)
def conv_input_grad(dcols, k_n, pad, dx):
    """The input gradient of a 1-d convolution from the gradient of its shifted copies: dx (B, T, C),
    dx[b, t, c] = sum over shifts j (in order) of dcols[b * T' + t + pad - j, j * C + c], for the rows
    inside the output (T' of them per window). dcols (B*T', k*C). One pass instead of k slice
    additions over the whole input."""
    b_n, t_n, c_n = dx.shape
    t_out = dcols.shape[0] // b_n
    for b in range(b_n):
        for t in range(t_n):
            for c in range(c_n):
                dx[b, t, c] = 0
            for j in range(k_n):
                tp = t + pad - j
                if 0 <= tp < t_out:
                    r = b * t_out + tp
                    for c in range(c_n):
                        dx[b, t, c] += dcols[r, j * c_n + c]


@njit(**_JIT)
def conv_columns(x, k_n, pad, cols):
    """The k shifted copies of the windows side by side, zero-padded: cols (B*T', k*C),
    cols[b * T' + t, j * C + c] = x[b, t + j - pad, c] (0 outside the window). x (B, T, C)."""
    b_n, t_n, c_n = x.shape
    t_out = cols.shape[0] // b_n
    for b in range(b_n):
        for t in range(t_out):
            r = b * t_out + t
            for j in range(k_n):
                ti = t + j - pad
                if 0 <= ti < t_n:
                    for c in range(c_n):
                        cols[r, j * c_n + c] = x[b, ti, c]
                else:
                    for c in range(c_n):
                        cols[r, j * c_n + c] = 0


# --- matrix product -----------------------------------------------------------------------------------
# Every element of out = a @ b is one chain of fused multiply-adds over k in order, from 0: the bytes do
# not depend on the CPU nor on the blocking below, which only decides which elements are computed
# together. A tile of rows x columns is held in vector registers while k runs (12 x 32 float32 fill 24
# of AVX-512's 32 registers, 6 x 16 fill 12 of AVX2's 16); k runs in blocks whose slice of b stays in
# the L1 cache, the tile stored to ``out`` between blocks and loaded back (exact: the chain goes on from
# the same float).
_ROWS, _LANES = (12, 32) if NUMBA_AVX512[0] == config.CPU_NAME else (6, 16)  # lanes: float32 columns
_BLOCK_BYTES = 64 * 1024  # of b per block of k


def _emit_tile(context, builder, spec, rows: int, i0, j0, k0, k1) -> None:
    """IR: out[i0 : i0+rows, cols] += a[i0 : i0+rows, k0:k1] @ b[k0:k1, cols], cols = j0 .. j0+width,
    each element's terms in order of k (one fused multiply-add each)."""
    (a_data, a_s0, a_s1), (b_data, b_s0), (c_data, c_s0), dtype, width = spec
    intp = context.get_value_type(types.intp)
    size = context.get_abi_sizeof(dtype)
    vec = ir.VectorType(dtype, width)
    vptr = vec.as_pointer()
    idx = ir.IntType(32)
    col = builder.mul(j0, ir.Constant(intp, size))
    a_rows, c_rows, accs = [], [], []
    for r in range(rows):
        i = builder.add(i0, ir.Constant(intp, r))
        a_rows.append(builder.gep(a_data, [builder.mul(i, a_s0)]))
        c_rows.append(builder.bitcast(builder.gep(c_data, [builder.add(builder.mul(i, c_s0), col)]), vptr))
        accs.append(cgutils.alloca_once(builder, vec))
        builder.store(builder.load(c_rows[-1], align=size), accs[-1])
    b_col = builder.gep(b_data, [col])
    splat = ir.Constant(ir.VectorType(idx, width), [0] * width)
    undef = ir.Constant(vec, ir.Undefined)
    if config.CPU_NAME == "generic":  # no FMA (bytes differ there anyway): as the scalar fma above

        def fma(x, y, z):
            return builder.fadd(builder.fmul(x, y), z)
    else:
        name = f"llvm.fma.v{width}{'f32' if isinstance(dtype, ir.FloatType) else 'f64'}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), name)

        def fma(x, y, z):
            return builder.call(fn, [x, y, z])

    def step(k):  # one term of every element of the tile
        bv = builder.load(builder.bitcast(builder.gep(b_col, [builder.mul(k, b_s0)]), vptr), align=size)
        ak = builder.mul(k, a_s1)
        for a_row, acc in zip(a_rows, accs, strict=True):
            av = builder.load(builder.bitcast(builder.gep(a_row, [ak]), dtype.as_pointer()))
            av = builder.shuffle_vector(builder.insert_element(undef, av, ir.Constant(idx, 0)), undef, splat)
            builder.store(fma(av, bv, builder.load(acc)), acc)

    # two terms per pass (k, then k + 1: each element's chain in order): the loop's address arithmetic,
    # one serial chain through the rows, costs half as much per term
    one, two = ir.Constant(intp, 1), ir.Constant(intp, 2)
    k_even = builder.add(k0, builder.mul(builder.sdiv(builder.sub(k1, k0), two), two))
    with cgutils.for_range_slice(builder, k0, k_even, two, intp) as (k, _):
        step(k)
        step(builder.add(k, one))
    with cgutils.for_range_slice(builder, k_even, k1, one, intp) as (k, _):
        step(k)
    for c_row, acc in zip(c_rows, accs, strict=True):
        builder.store(builder.load(acc), c_row, align=size)


@intrinsic(prefer_literal=True)
def _panel(typingctx, a, b, out, j0, lanes):
    """out[:, j0 : j0+w] += a @ b[:, j0 : j0+w], w = ``lanes`` float32 columns (half as many float64,
    at least 1): k in blocks, each over every row, in tiles of _ROWS rows, then 4, then 1."""
    arrays = (a, b, out)
    if not (all(isinstance(t, types.Array) and t.ndim == 2 for t in arrays) and a.dtype == b.dtype == out.dtype):
        return None
    if a.dtype not in (types.float32, types.float64) or not isinstance(lanes, types.IntegerLiteral):
        return None
    width = max(lanes.literal_value * 32 // a.dtype.bitwidth, 1)  # as _columns
    k_block = max(_BLOCK_BYTES // (width * a.dtype.bitwidth // 8), 1)

    def codegen(context, builder, sig, args):
        intp = context.get_value_type(types.intp)
        i8p = ir.IntType(8).as_pointer()
        arr = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3], strict=True)]
        data = [builder.bitcast(x.data, i8p) for x in arr]
        m_n, k_n = cgutils.unpack_tuple(builder, arr[0].shape, 2)
        a_s0, a_s1 = cgutils.unpack_tuple(builder, arr[0].strides, 2)
        b_s0 = cgutils.unpack_tuple(builder, arr[1].strides, 2)[0]
        c_s0 = cgutils.unpack_tuple(builder, arr[2].strides, 2)[0]
        spec = ((data[0], a_s0, a_s1), (data[1], b_s0), (data[2], c_s0), context.get_value_type(a.dtype), width)
        j = context.cast(builder, args[3], sig.args[3], types.intp)
        step = ir.Constant(intp, k_block)
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), k_n, step, intp) as (k0, _):
            k1 = builder.add(k0, step)
            k1 = builder.select(builder.icmp_signed("<", k1, k_n), k1, k_n)
            start = ir.Constant(intp, 0)
            for rows in (_ROWS, 4, 1):
                tile = ir.Constant(intp, rows)
                stop = builder.add(start, builder.mul(builder.sdiv(builder.sub(m_n, start), tile), tile))
                with cgutils.for_range_slice(builder, start, stop, tile, intp) as (i0, _):
                    _emit_tile(context, builder, spec, rows, i0, j, k0, k1)
                start = stop
        return context.get_dummy_value()

    return types.none(a, b, out, j0, lanes), codegen


@njit(inline="always")
def _columns(lanes, itemsize):
    return max(lanes * 4 // itemsize, 1)


@njit(**_JIT)
def matmul(a, b, out):
    """out = a @ b, each element one chain of fused multiply-adds over k in order (see above): the
    same bytes on every CPU. a (M, K) any strides; b (K, N) and out (M, N) with contiguous rows."""
    m_n, k_n = a.shape
    n_n = b.shape[1]
    if b.shape[0] != k_n or out.shape[0] != m_n or out.shape[1] != n_n:
        raise ValueError("matmul: shapes do not match")
    if m_n * n_n * k_n > 0 and n_n > 1 and (b.strides[1] != b.itemsize or out.strides[1] != out.itemsize):
        raise ValueError("matmul: b and out need contiguous rows")
    out[:] = 0
    j0 = 0
    size = a.itemsize
    while j0 + _columns(_LANES, size) <= n_n:
        _panel(a, b, out, j0, _LANES)
        j0 += _columns(_LANES, size)
    while j0 + _columns(16, size) <= n_n:
        _panel(a, b, out, j0, 16)
        j0 += _columns(16, size)
    while j0 + _columns(8, size) <= n_n:
        _panel(a, b, out, j0, 8)
        j0 += _columns(8, size)
    while j0 + _columns(4, size) <= n_n:
        _panel(a, b, out, j0, 4)
        j0 += _columns(4, size)
    while j0 < n_n:
        _panel(a, b, out, j0, 1)
        j0 += 1


@njit(**_JIT)
def batched_matmul(a, b, out):
    """out[i] = a[i] @ b[i] for every i (:func:`matmul`), in one call."""
    if b.shape[0] != a.shape[0] or out.shape[0] != a.shape[0]:
        raise ValueError("matmul: batch sizes do not match")
    for i in range(a.shape[0]):
        matmul(a[i], b[i], out[i])


def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for 2-d or (batched) 3-d float arrays of one dtype, on :func:`matmul`: a new array.
    b is copied first if its rows are not contiguous (a weight's transpose: small)."""
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64) or a.ndim != b.ndim or a.ndim not in (2, 3):
        raise ValueError(
            f"product: float32/float64 arrays of one dtype, 2-d or 3-d; got {a.dtype} {a.shape}, {b.dtype} {b.shape}"
        )
    if b.shape[-1] > 1 and b.strides[-1] != b.itemsize:
        b = np.ascontiguousarray(b)
    out = np.empty((*a.shape[:-1], b.shape[-1]), a.dtype)
    (matmul if a.ndim == 2 else batched_matmul)(a, b, out)
    return out
