"""The trained demo models that ship in weights/: the engine agrees with PyTorch on their held-out data.

The Hub-style checkpoints they were converted from are kept in tests/data/demo/; the held-out data is regenerated
by tools/train_demo.py's own (seeded) functions.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import tinyvit_engine as tve

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("train_demo", ROOT / "tools" / "train_demo.py")
train_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_demo)
METRICS = json.loads((ROOT / "weights" / "metrics.json").read_text())


def shipped_and_reference(name, cls):
    engine = tve.load(ROOT / "weights" / f"{name}.safetensors")
    reference = cls.from_pretrained(ROOT / "tests" / "data" / "demo" / name).eval()
    return engine, reference


@pytest.mark.parametrize("name", ["mobilevit-digits", "deeplabv3-mobilevit-digits"])
def test_shipped_file_is_the_conversion_of_the_checkpoint(tmp_path, name):
    out = tve.convert(ROOT / "tests" / "data" / "demo" / name, tmp_path / "again.safetensors")
    again, shipped = tve.load(out), tve.load(ROOT / "weights" / f"{name}.safetensors")
    assert again.executor.params.keys() == shipped.executor.params.keys()
    for key, t in shipped.executor.params.items():
        np.testing.assert_array_equal(t, again.executor.params[key], err_msg=key)


def test_classifier_on_heldout_digits():
    engine, reference = shipped_and_reference("mobilevit-digits", transformers.MobileViTForImageClassification)
    _, x_test, _, y_test = train_demo.digits_split()
    pixel_values = engine.processor([train_demo.digit_image(d) for d in x_test])
    got = engine(pixel_values).logits
    with torch.no_grad():
        ref = reference(torch.from_numpy(pixel_values)).logits.numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert (got.argmax(1) == ref.argmax(1)).all()
    accuracy = float((got.argmax(1) == y_test).mean())
    assert accuracy == float((ref.argmax(1) == y_test).mean())
    assert accuracy == pytest.approx(METRICS["mobilevit-digits"]["heldout_accuracy"], abs=1e-9)
    assert accuracy > 0.9


@pytest.mark.slow
def test_segmenter_on_heldout_scenes():
    engine, reference = shipped_and_reference(
        "deeplabv3-mobilevit-digits", transformers.MobileViTForSemanticSegmentation
    )
    scenes = train_demo.heldout_scenes()
    size = train_demo.SCENE_SIZE
    inter_e, union_e, inter_r, union_r = (np.zeros(11) for _ in range(4))
    agree = total = 0
    for start in range(0, len(scenes), 25):
        part = scenes[start : start + 25]
        pixel_values = engine.processor([s[0] for s in part])
        target = np.stack([s[1] for s in part])
        logits = engine(pixel_values).logits
        with torch.no_grad():
            ref = reference(torch.from_numpy(pixel_values)).logits.numpy()
        np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
        pred_e = np.stack(tve.post_process_semantic_segmentation(logits, [(size, size)] * len(part)))
        pred_r = np.stack(tve.post_process_semantic_segmentation(ref, [(size, size)] * len(part)))
        agree += int((pred_e == pred_r).sum())
        total += pred_e.size
        train_demo.iou_counts(pred_e, target, inter_e, union_e)
        train_demo.iou_counts(pred_r, target, inter_r, union_r)
    miou_e = float(np.mean(inter_e[union_e > 0] / union_e[union_e > 0]))
    miou_r = float(np.mean(inter_r[union_r > 0] / union_r[union_r > 0]))
    assert agree / total >= 0.999
    assert abs(miou_e - miou_r) <= 0.001
    assert abs(miou_r - METRICS["deeplabv3-mobilevit-digits"]["heldout_miou"]) <= 0.001


@pytest.mark.parametrize("name", ["mobilevit-digits", "deeplabv3-mobilevit-digits"])
def test_int8_demo_models_on_heldout_data(name):
    """weights/*.int8.safetensors (train_demo.py storage): the held-out numbers recorded in metrics.json. The
    classifier keeps its float32 accuracy; the segmenter loses 0.67 points of mIoU (26.92 -> 26.25; the README
    says why), more than the 0.5 the issue hoped for, so that is the bound here."""
    key, measure = (
        ("heldout_accuracy", train_demo.engine_accuracy)
        if name == "mobilevit-digits"
        else ("heldout_miou", train_demo.engine_miou)
    )
    storage = METRICS[name]["engine_storage"]
    shipped = ROOT / "weights" / f"{name}.int8.safetensors"
    assert shipped.stat().st_size == storage["int8"]["size_bytes"]
    # to a pixel: one of the 3.3 million held-out pixels has two top logits within float rounding, and its label
    # differs between x86-64-v3 (the recorded figure) and x86-64-v4, whose 512-bit sums round differently (1e-7)
    assert measure(tve.load(shipped)) == pytest.approx(storage["int8"][key], abs=1e-6)
    assert abs(storage["int8"][key] - storage["float32"][key]) <= (0.005 if name == "mobilevit-digits" else 0.007)
    assert storage["float32"][key] == pytest.approx(METRICS[name][key], abs=1e-3)
