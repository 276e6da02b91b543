"""Linear layer (also every 1x1 convolution, which is a linear layer over channels-last pixels), with a fused
epilogue: bias, activation, then an optional residual add.

    out[m, n] = act(bias[n] + sum_k x[m, k] * w[k, n]) + residual[m, n]

The weight is stored (in, out). The fast version runs the register-tiled product of _gemm.py on the weight packed
into panels (`pack`, made once per model by the executor and passed as `packed`), a block of rows per task, then
the epilogue on those rows while they are still in L1.
"""

import numpy as np
from numba import prange

from ._checks import f32, same, shape
from ._gemm import COLS, ROWS, gemm, pack
from ._jit import parallel_tile_caller
from ._launch import launch, output
from ._split import block
from .activation import activation_reference, epilogue

BLOCK = 8 * ROWS  # rows per task, at most: the epilogue runs on them while they are in L1


# x (M, K), w (K, N), bias (N,) or None, residual (M, N) or None -> (M, N)
def linear_reference(x, w, bias=None, act=0, residual=None, packed=None):
    out = x @ w
    if bias is not None:
        out = out + bias
    out = activation_reference(out.astype(np.float32), act)
    return out if residual is None else out + residual


@parallel_tile_caller
def _linear(x, wp, bp, act, residual, rows, out):
    M, K = x.shape
    N = out.shape[1]
    for task in prange((M + rows - 1) // rows):
        m0 = task * rows
        m1 = min(m0 + rows, M)
        gemm(x, m0, wp, bp, out, m0, m1 - m0, 0, K, N)
        epilogue(out, m0, m1, act, residual)


def check_packed(name, packed, K, N):
    """The caller's packed weight and bias (checked), as `pack` makes them."""
    wp, bp = packed
    panels = -(-N // COLS)
    f32(name + " packed weight", wp, 3)
    shape(name + " packed weight", wp, (panels, K, COLS))
    f32(name + " packed bias", bp, 2)
    shape(name + " packed bias", bp, (panels, COLS))
    return wp, bp


def linear(x, w, bias=None, act=0, residual=None, packed=None):
    f32("linear x", x, 2)
    f32("linear w", w, 2)
    M, K = x.shape
    N = w.shape[1]
    same("linear w", w.shape[0], K, "input features")
    if bias is not None:
        f32("linear bias", bias, 1)
        same("linear bias", bias.shape[0], N, "length")
    if residual is None:
        residual = np.empty((0, N), np.float32)
    else:
        f32("linear residual", residual, 2)
        same("linear residual", residual.shape[0], M, "rows")
        same("linear residual", residual.shape[1], N, "columns")
    wp, bp = pack(w, bias) if packed is None else check_packed("linear", packed, K, N)
    out = output((M, N))
    launch(_linear, x, wp, bp, act, residual, block(M, ROWS, BLOCK), out)
    return out


jitted = _linear  # the compiled kernel that every model runs (coldstart.py asks Numba's cache about it)
