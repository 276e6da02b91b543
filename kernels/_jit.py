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

Cold start (compiling everything once for a CPU) is most of a first run, so three things keep it short (the
demo classifier's first run: 80 s before them, 37-41 s after, 25 s with kernels/warm.py on a second core). Kernels
call the shared product by a symbol instead of each linking, optimising and emitting its own copy (see `product`).
Constants passed between kernels are typed as plain integers, not literals, so a helper compiles once, not once per
pattern of constants. And helpers that work on a whole row (the epilogue, a depthwise row, an im2col gather) are
compiled once and called, not inlined by Numba, which types and lowers an inlined function again at every call
site.

Where the compiled code comes from and goes (_target.py): kernels compiled ahead for a portable target ship with
the engine and are copied into a per-user cache, where Numba loads them (and keeps anything it compiles); the cache
of every kernel is tied to the stamp of the whole library and the target (_target.stamp): Numba checks only a
kernel's own file, so an edit to a tile or to the product would otherwise leave callers running stale code, or
calling a product symbol that no longer exists.

Every touch of Numba's internals (the cache locator, the compile hook, the linking module, the SLP switch, a cache
probe, whether Numba has made its target machine) is in this file, and only in MODE "tuned": Numba within TESTED,
its internals where they were. Two other modes need none of them:
- "python" under NUMBA_DISABLE_JIT=1: every kernel is its own Python function (prange is range), so pdb steps
  through it and coverage sees it. Slow (minutes for a small model), equal to the jitted kernels within parity.
- "plain" for any other Numba (or TINYVIT_NUMBA_INTERNALS=0): plain `numba.njit` with the same flags. Correct;
  slower to compile (every caller links its own product) and to run (no SLP vectorizer in the tiles). It says so
  once, as a RuntimeWarning.
"""

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import llvmlite.binding as llvm
import numba
from numba.core import config, types
from numba.core.compiler_lock import global_compiler_lock

from . import _target

FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
TILE_FASTMATH = {"contract", "nsz", "arcp"}
TESTED = ((0, 59), (0, 68))  # the Numba releases (major, minor) whose internals this file was written against


def _cache_impl():
    """Numba's base class of cache implementations (CacheImpl; _CacheImpl before 0.61), or None."""
    from numba.core import caching

    return getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)


def _internals_present() -> bool:
    """Whether the internals "tuned" mode uses are where this file expects them."""
    from numba.core import caching, codegen, dispatcher

    return (
        hasattr(config, "SLP_VECTORIZE")
        and all(hasattr(dispatcher.Dispatcher, a) for a in ("compile", "disable_compile"))
        and hasattr(caching.IndexDataCacheFile, "_load_index")
        and hasattr(codegen.CPUCodeLibrary, "_get_module_for_linking")
        and isinstance(getattr(_cache_impl(), "_locator_classes", None), list)
        and hasattr(caching, "_CacheLocator")
    )


def _mode() -> str:
    if config.DISABLE_JIT:
        return "python"
    version = tuple(int(part) for part in numba.__version__.split(".")[:2] if part.isdigit())
    why = None
    if os.environ.get("TINYVIT_NUMBA_INTERNALS") == "0":
        why = "TINYVIT_NUMBA_INTERNALS=0"
    elif not TESTED[0] <= version <= TESTED[1]:
        why = f"Numba {numba.__version__} is outside the releases this engine was tuned for (0.59 to 0.68)"
    elif not _internals_present():
        why = f"Numba {numba.__version__} has moved internals this engine's tuning uses"
    if why is None:
        return "tuned"
    warnings.warn(
        f"tinyvit-engine: {why}; the kernels compile as plain numba.njit functions (correct, but slower to compile "
        "and to run)",
        RuntimeWarning,
        stacklevel=2,
    )
    return "plain"


MODE = _mode()


def _numba_busy() -> bool:
    """Whether Numba made its CPU target machine in this process already (for the host: it is made once)."""
    from numba.core.registry import cpu_target

    return "_toplevel_target_context" in vars(cpu_target)  # Numba internals: a cached property, once computed


def _use_cache(folder: Path) -> None:
    """Keep every kernel's compiled code in `folder` (see _target.py), tied to STAMP, not to its own file alone."""
    from numba.core import caching

    class KernelCache(caching._CacheLocator):  # Numba internals: a cache locator, tried before Numba's own
        def __init__(self, py_func) -> None:
            self._lineno = py_func.__code__.co_firstlineno

        def get_cache_path(self) -> str:
            return str(folder)

        def get_source_stamp(self) -> str:
            return STAMP

        def get_disambiguator(self) -> str:
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            return cls(py_func) if Path(py_file).resolve().parent == _target.HERE else None

    _cache_impl()._locator_classes.insert(0, KernelCache)


if MODE == "tuned":
    TARGET, WHY_COMPILE = _target.choose(_numba_busy())
    _target.apply(TARGET)
    STAMP = _target.stamp(TARGET)
    CACHE = _target.cache_dir(TARGET)
    _use_cache(CACHE)
else:  # Numba's own choices: the host CPU, the cache beside the source (or nothing to compile at all)
    TARGET, WHY_COMPILE = _target.host(), f"the kernels run as {MODE} code"
    STAMP, CACHE = _target.stamp(TARGET), None


def _jit(fn, fastmath, slp=False, calls_products=False, by_symbol=False, **options):
    if MODE == "python":
        return fn
    dispatcher = numba.njit(cache=True, fastmath=fastmath, error_model="numpy", nogil=True, **options)(fn)
    if MODE == "plain":
        return dispatcher
    compile_plain = dispatcher.compile

    def compile(sig):
        if calls_products:
            _load_products()
        # A call from another kernel types a constant argument as a literal (Literal[int](0)), and Numba would
        # compile one specialisation per pattern of constants; the general types serve every call.
        if isinstance(sig, tuple):
            sig = tuple(types.unliteral(t) for t in sig)
            if sig in dispatcher.overloads:  # (a product, loaded just now)
                return dispatcher.overloads[sig].entry_point
        if not slp:
            return compile_plain(sig)
        # under Numba's (re-entrant) compiler lock, so another thread's compile never sees or resets the switch
        with global_compiler_lock, _slp_vectorizer():
            entry = compile_plain(sig)
        if by_symbol:
            _link_by_symbol(dispatcher)
        return entry

    dispatcher.compile = compile  # first calls and calls from other kernels both compile through this
    return dispatcher


def _link_by_symbol(dispatcher) -> None:
    """Let callers call `dispatcher`'s compiled code by a symbol instead of linking a copy of it.

    Numba links a callee by copying its optimised module into every caller's module, which LLVM then optimises and
    emits again: once for each kernel that calls it, and again for each of the three wrapper modules of a prange
    loop. For the shared product, with its tiles inside, that was most of the cold-start compile. Instead, the
    product's address is registered under a name that depends only on the library's content (STAMP), and callers
    link a one-line trampoline to that name, which LLVM inlines: their machine code calls the one copy in this
    process, and a caller loaded from the cache finds it by the same name in any later process. The address must be
    registered before any caller loads, so products are compiled (or loaded) before any tile caller is.
    """
    for cres in dispatcher.overloads.values():
        library, name = cres.library, cres.fndesc.llvm_func_name
        if getattr(library, "linked_by_symbol", False):
            continue
        stable = f"tinyvit.{dispatcher.py_func.__qualname__}.{STAMP}"
        llvm.add_symbol(stable, library.get_pointer_to_function(name))
        shared = library._get_module_for_linking()  # Numba internals: the module that callers link
        result, *params = (str(t) for t in shared.get_function(name).global_value_type.elements)
        args = ", ".join(f"{t} %a{i}" for i, t in enumerate(params))
        trampoline = llvm.parse_assembly(
            f'declare {result} @"{stable}"({", ".join(params)})\n'
            f'define linkonce_odr {result} @"{name}"({args}) alwaysinline {{\n'
            f'  %r = tail call {result} @"{stable}"({args})\n'
            f"  ret {result} %r\n}}\n"
        )
        trampoline.triple, trampoline.data_layout = shared.triple, shared.data_layout
        library._shared_module, library.linked_by_symbol = trampoline, True


@contextmanager
def _slp_vectorizer():
    before = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = before


def kernel(fn):
    """A serial jitted kernel (also a row-level helper that other kernels call: compiled once, called per row)."""
    return _jit(fn, FASTMATH)


def parallel_kernel(fn):
    """A jitted kernel whose outer `numba.prange` loop runs on Numba's thread pool."""
    return _jit(fn, FASTMATH, parallel=True)


def exact_kernel(fn, inline=False):
    """A serial jitted function without fastmath: IEEE arithmetic in the source's order, for code that must agree
    bit for bit with another library (the image processor's Pillow arithmetic)."""
    return _jit(fn, set(), **({"inline": "always"} if inline else {}))


def inline(fn):
    """A small scalar helper that jitted kernels call in their inner loops; Numba inlines it into the caller, so the
    loop around it vectorises. (Typed again at every call site: keep these small, and row-level helpers `kernel`.)"""
    return _jit(fn, FASTMATH, inline="always")


def tile(fn):
    """A register tile: compiled with the SLP vectorizer and without reassociation (see above)."""
    return _jit(fn, TILE_FASTMATH, slp=True)


def tile_caller(fn):
    """A serial kernel that calls register tiles. LLVM optimises a caller's module again with the tiles inlined into
    it, so the caller needs the tiles' settings too, or the sums go back to memory (measured: 3 vs 44 GFLOP/s).
    Tile callers, and only they, may call the shared product."""
    return _jit(fn, TILE_FASTMATH, slp=True, calls_products=True)


_products = []  # [dispatcher, signature, loaded] for each `product`


def product(signature):
    """The shared matrix product (_gemm.gemm): a tile caller compiled for one signature only, and called by its
    callers through a symbol (see _link_by_symbol), so the machine code of it and its tiles exists once per process
    instead of once per kernel. It is compiled (or loaded from the cache) before any tile caller compiles or loads
    (so only tile callers may call it). A caller with other argument types fails to compile."""

    def register(fn):
        dispatcher = _jit(fn, TILE_FASTMATH, slp=True, calls_products=True, by_symbol=True)
        _products.append([dispatcher, signature, False])
        return dispatcher

    return register


def cache_is_warm(dispatcher) -> bool:
    """Whether `dispatcher` runs without compiling first: compiled in this process, or found in Numba's cache (a
    guess that never fails). True where it cannot tell without internals ("plain") or nothing compiles ("python")."""
    if MODE != "tuned":
        return True
    try:
        if dispatcher.overloads:
            return True
        return bool(dispatcher._cache._cache_file._load_index())  # Numba internals: the cache's index of entries
    except Exception:
        return True


def _load_products() -> None:
    with global_compiler_lock:
        for entry in _products:
            dispatcher, signature, loaded = entry
            if not loaded:
                entry[2] = True
                dispatcher.compile(signature)
                dispatcher.disable_compile()


def parallel_tile_caller(fn):
    """A parallel kernel (outer prange) that calls register tiles (or the shared product)."""
    return _jit(fn, TILE_FASTMATH, slp=True, calls_products=True, parallel=True)
