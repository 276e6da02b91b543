"""The profile's cost model (bench/costs.py) on small hand-computed cases, and the benchmark's table and peer
checks; no torch needed."""

import math
from pathlib import Path

import numpy as np
import pytest

import tinyvit_engine as tve
from tinyvit_engine.bench import costs, peers
from tinyvit_engine.graph import Attention, Conv, GroupNorm, LayerNorm, Linear, Node, Patches, Pool

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def cost(op, attrs, ins, out):
    return costs.node_cost(Node(op, "n", tuple(f"in{i}" for i in range(len(ins))), attrs), ins, out)


def test_conv():
    # 3x3 stride 2, 3 -> 4 channels, batch 2, 8x8 -> 4x4: 2 * (2*4*4 pixels) * 4 out * (3*3 taps * 3 in)
    c = cost("conv", Conv(3, 4, 3, stride=2), [(2, 8, 8, 3)], (2, 4, 4, 4))
    assert c.flops == 2 * 32 * 4 * 27 == 6912
    # input 384 + weight 3*3*3*4 = 108 + bias 4 + output 128 elements, float32
    assert c.bytes == 4 * (384 + 108 + 4 + 128) == 2496


def test_depthwise_conv():
    # 8 channels, one 3x3 filter each, on 5x5: 2 * 25 pixels * 8 channels * 9 taps * 1 input channel per group
    c = cost("conv", Conv(8, 8, 3, depthwise=True), [(1, 5, 5, 8)], (1, 5, 5, 8))
    assert c.flops == 2 * 25 * 8 * 9 == 3600
    assert c.bytes == 4 * (200 + 3 * 3 * 1 * 8 + 8 + 200)


def test_pointwise_conv_with_residual_reads_both_inputs():
    c = cost("conv", Conv(6, 6, 1, bias=False), [(1, 2, 3, 6), (1, 2, 3, 6)], (1, 2, 3, 6))
    assert c.flops == 2 * 6 * 6 * 6 == 432
    assert c.bytes == 4 * (36 + 36 + 36 + 36)


def test_linear():
    # rows = every leading axis: 2 * 4 * 10 = 80 rows of 16 -> 32
    c = cost("linear", Linear(16, 32), [(2, 4, 10, 16)], (2, 4, 10, 32))
    assert c.flops == 2 * 80 * 16 * 32 == 81920
    assert c.bytes == 4 * (80 * 16 + 16 * 32 + 32 + 80 * 32)


def test_attention():
    # qkv (B=1, P=4, N=9, 3C=24), 2 heads: T = 4 sequences, C = 8, D = 4
    c = cost("attention", Attention(heads=2), [(1, 4, 9, 24)], (1, 4, 9, 8))
    scores_and_values = 4 * 4 * 2 * 9 * 9 * 4  # q.k and p.v: 2 * N * N * D multiply-adds per (sequence, head)
    softmax = 5 * 4 * 2 * 9 * 9
    assert scores_and_values == 10368 and softmax == 3240
    assert c.flops == 13608
    assert c.bytes == 4 * (4 * 9 * 24 + 4 * 9 * 8)  # no weights: the projections are linear nodes


def test_linear_attention():
    # qkv (1, 4, 9, 1 + 2*8): softmax over 9 queries per sequence, then 2 + 2 per output element
    c = cost("linear_attention", None, [(1, 4, 9, 17)], (1, 4, 9, 8))
    assert c.flops == 5 * 4 * 9 + 4 * 4 * 9 * 8 == 1332


def test_norms_pool_and_copies():
    shape = (2, 3, 5, 6)
    n = math.prod(shape)
    assert cost("layer_norm", LayerNorm(6, 1e-5), [shape], shape) == costs.Cost(8 * n, 4 * (n + 12 + n))
    assert cost("group_norm", GroupNorm(6, 1e-5), [shape], shape).flops == 8 * n
    assert cost("global_avg_pool", Pool(), [shape], (2, 6)).flops == n + 12
    assert cost("concat", None, [shape, shape], (2, 3, 5, 12)) == costs.Cost(0, 4 * 4 * n)
    # v2: the last row and column dropped, no arithmetic
    assert cost("unfold", Patches(2, resize=False), [(1, 5, 5, 4)], (1, 4, 4, 4)).flops == 0


def test_resizes_and_shape_only_inputs():
    # v1: a 5x5 map resized up to 6x6 before unfolding into 2x2 patches, and back down after folding
    assert cost("unfold", Patches(2, resize=True), [(1, 5, 5, 4)], (1, 4, 9, 4)).flops == 9 * 144
    fold = cost("fold", Patches(2, resize=True), [(1, 4, 9, 4), (1, 5, 5, 4)], (1, 5, 5, 4))
    assert fold == costs.Cost(9 * 100, 4 * (144 + 100))  # the map to match is not read
    assert cost("fold", Patches(2, resize=True), [(1, 4, 4, 4), (1, 4, 4, 4)], (1, 4, 4, 4)).flops == 0
    resize = cost("resize_like", None, [(1, 1, 1, 8), (1, 6, 7, 3)], (1, 6, 7, 8))
    assert resize == costs.Cost(9 * 42 * 8, 4 * (8 + 42 * 8))


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="'softplus'"):
        cost("softplus", None, [(1, 2)], (1, 2))


@pytest.mark.parametrize("name, size", [("mobilevit-digits", 64), ("deeplabv3-mobilevit-digits", 96)])
def test_every_node_of_a_real_graph(name, size):
    # the demo models on the NumPy reference kernels: every op they use has a cost, and each dense node's FLOPs are
    # 2 x (output pixels or rows) x (its weight's elements), counted from the weights file instead of the attributes
    model = tve.load(WEIGHTS / f"{name}.safetensors", reference=True)
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    shapes = costs.tensor_shapes(model, x)
    assert shapes["pixel_values"] == (2, size, size, 3)
    graph = model.executor.graph  # as it runs, fused
    node_costs = costs.graph_costs(graph, shapes)
    assert set(node_costs) == {n.name for n in graph.nodes}
    dense = fused = 0
    for node in graph.nodes:
        weight = {p: t.size for p, t in model.executor.params.items() if p.endswith(".weight")}
        if node.op in ("conv", "linear"):
            assert node_costs[node.name].flops == 2 * math.prod(shapes[node.name][:-1]) * weight[node.name + ".weight"]
            dense += 1
        if node.op == "inverted_residual":  # expand on the input's pixels, depthwise and reduce on the output's
            expand, depthwise, reduce = (weight[p.name + ".weight"] for p in node.attrs.parts)
            pixels_in, pixels_out = math.prod(shapes[node.inputs[0]][:-1]), math.prod(shapes[node.name][:-1])
            assert node_costs[node.name].flops == 2 * (pixels_in * expand + pixels_out * (depthwise + reduce))
            fused += 1
        assert node_costs[node.name].bytes > 0
    assert dense > 10 and fused > 3


def test_vector_kind():
    assert costs._vector_kind("vfmadd213ps\t%ymm0, %ymm9, %ymm8\n").startswith("packed ymm")
    assert costs._vector_kind("vfmadd231ps\t(%rax), %zmm1, %zmm2\n").startswith("packed zmm")
    assert costs._vector_kind("vfmadd213ss\t%xmm0, %xmm1, %xmm2\n").startswith("no packed")


def test_table_has_every_peer():
    timing = {"median": 10.0, "p10": 9.0, "p90": 11.0}
    result = {
        "model": "m",
        "batch": 1,
        "threads": 2,
        "engine": timing,
        "openvino": {"median": 5.0, "p10": 4.0, "p90": 6.0},
    }
    head, rule, row = peers.table([result]).splitlines()
    assert head.endswith("| OpenVINO ms | engine/PyTorch | engine/ORT | engine/OpenVINO |")
    assert rule.count("|---") == head.count("|") - 1
    assert row.endswith("| - | - | 5.0 (4.0-6.0) | - | - | 2.00 |")
    head, _, row = peers.table([{**result, "xnnpack": {"median": 20.0, "p10": 19.0, "p90": 21.0}}]).splitlines()
    assert head.endswith(
        "| OpenVINO ms | XNNPACK ms | engine/PyTorch | engine/ORT | engine/OpenVINO | engine/XNNPACK |"
    )
    assert row.endswith("| 5.0 (4.0-6.0) | 20.0 (19.0-21.0) | - | - | 2.00 | 0.50 |")


def test_missing_openvino_fails_clearly(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(peers.OPTIONAL, "openvino", "no_such_openvino_module")
    with pytest.raises(SystemExit) as exit_:
        peers.main(["--quick", "--workdir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--no-openvino" in capsys.readouterr().err


def test_floor_and_distance():
    # 100 GFLOP/s and 10 GB/s per thread, two threads: the ridge at 10 FLOP/byte
    peak = costs.Peak(flops=100e9, copy=10e9, threads=2, vector="packed ymm FMA, 8 floats")
    dense, copy = costs.Cost(flops=400_000_000, bytes=1_000_000), costs.Cost(flops=0, bytes=40_000_000)
    assert costs.floor(dense, peak) == pytest.approx(2e-3)  # 0.4 GFLOP at 200 GFLOP/s
    assert costs.floor(copy, peak) == pytest.approx(2e-3)  # 40 MB at 20 GB/s
    fields = costs.row("dense", 5e-3, dense, peak, 10e-3, 8).split()
    assert fields[-2:] == ["2.5x", "FMA"]
    assert costs.row("copy", 3e-3, copy, peak, 10e-3, 8).split()[-2:] == ["1.5x", "copy"]
    # a group of nodes passes the sum of its nodes' floors
    assert costs.row("all", 8e-3, dense + copy, peak, 10e-3, 8, least=4e-3).split()[-2] == "2.0x"
    assert costs.row("none", 1e-3, costs.Cost(0, 0), peak, 10e-3, 8).split()[-2] == "-"
    assert len(costs.header("kind", 8).split()) == len(fields)


def test_profile_takes_one_thread_count(capsys):
    """--profile runs on the threads it is given (one value; the peaks are scaled by it), and says so otherwise."""
    for bad in (["1", "2"], ["0"], ["99"]):
        with pytest.raises(SystemExit):
            peers.main(["--profile", "mobilevit-xx-small", "--threads", *bad])
        assert "--profile takes one --threads value" in capsys.readouterr().err
