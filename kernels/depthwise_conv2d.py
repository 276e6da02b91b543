"""Depthwise 2-D convolution (one filter per channel), channels-last, zero padding, fused bias + activation.

    out[b, y, x, c] = act(bias[c] + sum_{ky, kx} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c])

The fast version runs one output row per task and reads its input once and writes it once. For 3x3 filters, the
pixels whose taps are all inside the map go through a generated tile (_tiles.py) per block of LANES channels (one
vector register): the 9 x LANES weights held in registers for the whole row, each pixel's 9 taps summed in registers
and stored once. The border pixels, channels past the last full block of 8 and other filter sizes take a plain loop
over the taps that land inside the map. The activation runs on the finished row while it is in L1.

The 3x3 tiles (depthwise_3x3_8 and _16) are generated: to change them, _tilegen.py's header, step by step.
"""

import numpy as np
from numba import prange

from . import _tiles
from ._checks import conv_out_size, f32, same
from ._jit import TARGET, kernel, parallel_tile_caller, tile_caller
from ._launch import launch, output
from ._target import vector_lanes
from ._window import tap_range
from .activation import activation_reference, epilogue

# channels per tile: one vector register (8 on AVX2, whose 16 registers hold the 9 weights, the sums and the loads;
# 16 on AVX-512 at 512 bits); channels past the last full block take the 8-channel tile while 8 remain. Measured on
# an Intel Xeon (AVX-512), 1 thread, xx-small's fused inverted residuals (fastest of 200, two rounds): 128x128
# 16 -> 32 -> 16 1.06-1.09 -> 0.95-0.97 ms, 64x64 24 -> 48 -> 24 0.55-0.57 -> 0.51-0.52 with 16 channels
LANES = vector_lanes(TARGET)
tile = getattr(_tiles, f"depthwise_3x3_{LANES}")
tile8 = _tiles.depthwise_3x3_8


# x (B, H, W, C), w (kh, kw, C), bias (C,) -> (B, Ho, Wo, C)
def depthwise_conv2d_reference(x, w, bias, stride=1, padding=0, dilation=1, act=0):
    B, H, W, C = x.shape
    kh, kw, _ = w.shape
    ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.zeros((B, ho, wo, C), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation, kx * dilation
            out += xp[:, y0 : y0 + stride * (ho - 1) + 1 : stride, x0 : x0 + stride * (wo - 1) + 1 : stride] * w[ky, kx]
    if bias is not None:
        out += bias
    return activation_reference(out, act)


@tile_caller
def row_3x3(r0, r1, r2, w, bias, stride, padding, dilation, row):
    """One output row (Wo, C) of a 3x3 depthwise conv from its three input rows (W, C) (a row of zeros where a tap
    row is padding): the interior pixels through the tile per block of LANES channels, then the border pixels and
    the remaining channels from the taps inside the map."""
    W, C = r0.shape
    wo = row.shape[0]
    full, blocked = C // LANES * LANES, C // 8 * 8  # channels in blocks of LANES, and then of 8
    # pixels whose three column taps are all inside the map
    lo = min(wo, (padding + stride - 1) // stride)
    hi = max(lo, min(wo, (W - 1 - 2 * dilation + padding) // stride + 1))
    # flat arrays and unsigned offsets: see _tilegen (a view per pixel and tap cost more than the border's arithmetic)
    f0, f1, f2, fw, fo = r0.reshape(-1), r1.reshape(-1), r2.reshape(-1), w.reshape(-1), row.reshape(-1)
    uc = np.uint64(C)
    if blocked > 0 and lo < hi:
        x0, s, d = np.uint64(lo * stride - padding), np.uint64(stride), np.uint64(dilation)
        for c0 in range(0, full, LANES):
            tile(f0, f1, f2, x0, s, d, uc, np.uint64(c0), fw, bias, fo, np.uint64(lo), hi - lo)
        for c0 in range(full, blocked, 8):
            tile8(f0, f1, f2, x0, s, d, uc, np.uint64(c0), fw, bias, fo, np.uint64(lo), hi - lo)
    for ox in range(wo):
        c_lo = blocked if lo <= ox < hi else 0  # the tiles did the interior pixels' blocked channels
        if c_lo == C:
            continue
        ix0 = ox * stride - padding
        kx_lo, kx_hi = tap_range(ix0, W, 3, dilation)
        n, o = np.uint64(C - c_lo), np.uint64(ox) * uc + np.uint64(c_lo)
        for c in range(n):
            fo[o + c] = bias[c_lo + c]
        for ky in range(3):
            r = f0 if ky == 0 else f1 if ky == 1 else f2
            for kx in range(kx_lo, kx_hi):
                p = np.uint64(ix0 + kx * dilation) * uc + np.uint64(c_lo)
                t = np.uint64(ky * 3 + kx) * uc + np.uint64(c_lo)
                for c in range(n):
                    fo[o + c] += r[p + c] * fw[t + c]


@kernel
def _row_any(xb, w, bias, iy0, stride, padding, dilation, row):
    """One output row of a depthwise conv of any filter size, from the taps inside the map."""
    H, W, C = xb.shape
    kh, kw, _ = w.shape
    ky_lo, ky_hi = tap_range(iy0, H, kh, dilation)
    for ox in range(row.shape[0]):
        ix0 = ox * stride - padding
        kx_lo, kx_hi = tap_range(ix0, W, kw, dilation)
        o = row[ox]
        for c in range(C):
            o[c] = bias[c]
        for ky in range(ky_lo, ky_hi):
            xr = xb[iy0 + ky * dilation]
            for kx in range(kx_lo, kx_hi):
                xv, wv = xr[ix0 + kx * dilation], w[ky, kx]
                for c in range(C):
                    o[c] += xv[c] * wv[c]


@parallel_tile_caller
def _depthwise_conv2d(x, w, bias, stride, padding, dilation, act, out):
    B, H, W, C = x.shape
    kh, kw, _ = w.shape
    _, ho, wo, _ = out.shape
    zeros = np.zeros((W, C), np.float32)  # the input row of a tap that falls in the padding
    no_residual = np.empty((0, C), np.float32)
    for task in prange(B * ho):
        b, oy = task // ho, task % ho
        xb, row = x[b], out[b, oy]
        iy0 = oy * stride - padding
        if kh == 3 and kw == 3:
            iy1, iy2 = iy0 + dilation, iy0 + 2 * dilation
            r0 = xb[iy0] if 0 <= iy0 < H else zeros
            r1 = xb[iy1] if 0 <= iy1 < H else zeros
            r2 = xb[iy2] if 0 <= iy2 < H else zeros
            row_3x3(r0, r1, r2, w, bias, stride, padding, dilation, row)
        else:
            _row_any(xb, w, bias, iy0, stride, padding, dilation, row)
        epilogue(out[b].reshape(ho * wo, C), oy * wo, (oy + 1) * wo, act, no_residual)


def depthwise_conv2d(x, w, bias, stride=1, padding=0, dilation=1, act=0):
    f32("depthwise_conv2d x", x, 4)
    f32("depthwise_conv2d w", w, 3)
    B, H, W, C = x.shape
    kh, kw, wc = w.shape
    same("depthwise_conv2d w", wc, C, "channels")
    ho = conv_out_size(H, kh, stride, padding, dilation)
    wo = conv_out_size(W, kw, stride, padding, dilation)
    bias = np.zeros(C, np.float32) if bias is None else f32("depthwise_conv2d bias", bias, 1)
    same("depthwise_conv2d bias", bias.shape[0], C, "length")
    out = output((B, ho, wo, C))
    launch(_depthwise_conv2d, x, w, bias, stride, padding, dilation, act, out)
    return out
