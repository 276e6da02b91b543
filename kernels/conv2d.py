"""Full 2-D convolution, channels-last, zero padding, with a fused bias + activation epilogue.

    out[b, y, x, o] = act(bias[o] + sum_{ky, kx, c} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c, o])

The fast version gives one output row to each task (prange over B * Ho). Undilated convs gather the row's patches
into a (Wo, kh * kw * Cin) matrix (im2col, one row at a time so it stays in cache) and run the products the
linear kernel uses (_gemm.py). Dilated convs (the ASPP branches, whose rates can exceed the map) go tap by tap
instead: each tap is a product of the contiguous run of input pixels it reads with that tap's (Cin, Cout) weights,
accumulated into the output row, and the taps and pixels that would read padding are clipped away rather than
tested, so they cost only what lands inside the map.
"""

import numpy as np
from numba import prange

from ._checks import conv_out_size, f32, same, shape
from ._gemm import DOT_MIN_K, ROWS, dot_product, product
from ._jit import parallel_kernel
from ._window import tap_range
from .activation import activation_reference, apply


# x (B, H, W, Cin), w (kh, kw, Cin, Cout), bias (Cout,) -> (B, Ho, Wo, Cout)
def conv2d_reference(x, w, bias, stride=1, padding=0, dilation=1, act=0, wt=None):
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
        acc = out[b, oy]
        acc[:, :] = bias
        for ox in range(wo):
            ix0 = ox * stride - padding
            kx_lo, kx_hi = tap_range(ix0, W, kw, dilation)
            # accumulate every tap that lands inside the input
            for ky in range(ky_lo, ky_hi):
                iy = iy0 + ky * dilation
                for kx in range(kx_lo, kx_hi):
                    ix = ix0 + kx * dilation
                    for c in range(cin):
                        v = x[b, iy, ix, c]
                        for o in range(cout):
                            acc[ox, o] += v * w[ky, kx, c, o]
            for o in range(cout):
                acc[ox, o] = apply(acc[ox, o], act)


@parallel_kernel
def _conv2d_im2col(x, w2d, w2dt, bias, kh, kw, stride, padding, act, out):
    # undilated convs: gather each output row's patches (zeros where they overhang the border) into a
    # (Wo, kh * kw * Cin) matrix, then one block product with the (kh * kw * Cin, Cout) weight
    B, H, W, cin = x.shape
    _, ho, wo, cout = out.shape
    K = kh * kw * cin
    for row in prange(B * ho):
        b, oy = row // ho, row % ho
        cols = np.zeros((wo, K), np.float32)
        for ox in range(wo):
            for ky in range(kh):
                iy = oy * stride - padding + ky
                if iy < 0 or iy >= H:
                    continue
                for kx in range(kw):
                    ix = ox * stride - padding + kx
                    if 0 <= ix < W:
                        base = (ky * kw + kx) * cin
                        for c in range(cin):
                            cols[ox, base + c] = x[b, iy, ix, c]
        acc = out[b, oy]
        for m0 in range(0, wo, ROWS):
            m1 = min(m0 + ROWS, wo)
            product(cols, w2d, w2dt, bias, acc, m0, m1)
            for m in range(m0, m1):
                for o in range(cout):
                    acc[m, o] = apply(acc[m, o], act)


@parallel_kernel
def _conv2d_taps(x, wt, bias, dilation, padding, act, out):
    # stride-1 dilated convs (the ASPP branches): for each tap, the output pixels it reaches read one contiguous run
    # of an input row, so the tap is a (run, Cin) x (Cin, Cout) product accumulated into the output row; taps and
    # pixels that would read padding are never visited
    B, H, W, cin = x.shape
    kh, kw, cout, _ = wt.shape
    _, ho, wo, _ = out.shape
    for row in prange(B * ho):
        b, oy = row // ho, row % ho
        ky_lo, ky_hi = tap_range(oy - padding, H, kh, dilation)
        acc = out[b, oy]
        acc[:, :] = bias
        for ky in range(ky_lo, ky_hi):
            xrow = x[b, oy - padding + ky * dilation]
            for kx in range(kw):
                shift = kx * dilation - padding
                lo, hi = max(0, -shift), min(wo, W - shift)
                if hi <= lo:
                    continue
                xs, run = xrow[lo + shift : hi + shift], acc[lo:hi]
                for m in range(0, hi - lo, ROWS):
                    dot_product(xs, wt[ky, kx], bias, run, m, min(m + ROWS, hi - lo), True)
        for ox in range(wo):
            for o in range(cout):
                acc[ox, o] = apply(acc[ox, o], act)


def transposed_weight(w, stride=1, dilation=1):
    """The rearranged copy of w (kh, kw, Cin, Cout) that the fast path for these settings reads, or None:
    (Cout, kh * kw * Cin) for deep undilated convs, (kh, kw, Cout, Cin) for dilated stride-1 ones. Callers that run
    the same weight many times make it once and pass it as `wt`."""
    kh, kw, cin, cout = w.shape
    if dilation == 1:
        return np.ascontiguousarray(w.reshape(kh * kw * cin, cout).T) if kh * kw * cin >= DOT_MIN_K else None
    return np.ascontiguousarray(w.transpose(0, 1, 3, 2)) if stride == 1 else None


def conv2d(x, w, bias, stride=1, padding=0, dilation=1, act=0, wt=None):
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
    if dilation == 1:
        w2d, wt = w.reshape(kh * kw * cin, cout), _checked_wt(w, wt, stride, dilation)
        _conv2d_im2col(x, w2d, w2d if wt is None else wt, bias, kh, kw, stride, padding, act, out)  # w2d: unused
    elif stride == 1:
        _conv2d_taps(x, _checked_wt(w, wt, stride, dilation), bias, dilation, padding, act, out)
    else:
        _conv2d(x, w, bias, stride, padding, dilation, act, out)
    return out


def _checked_wt(w, wt, stride, dilation):
    """The caller's precomputed rearranged weight (checked), or a fresh one."""
    if wt is None:
        return transposed_weight(w, stride, dilation)
    kh, kw, cin, cout = w.shape
    expected = (cout, kh * kw * cin) if dilation == 1 else (kh, kw, cout, cin)
    f32("conv2d wt", wt, len(expected))
    shape("conv2d wt", wt, expected)
    return wt
