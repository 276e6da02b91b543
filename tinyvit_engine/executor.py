"""Runs a graph: each node's op on the tensors its inputs name, in order.

Intermediate tensors are dropped as soon as no later node reads them (unless asked for), so peak memory is the live
set, not the whole graph. `timings`, when given a dict, collects seconds per node (the --profile view).
"""

from __future__ import annotations

import ctypes
import sys
import time

import numpy as np

from . import kernels
from .fusion import fuse
from .graph import Graph
from .ops import OPS, prepared_weights


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


class Executor:
    def __init__(self, graph: Graph, params: dict[str, np.ndarray], reference: bool = False) -> None:
        keep_freed_memory()
        self.graph = fuse(graph)
        self.params = {**params, **prepared_weights(graph.nodes, params)}
        self.kernels = kernels.REFERENCE if reference else kernels.FAST
        # index of the last node reading each tensor
        self.last_use = {name: i for i, node in enumerate(self.graph.nodes) for name in node.inputs}

    def run(self, x: np.ndarray, keep: set[str], timings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on the input map `x`; return the tensors named in `keep`."""
        env = {self.graph.input: x}
        for i, node in enumerate(self.graph.nodes):
            start = time.perf_counter()
            env[node.name] = OPS[node.op](self.kernels, node, self.params, *(env[n] for n in node.inputs))
            if timings is not None:
                timings[node.name] = timings.get(node.name, 0.0) + time.perf_counter() - start
            for name in node.inputs:
                if self.last_use[name] == i and name not in keep:
                    env.pop(name, None)
        return {name: env[name] for name in keep}
