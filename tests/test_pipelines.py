"""model.classify / model.segment against transformers' image-classification and image-segmentation pipelines,
on real photos and the same random-weight checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import transformers
from hf import PREPROCESSOR, save_checkpoint, v1_model, v2_model
from PIL import Image

import tinyvit_engine as tve

PHOTOS = sorted(str(p) for p in (Path(__file__).parent / "data" / "images").glob("*.*") if p.suffix != ".md")


def hf_pipeline(task, torch_model):
    processor = transformers.MobileViTImageProcessorPil(**PREPROCESSOR)
    return transformers.pipeline(task, model=torch_model, image_processor=processor, device="cpu")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch_model = v1_model("xx-small", seed=21, num_labels=20)
    path = save_checkpoint(torch_model, tmp_path_factory.mktemp("cls"))
    return torch_model, tve.load(path)


def test_classify_matches_the_pipeline(classifier):
    torch_model, model = classifier
    expected = hf_pipeline("image-classification", torch_model)(PHOTOS, top_k=5)
    got = model.classify(PHOTOS, top_k=5)
    assert len(got) == len(PHOTOS)
    for g, e in zip(got, expected, strict=True):
        assert [x["label"] for x in g] == [x["label"] for x in e]
        np.testing.assert_allclose([x["score"] for x in g], [x["score"] for x in e], rtol=1e-4, atol=1e-6)


def test_classify_one_image_and_top_k(classifier):
    torch_model, model = classifier
    one = model.classify(Image.open(PHOTOS[0]), top_k=50)  # a PIL image; top_k above num_labels gives them all
    assert isinstance(one, list) and len(one) == 20 and isinstance(one[0], dict)
    assert sorted((x["score"] for x in one), reverse=True) == [x["score"] for x in one]
    assert sum(x["score"] for x in one) == pytest.approx(1.0, abs=1e-5)


def test_single_label_model_uses_sigmoid(tmp_path):
    torch_model = v1_model("xx-small", seed=22, num_labels=1)
    model = tve.load(save_checkpoint(torch_model, tmp_path))
    expected = hf_pipeline("image-classification", torch_model)(PHOTOS[0])
    got = model.classify(PHOTOS[0])
    assert got[0]["label"] == expected[0]["label"]
    assert got[0]["score"] == pytest.approx(expected[0]["score"], rel=1e-4)


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_segment_matches_the_pipeline(tmp_path, family):
    seg = dict(task="segmentation", output_stride=16, num_labels=5)
    torch_model = v1_model("xx-small", seed=23, **seg) if family == "v1" else v2_model(0.5, seed=23, **seg)
    model = tve.load(save_checkpoint(torch_model, tmp_path))
    expected = hf_pipeline("image-segmentation", torch_model)(PHOTOS, subtask="semantic")
    got = model.segment(PHOTOS)
    for path, g, e in zip(PHOTOS, got, expected, strict=True):
        w, h = Image.open(path).size
        assert g["label_map"].shape == (h, w)
        e_maps = {s["label"]: np.asarray(s["mask"]) for s in e}
        g_maps = {s["label"]: np.asarray(s["mask"]) for s in g["segments"]}
        assert all(s["score"] is None for s in g["segments"])
        # every label transformers finds with more than a few pixels, we find; masks agree on >= 99.9% of pixels
        assert {k for k, m in e_maps.items() if (m > 0).sum() > 20} <= set(g_maps)
        for label in set(e_maps) | set(g_maps):
            a = g_maps.get(label, np.zeros((h, w), np.uint8))
            b = e_maps.get(label, np.zeros((h, w), np.uint8))
            assert (a == b).mean() >= 0.999, label


def test_wrong_task_is_refused(classifier):
    with pytest.raises(tve.UnsupportedConfigError, match="semantic-segmentation"):
        classifier[1].segment(PHOTOS[0])
