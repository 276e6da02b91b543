"""Unfold a channels-last feature map into patch tokens, and fold tokens back (MobileViT's unfolding/folding).

A (B, H, W, C) map with H = NH * ph and W = NW * pw is cut into ph x pw patches. Token n = nh * NW + nw of sequence
b * P + (i * pw + j) is the pixel at offset (i, j) of patch (nh, nw):

    tokens[b * P + i * pw + j, nh * NW + nw, c] = x[b, nh * ph + i, nw * pw + j, c]

so attention runs over patches, separately for each pixel offset, exactly as transformers' reshape/transpose chain
(B, C, NH, ph, NW, pw) -> (B * P, NH * NW, C) orders them. fold is the exact inverse. Both are pure data movement;
the fast versions copy contiguous C-vectors, one input row per task.
"""

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32, positive
from ._jit import parallel_kernel


# x (B, H, W, C) -> (B * ph * pw, (H / ph) * (W / pw), C)
def unfold_reference(x, ph, pw):
    B, H, W, C = x.shape
    nh, nw = H // ph, W // pw
    t = x.reshape(B, nh, ph, nw, pw, C).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(t.reshape(B * ph * pw, nh * nw, C))


# tokens (B * ph * pw, NH * NW, C) -> (B, NH * ph, NW * pw, C)
def fold_reference(tokens, ph, pw, nh, nw):
    P = ph * pw
    B, C = tokens.shape[0] // P, tokens.shape[2]
    t = tokens.reshape(B, ph, pw, nh, nw, C).transpose(0, 3, 1, 4, 2, 5)
    return np.ascontiguousarray(t.reshape(B, nh * ph, nw * pw, C))


@parallel_kernel
def _unfold(x, ph, pw, out):
    B, H, W, C = x.shape
    nw = W // pw
    for row in prange(B * H):
        b, y = row // H, row % H
        nh, i = y // ph, y % ph
        for xx in range(W):
            out[b * ph * pw + i * pw + xx % pw, nh * nw + xx // pw, :] = x[b, y, xx, :]


@parallel_kernel
def _fold(tokens, ph, pw, out):
    B, H, W, C = out.shape
    nw = W // pw
    for row in prange(B * H):
        b, y = row // H, row % H
        nh, i = y // ph, y % ph
        for xx in range(W):
            out[b, y, xx, :] = tokens[b * ph * pw + i * pw + xx % pw, nh * nw + xx // pw, :]


def unfold(x, ph, pw):
    f32("unfold x", x, 4)
    positive(ph=ph, pw=pw)
    B, H, W, C = x.shape
    if H % ph or W % pw:
        raise KernelArgumentError(f"unfold: a {H}x{W} map does not split into {ph}x{pw} patches")
    out = np.empty((B * ph * pw, (H // ph) * (W // pw), C), np.float32)
    _unfold(x, ph, pw, out)
    return out


def fold(tokens, ph, pw, nh, nw):
    f32("fold tokens", tokens, 3)
    positive(ph=ph, pw=pw, nh=nh, nw=nw)
    T, N, C = tokens.shape
    if T % (ph * pw) or N != nh * nw:
        raise KernelArgumentError(f"fold: tokens of shape {tokens.shape} are not {ph}x{pw} patches on a {nh}x{nw} grid")
    out = np.empty((T // (ph * pw), nh * ph, nw * pw, C), np.float32)
    _fold(tokens, ph, pw, out)
    return out
