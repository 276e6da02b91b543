"""The fusion pass: which sequences it rewrites, and that a rewritten graph keeps every name the rest relies on."""

from dataclasses import replace

from tinyvit_engine.bench.reference import v1_model, v2_model
from tinyvit_engine.config import parse_config
from tinyvit_engine.fusion import fuse
from tinyvit_engine.models import build


def graph_of(model):
    return build(parse_config(model.config.to_dict()))


def test_inverted_residuals_are_fused_with_their_names_and_parameters():
    g = graph_of(v1_model("xx-small", seed=0, num_labels=10))
    f = fuse(g)
    fused = [n for n in f.nodes if n.op == "inverted_residual"]
    # layer 1: 1 + 3 blocks, layers 3-5: one downsampling block each
    assert [n.name for n in fused][:2] == ["encoder.layer.0.layer.0.reduce_1x1", "encoder.layer.1.layer.0.reduce_1x1"]
    assert len(fused) == 7
    assert f.params() == g.params()  # the same tensors under the same names
    assert f.outputs == g.outputs and {n.name for n in f.nodes} >= set(g.outputs["hidden_states"])
    assert len(f.nodes) == len(g.nodes) - 2 * len(fused)


def test_v2_and_dilated_layers():
    g = graph_of(v2_model(0.5, seed=0, num_labels=3, task="segmentation", output_stride=8))
    f = fuse(g)
    for n in f.nodes:
        if n.op == "inverted_residual":
            assert n.attrs.parts[1].attrs.dilation == 1
    dilated = [n for n in g.nodes if n.op == "conv" and n.attrs.depthwise and n.attrs.dilation > 1]
    assert dilated and all(d.name in {n.name for n in f.nodes} for d in dilated)  # left unfused


def test_no_fusion_when_an_inner_tensor_is_an_output():
    g = graph_of(v1_model("xx-small", seed=0, num_labels=10))
    inner = "encoder.layer.0.layer.0.expand_1x1"
    g2 = replace(g, outputs={**g.outputs, "extra": inner})
    assert inner in {n.name for n in fuse(g2).nodes}
    assert inner not in {n.name for n in fuse(g).nodes}
