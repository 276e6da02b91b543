"""MobileNetV2's inverted residual as one fused op: expand 1x1 (+ act), depthwise 3x3 (+ act), reduce 1x1
(+ the block input when shapes allow).

    h = act(x @ we + be)                      (B, H, W, mid)
    d = act(depthwise_3x3(h, wd, bd, stride))  (B, Ho, Wo, mid)
    out = d @ wr + br (+ x)                   (B, Ho, Wo, cout)

The reference is the composition of the three unfused references. The fast version never writes the expanded maps
h and d (2 MB each for layer 1 of xx-small at 256x256) to memory: each task walks a band of output rows keeping a
ring of the three expanded input rows the next output row needs (each expanded row computed once, plus two rows of
halo at the start of a band), runs the depthwise row on them, and the reduce product on that row, all in L1/L2.
Padding rows of the depthwise conv are zero rows of the expanded map, as in the unfused graph.
"""

import numpy as np
from numba import prange

from ._checks import KernelArgumentError, conv_out_size, f32, same
from ._gemm import gemm, pack
from ._jit import parallel_tile_caller
from ._launch import launch, output
from ._split import block
from .activation import epilogue
from .depthwise_conv2d import depthwise_conv2d_reference, row_3x3
from .linear import check_packed
from .pointwise_conv2d import pointwise_conv2d_reference


# x (B, H, W, cin), we (cin, mid), wd (3, 3, mid), wr (mid, cout), biases or None, residual (B, Ho, Wo, cout) or None
def inverted_residual_reference(x, we, be, wd, bd, wr, br, stride, act, residual=None, packed=(None, None)):
    h = pointwise_conv2d_reference(x, we, be, act)
    h = depthwise_conv2d_reference(h, wd, bd, stride, 1, 1, act)
    return pointwise_conv2d_reference(h, wr, br, 0, residual)


@parallel_tile_caller
def _inverted_residual(x, ewp, ebp, wd, bd, rwp, rbp, stride, act, residual, band, out):
    B, H, W, cin = x.shape
    mid = wd.shape[2]
    _, ho, wo, cout = out.shape
    bands = (ho + band - 1) // band
    pixels = x.reshape(B * H * W, cin)
    zeros = np.zeros((W, mid), np.float32)  # an expanded row in the padding
    no_residual, no_block_input = np.empty((0, mid), np.float32), np.empty((0, cout), np.float32)
    for task in prange(B * bands):
        b, r0 = task // bands, task % bands * band
        r1 = min(r0 + band, ho)
        ring = np.empty((3, W, mid), np.float32)  # expanded row iy lives in ring[iy % 3]
        d = np.empty((wo, mid), np.float32)
        rows = out[b].reshape(ho * wo, cout)
        res = residual[b].reshape(ho * wo, cout) if residual.shape[0] == B else no_block_input
        done = -1  # the last expanded row computed
        for oy in range(r0, r1):
            iy0 = oy * stride - 1
            for iy in range(max(iy0, done + 1, 0), min(iy0 + 3, H)):
                slot = ring[iy % 3]
                gemm(pixels, (b * H + iy) * W, ewp, ebp, slot, 0, W, 0, cin, mid)
                epilogue(slot, 0, W, act, no_residual)
                done = iy
            t0 = ring[iy0 % 3] if iy0 >= 0 else zeros
            t1 = ring[(iy0 + 1) % 3] if iy0 + 1 < H else zeros
            t2 = ring[(iy0 + 2) % 3] if iy0 + 2 < H else zeros
            row_3x3(t0, t1, t2, wd, bd, stride, 1, 1, d)
            epilogue(d, 0, wo, act, no_residual)
            gemm(d, 0, rwp, rbp, rows, oy * wo, wo, 0, mid, cout)
            epilogue(rows, oy * wo, (oy + 1) * wo, 0, res)


def inverted_residual(x, we, be, wd, bd, wr, br, stride, act, residual=None, packed=(None, None)):
    f32("inverted_residual x", x, 4)
    B, H, W, cin = x.shape
    f32("inverted_residual expand weight", we, 2)
    f32("inverted_residual depthwise weight", wd, 3)
    f32("inverted_residual reduce weight", wr, 2)
    mid, cout = we.shape[1], wr.shape[1]
    same("inverted_residual expand weight", we.shape[0], cin, "input channels")
    if wd.shape != (3, 3, mid):
        raise KernelArgumentError(f"inverted_residual depthwise weight: shape {wd.shape}, expected (3, 3, {mid})")
    same("inverted_residual reduce weight", wr.shape[0], mid, "input channels")
    bd = np.zeros(mid, np.float32) if bd is None else f32("inverted_residual depthwise bias", bd, 1)
    same("inverted_residual depthwise bias", bd.shape[0], mid, "length")
    ho, wo = conv_out_size(H, 3, stride, 1, 1), conv_out_size(W, 3, stride, 1, 1)
    if residual is None:
        residual = np.empty((0, 1, 1, cout), np.float32)
    else:
        f32("inverted_residual residual", residual, 4)
        if residual.shape != (B, ho, wo, cout):
            raise KernelArgumentError(
                f"inverted_residual residual: shape {residual.shape}, expected {(B, ho, wo, cout)}"
            )
    for name, w, b in (("expand", we, be), ("reduce", wr, br)):
        if b is not None:
            f32(f"inverted_residual {name} bias", b, 1)
            same(f"inverted_residual {name} bias", b.shape[0], w.shape[1], "length")
    pe, pr = packed
    ewp, ebp = pack(we, be) if pe is None else check_packed("inverted_residual expand", pe, cin, mid)
    rwp, rbp = pack(wr, br) if pr is None else check_packed("inverted_residual reduce", pr, mid, cout)
    out = output((B, ho, wo, cout))
    launch(_inverted_residual, x, ewp, ebp, wd, bd, rwp, rbp, stride, act, residual, block(ho, 1, ho), out)
    return out
