"""Argument checks that run in Python before any jitted kernel: Numba does not check bounds.

Kernels take non-empty arrays: a zero-length axis never occurs in a model, and some kernels would index past it
(resize_bilinear reads source row 0 of every output row).
"""

import numpy as np


class KernelArgumentError(ValueError):
    """An array handed to a kernel has the wrong rank, shape, dtype or memory layout."""


def f32(name: str, a: np.ndarray, ndim: int) -> np.ndarray:
    """Check that `a` is a non-empty, C-contiguous float32 array of rank `ndim` and return it."""
    if not isinstance(a, np.ndarray):
        raise KernelArgumentError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise KernelArgumentError(f"{name}: expected float32, got {a.dtype}")
    if a.ndim != ndim:
        raise KernelArgumentError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise KernelArgumentError(f"{name}: expected a C-contiguous array")
    if a.size == 0:
        raise KernelArgumentError(f"{name}: expected a non-empty array, got shape {a.shape}")
    return a


def same(name: str, actual: int, expected: int, what: str) -> None:
    """Check that a dimension matches the one another argument implies."""
    if actual != expected:
        raise KernelArgumentError(f"{name}: {what} is {actual}, expected {expected}")


def shape(name: str, a: np.ndarray, expected: tuple) -> None:
    """Check that an array has exactly the shape another argument implies."""
    if tuple(a.shape) != tuple(expected):
        raise KernelArgumentError(f"{name}: shape is {tuple(a.shape)}, expected {tuple(expected)}")


def integer(name: str, v: int) -> None:
    """Check that `v` is an integer (a float or bool would reach the kernel as a wrong size or type)."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, (bool, np.bool_)):
        raise KernelArgumentError(f"{name} must be an integer, got {v!r}")


def positive(**values: int) -> None:
    """Check that every named integer is >= 1."""
    for name, v in values.items():
        integer(name, v)
        if v < 1:
            raise KernelArgumentError(f"{name} must be >= 1, got {v}")


def conv_out_size(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one axis; refuses inputs too small for the kernel."""
    positive(stride=stride, dilation=dilation)
    integer("padding", padding)
    if padding < 0:
        raise KernelArgumentError(f"padding must be >= 0, got {padding}")
    out = (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    if out < 1:
        raise KernelArgumentError(
            f"input of size {size} is too small for a kernel of {k} taps with dilation {dilation} and padding {padding}"
        )
    return out
