"""Layer normalisation over the last axis (transformers' nn.LayerNorm on tokens).

    out[m, :] = (x[m, :] - mean) / sqrt(var + eps) * gamma + beta      (biased variance)

The fast version gives each task a row; mean and variance are two passes accumulated in float64.
"""

import numpy as np
from numba import prange

from ._checks import f32, same
from ._jit import parallel_kernel
from ._launch import launch, output
from ._stats import mean_inv_std


# x (M, C), gamma (C,), beta (C,) -> (M, C)
def layer_norm_reference(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)


@parallel_kernel
def _layer_norm(x, gamma, beta, eps, out):
    M, C = x.shape
    for m in prange(M):
        row = x[m]
        mean, inv = mean_inv_std(row, eps)
        for c in range(C):
            out[m, c] = (row[c] - mean) * inv * gamma[c] + beta[c]


def layer_norm(x, gamma, beta, eps):
    f32("layer_norm x", x, 2)
    f32("layer_norm gamma", gamma, 1)
    f32("layer_norm beta", beta, 1)
    same("layer_norm gamma", gamma.shape[0], x.shape[1], "length")
    same("layer_norm beta", beta.shape[0], x.shape[1], "length")
    out = output(x.shape)
    launch(_layer_norm, x, gamma, beta, float(eps), out)
    return out
