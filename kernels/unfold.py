"""Unfold a channels-last feature map into patch tokens, and fold tokens back (MobileViT's unfolding/folding).

A (B, H, W, C) map with H = NH * ph and W = NW * pw is cut into ph x pw patches. Token n = nh * NW + nw of sequence
b * P + (i * pw + j) is the pixel at offset (i, j) of patch (nh, nw):

    tokens[b * P + i * pw + j, nh * NW + nw, c] = x[b, nh * ph + i, nw * pw + j, c]

so attention runs over patches, separately for each pixel offset, exactly as transformers' reshape/transpose chain
(B, C, NH, ph, NW, pw) -> (B * P, NH * NW, C) (v1) and nn.functional.unfold (v2) order them. When H or W is not a
multiple of the patch, the last rows/columns are dropped (NH = H // ph), as nn.functional.unfold does; fold writes
zeros there. Both are pure data movement; the fast versions copy contiguous C-vectors, one row per task.
"""

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, f32, positive
from ._jit import parallel_kernel
from ._launch import launch, output


# x (B, H, W, C) -> (B * ph * pw, (H // ph) * (W // pw), C)
def unfold_reference(x, ph, pw):
    B, H, W, C = x.shape
    nh, nw = H // ph, W // pw
    t = x[:, : nh * ph, : nw * pw].reshape(B, nh, ph, nw, pw, C).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(t.reshape(B * ph * pw, nh * nw, C))


# tokens (B * ph * pw, (H // ph) * (W // pw), C) -> (B, H, W, C)
def fold_reference(tokens, ph, pw, H, W):
    P = ph * pw
    B, C = tokens.shape[0] // P, tokens.shape[2]
    nh, nw = H // ph, W // pw
    out = np.zeros((B, H, W, C), np.float32)
    out[:, : nh * ph, : nw * pw] = (
        tokens.reshape(B, ph, pw, nh, nw, C).transpose(0, 3, 1, 4, 2, 5).reshape(B, nh * ph, nw * pw, C)
    )
    return out


@parallel_kernel
def _unfold(x, ph, pw, out):
    B, H, W, C = x.shape
    rows, nw = H // ph * ph, W // pw
    for task in prange(B * rows):
        b, y = task // rows, task % rows
        nh, i = y // ph, y % ph
        for xx in range(nw * pw):
            out[b * ph * pw + i * pw + xx % pw, nh * nw + xx // pw, :] = x[b, y, xx, :]


@parallel_kernel
def _fold(tokens, ph, pw, out):
    B, H, W, C = out.shape
    rows, nw = H // ph * ph, W // pw
    for task in prange(B * H):
        b, y = task // H, task % H
        if y >= rows:
            out[b, y] = 0.0  # a last row no patch covers
            continue
        nh, i = y // ph, y % ph
        for xx in range(W):
            if xx < nw * pw:
                out[b, y, xx, :] = tokens[b * ph * pw + i * pw + xx % pw, nh * nw + xx // pw, :]
            else:
                out[b, y, xx, :] = 0.0


def unfold(x, ph, pw):
    f32("unfold x", x, 4)
    positive(ph=ph, pw=pw)
    B, H, W, C = x.shape
    if H < ph or W < pw:
        raise KernelArgumentError(f"unfold: a {H}x{W} map is smaller than one {ph}x{pw} patch")
    out = output((B * ph * pw, (H // ph) * (W // pw), C))
    launch(_unfold, x, ph, pw, out)
    return out


def fold(tokens, ph, pw, H, W):
    f32("fold tokens", tokens, 3)
    positive(ph=ph, pw=pw, H=H, W=W)
    T, N, C = tokens.shape
    if T % (ph * pw) or N != (H // ph) * (W // pw) or N == 0:
        raise KernelArgumentError(f"fold: tokens of shape {tokens.shape} are not {ph}x{pw} patches of a {H}x{W} map")
    out = output((T // (ph * pw), H, W, C))
    launch(_fold, tokens, ph, pw, out)
    return out
