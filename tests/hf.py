"""Parity-test helpers: the reference models (bench/reference.py) and the comparison of engine and transformers
outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

import tinyvit_engine as tve
from tinyvit_engine.bench.reference import (  # noqa: F401  (re-exported for the tests)
    PREPROCESSOR,
    V1_CONFIGS,
    realistic_init,
    save_checkpoint,
    v1_model,
    v2_model,
)


@torch.no_grad()
def reference_outputs(model, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
    out = model(torch.from_numpy(pixel_values), output_hidden_states=True)
    result = {f"hidden_states.{i}": h.numpy() for i, h in enumerate(out.hidden_states)}
    for key in ("logits", "last_hidden_state", "pooler_output"):
        if getattr(out, key, None) is not None:
            result[key] = getattr(out, key).numpy()
    return result


RTOL = 1e-4  # v1: rtol 1e-4, atol 1e-4 * max|reference| per tensor (v2 tests pass 2e-4, as transformers' own do)


def engine_outputs(model, pixel_values):
    out = model(pixel_values, output_hidden_states=True)
    result = {f"hidden_states.{i}": h for i, h in enumerate(out.hidden_states)}
    for key in ("logits", "last_hidden_state", "pooler_output"):
        if getattr(out, key) is not None:
            result[key] = getattr(out, key)
    return result


def assert_parity(engine, reference, rtol=RTOL):
    assert set(reference) <= set(engine), f"the engine lacks {set(reference) - set(engine)}"
    assert len([k for k in reference if k.startswith("hidden_states")]) == 5
    for key, ref in reference.items():
        got = engine[key]
        assert got.shape == ref.shape and got.dtype == np.float32, key
        scale = float(np.abs(ref).max())
        assert scale > 1e-3, f"{key}: reference is near zero; the test would prove nothing"
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, err_msg=key)


@torch.no_grad()
def torch_forward(model, x, **kw):
    """transformers' forward on a numpy batch."""
    return model(torch.from_numpy(x), **kw)


def pixels(batch, h, w, seed=0, channels=3):
    return np.random.default_rng(seed).random((batch, channels, h, w), dtype=np.float32)


PHOTO = Path(__file__).parent / "data" / "images" / "chelsea.png"  # a cat, as transformers' tests use COCO's cats


def rebuilt_checkpoint(tmp_path, name, torch_model, **processor):
    """A Hub checkpoint rebuilt locally: the published config's shapes, real-scale weights, its processor config."""
    path = save_checkpoint(torch_model, tmp_path / name)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    (path / "preprocessor_config.json").write_text(json.dumps({**pre, **processor}))
    return path


def on_photo(path, engine_class, torch_model, photo=PHOTO):
    """The engine's outputs and transformers' on the photo, each through its own MobileViTImageProcessor."""
    import torch

    image = Image.open(photo)
    inputs = tve.MobileViTImageProcessor.from_pretrained(path)(images=image, return_tensors="np")
    ours = engine_class.from_pretrained(path)(**inputs)
    theirs_inputs = transformers.MobileViTImageProcessor.from_pretrained(path)(images=image, return_tensors="pt")
    np.testing.assert_array_equal(inputs["pixel_values"], theirs_inputs["pixel_values"].numpy())
    with torch.no_grad():
        theirs = torch_model(**theirs_inputs)
    return ours, theirs
