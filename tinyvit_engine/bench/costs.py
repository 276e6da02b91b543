"""What each graph node costs (floating-point operations and bytes moved) and what this machine can do (a peak
FMA rate and a memory copy bandwidth): the roofline view of `python -m tinyvit_engine.bench --profile MODEL`.

FLOPs count a multiply-add as 2. The dense ops:
    conv              2 * B * Ho * Wo * Cout * kh * kw * Cin_per_group      (Cin_per_group = 1 when depthwise)
    linear            2 * M * K * N                                         (M: every leading axis of the input)
    attention         4 * T * heads * N * N * D  (scores, weighted values)  +  5 * T * heads * N * N  (softmax)
    linear_attention  5 * T * N  (softmax over the query column)  +  4 * T * N * C  (context, relu(v) * context)
The others are small per-element counts (the constants below); unfold, fold and concat are copies (0 FLOPs) except
for v1's bilinear resize around a map that is not a multiple of the patch. A conv's or linear's bias, activation
and fused residual are not counted: a few operations per output element, against the K multiply-adds behind it.

Bytes: every input read once, every weight read once, the output written once, 4 bytes each (float32): the least
traffic the node can have, so the GB/s it gives is a lower bound on what the kernel really moves.
Shapes are the channels-last ones the graph sees: (B, H, W, C) maps, (B, P, N, C) patch tokens, (B, C) vectors.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from ..graph import Graph, Node, Shape

F32 = 4  # bytes per element
SOFTMAX_FLOPS = 5  # per score: max, subtract, exp, sum, scale
NORM_FLOPS = 8  # per element: mean 1, variance 3, normalise 2, affine 2
RESIZE_FLOPS = 9  # per output element: three linear interpolations a + f * (b - a)


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


# ------------------------------------------------------------------------------------------------ FLOPs per op
def _conv(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    a = node.attrs
    b, ho, wo, cout = out
    return 2 * b * ho * wo * cout * a.kernel * a.kernel * (1 if a.depthwise else a.cin)


def _linear(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    return 2 * math.prod(ins[0][:-1]) * node.attrs.cin * node.attrs.cout


def _attention(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    # qkv (B, P, N, 3C): T = B * P sequences of N tokens, heads of D = C / heads features
    *lead, n, c3 = ins[0]
    t, heads = math.prod(lead), node.attrs.heads
    d = c3 // 3 // heads
    return 4 * t * heads * n * n * d + SOFTMAX_FLOPS * t * heads * n * n


def _linear_attention(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    # qkv (B, P, N, 1 + 2C) -> (B, P, N, C)
    *lead, n, c = out
    t = math.prod(lead)
    return SOFTMAX_FLOPS * t * n + 4 * t * n * c


def _norm(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    return NORM_FLOPS * math.prod(out)


def _unfold(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    # a copy into tokens; v1 first resizes the map up to a multiple of the patch (then the tokens outnumber it)
    resized = node.attrs.resize and math.prod(out) != math.prod(ins[0])
    return RESIZE_FLOPS * math.prod(out) if resized else 0


def _fold(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    # a copy back into a map; v1 then resizes it down to the size of the map that was unfolded
    resized = node.attrs.resize and math.prod(out) != math.prod(ins[0])
    return RESIZE_FLOPS * math.prod(out) if resized else 0


def _copy(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    return 0


def _pool(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    return math.prod(ins[0]) + math.prod(out)  # a sum per input element, a scale per output


def _resize(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    return RESIZE_FLOPS * math.prod(out)


def _inverted_residual(node: Node, ins: Sequence[Shape], out: Shape) -> int:
    # expand 1x1 on the input map, depthwise 3x3 and reduce 1x1 on the output's pixels (fusion.py)
    expand, depthwise, reduce = node.attrs.parts
    b, h, w, _ = ins[0]
    mid = expand.attrs.cout
    return (
        _conv(expand, ins[:1], (b, h, w, mid))
        + _conv(depthwise, [(b, h, w, mid)], (*out[:3], mid))
        + _conv(reduce, [(*out[:3], mid)], out)
    )


FLOPS: dict[str, Callable[[Node, Sequence[Shape], Shape], int]] = {
    "conv": _conv,
    "inverted_residual": _inverted_residual,
    "linear": _linear,
    "layer_norm": _norm,
    "group_norm": _norm,
    "attention": _attention,
    "linear_attention": _linear_attention,
    "unfold": _unfold,
    "fold": _fold,
    "concat": _copy,
    "global_avg_pool": _pool,
    "resize_like": _resize,
}
# ops whose last input only gives a shape (the map to match), so it is not read
SHAPE_ONLY_LAST_INPUT = {"fold", "resize_like"}


def node_cost(node: Node, ins: Sequence[Shape], out: Shape) -> Cost:
    """FLOPs and bytes moved of one node, from the shapes of its input tensors and of its output."""
    if node.op not in FLOPS:
        raise ValueError(f"costs.py has no FLOP count for op {node.op!r} (node {node.name}); add one to FLOPS")
    read = ins[:-1] if node.op in SHAPE_ONLY_LAST_INPUT else ins
    elements = sum(map(math.prod, read)) + sum(map(math.prod, node.params().values())) + math.prod(out)
    return Cost(FLOPS[node.op](node, ins, out), F32 * elements)


def graph_costs(graph: Graph, shapes: dict[str, Shape]) -> dict[str, Cost]:
    """node name -> Cost, given every tensor's shape (`tensor_shapes`)."""
    return {n.name: node_cost(n, [shapes[i] for i in n.inputs], shapes[n.name]) for n in graph.nodes}


def tensor_shapes(model, pixel_values: np.ndarray) -> dict[str, Shape]:
    """Every tensor's shape, channels-last as the graph sees it, from one run of the model that keeps them all."""
    x = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1), dtype=np.float32)
    graph = model.executor.graph  # the graph that runs: fused nodes in place of their sequences
    keep = {graph.input} | {n.name for n in graph.nodes}
    return {name: t.shape for name, t in model.executor.run(x, keep).items()}


def kind(node: Node) -> str:
    """The group a node is reported in: convs by shape (depthwise, pointwise, k x k), other ops by name."""
    if node.op != "conv":
        return node.op
    a = node.attrs
    return "depthwise conv" if a.depthwise else "pointwise conv" if a.kernel == 1 else f"conv {a.kernel}x{a.kernel}"


# ------------------------------------------------------------------------------------------------ machine peak
@dataclass(frozen=True)
class Peak:
    """One thread's FMA rate and memory copy bandwidth, and the thread count they are scaled by."""

    flops: float  # FLOP/s, one thread
    copy: float  # bytes/s read + written, one thread
    threads: int
    vector: str  # the FMA instructions the peak loop compiled to

    @property
    def total_flops(self) -> float:
        return self.flops * self.threads

    @property
    def total_copy(self) -> float:
        return self.copy * self.threads

    def describe(self) -> str:
        return (
            f"peak, 1 thread: FMA {self.flops / 1e9:.1f} GFLOP/s ({self.vector}), copy {self.copy / 1e9:.1f} GB/s "
            f"(numpy, 256 MB, read + write)\n"
            f"peak x {self.threads} threads (Numba's, as the model runs): {self.total_flops / 1e9:.1f} GFLOP/s, "
            f"{self.total_copy / 1e9:.1f} GB/s; ridge at {self.flops / self.copy:.1f} FLOP/byte"
        )


def threads() -> int:
    """The threads the engine's kernels run on in this thread: Numba's pool, or what set_num_threads left of it."""
    import numba

    return numba.get_num_threads()


def _fma_loop(lanes: int):
    """A jitted loop of `lanes` independent multiply-add chains on float32 scalars. `lanes` is a constant to Numba,
    so LLVM unrolls the inner loop, vectorises it and keeps the accumulators in registers: enough chains to cover
    the FMA latency on every unit (64 floats = 8 AVX2 registers; 128 = 8 AVX-512 ones)."""

    @numba.njit(fastmath={"contract"}, error_model="numpy")
    def loop(a, b, n):
        acc = np.empty(lanes, np.float32)
        for j in range(lanes):
            acc[j] = np.float32(j)
        for _ in range(n):
            for j in range(lanes):
                acc[j] = acc[j] * a + b
        return acc.sum()  # used, so the loop is not optimised away

    return loop


def _vector_kind(asm: str) -> str:
    for reg, floats in (("zmm", 16), ("ymm", 8), ("xmm", 4)):
        if re.search(rf"vfmadd\w*ps\s[^\n]*%{reg}", asm):
            return f"packed {reg} FMA, {floats} floats"
    return "no packed x86 FMA found: scalar or another ISA"


def fma_peak(seconds: float = 0.02, repeats: int = 5) -> tuple[float, str]:
    """Best FLOP/s of one thread over a few accumulator counts, and the instructions the best one compiled to."""
    a, b = np.float32(0.999), np.float32(0.001)  # acc -> b / (1 - a): no overflow, no denormals
    best, vector = 0.0, ""
    for lanes in (64, 96, 128):
        loop = _fma_loop(lanes)
        loop(a, b, 1)
        start = time.perf_counter()
        loop(a, b, 10_000)
        n = max(10_000, int(10_000 * seconds / (time.perf_counter() - start)))
        for _ in range(repeats):
            start = time.perf_counter()
            loop(a, b, n)
            rate = 2 * lanes * n / (time.perf_counter() - start)
            if rate > best:
                best, vector = rate, f"{lanes} accumulators, " + _vector_kind(loop.inspect_asm(loop.signatures[0]))
    return best, vector


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of numpy copying a large array (read + written), best of a few; the first copy touches the pages."""
    src = np.ones((megabytes << 20) // F32, np.float32)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def measure_peak() -> Peak:
    flops, vector = fma_peak()
    return Peak(flops, copy_bandwidth(), threads(), vector)


# ------------------------------------------------------------------------------------------------------ report
def header(label: str, width: int) -> str:
    return (
        f"  {label:<{width}} {'ms':>8} {'%':>5} {'MFLOP':>8} {'FLOP/B':>6} {'GFLOP/s':>8} {'GB/s':>6} "
        f"{'%FMA':>5} {'%copy':>5} {'floor':>6} bound"
    )


def floor(cost: Cost, peak: Peak) -> float:
    """The least time `cost` can take on this machine (seconds): its FLOPs at the FMA peak or its bytes at the copy
    bandwidth, whichever is longer (the roofline)."""
    return max(cost.flops / peak.total_flops, cost.bytes / peak.total_copy)


def row(
    label: str, seconds: float, cost: Cost, peak: Peak, total: float, width: int, least: float | None = None
) -> str:
    """One line of the roofline table: time, work, intensity, achieved rates and their fractions of the peaks
    (x threads), the distance to its floor (time / floor, `least`, by default floor(cost): 1.0 would be the roof
    itself; a group of nodes passes the sum of theirs), and which roof bounds the node (FMA when its FLOP/byte is
    above the machine's ridge)."""
    least = floor(cost, peak) if least is None else least
    distance = f"{seconds / least:5.1f}x" if least > 0 else "     -"
    intensity = cost.flops / cost.bytes if cost.bytes else math.inf
    flops, moved = cost.flops / seconds, cost.bytes / seconds
    bound = "FMA" if intensity >= peak.total_flops / peak.total_copy else "copy"
    return (
        f"  {label:<{width}} {seconds * 1e3:8.3f} {100 * seconds / total:5.1f} {cost.flops / 1e6:8.1f} "
        f"{intensity:6.1f} {flops / 1e9:8.1f} {moved / 1e9:6.1f} {100 * flops / peak.total_flops:5.1f} "
        f"{100 * moved / peak.total_copy:5.1f} {distance} {bound}"
    )
