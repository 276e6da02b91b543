"""Numba options, stated once for every kernel.

cache=True writes the compiled code next to the source (or to NUMBA_CACHE_DIR), so a second process loads it
instead of compiling. The fastmath flags allow reassociation and fused multiply-add (what makes the inner loops
vectorise) but keep NaN and inf semantics, so bad input stays visible in the output instead of being optimised away.
error_model="numpy" keeps division from raising inside kernels. Bounds are NOT checked by Numba: every kernel's
Python wrapper validates shapes, dtypes and contiguity before the jitted code runs (see _checks.py).

The register tiles (`tile`, the generated functions of _tiles.py) differ in two ways, both measured (PERF_NOTES):
they are compiled with LLVM's SLP vectorizer on (off by default in Numba), which packs a tile's scalar accumulators
into vector registers; and without `reassoc`, which made LLVM turn short tile loops into vector reductions that
spilled. The SLP switch is Numba's process-wide config value, so it is turned on only while a tile compiles, and
while the code around tiles compiles: the shared product (_gemm.gemm), which inlines them and which LLVM would
otherwise re-optimise into scalar code, and the kernels that call it (measured faster with it on).
"""

from contextlib import contextmanager

import numba
from numba.core import config
from numba.core.compiler_lock import global_compiler_lock

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
TILE_FASTMATH = {"contract", "nsz", "arcp"}


def _jit(fn, fastmath, slp=False, noinline=False, **options):
    dispatcher = numba.njit(cache=True, fastmath=fastmath, error_model="numpy", nogil=True, **options)(fn)
    if slp:
        compile_plain = dispatcher.compile

        def compile_with_slp(sig):
            # under Numba's (re-entrant) compiler lock, so another thread's compile never sees or resets the switch
            with global_compiler_lock, _slp_vectorizer():
                entry = compile_plain(sig)
            if noinline:
                _never_inline(dispatcher)
            return entry

        dispatcher.compile = compile_with_slp  # first calls and calls from other kernels both compile through this
    return dispatcher


def _never_inline(dispatcher) -> None:
    """Mark the compiled functions of `dispatcher` noinline in the module its callers link (compiled now or loaded
    from the cache): every caller links one copy and calls it, instead of inlining a copy at each call site."""
    for cres in dispatcher.overloads.values():
        fn = cres.library._get_module_for_linking().get_function(cres.fndesc.llvm_func_name)
        if "noinline" not in str(fn.attributes):
            fn.add_function_attribute("noinline")


@contextmanager
def _slp_vectorizer():
    before = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = before


def kernel(fn):
    """A serial jitted kernel."""
    return _jit(fn, FASTMATH)


def parallel_kernel(fn):
    """A jitted kernel whose outer `numba.prange` loop runs on Numba's thread pool."""
    return _jit(fn, FASTMATH, parallel=True)


def inline(fn):
    """A small scalar helper that jitted kernels call; Numba inlines it into the caller."""
    return _jit(fn, FASTMATH, inline="always")


def tile(fn):
    """A register tile: compiled with the SLP vectorizer and without reassociation (see above)."""
    return _jit(fn, TILE_FASTMATH, slp=True)


def tile_caller(fn):
    """A serial kernel that calls register tiles. LLVM optimises a caller's module again with the tiles inlined into
    it, so the caller needs the tiles' settings too, or the sums go back to memory (measured: 3 vs 44 GFLOP/s)."""
    return _jit(fn, TILE_FASTMATH, slp=True)


def product(fn):
    """The shared matrix product (_gemm.gemm): a tile caller that its own callers never inline, so each kernel's
    machine code holds one copy of it and its tiles, not one per call site (compile time, load time, memory)."""
    return _jit(fn, TILE_FASTMATH, slp=True, noinline=True)


def parallel_tile_caller(fn):
    """A parallel kernel (outer prange) that calls register tiles."""
    return _jit(fn, TILE_FASTMATH, slp=True, parallel=True)
