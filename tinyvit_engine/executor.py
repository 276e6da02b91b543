"""Runs a graph: each node's op on the tensors its inputs name, in order.

The first run for an input shape goes through the ops and the kernel wrappers (argument checks, shapes, packing) and
records two things (kernels/_launch.py): every jitted kernel call with its arguments, and a memory plan, the buffers
the outputs live in, each handed back to a pool as soon as the last node reading it has run, so a later node reuses
it (peak memory is the live set, not the whole graph). Later runs of that shape copy the input into the plan's input
buffer and replay the calls: no Python work per node but the call itself, and no allocation. The reference kernels
(plain NumPy) always take the first path. `timings`, when given a dict, collects seconds per node (--profile).

A plan's buffers serve one run at a time. Threads that call one model at once each take an idle plan or record
their own, and give it back afterwards (up to one kept per core), so they run side by side, not in turn.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections import OrderedDict

import numpy as np

from . import kernels
from .fusion import fuse
from .graph import Graph
from .kernels import Recorder, recording
from .kernels.coldstart import start_compiling, stop_compiling
from .ops import OPS, prepared_weights

PLANS = 4  # input shapes whose plans are kept (least recently used dropped first)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS.

    Every inference allocates and frees the same intermediate tensors. By default glibc serves big blocks with fresh
    mmap()s, so each run page-faults every large tensor again (measured: 20% of a batch-8 inference). Raising the
    mmap and trim thresholds (to 1 GB) makes the second run reuse the first run's memory.
    A no-op where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, 1 << 30)


class Pool:
    """Flat float32 buffers handed out as arrays of any shape that fits, and taken back for reuse."""

    def __init__(self) -> None:
        self.free: list[np.ndarray] = []
        self.roots: dict[int, np.ndarray] = {}  # id -> buffer, every buffer this pool made

    def alloc(self, shape: tuple) -> np.ndarray:
        n = int(np.prod(shape))
        fits = [i for i, b in enumerate(self.free) if b.size >= n]
        if fits:
            buf = self.free.pop(min(fits, key=lambda i: self.free[i].size))  # best fit
        else:
            buf = np.empty(max(n, 1), np.float32)
            self.roots[id(buf)] = buf
        return buf[:n].reshape(shape)

    def root(self, a: np.ndarray) -> np.ndarray | None:
        """The pool buffer an array is a view of, if any."""
        while a is not None and id(a) not in self.roots:
            a = a.base
        return a

    def release(self, a: np.ndarray) -> None:
        root = self.root(a)
        if root is not None and not any(root is b for b in self.free):
            self.free.append(root)


class Plan:
    """A recorded run for one input shape: its input buffer, the kernel calls of each node, the kept tensors."""

    def __init__(self, x: np.ndarray) -> None:
        self.input = np.empty_like(x)
        self.pool = Pool()
        self.steps: list[tuple[str, list[tuple]]] = []
        self.env: dict[str, np.ndarray] = {}


class Executor:
    def __init__(self, graph: Graph, params: dict[str, np.ndarray], reference: bool = False) -> None:
        keep_freed_memory()
        self.graph = fuse(graph)
        self.params = {**params, **prepared_weights(self.graph.nodes, params)}
        self.reference = reference
        self.kernels = kernels.REFERENCE if reference else kernels.FAST
        # index of the last node reading each tensor
        self.last_use = {name: i for i, node in enumerate(self.graph.nodes) for name in node.inputs}
        # idle plans per (shape, outputs): a run takes one (or records one), and gives it back when done, so
        # threads calling one model at once each run on their own buffers
        self.plans: OrderedDict[tuple, list[Plan]] = OrderedDict()
        self.lock = threading.Lock()  # guards self.plans

    def run(self, x: np.ndarray, keep: set[str], timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on the input map `x`; return (copies of) the tensors named in `keep`."""
        if self.reference:
            return self._run(x, keep, timings)
        key = (x.shape, frozenset(keep))
        with self.lock:
            idle = self.plans.get(key)
            plan = idle.pop() if idle else None
        if plan is None:
            plan = self._record(x, keep, timings)
        else:
            np.copyto(plan.input, x)
            for name, calls in plan.steps:
                start = time.perf_counter()
                for kernel, args in calls:
                    kernel(*args)
                if timings is not None:
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        out = {name: plan.env[name].copy() for name in keep}
        with self.lock:
            idle = self.plans.setdefault(key, [])
            if len(idle) < (os.cpu_count() or 1):  # more threads than cores at once: their extra plans are dropped
                idle.append(plan)
            self.plans.move_to_end(key)
            while len(self.plans) > PLANS:
                self.plans.popitem(last=False)
        return out

    def _record(self, x: np.ndarray, keep: set[str], timings: dict[str, float] | None) -> Plan:
        """One run through the ops, recording its kernel calls and planning its buffers."""
        start_compiling()
        try:
            plan = Plan(x)
            np.copyto(plan.input, x)
            with recording(Recorder(plan.pool.alloc)) as recorder:
                plan.env = self._run(plan.input, keep, timings, plan, recorder)
        finally:
            stop_compiling()
        return plan

    def _run(self, x, keep, timings=None, plan=None, recorder=None) -> dict[str, np.ndarray]:
        env = {self.graph.input: x}
        for i, node in enumerate(self.graph.nodes):
            start, first = time.perf_counter(), len(recorder.calls) if recorder else 0
            env[node.name] = OPS[node.op](self.kernels, node, self.params, *(env[n] for n in node.inputs))
            if timings is not None:
                timings[node.name] = timings.get(node.name, 0.0) + time.perf_counter() - start
            if plan is not None:
                calls = recorder.calls[first:]
                plan.steps.append((node.name, calls))
                self._release(plan.pool, node, i, env, keep, calls)
            for name in node.inputs:
                if self.last_use[name] == i and name not in keep:
                    env.pop(name, None)
        return {name: env[name] for name in keep}

    def _release(self, pool: Pool, node, i: int, env: dict, keep: set[str], calls: list) -> None:
        """After node i ran while recording: the buffers it no longer needs go back to the pool: scratch its calls
        used that holds no live tensor, and its inputs that no later node reads."""
        live = {id(pool.root(t)) for t in env.values()}
        for _, args in calls:
            for a in args:
                if isinstance(a, np.ndarray) and id(pool.root(a)) not in live:
                    pool.release(a)
        for name in node.inputs:
            if self.last_use[name] == i and name not in keep and name != self.graph.input:
                pool.release(env[name])
