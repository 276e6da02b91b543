"""Layer normalisation over the last axis (transformers' nn.LayerNorm on tokens).

    out[m, :] = (x[m, :] - mean) / sqrt(var + eps) * gamma + beta      (biased variance)

The fast version gives each task a block of rows: per row, one pass for the mean and variance (_stats.py), one to
normalise.
"""

import numpy as np
from numba import prange

from ._checks import f32, same
from ._jit import parallel_kernel
from ._launch import launch, output
from ._split import block
from ._stats import mean_inv_std

ROWS = 32  # rows per task, at most


# x (M, C), gamma (C,), beta (C,) -> (M, C)
def layer_norm_reference(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)


@parallel_kernel
def _layer_norm(x, gamma, beta, eps, rows, out):
    M, C = x.shape
    xf, of = x.reshape(-1), out.reshape(-1)
    uc = np.uint64(C)
    for task in prange((M + rows - 1) // rows):
        # a block of rows per task, read through flat arrays at unsigned offsets: a view per row (and signed
        # indices) cost more than a short row's arithmetic (see _tilegen)
        for m in range(task * rows, min(task * rows + rows, M)):
            base = np.uint64(m) * uc
            mean, inv = mean_inv_std(xf, base, C, eps)
            for c in range(C):  # x - mean in float64: a row far from 0 keeps its digits
                i = np.uint64(c)
                of[base + i] = np.float32((xf[base + i] - mean) * inv) * gamma[i] + beta[i]


def layer_norm(x, gamma, beta, eps):
    f32("layer_norm x", x, 2)
    f32("layer_norm gamma", gamma, 1)
    f32("layer_norm beta", beta, 1)
    same("layer_norm gamma", gamma.shape[0], x.shape[1], "length")
    same("layer_norm beta", beta.shape[0], x.shape[1], "length")
    out = output(x.shape)
    launch(_layer_norm, x, gamma, beta, float(eps), block(x.shape[0], 1, ROWS), out)
    return out
