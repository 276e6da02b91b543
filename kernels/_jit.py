"""Numba options, stated once for every kernel.

cache=True writes the compiled code next to the source (or to NUMBA_CACHE_DIR), so a second process loads it
instead of compiling. The fastmath flags allow reassociation and fused multiply-add (what makes the inner loops
vectorise) but keep NaN and inf semantics, so bad input stays visible in the output instead of being optimised away.
error_model="numpy" keeps division from raising inside kernels. Bounds are NOT checked by Numba: every kernel's
Python wrapper validates shapes, dtypes and contiguity before the jitted code runs (see _checks.py).
"""

import numba

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def kernel(fn):
    """A serial jitted kernel."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True)(fn)


def parallel_kernel(fn):
    """A jitted kernel whose outer `numba.prange` loop runs on Numba's thread pool."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", nogil=True, parallel=True)(fn)


def inline(fn):
    """A small scalar helper that jitted kernels call; Numba inlines it into the caller."""
    return numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")(fn)
