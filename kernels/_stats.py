"""Mean and inverse standard deviation of a run of values, shared by layer_norm and group_norm: one pass accumulated
in float64 around the run's first value k (the shifted-data variance, var = E[(x - k)^2] - E[x - k]^2: its
cancellation is bounded by the run's spread, not by its mean, so a row far from 0 keeps its digits). One pass, not
two (a mean, then the variance around it): on xx-small's (1024, 64) layer norm, with a block of rows per task,
33 vs 41 us (Zen 4, 1 thread)."""

import numpy as np

from ._jit import inline


@inline
def mean_inv_std(f, base, n, eps):
    """(mean, 1 / sqrt(var + eps)) of f[base : base + n], f a flat array and base unsigned, with the biased
    variance."""
    k = np.float64(f[base]) if n > 0 else 0.0
    s1 = s2 = 0.0
    for i in range(n):
        v = np.float64(f[base + np.uint64(i)]) - k
        s1 += v
        s2 += v * v
    shift = s1 / n
    return k + shift, 1.0 / np.sqrt(max(s2 / n - shift * shift, 0.0) + eps)
