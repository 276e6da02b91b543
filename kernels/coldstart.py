"""The first run on a CPU: Numba compiles every kernel once (then loads them from its cache), so say so, and use a
second core for it.

`start_compiling` is called by whatever reaches a kernel first (the image processor, or a model's first run): when
neither the shipped kernels nor the cache hold them (a CPU, Python or Numba they were not built for, or
TINYVIT_TARGET=host: _target.py) it says so on stderr, with the reason, once per process (otherwise that first run
looks like a hang), and starts kernels/warm.py in a second process, which compiles the kernels in reverse order
while this process compiles them in the usual order; each loads from the cache what the other has finished.
`stop_compiling` ends that helper when the first model run is done (Numba writes each cache file whole, so stopping
it midway loses only work), and at exit at the latest.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading

_checked = False
_helper: subprocess.Popen | None = None
_lock = threading.Lock()


def start_compiling() -> None:
    """Start the compiling helper if the cache is cold (checked once per process; never fails)."""
    global _checked, _helper
    with _lock:
        if _checked:
            return
        _checked = True
        from ._jit import CACHE, WHY_COMPILE, cache_is_warm
        from .linear import jitted

        if cache_is_warm(jitted):
            return
        print(
            f"tinyvit-engine: compiling the kernels for this CPU, once ({WHY_COMPILE or 'none are cached yet'}; under "
            f"a minute, and later runs load them from {CACHE or 'Numba’s cache'})",
            file=sys.stderr,
            flush=True,
        )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cores < 2:
            return
        command = [sys.executable, "-m", "tinyvit_engine.kernels.warm", "--reverse"]
        try:
            _helper = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError:
            return
        atexit.register(stop_compiling)


def compiling() -> bool:
    """Whether the compiling helper runs (a first run on this CPU, until its first model run is done)."""
    return _helper is not None and _helper.poll() is None


def stop_compiling() -> None:
    """Stop the compiling helper, if one runs."""
    global _helper
    with _lock:
        helper, _helper = _helper, None
    if helper is not None:
        helper.terminate()
        helper.wait()
