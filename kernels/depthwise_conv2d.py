"""Depthwise 2-D convolution (one filter per channel), channels-last, zero padding, fused bias + activation.

    out[b, y, x, c] = act(bias[c] + sum_{ky, kx} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c])

The fast version runs one output row per task and applies the filter tap by tap to the whole row: for each tap the
output pixels it reaches are one run, computed once, and the innermost loop runs over channels, contiguous in the
input, the filter and the output, so it vectorises. Taps that only read padding are clipped away, never tested.
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
        acc = out[b, oy]
        acc[:, :] = bias
        # tap by tap over the whole output row: the output pixels a tap reaches form one contiguous run
        for ky in range(ky_lo, ky_hi):
            xrow = x[b, iy0 + ky * dilation]
            for kx in range(kw):
                shift = kx * dilation - padding
                # output pixels ox with 0 <= ox * stride + shift < W
                lo = 0 if shift >= 0 else (-shift + stride - 1) // stride
                hi = min(wo, (W - 1 - shift) // stride + 1) if shift < W else 0
                wt = w[ky, kx]
                for ox in range(lo, hi):
                    ix = ox * stride + shift
                    for c in range(C):
                        acc[ox, c] += xrow[ix, c] * wt[c]
        for ox in range(wo):
            for c in range(C):
                acc[ox, c] = apply(acc[ox, c], act)


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
