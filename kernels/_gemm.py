"""The inner matrix product every dense kernel shares: out[m0:m1] = bias + x[m0:m1] @ w for a block of rows.

Rows go four at a time, so each weight row read from cache feeds four accumulator rows, and the innermost loop is an
AXPY over contiguous output features, which LLVM vectorises. Serial: callers run it inside their own prange task.
"""

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
