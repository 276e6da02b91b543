"""MobileViTV2 against transformers: random real-scale weights, every output, several widths and input sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from hf import assert_parity, engine_outputs, pixels, realistic_init, reference_outputs, save_checkpoint, v2_model

import tinyvit_engine as tve

RTOL = 2e-4  # issue 3 (and transformers' own V2 tests): rtol 2e-4, atol 2e-4 * max|reference|
WIDTHS = [0.5, 1.0, 2.0, 0.75]  # the published widths, and one that is not
SIZES = [(1, 256, 256), (2, 224, 224), (2, 160, 288), (1, 99, 67)]  # 224: odd 7x7 layer 5; 99x67: odd from layer 1


@pytest.fixture(scope="module", params=WIDTHS)
def converted(request, tmp_path_factory):
    torch_model = v2_model(request.param, seed=int(request.param * 8))
    root = tmp_path_factory.mktemp(f"v2-{request.param}")
    save_checkpoint(torch_model, root / "hf")
    tve.convert(root / "hf", root / "model.safetensors")
    return torch_model, tve.load(root / "model.safetensors")


@pytest.mark.parametrize("batch, h, w", SIZES)
def test_parity(converted, batch, h, w):
    torch_model, model = converted
    x = pixels(batch, h, w, seed=h)
    assert_parity(engine_outputs(model, x), reference_outputs(torch_model, x), rtol=RTOL)


def test_odd_maps_keep_transformers_zero_row(converted):
    """224x224 makes layer 5 7x7: transformers' unfold drops the last row/column and fold writes zeros there, which
    conv_projection turns into its BatchNorm constant, the same in every pixel of that row."""
    torch_model, model = converted
    x = pixels(1, 224, 224, seed=9)
    last = model(x, output_hidden_states=True).hidden_states[4]
    assert last.shape[-2:] == (7, 7)
    np.testing.assert_allclose(last[0, :, 6, :], last[0, :, 6, :1].repeat(7, axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        last, reference_outputs(torch_model, x)["hidden_states.4"], rtol=RTOL, atol=RTOL * float(np.abs(last).max())
    )


def test_pytorch_model_bin_and_base_model(tmp_path):
    torch_model = v2_model(0.5, seed=1, task="base", output_stride=16)
    save_checkpoint(torch_model, tmp_path, safetensors=False)
    model = tve.load(tmp_path)
    assert model.config.task == "feature-extraction"
    x = pixels(2, 128, 96, seed=1)
    out = engine_outputs(model, x)
    assert "logits" not in out
    assert_parity(out, reference_outputs(torch_model, x), rtol=RTOL)


@pytest.mark.parametrize(
    "extra",
    [
        dict(output_stride=8),
        dict(n_attn_blocks=[1, 2, 1], base_attn_unit_dims=[64, 96, 112], ffn_multiplier=3, expand_ratio=3.0),
        dict(hidden_act="gelu", patch_size=3, conv_kernel_size=5, num_channels=1, layer_norm_eps=1e-6),
    ],
)
def test_other_configs(tmp_path, extra):
    torch_model = v2_model(0.625, seed=2, num_labels=4, **extra)
    save_checkpoint(torch_model, tmp_path)
    x = pixels(2, 90, 118, seed=2, channels=torch_model.config.num_channels)
    assert_parity(engine_outputs(tve.load(tmp_path), x), reference_outputs(torch_model, x), rtol=RTOL)


def test_hub_style_config(tmp_path):
    """Apple's Hub configs omit fields (the defaults apply) and carry ones v2 does not use (mlp_ratio)."""
    config = {
        "model_type": "mobilevitv2",
        "architectures": ["MobileViTV2ForImageClassification"],
        "width_multiplier": 0.5,
        "mlp_ratio": 2.0,
        "hidden_sizes": [1],
        "num_labels": 3,
        "torch_dtype": "float32",
    }
    torch_model = realistic_init(
        transformers.MobileViTV2ForImageClassification(transformers.MobileViTV2Config(**config)), seed=3
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(torch_model.state_dict(), tmp_path / "pytorch_model.bin")
    x = pixels(1, 64, 64, seed=3)
    model = tve.load(tmp_path)
    assert model.config.num_labels == 3 and model.config.hidden_act == "swish"
    assert_parity(engine_outputs(model, x), reference_outputs(torch_model, x), rtol=RTOL)


def test_published_width_0_5_parameter_count():
    model = transformers.MobileViTV2ForImageClassification(
        transformers.MobileViTV2Config(width_multiplier=0.5, num_labels=1000)
    )
    assert sum(p.numel() for p in model.parameters()) == 1_370_593
