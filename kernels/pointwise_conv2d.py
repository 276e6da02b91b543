"""Pointwise (1x1) convolution, channels-last: a linear layer applied to every pixel.

    out[b, y, x, o] = act(bias[o] + sum_c x[b, y, x, c] * w[c, o]) + residual[b, y, x, o]

Channels-last makes the pixels of a (B, H, W, C) map the rows of a (B*H*W, C) matrix, so the op is a reshape around
the linear kernel: no copy, and the same fused epilogue.
"""

from ._checks import f32, shape
from .linear import linear, linear_reference


def _rows(x):
    return x.reshape(-1, x.shape[-1])


# x (B, H, W, Cin), w (Cin, Cout), bias (Cout,) or None, residual (B, H, W, Cout) or None -> (B, H, W, Cout)
def pointwise_conv2d_reference(x, w, bias=None, act=0, residual=None, packed=None):
    res = None if residual is None else _rows(residual)
    return linear_reference(_rows(x), w, bias, act, res).reshape(*x.shape[:3], w.shape[1])


def pointwise_conv2d(x, w, bias=None, act=0, residual=None, packed=None):
    f32("pointwise_conv2d x", x, 4)
    if residual is not None:
        f32("pointwise_conv2d residual", residual, 4)
        shape("pointwise_conv2d residual", residual, (*x.shape[:3], w.shape[-1]))
        residual = _rows(residual)
    return linear(_rows(x), w, bias, act, residual, packed).reshape(*x.shape[:3], w.shape[1])
