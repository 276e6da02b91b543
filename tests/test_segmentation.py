"""DeepLabV3 on MobileViT and MobileViTV2 against transformers: logits, hidden states and post-processed maps."""

from __future__ import annotations

import pytest
import torch
from hf import assert_parity, engine_outputs, pixels, reference_outputs, save_checkpoint, v1_model, v2_model

import tinyvit_engine as tve

# Apple's published DeepLabV3 configs: output stride 16, 21 Pascal VOC labels; ASPP 256 (v1) / 512 (v2)
V1_DEEPLAB = dict(output_stride=16, num_labels=21, aspp_out_channels=256, task="segmentation")
V2_DEEPLAB = dict(output_stride=16, num_labels=21, aspp_out_channels=512, task="segmentation")


def segmenter(family, name, seed=0, **overrides):
    if family == "v1":
        return v1_model(name, seed=seed, **{**V1_DEEPLAB, **overrides}), 1e-4
    return v2_model(name, seed=seed, **{**V2_DEEPLAB, **overrides}), 2e-4


def check(tmp_path, torch_model, rtol, x):
    save_checkpoint(torch_model, tmp_path)
    tve.convert(tmp_path, tmp_path / "engine.safetensors")
    model = tve.load(tmp_path / "engine.safetensors")
    assert model.config.task == "semantic-segmentation"
    got, ref = engine_outputs(model, x), reference_outputs(torch_model, x)
    assert set(ref) == {"logits", *(f"hidden_states.{i}" for i in range(5))}
    assert_parity(got, ref, rtol=rtol)
    return got["logits"], ref["logits"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, name", [("v1", "xx-small"), ("v1", "x-small"), ("v1", "small"), ("v2", 1.0), ("v2", 1.5)]
)
def test_published_configs_at_512(tmp_path, family, name):
    torch_model, rtol = segmenter(family, name, seed=1)
    got, ref = check(tmp_path, torch_model, rtol, pixels(1, 512, 512, seed=1))
    assert got.shape == (1, 21, 32, 32)


@pytest.mark.parametrize(
    "family, name, overrides, shape",
    [
        ("v1", "xx-small", dict(output_stride=8), (2, 128, 96)),  # layer 4 and 5 keep resolution, layer 5 dilates
        ("v2", 0.5, dict(output_stride=8), (1, 96, 160)),
        ("v1", "custom", dict(num_labels=151), (2, 160, 224)),  # ADE20K's label count, non-square, batch 2
        ("v2", 0.75, dict(num_labels=151, output_stride=32), (2, 200, 136)),
        ("v1", "xx-small", dict(atrous_rates=[1, 2, 40]), (1, 100, 130)),  # rates larger than the map
    ],
)
def test_other_configs(tmp_path, family, name, overrides, shape):
    torch_model, rtol = segmenter(family, name, seed=2, **overrides)
    check(tmp_path, torch_model, rtol, pixels(*shape, seed=2))


@pytest.mark.parametrize("targets", [None, [(300, 451), (97, 64)]])
def test_post_processing_matches_transformers(tmp_path, targets):
    from transformers import MobileViTImageProcessor

    torch_model, rtol = segmenter("v1", "xx-small", seed=3)
    x = pixels(2, 256, 256, seed=3)
    got, ref = check(tmp_path, torch_model, rtol, x)

    class Out:  # what post_process_semantic_segmentation reads
        logits = torch.from_numpy(ref)

    expected = MobileViTImageProcessor().post_process_semantic_segmentation(Out(), target_sizes=targets)
    maps = tve.post_process_semantic_segmentation(got, targets)
    for m, e in zip(maps, expected, strict=True):
        e = e.numpy()
        assert m.shape == e.shape
        assert (m == e).mean() >= 0.999  # exact ties between classes may flip
