"""The op table: what each graph op does, in terms of kernels.

An op is a plain function (kernels, node, params, *inputs) -> output. `kernels` is either the fast or the reference
kernel set (tinyvit_engine.kernels.FAST / REFERENCE), so the same graph runs on either. The ops only reshape views and
pick a kernel; all arithmetic lives in the kernels.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import activation_code


def conv(k, node, params, x, residual=None):
    a = node.attrs
    w, b = params[node.name + ".weight"], params.get(node.name + ".bias")
    act = activation_code(a.act)
    if a.depthwise:
        return k.depthwise_conv2d(x, w.reshape(a.kernel, a.kernel, a.cout), b, a.stride, a.padding, a.dilation, act)
    if a.kernel == 1 and a.stride == 1:
        return k.pointwise_conv2d(x, w.reshape(a.cin, a.cout), b, act, residual)
    assert residual is None, "only pointwise convs fuse a residual"
    return k.conv2d(x, w, b, a.stride, a.padding, a.dilation, act)


def linear(k, node, params, x, residual=None):
    # a linear layer over the last axis of any tensor: flatten the leading axes into rows
    a = node.attrs
    rows = x.reshape(-1, a.cin)
    res = None if residual is None else residual.reshape(-1, a.cout)
    out = k.linear(rows, params[node.name + ".weight"], params.get(node.name + ".bias"), activation_code(a.act), res)
    return out.reshape(*x.shape[:-1], a.cout)


def layer_norm(k, node, params, x):
    a = node.attrs
    out = k.layer_norm(x.reshape(-1, a.channels), params[node.name + ".weight"], params[node.name + ".bias"], a.eps)
    return out.reshape(x.shape)


def attention(k, node, params, qkv):
    return k.attention(qkv, node.attrs.heads)


def _grid(x, patch: int) -> tuple[int, int]:
    """Patches along each axis: transformers rounds the map up to a multiple of the patch."""
    return math.ceil(x.shape[1] / patch), math.ceil(x.shape[2] / patch)


def unfold(k, node, params, x):
    p = node.attrs.patch
    nh, nw = _grid(x, p)
    if (nh * p, nw * p) != x.shape[1:3]:
        x = k.resize_bilinear(x, nh * p, nw * p)  # transformers resizes up to the next multiple of the patch
    return k.unfold(x, p, p)


def fold(k, node, params, tokens, like):
    # `like` is the map that was unfolded: fold back to its size
    p = node.attrs.patch
    nh, nw = _grid(like, p)
    x = k.fold(tokens, p, p, nh, nw)
    if x.shape[1:3] != like.shape[1:3]:
        x = k.resize_bilinear(x, like.shape[1], like.shape[2])  # and back down, as transformers does
    return x


def concat(k, node, params, *maps):
    return np.concatenate(maps, axis=-1)


def global_avg_pool(k, node, params, x):
    return k.global_avg_pool(x)


OPS = {
    "conv": conv,
    "linear": linear,
    "layer_norm": layer_norm,
    "attention": attention,
    "unfold": unfold,
    "fold": fold,
    "concat": concat,
    "global_avg_pool": global_avg_pool,
}
