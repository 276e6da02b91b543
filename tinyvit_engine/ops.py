"""The op table: what each graph op does, in terms of kernels.

An op is a plain function (kernels, node, params, *inputs) -> output. `kernels` is either the fast or the reference
kernel set (tinyvit_engine.kernels.FAST / REFERENCE), so the same graph runs on either. The ops only reshape views and
pick a kernel; all arithmetic lives in the kernels.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import Fused
from .kernels import activation_code, launch, output, pack


def conv(k, node, params, x, residual=None):
    a = node.attrs
    w, b, packed = params[node.name + ".weight"], params.get(node.name + ".bias"), _packed(node, params)
    act = activation_code(a.act)
    if a.depthwise:
        return k.depthwise_conv2d(x, w.reshape(a.kernel, a.kernel, a.cout), b, a.stride, a.padding, a.dilation, act)
    if _pointwise(a):
        return k.pointwise_conv2d(x, w.reshape(a.cin, a.cout), b, act, residual, packed)
    assert residual is None, "only pointwise convs fuse a residual"
    return k.conv2d(x, w, b, a.stride, a.padding, a.dilation, act, packed)


def inverted_residual(k, node, params, x, residual=None):
    # expand 1x1 -> depthwise 3x3 -> reduce 1x1 (+ residual), fused (see fusion.py)
    e, d, r = node.attrs.parts
    weight = {p.name: params[p.name + ".weight"] for p in (e, d, r)}
    bias = {p.name: params.get(p.name + ".bias") for p in (e, d, r)}
    wd = weight[d.name].reshape(3, 3, d.attrs.cout)
    we, wr = weight[e.name].reshape(e.attrs.cin, e.attrs.cout), weight[r.name].reshape(r.attrs.cin, r.attrs.cout)
    packed = (_packed(e, params), _packed(r, params))
    act = activation_code(e.attrs.act)
    return k.inverted_residual(
        x, we, bias[e.name], wd, bias[d.name], wr, bias[r.name], d.attrs.stride, act, residual, packed
    )


def _pointwise(a) -> bool:
    return a.kernel == 1 and a.stride == 1


def linear(k, node, params, x, residual=None):
    # a linear layer over the last axis of any tensor: flatten the leading axes into rows
    a = node.attrs
    rows = x.reshape(-1, a.cin)
    res = None if residual is None else residual.reshape(-1, a.cout)
    w, b = params[node.name + ".weight"], params.get(node.name + ".bias")
    out = k.linear(rows, w, b, activation_code(a.act), res, _packed(node, params))
    return out.reshape(*x.shape[:-1], a.cout)


def layer_norm(k, node, params, x):
    a = node.attrs
    out = k.layer_norm(x.reshape(-1, a.channels), params[node.name + ".weight"], params[node.name + ".bias"], a.eps)
    return out.reshape(x.shape)


def attention(k, node, params, qkv):
    # tokens (B, P, N, 3C): attention runs over the N patches of each (sample, pixel offset)
    out = k.attention(qkv.reshape(-1, *qkv.shape[2:]), node.attrs.heads)
    return out.reshape(*qkv.shape[:3], out.shape[-1])


def linear_attention(k, node, params, qkv):
    out = k.linear_attention(qkv.reshape(-1, *qkv.shape[2:]))
    return out.reshape(*qkv.shape[:3], out.shape[-1])


def group_norm(k, node, params, x):
    # one group: statistics over everything but the batch axis
    a = node.attrs
    out = k.group_norm(
        x.reshape(x.shape[0], -1, a.channels), params[node.name + ".weight"], params[node.name + ".bias"], a.eps
    )
    return out.reshape(x.shape)


def _rounded_up(x, patch: int) -> tuple[int, int]:
    """MobileViT v1 resizes a map up to the next multiple of the patch before unfolding."""
    return math.ceil(x.shape[1] / patch) * patch, math.ceil(x.shape[2] / patch) * patch


def unfold(k, node, params, x):
    # (B, H, W, C) -> tokens (B, P, N, C); v2 drops a last odd row/column, v1 resizes first
    p = node.attrs.patch
    if node.attrs.resize and _rounded_up(x, p) != x.shape[1:3]:
        x = k.resize_bilinear(x, *_rounded_up(x, p))
    t = k.unfold(x, p, p)
    return t.reshape(x.shape[0], p * p, t.shape[1], t.shape[2])


def fold(k, node, params, tokens, like):
    # tokens (B, P, N, C) -> a map the size of `like`, the map that was unfolded
    p = node.attrs.patch
    size = _rounded_up(like, p) if node.attrs.resize else like.shape[1:3]
    x = k.fold(tokens.reshape(-1, *tokens.shape[2:]), p, p, *size)
    if x.shape[1:3] != like.shape[1:3]:
        x = k.resize_bilinear(x, like.shape[1], like.shape[2])  # v1: back down to the original size
    return x


def concat(k, node, params, *maps):
    out = output((*maps[0].shape[:-1], sum(m.shape[-1] for m in maps)))
    launch(_concat_channels, maps, out)
    return out


def _concat_channels(maps, out):
    np.concatenate(maps, axis=-1, out=out)


def global_avg_pool(k, node, params, x):
    out = k.global_avg_pool(x)
    return out.reshape(x.shape[0], 1, 1, x.shape[3]) if node.attrs is not None and node.attrs.keepdims else out


def resize_like(k, node, params, x, like):
    # bilinear (align_corners=False) to the spatial size of `like`
    return k.resize_bilinear(x, like.shape[1], like.shape[2])


OPS = {
    "conv": conv,
    "inverted_residual": inverted_residual,
    "linear": linear,
    "layer_norm": layer_norm,
    "attention": attention,
    "linear_attention": linear_attention,
    "group_norm": group_norm,
    "unfold": unfold,
    "fold": fold,
    "concat": concat,
    "global_avg_pool": global_avg_pool,
    "resize_like": resize_like,
}


def _packed(node, params):
    wp = params.get(node.name + ".weight_panels")
    return None if wp is None else (wp, params[node.name + ".bias_panels"])


def prepared_weights(nodes, params) -> dict:
    """The dense kernels' weights and biases packed into tile panels (`<node>.weight_panels`, `.bias_panels`), made
    once when the executor is built instead of on every call."""
    out = {}
    parts = [p for node in nodes for p in (node.attrs.parts if isinstance(node.attrs, Fused) else (node,))]
    for node in parts:
        a, w = node.attrs, params.get(node.name + ".weight")
        if node.op == "conv" and not a.depthwise:
            w = w.reshape(-1, a.cout)  # (kh * kw * cin, cout): the im2col product's weight
        elif node.op != "linear":
            continue
        wp, bp = pack(w, params.get(node.name + ".bias"))
        out[node.name + ".weight_panels"], out[node.name + ".bias_panels"] = wp, bp
    return out
