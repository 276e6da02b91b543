"""Full 2-D convolution, channels-last, zero padding, with a fused bias + activation epilogue.

    out[b, y, x, o] = act(bias[o] + sum_{ky, kx, c} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c, o])

The fast version gives one output row to each task (prange over B * Ho) and keeps the Cout accumulator of a pixel
contiguous, so the innermost loop is an AXPY over output channels that vectorises. Taps that would read the padding
are clipped away instead of tested, so a dilated conv on a small map costs only the taps that land inside it.
"""

import numpy as np
from numba import prange

from ._checks import conv_out_size, f32, same
from ._jit import parallel_kernel
from ._window import tap_range
from .activation import activation_reference, apply


# x (B, H, W, Cin), w (kh, kw, Cin, Cout), bias (Cout,) -> (B, Ho, Wo, Cout)
def conv2d_reference(x, w, bias, stride=1, padding=0, dilation=1, act=0):
    B, H, W, _ = x.shape
    kh, kw, _, cout = w.shape
    ho = (H + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (W + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.zeros((B, ho, wo, cout), np.float32)
    # one (B*Ho*Wo, Cin) x (Cin, Cout) product per tap
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation, kx * dilation
            patch = xp[:, y0 : y0 + stride * (ho - 1) + 1 : stride, x0 : x0 + stride * (wo - 1) + 1 : stride, :]
            out += patch @ w[ky, kx]
    if bias is not None:
        out += bias
    return activation_reference(out, act)


@parallel_kernel
def _conv2d(x, w, bias, stride, padding, dilation, act, out):
    B, H, W, cin = x.shape
    kh, kw, _, cout = w.shape
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
            # accumulate every tap that lands inside the input
            for ky in range(ky_lo, ky_hi):
                iy = iy0 + ky * dilation
                for kx in range(kx_lo, kx_hi):
                    ix = ix0 + kx * dilation
                    for c in range(cin):
                        v = x[b, iy, ix, c]
                        for o in range(cout):
                            acc[o] += v * w[ky, kx, c, o]
            for o in range(cout):
                acc[o] = apply(acc[o], act)


def conv2d(x, w, bias, stride=1, padding=0, dilation=1, act=0):
    f32("conv2d x", x, 4)
    f32("conv2d w", w, 4)
    B, H, W, cin = x.shape
    kh, kw, wcin, cout = w.shape
    same("conv2d w", wcin, cin, "input channels")
    ho = conv_out_size(H, kh, stride, padding, dilation)
    wo = conv_out_size(W, kw, stride, padding, dilation)
    bias = np.zeros(cout, np.float32) if bias is None else f32("conv2d bias", bias, 1)
    same("conv2d bias", bias.shape[0], cout, "length")
    out = np.empty((B, ho, wo, cout), np.float32)
    _conv2d(x, w, bias, stride, padding, dilation, act, out)
    return out
