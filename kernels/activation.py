"""Elementwise activations, applied in place by the kernels that produce a tensor (their fused epilogue).

    silu(x) = x * sigmoid(x)      (transformers' "silu" and "swish")
    relu(x) = max(x, 0)
    gelu(x) = x * Phi(x)          (exact, erf-based: transformers' "gelu")

Activations are passed to kernels as small integer codes, so that one compiled kernel serves them all. SiLU uses a
rational tanh (no exp, no branch), so an epilogue loop with it compiles to SIMD code.
"""

import math

import numpy as np
from numba import prange

from ._checks import KernelArgumentError
from ._jit import inline, kernel, parallel_kernel

NONE, SILU, RELU, GELU = 0, 1, 2, 3
CODES = {"none": NONE, "identity": NONE, "silu": SILU, "swish": SILU, "relu": RELU, "gelu": GELU}


def code(name: str) -> int:
    """The kernel code of an activation name."""
    try:
        return CODES[name]
    except KeyError:
        raise KernelArgumentError(f"unsupported activation {name!r}; supported: {sorted(CODES)}") from None


def activation_reference(x: np.ndarray, act: int) -> np.ndarray:
    if act == SILU:
        return x / (1.0 + np.exp(-x))
    if act == RELU:
        return np.maximum(x, 0)
    if act == GELU:
        erf = np.vectorize(math.erf, otypes=[np.float64])
        return (x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))).astype(x.dtype)
    return x


@inline
def silu(v):
    # x * sigmoid(x) = h + h * tanh(h) with h = x / 2, with a rational tanh: no exp, one division, fewer constants to
    # keep in registers (0.36 vs 0.56 ms for 524k values in L1, Zen 3); absolute error below 4e-6 for |x| <= 30.
    # h + h * tanh(h) is one multiply-add where x * (1/2 + tanh(x/2) / 2) took a multiply-add and a multiply
    h = np.float32(0.5) * v
    return h + h * tanh(h)


@inline
def tanh(v):
    """Eigen's rational tanh (odd degree-13 numerator over even degree-6 denominator, clamped to +-7.9053, where
    float32 tanh is 1). NaN passes through the clamps: each is a select that keeps v when the comparison fails, which
    x86 does in one min or max instruction, where a clamp that dropped NaN needed a select at the end to bring it back
    (with h + h * tanh(h) in silu: 0.37 vs 0.44 ns a value in L1, Zen 4, 1 thread)."""
    c = np.float32(7.90531110763549805)
    x = c if v > c else v
    x = -c if x < -c else x
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p * x / q


@inline
def relu(v):
    # arithmetic, not max() (does not vectorise) or a select (LLVM turns `o[i] = o[i] if o[i] > 0 else 0` into a
    # masked store, vmaskmovps, microcoded on AMD: 7x slower)
    return (v + abs(v)) * np.float32(0.5)


@inline
def gelu(v):
    return 0.5 * v * (1.0 + math.erf(v * 0.7071067811865476))


@inline
def apply(v, act):
    """One scalar through the activation `act`."""
    if act == SILU:
        return silu(v)
    if act == RELU:
        return relu(v)
    if act == GELU:
        return gelu(v)
    return v


@kernel
def epilogue(out, m0, m1, act, residual):
    """The fused epilogue of the kernels that produce rows: `act` on rows [m0, m1) of out (M, N), then + residual
    when it has M rows (pass a 0-row array for none). The rows are one contiguous run, taken as a flat slice indexed
    from 0, one loop per activation: a branch on `act` inside the loop, a short loop per row, or indices that Numba
    cannot prove >= 0 (it then emits wraparound code) each kept the loop scalar."""
    N = out.shape[1]
    o = out.reshape(-1)[m0 * N : m1 * N]
    if act == SILU:
        for i in range(o.shape[0]):
            o[i] = silu(o[i])
    elif act == RELU:
        for i in range(o.shape[0]):
            o[i] = relu(o[i])
    elif act == GELU:
        for i in range(o.shape[0]):
            o[i] = gelu(o[i])
    if residual.shape[0] == out.shape[0]:
        r = residual.reshape(-1)[m0 * N : m1 * N]
        for i in range(o.shape[0]):
            o[i] += r[i]


@parallel_kernel
def _activation(flat, act):
    for i in prange(flat.shape[0]):
        flat[i] = apply(flat[i], act)


def activation(x: np.ndarray, act: int) -> np.ndarray:
    """A new array: `act` applied to every element of the float32 array x."""
    if x.dtype != np.float32:
        raise KernelArgumentError(f"activation: expected float32, got {x.dtype}")
    out = np.ascontiguousarray(x).copy()
    _activation(out.reshape(-1), act)
    return out
