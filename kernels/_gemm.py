"""The inner matrix products the dense kernels share: out[m0:m1] = bias + x[m0:m1] @ w for a block of rows.

Two shapes of loop, chosen by the depth K (callers pick with DOT_MIN_K):
- block_product, for shallow products: four rows at a time, so each weight row read from cache feeds four
  accumulator rows, and the innermost loop is an AXPY over contiguous output features.
- dot_product, for deep ones: 2x2 tiles of dot products over contiguous K (weights transposed), whose running sums
  LLVM keeps in vector registers.
Both are serial: callers run them inside their own prange task.
"""

import numpy as np

from ._jit import inline

ROWS = 4  # rows per block: each weight row read feeds this many accumulators


@inline
def block_product(x, w, bias, out, m0, m1):
    """out[m] = bias + x[m] @ w for m in [m0, m1), m1 - m0 <= ROWS; x (M, K), w (K, N), out (M, N)."""
    K, N = w.shape
    for m in range(m0, m1):
        out[m, :] = bias
    if m1 - m0 == ROWS:
        o0, o1, o2, o3 = out[m0], out[m0 + 1], out[m0 + 2], out[m0 + 3]
        for k in range(K):
            a0, a1, a2, a3 = x[m0, k], x[m0 + 1, k], x[m0 + 2, k], x[m0 + 3, k]
            wk = w[k]
            for n in range(N):
                wv = wk[n]
                o0[n] += a0 * wv
                o1[n] += a1 * wv
                o2[n] += a2 * wv
                o3[n] += a3 * wv
    else:
        for m in range(m0, m1):
            om = out[m]
            for k in range(K):
                a = x[m, k]
                wk = w[k]
                for n in range(N):
                    om[n] += a * wk[n]


DOT_MIN_K = 64  # from this depth on, dot products beat AXPYs (measured: K=256 179 vs 52 GFLOP/s; K=48 34 vs 42)


@inline
def dot_product(x, wt, bias, out, m0, m1):
    """out[m] = bias + x[m] @ wt.T for m in [m0, m1), m1 - m0 <= 2; x (M, K), wt (N, K), out (M, N).

    For deep products: each output is a dot product over contiguous K, vectorised with reassociation, in 2x2
    tiles so that each of the four loads per step feeds two multiply-adds; the sums stay in registers.
    """
    N, K = wt.shape
    if m1 - m0 == 2:
        x0, x1 = x[m0], x[m0 + 1]
        for n in range(0, N - 1, 2):
            w0, w1 = wt[n], wt[n + 1]
            s00 = s01 = s10 = s11 = np.float32(0.0)
            for k in range(K):
                a0, a1, b0, b1 = x0[k], x1[k], w0[k], w1[k]
                s00 += a0 * b0
                s01 += a0 * b1
                s10 += a1 * b0
                s11 += a1 * b1
            out[m0, n], out[m0, n + 1] = s00 + bias[n], s01 + bias[n + 1]
            out[m0 + 1, n], out[m0 + 1, n + 1] = s10 + bias[n], s11 + bias[n + 1]
        if N % 2:
            w0 = wt[N - 1]
            s0 = s1 = np.float32(0.0)
            for k in range(K):
                s0 += x0[k] * w0[k]
                s1 += x1[k] * w0[k]
            out[m0, N - 1], out[m0 + 1, N - 1] = s0 + bias[N - 1], s1 + bias[N - 1]
    else:
        for m in range(m0, m1):
            xm = x[m]
            for n in range(N):
                wn = wt[n]
                s = np.float32(0.0)
                for k in range(K):
                    s += xm[k] * wn[k]
                out[m, n] = s + bias[n]
