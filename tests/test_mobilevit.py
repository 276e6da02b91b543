"""MobileViT (v1) against transformers: random real-scale weights, every output, several configs and input sizes."""

from __future__ import annotations

import numpy as np
import pytest
import transformers
from hf import V1_CONFIGS, assert_parity, engine_outputs, pixels, reference_outputs, save_checkpoint, v1_model

import tinyvit_engine as tve

SIZES = [(1, 256, 256), (2, 224, 224), (2, 192, 320), (1, 97, 131)]  # 224: layer 5 is 7x7; 97x131: odd everywhere


@pytest.fixture(scope="module", params=list(V1_CONFIGS))
def converted(request, tmp_path_factory):
    """(transformers model, engine model) for one config, through a model.safetensors checkpoint and tve.convert."""
    torch_model = v1_model(request.param, seed=len(request.param))
    root = tmp_path_factory.mktemp(request.param)
    save_checkpoint(torch_model, root / "hf")
    tve.convert(root / "hf", root / "model.safetensors")
    return torch_model, tve.load(root / "model.safetensors")


@pytest.mark.parametrize("batch, h, w", SIZES)
def test_parity(converted, batch, h, w):
    torch_model, model = converted
    x = pixels(batch, h, w)
    assert_parity(engine_outputs(model, x), reference_outputs(torch_model, x))


def test_id2label_and_argmax(converted):
    torch_model, model = converted
    assert model.config.id2label == torch_model.config.id2label
    out = model(pixels(2, 256, 256))
    assert out.logits.shape == (2, torch_model.config.num_labels)


@pytest.mark.parametrize("name", ["xx-small", "custom"])
def test_pytorch_model_bin_checkpoint(tmp_path, name):
    """Apple's Hub repositories ship pytorch_model.bin: it converts to the same tensors as model.safetensors."""
    torch_model = v1_model(name, seed=3)
    save_checkpoint(torch_model, tmp_path / "bin", safetensors=False)
    save_checkpoint(torch_model, tmp_path / "st", safetensors=True)
    assert (tmp_path / "bin" / "pytorch_model.bin").exists() and not (tmp_path / "bin" / "model.safetensors").exists()
    tve.convert(tmp_path / "bin", tmp_path / "bin.safetensors")
    tve.convert(tmp_path / "st", tmp_path / "st.safetensors")
    a, b = tve.load(tmp_path / "bin.safetensors"), tve.load(tmp_path / "st.safetensors")
    for name_, t in a.executor.params.items():
        np.testing.assert_array_equal(t, b.executor.params[name_])
    x = pixels(2, 128, 160, seed=1)
    assert_parity(engine_outputs(a, x), reference_outputs(torch_model, x))


def test_base_model_outputs(tmp_path):
    """MobileViTModel: last_hidden_state (after conv_1x1_exp) and pooler_output (its spatial mean)."""
    torch_model = v1_model("xx-small", task="base", seed=5)
    save_checkpoint(torch_model, tmp_path)
    model = tve.load(tmp_path)  # straight from the checkpoint directory, converted in memory
    assert model.config.task == "feature-extraction"
    x = pixels(2, 160, 192, seed=2)
    out = engine_outputs(model, x)
    assert "logits" not in out
    assert_parity(out, reference_outputs(torch_model, x))


@pytest.mark.parametrize(
    "extra",
    [
        dict(output_stride=16),  # layer 5 keeps its resolution
        dict(output_stride=8),  # layers 4 and 5 do; layer 5's depthwise conv dilates
        dict(patch_size=3, conv_kernel_size=5, qkv_bias=False, num_channels=1),
        dict(num_attention_heads=1, mlp_ratio=0.5, hidden_act="relu"),
    ],
)
def test_other_configs(tmp_path, extra):
    torch_model = v1_model("custom", seed=7, num_labels=3, **extra)
    save_checkpoint(torch_model, tmp_path)
    model = tve.load(tmp_path)
    x = pixels(2, 100, 76, seed=3, channels=torch_model.config.num_channels)
    assert_parity(engine_outputs(model, x), reference_outputs(torch_model, x))


def test_reference_kernels_match_transformers(tmp_path):
    """The switch that runs every op on the NumPy reference kernels gives the same model."""
    torch_model = v1_model("xx-small", seed=11)
    save_checkpoint(torch_model, tmp_path)
    x = pixels(1, 96, 70, seed=4)
    assert_parity(engine_outputs(tve.load(tmp_path, reference=True), x), reference_outputs(torch_model, x))


@pytest.mark.parametrize(
    "name, count",
    [("xx-small", 1_272_024), ("x-small", 2_317_848), ("small", 5_578_632)],
)
def test_published_configs_are_the_published_models(name, count):
    """Our copies of Apple's configs build models of the published parameter counts (REFERENCE.md)."""
    config = transformers.MobileViTConfig(**V1_CONFIGS[name], num_labels=1000)
    model = transformers.MobileViTForImageClassification(config)
    assert sum(p.numel() for p in model.parameters()) == count
