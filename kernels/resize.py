"""Bilinear resize of a channels-last map, align_corners=False, no antialiasing (torch.nn.functional.interpolate).

For each output coordinate, in float32 as PyTorch computes it:

    src = max((dst + 0.5) * in / out - 0.5, 0);  i0 = floor(src);  i1 = min(i0 + 1, in - 1);  l = src - i0
    out = (1 - ly) * ((1 - lx) * x[y0, x0] + lx * x[y0, x1]) + ly * ((1 - lx) * x[y1, x0] + lx * x[y1, x1])

The fast version precomputes the source indices and weights of every output row and column once, then blends
contiguous C-vectors, one output row per task.
"""

import numpy as np
from numba import prange

from ._checks import f32, positive
from ._jit import parallel_kernel
from ._launch import launch, output


def source_coords(n_in: int, n_out: int):
    """Per output index: the two source indices and the weight of the second, as PyTorch computes them."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


# x (B, H, W, C) -> (B, Ho, Wo, C)
def resize_bilinear_reference(x, ho, wo):
    y0, y1, ly = source_coords(x.shape[1], ho)
    x0, x1, lx = source_coords(x.shape[2], wo)
    lx, ly = lx[None, None, :, None], ly[None, :, None, None]
    top = (1 - lx) * x[:, y0][:, :, x0] + lx * x[:, y0][:, :, x1]
    bottom = (1 - lx) * x[:, y1][:, :, x0] + lx * x[:, y1][:, :, x1]
    return ((1 - ly) * top + ly * bottom).astype(np.float32)


@parallel_kernel
def _resize_bilinear(x, y0, y1, ly, x0, x1, lx, out):
    B, ho, wo, C = out.shape
    for row in prange(B * ho):
        b, oy = row // ho, row % ho
        a, bb = y0[oy], y1[oy]
        wy = ly[oy]
        for ox in range(wo):
            c0, c1 = x0[ox], x1[ox]
            wx = lx[ox]
            for c in range(C):
                top = (1 - wx) * x[b, a, c0, c] + wx * x[b, a, c1, c]
                bottom = (1 - wx) * x[b, bb, c0, c] + wx * x[b, bb, c1, c]
                out[b, oy, ox, c] = (1 - wy) * top + wy * bottom


def resize_bilinear(x, ho, wo):
    f32("resize_bilinear x", x, 4)
    positive(ho=ho, wo=wo)
    y0, y1, ly = source_coords(x.shape[1], ho)
    x0, x1, lx = source_coords(x.shape[2], wo)
    out = output((x.shape[0], ho, wo, x.shape[3]))
    launch(_resize_bilinear, x, y0, y1, ly, x0, x1, lx, out)
    return out
