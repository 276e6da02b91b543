"""GroupNorm with a single group (MobileViTV2's "layernorm"s): one mean and variance per sample over all of its
elements, then a per-channel affine.

    out[b, l, c] = (x[b, l, c] - mean_b) / sqrt(var_b + eps) * gamma[c] + beta[c]     (biased variance over l, c)

Not a per-token LayerNorm: the statistics span every channel, pixel offset and patch of the sample. The fast version
runs the two reductions in float64, then normalises the sample's rows in parallel.
"""

import numpy as np
from numba import prange

from ._checks import f32, same
from ._jit import parallel_kernel
from ._launch import launch, output
from ._stats import mean_inv_std


# x (B, L, C), gamma (C,), beta (C,) -> (B, L, C)
def group_norm_reference(x, gamma, beta, eps):
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * gamma + beta).astype(np.float32)


@parallel_kernel
def _group_norm(x, gamma, beta, eps, out):
    B, L, C = x.shape
    n = L * C
    for b in range(B):
        mean, inv = mean_inv_std(x[b].reshape(n), np.uint64(0), n, eps)
        for row in prange(L):
            for c in range(C):
                out[b, row, c] = (x[b, row, c] - mean) * inv * gamma[c] + beta[c]


def group_norm(x, gamma, beta, eps):
    f32("group_norm x", x, 3)
    f32("group_norm gamma", gamma, 1)
    f32("group_norm beta", beta, 1)
    same("group_norm gamma", gamma.shape[0], x.shape[2], "length")
    same("group_norm beta", beta.shape[0], x.shape[2], "length")
    out = output(x.shape)
    launch(_group_norm, x, gamma, beta, float(eps), out)
    return out
