"""Linear layer (also every 1x1 convolution, which is a linear layer over channels-last pixels), with a fused
epilogue: bias, activation, then an optional residual add.

    out[m, n] = act(bias[n] + sum_k x[m, k] * w[k, n]) + residual[m, n]

The weight is stored (in, out). The fast version runs blocks of four rows per task through the shared products of
_gemm.py (AXPYs for shallow K, 2x2 dot-product tiles on the transposed weight for deep K), then the epilogue on the
same rows while they are hot.
"""

import numpy as np
from numba import prange

from ._checks import f32, same, shape
from ._gemm import DOT_MIN_K, ROWS, product
from ._jit import parallel_kernel
from .activation import activation_reference, apply


# x (M, K), w (K, N), bias (N,) or None, residual (M, N) or None -> (M, N)
def linear_reference(x, w, bias=None, act=0, residual=None, wt=None):
    out = x @ w
    if bias is not None:
        out = out + bias
    out = activation_reference(out.astype(np.float32), act)
    return out if residual is None else out + residual


@parallel_kernel
def _linear(x, w, wt, bias, act, residual, out):
    M, N = out.shape
    add_residual = residual.shape[0] == M
    for block in prange((M + ROWS - 1) // ROWS):
        m0 = block * ROWS
        m1 = min(m0 + ROWS, M)
        product(x, w, wt, bias, out, m0, m1)
        # epilogue: activation, then the residual
        for m in range(m0, m1):
            for n in range(N):
                v = apply(out[m, n], act)
                if add_residual:
                    v += residual[m, n]
                out[m, n] = v


def transposed_weight(w):
    """The (out, in) copy of w that the deep-product path reads, or None when K is shallow (the AXPY path reads w).
    Callers that run the same weight many times make it once and pass it as `wt`."""
    return np.ascontiguousarray(w.T) if w.shape[0] >= DOT_MIN_K else None


def linear(x, w, bias=None, act=0, residual=None, wt=None):
    f32("linear x", x, 2)
    f32("linear w", w, 2)
    M, K = x.shape
    N = w.shape[1]
    same("linear w", w.shape[0], K, "input features")
    bias = np.zeros(N, np.float32) if bias is None else f32("linear bias", bias, 1)
    same("linear bias", bias.shape[0], N, "length")
    if residual is None:
        residual = np.empty((0, N), np.float32)
    else:
        f32("linear residual", residual, 2)
        same("linear residual", residual.shape[0], M, "rows")
        same("linear residual", residual.shape[1], N, "columns")
    out = np.empty((M, N), np.float32)
    if K >= DOT_MIN_K:
        wt = transposed_weight(w) if wt is None else f32("linear wt", wt, 2)
        shape("linear wt", wt, (N, K))
    else:
        wt = w
    _linear(x, w, wt, bias, act, residual, out)
    return out
