"""Mean and inverse standard deviation of a vector, shared by layer_norm and group_norm: two passes (mean, then
the biased variance around it), accumulated in float64."""

import numpy as np

from ._jit import inline


@inline
def mean_inv_std(v, eps):
    """(mean, 1 / sqrt(var + eps)) of the 1-D array v, with the biased variance."""
    n = v.shape[0]
    s = 0.0
    for i in range(n):
        s += v[i]
    mean = s / n
    s = 0.0
    for i in range(n):
        d = v[i] - mean
        s += d * d
    return mean, 1.0 / np.sqrt(s / n + eps)
