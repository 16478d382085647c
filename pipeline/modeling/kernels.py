"""Compiled time loops of the recurrent layers (pipeline/modeling/recurrent.py): one call runs
every step of a layer's forward pass, one call its back-propagation through time.

The same bytes on every x86-64 CPU because nothing here depends on the CPU it runs on:

* numba compiles for one fixed target on every machine (``NUMBA_CPU_NAME``, pipeline/core/cpu.py),
  without ``fastmath``, so LLVM keeps every sum in the order written;
* products are written out as chains of fused multiply-adds (``llvm.fma``: one rounding, by
  IEEE 754 the same result on every CPU with FMA), summed in a fixed order;
* ``exp`` is our own (range reduction + a polynomial, both in fused multiply-adds; ``2**n`` set
  in the exponent bits), not the C library's (glibc's ``expf`` differs between releases and
  picks an FMA or non-FMA variant by CPU) nor numpy's (an AVX2 or AVX-512 loop by CPU).
  Accurate to about 1 unit in the last place in float32 and float64;
* sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 sigmoid(2x) - 1.

Layout: (T, D, G, B) = steps x directions x gate rows x batch, the reverse direction already
flipped in time, the batch innermost (the loops over it are what the compiler vectorises).
Gate order as torch: LSTM i, f, g, o; GRU r, z, n. Replaces ~17 numpy calls per step, whose
call overhead dominated at the zoo's sizes (batch 32, hidden 32).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic, overload

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
def _product(w, v, out, acc: bool):
    """out[g, b] (+)= sum over k of w[g, k] * v[k, b], k in order, one rounding per term. Sweeps of
    four terms per element: the sums of different elements do not wait on each other, and an
    element is loaded and stored once per four terms."""
    g_n, k_n = w.shape
    b_n = v.shape[1]
    if not acc:
        out[:] = w.dtype.type(0)
    k = 0
    while k + 4 <= k_n:
        v0, v1, v2, v3 = v[k], v[k + 1], v[k + 2], v[k + 3]
        for g in range(g_n):
            w0, w1, w2, w3 = w[g, k], w[g, k + 1], w[g, k + 2], w[g, k + 3]
            o = out[g]
            for b in range(b_n):
                o[b] = fma(w3, v3[b], fma(w2, v2[b], fma(w1, v1[b], fma(w0, v0[b], o[b]))))
        k += 4
    while k < k_n:
        vk = v[k]
        for g in range(g_n):
            wk = w[g, k]
            o = out[g]
            for b in range(b_n):
                o[b] = fma(wk, vk[b], o[b])
        k += 1


@njit(inline="always")
def _product_t(w, v, out, acc: bool):
    """out[k, b] (+)= sum over g of w[g, k] * v[g, b] (w transposed), g in order, sweeps of four terms."""
    g_n, k_n = w.shape
    b_n = v.shape[1]
    if not acc:
        out[:] = w.dtype.type(0)
    g = 0
    while g + 4 <= g_n:
        v0, v1, v2, v3 = v[g], v[g + 1], v[g + 2], v[g + 3]
        for k in range(k_n):
            w0, w1, w2, w3 = w[g, k], w[g + 1, k], w[g + 2, k], w[g + 3, k]
            o = out[k]
            for b in range(b_n):
                o[b] = fma(w3, v3[b], fma(w2, v2[b], fma(w1, v1[b], fma(w0, v0[b], o[b]))))
        g += 4
    while g < g_n:
        vg = v[g]
        for k in range(k_n):
            wk = w[g, k]
            o = out[k]
            for b in range(b_n):
                o[b] = fma(wk, vg[b], o[b])
        g += 1


# --- LSTM: i, f, g, o ---------------------------------------------------------------------------------
@njit(**_JIT)
def lstm_forward(xw, w, hs, cs, acts, tc):
    """xw (T, D, 4H, B): input projections + both biases; w (D, 4H, H). Fills hs, cs (T+1, D, H, B):
    the states before each step and the last; acts (T, D, 4H, B): the gates after their activations;
    tc (T, D, H, B): tanh(c)."""
    one = xw.dtype.type(1)
    t_n, d_n, g_n, b_n = xw.shape
    h_n = g_n // 4
    for s in range(t_n):
        for d in range(d_n):
            a, c_prev, c_next, t_s, h_next = acts[s, d], cs[s, d], cs[s + 1, d], tc[s, d], hs[s + 1, d]
            a[:] = xw[s, d]
            _product(w[d], hs[s, d], a, True)
            for j in range(h_n):
                for b in range(b_n):
                    i = sigmoid(a[j, b], one)
                    f = sigmoid(a[h_n + j, b], one)
                    g = tanh(a[2 * h_n + j, b], one)
                    o = sigmoid(a[3 * h_n + j, b], one)
                    c = fma(f, c_prev[j, b], i * g)
                    t = tanh(c, one)
                    a[j, b], a[h_n + j, b], a[2 * h_n + j, b], a[3 * h_n + j, b] = i, f, g, o
                    c_next[j, b] = c
                    t_s[j, b] = t
                    h_next[j, b] = o * t


@njit(**_JIT)
def lstm_backward(w, acts, cs, tc, dh_out, dh, dc, dg):
    """Back-propagation through time. w (D, 4H, H); dh_out (T, D, H, B): gradients of the outputs;
    dh, dc (D, H, B): of the final states, on entry (overwritten). Fills dg (T, D, 4H, B): the
    gradients of the gate pre-activations."""
    one = acts.dtype.type(1)
    t_n, d_n, g_n, b_n = acts.shape
    h_n = g_n // 4
    for s in range(t_n - 1, -1, -1):
        for d in range(d_n):
            a, q, c_prev, t_s, dho, dhd, dcd = acts[s, d], dg[s, d], cs[s, d], tc[s, d], dh_out[s, d], dh[d], dc[d]
            for j in range(h_n):
                for b in range(b_n):
                    i, f, g, o = a[j, b], a[h_n + j, b], a[2 * h_n + j, b], a[3 * h_n + j, b]
                    t = t_s[j, b]
                    dhb = dhd[j, b] + dho[j, b]
                    dcb = fma(dhb, o * (one - t * t), dcd[j, b])
                    q[j, b] = dcb * (g * i * (one - i))
                    q[h_n + j, b] = dcb * (c_prev[j, b] * f * (one - f))
                    q[2 * h_n + j, b] = dcb * (i * (one - g * g))
                    q[3 * h_n + j, b] = dhb * (t * o * (one - o))
                    dcd[j, b] = dcb * f
            _product_t(w[d], q, dhd, False)


# --- GRU: r, z, n --------------------------------------------------------------------------------------
@njit(**_JIT)
def gru_forward(xw, w, b_hh, hs, acts, ghn):
    """xw (T, D, 3H, B): input projections + input bias; w (D, 3H, H); b_hh (D, 3H).
    n = tanh(xw_n + r * (W_hn h + b_hn)), h' = n + z * (h - n). Fills hs (T+1, D, H, B), acts
    (T, D, 3H, B): r, z, n; ghn (T, D, H, B): W_hn h + b_hn."""
    one = xw.dtype.type(1)
    t_n, d_n, g_n, b_n = xw.shape
    h_n = g_n // 3
    gh = np.empty((g_n, b_n), xw.dtype)
    for s in range(t_n):
        for d in range(d_n):
            a, x, h_prev, h_next, ghn_s = acts[s, d], xw[s, d], hs[s, d], hs[s + 1, d], ghn[s, d]
            for g in range(g_n):
                for b in range(b_n):
                    gh[g, b] = b_hh[d, g]
            _product(w[d], h_prev, gh, True)
            for j in range(h_n):
                for b in range(b_n):
                    r = sigmoid(x[j, b] + gh[j, b], one)
                    z = sigmoid(x[h_n + j, b] + gh[h_n + j, b], one)
                    hn = gh[2 * h_n + j, b]
                    n = tanh(fma(r, hn, x[2 * h_n + j, b]), one)
                    a[j, b], a[h_n + j, b], a[2 * h_n + j, b] = r, z, n
                    ghn_s[j, b] = hn
                    h_next[j, b] = fma(z, h_prev[j, b] - n, n)


@njit(**_JIT)
def gru_backward(w, acts, hs, ghn, dh_out, dh, dgi, dgh):
    """dh (D, H, B): gradient of the final state on entry (overwritten). Fills dgi, dgh (T, D, 3H, B):
    the gradients of the input and hidden projections."""
    one = acts.dtype.type(1)
    t_n, d_n, g_n, b_n = acts.shape
    h_n = g_n // 3
    for s in range(t_n - 1, -1, -1):
        for d in range(d_n):
            a, qi, qh, h_prev, ghn_s, dho, dhd = (
                acts[s, d],
                dgi[s, d],
                dgh[s, d],
                hs[s, d],
                ghn[s, d],
                dh_out[s, d],
                dh[d],
            )
            for j in range(h_n):
                for b in range(b_n):
                    r, z, n = a[j, b], a[h_n + j, b], a[2 * h_n + j, b]
                    dhb = dhd[j, b] + dho[j, b]
                    dn = dhb * ((one - z) * (one - n * n))
                    dz = dhb * ((h_prev[j, b] - n) * z * (one - z))
                    dr = dn * (ghn_s[j, b] * r * (one - r))
                    qi[j, b], qi[h_n + j, b], qi[2 * h_n + j, b] = dr, dz, dn
                    qh[j, b], qh[h_n + j, b], qh[2 * h_n + j, b] = dr, dz, dn * r
                    dhd[j, b] = dhb * z
            _product_t(w[d], qh, dhd, True)


# --- tanh RNN -----------------------------------------------------------------------------------------
@njit(**_JIT)
def rnn_forward(xw, w, hs):
    """xw (T, D, H, B): input projections + both biases; h' = tanh(xw + W_hh h). Fills hs (T+1, D, H, B)."""
    one = xw.dtype.type(1)
    t_n, d_n, h_n, b_n = xw.shape
    for s in range(t_n):
        for d in range(d_n):
            out = hs[s + 1, d]
            out[:] = xw[s, d]
            _product(w[d], hs[s, d], out, True)
            for j in range(h_n):
                for b in range(b_n):
                    out[j, b] = tanh(out[j, b], one)


@njit(**_JIT)
def rnn_backward(w, hs, dh_out, dh, dg):
    """dh (D, H, B): gradient of the final state on entry (overwritten). Fills dg (T, D, H, B)."""
    one = dg.dtype.type(1)
    t_n, d_n, h_n, b_n = dg.shape
    for s in range(t_n - 1, -1, -1):
        for d in range(d_n):
            q, y, dho, dhd = dg[s, d], hs[s + 1, d], dh_out[s, d], dh[d]
            for j in range(h_n):
                for b in range(b_n):
                    q[j, b] = (dhd[j, b] + dho[j, b]) * (one - y[j, b] * y[j, b])
            _product_t(w[d], q, dhd, False)
