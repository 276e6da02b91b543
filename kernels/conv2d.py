"""Full 2-D convolution, channels-last, zero padding, with a fused bias + activation epilogue.

    out[b, y, x, o] = act(bias[o] + sum_{ky, kx, c} x[b, y*s + ky*d - p, x*s + kx*d - p, c] * w[ky, kx, c, o])

The fast version is a matrix product per band of output rows (prange over B x bands): it gathers the band's patches
into a (rows * Wo, taps * Cin) matrix (im2col; zeros where a tap overhangs the border), then runs the register-tiled
product of _gemm.py with the (kh * kw * Cin, Cout) weight packed once into panels, and the epilogue while the band is
in cache. Only the rows of taps that some output row of the band reaches are gathered and multiplied (a contiguous
range of the packed weight), so dilated convs whose rates exceed the map (the ASPP branches) skip most of the
padding; the band is one row for them.
"""

import numpy as np
from numba import prange

from ._checks import conv_out_size, f32, same
from ._gemm import gemm, pack
from ._jit import kernel, parallel_tile_caller
from ._launch import launch, output
from ._split import block
from ._window import tap_range
from .activation import activation_reference, epilogue
from .linear import check_packed

BAND_PIXELS = 64  # output pixels per task (at least one row): enough rows for the tiles, few enough to stay in cache


# x (B, H, W, Cin), w (kh, kw, Cin, Cout), bias (Cout,) -> (B, Ho, Wo, Cout)
def conv2d_reference(x, w, bias, stride=1, padding=0, dilation=1, act=0, packed=None):
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


@kernel
def _gather(xf, cf, H, W, cin, kw, stride, padding, dilation, r0, r1, wo, ky_lo, ky_hi):
    """The im2col rows of output rows [r0, r1) into cf (flat), from one sample's input xf (flat H * W * cin). Flat
    arrays and unsigned offsets: array views made per pixel (and signed indices) cost more than the copy."""
    K = (ky_hi - ky_lo) * kw * cin
    span = kw * cin
    at = np.uint64(0)
    for oy in range(r0, r1):
        for ox in range(wo):
            ix0 = ox * stride - padding
            for ky in range(ky_lo, ky_hi):
                iy = oy * stride - padding + ky * dilation
                if iy < 0 or iy >= H:
                    for i in range(span):
                        cf[at + np.uint64(i)] = 0.0
                elif dilation == 1 and ix0 >= 0 and ix0 + kw <= W:
                    src = np.uint64((iy * W + ix0) * cin)
                    for i in range(span):
                        cf[at + np.uint64(i)] = xf[src + np.uint64(i)]
                else:
                    for kx in range(kw):
                        ix = ix0 + kx * dilation
                        dst = at + np.uint64(kx * cin)
                        if 0 <= ix < W:
                            src = np.uint64((iy * W + ix) * cin)
                            for c in range(cin):
                                cf[dst + np.uint64(c)] = xf[src + np.uint64(c)]
                        else:
                            for c in range(cin):
                                cf[dst + np.uint64(c)] = 0.0
                at += np.uint64(span)
    return K


@parallel_tile_caller
def _conv2d(x, wp, bp, kh, kw, stride, padding, dilation, act, band, out):
    B, H, W, cin = x.shape
    _, ho, wo, cout = out.shape
    bands = (ho + band - 1) // band
    no_residual = np.empty((0, cout), np.float32)
    xf = x.reshape(-1)
    for task in prange(B * bands):
        b, r0 = task // bands, task % bands * band
        r1 = min(r0 + band, ho)
        # the rows of taps any output row of the band reaches
        ky_lo, ky_hi = kh, 0
        for oy in range(r0, r1):
            lo, hi = tap_range(oy * stride - padding, H, kh, dilation)
            if lo < hi:
                ky_lo, ky_hi = min(ky_lo, lo), max(ky_hi, hi)
        ky_hi = max(ky_lo, ky_hi)
        K = (ky_hi - ky_lo) * kw * cin
        # im2col: one row per output pixel of the band, (ky - ky_lo, kx, c) along it; for each tap row the kw pixels
        # of an undilated conv are one contiguous run of the input row
        cols = np.empty(((r1 - r0) * wo, K), np.float32)
        _gather(
            xf[b * H * W * cin : (b + 1) * H * W * cin],
            cols.reshape(-1),
            H,
            W,
            cin,
            kw,
            stride,
            padding,
            dilation,
            r0,
            r1,
            wo,
            ky_lo,
            ky_hi,
        )
        rows = out[b].reshape(ho * wo, cout)
        gemm(cols, 0, wp, bp, rows, r0 * wo, (r1 - r0) * wo, ky_lo * kw * cin, ky_hi * kw * cin, cout)
        epilogue(rows, r0 * wo, r1 * wo, act, no_residual)


def conv2d(x, w, bias, stride=1, padding=0, dilation=1, act=0, packed=None):
    f32("conv2d x", x, 4)
    f32("conv2d w", w, 4)
    B, H, W, cin = x.shape
    kh, kw, wcin, cout = w.shape
    same("conv2d w", wcin, cin, "input channels")
    ho = conv_out_size(H, kh, stride, padding, dilation)
    wo = conv_out_size(W, kw, stride, padding, dilation)
    if bias is not None:
        f32("conv2d bias", bias, 1)
        same("conv2d bias", bias.shape[0], cout, "length")
    w2d = w.reshape(kh * kw * cin, cout)
    wp, bp = pack(w2d, bias) if packed is None else check_packed("conv2d", packed, kh * kw * cin, cout)
    band = 1 if dilation > 1 else block(ho, 1, -(-BAND_PIXELS // wo))
    out = output((B, ho, wo, cout))
    launch(_conv2d, x, wp, bp, kh, kw, stride, padding, dilation, act, band, out)
    return out
