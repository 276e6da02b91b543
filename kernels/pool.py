"""Global average pooling of a channels-last map: the mean over all pixels, per sample and channel.

    out[b, c] = mean_{y, x} x[b, y, x, c]

The fast version sums pixel rows into a float64 accumulator vector per sample (contiguous over channels).
"""

import numpy as np
from numba import prange

from ._checks import f32
from ._jit import parallel_kernel
from ._launch import launch, output


# x (B, H, W, C) -> (B, C)
def global_avg_pool_reference(x):
    return x.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


@parallel_kernel
def _global_avg_pool(x, out):
    B, H, W, C = x.shape
    for b in prange(B):
        acc = np.zeros(C, np.float64)
        for y in range(H):
            for xx in range(W):
                for c in range(C):
                    acc[c] += x[b, y, xx, c]
        for c in range(C):
            out[b, c] = acc[c] / (H * W)


def global_avg_pool(x):
    f32("global_avg_pool x", x, 4)
    out = output((x.shape[0], x.shape[3]))
    launch(_global_avg_pool, x, out)
    return out
