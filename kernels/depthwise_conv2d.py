"""Depthwise 2-D convolution (one filter per channel), channels-last, zero padding, fused bias + activation.

    out[b, y, x, c] = act(bias[c] + sum_{ky, kx} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c])

The fast version runs one output row per task; the innermost loop runs over channels, which are contiguous in both
the input and the filter, so it vectorises. Taps that only read padding are clipped away (see _window.py).
"""

import numpy as np
from numba import prange

from ._checks import conv_out_size, f32, same
from ._jit import parallel_kernel
from ._window import tap_range
from .activation import activation_reference, apply


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


@parallel_kernel
def _depthwise_conv2d(x, w, bias, stride, padding, dilation, act, out):
    B, H, W, C = x.shape
    kh, kw, _ = w.shape
    _, ho, wo, _ = out.shape
    for row in prange(B * ho):
        b, oy = row // ho, row % ho
        iy0 = oy * stride - padding
        ky_lo, ky_hi = tap_range(iy0, H, kh, dilation)
        for ox in range(wo):
            ix0 = ox * stride - padding
            kx_lo, kx_hi = tap_range(ix0, W, kw, dilation)
            acc = out[b, oy, ox]
            acc[:] = bias
            for ky in range(ky_lo, ky_hi):
                iy = iy0 + ky * dilation
                for kx in range(kx_lo, kx_hi):
                    ix = ix0 + kx * dilation
                    for c in range(C):
                        acc[c] += x[b, iy, ix, c] * w[ky, kx, c]
            for c in range(C):
                acc[c] = apply(acc[c], act)


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
    out = np.empty((B, ho, wo, C), np.float32)
    _depthwise_conv2d(x, w, bias, stride, padding, dilation, act, out)
    return out
