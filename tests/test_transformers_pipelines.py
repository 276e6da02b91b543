"""The pipelines' keywords, as transformers' tests/pipelines/test_pipelines_image_classification.py and
test_pipelines_image_segmentation.py use them (issue 22), held to transformers' own pipelines on the same
local checkpoints (real-scale weights, real photos).

Not ported, and why: test_custom_tokenizer (tokenizers: the engine has none), test_perceiver and the other Hub
models' tests (other architectures; no network), torch dtypes (float16/bfloat16 pipelines), URL inputs (the
engine reads local files, PIL images and arrays; it does not fetch), instance and panoptic segmentation (MobileViT
heads are semantic: test_small_model_pt and test_integration_* of the segmentation file are DETR/MaskFormer
models; their semantic part is test_small_model_pt_semantic, whose BEiT model is replaced by MobileViT's here, in
test_segmentation_keywords_transformers_accepts and test_run_pipeline_test_segmentation), the datasets fixtures
(fixtures_image_utils' RGBA, LA and L images are made from a real photo here).
"""

from pathlib import Path

import numpy as np
import pytest
import transformers
from hf import save_checkpoint, v1_model
from PIL import Image

import tinyvit_engine as tve

PHOTOS = [str(p) for p in sorted((Path(__file__).parent / "data" / "images").glob("*.png"))[:2]]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return save_checkpoint(v1_model("xx-small", seed=11, num_labels=5), tmp_path_factory.mktemp("cls"))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    model = v1_model("xx-small", seed=12, num_labels=4, task="segmentation", output_stride=16)
    return save_checkpoint(model, tmp_path_factory.mktemp("seg"))


def _close(ours, theirs):
    assert [[d["label"] for d in r] for r in ours] == [[d["label"] for d in r] for r in theirs]
    np.testing.assert_allclose(
        [[d["score"] for d in r] for r in ours], [[d["score"] for d in r] for r in theirs], rtol=1e-4, atol=1e-5
    )


def test_small_model_pt(classifier):
    """top_k=2 over a list of images, and one image alone, against transformers' pipeline."""
    ours = tve.pipeline("image-classification", model=classifier)
    theirs = transformers.pipeline("image-classification", model=str(classifier))
    _close(ours(PHOTOS, top_k=2), theirs(PHOTOS, top_k=2))
    _close([ours(PHOTOS[0])], [theirs(PHOTOS[0])])
    assert len(ours(PHOTOS[0], top_k=99)) == 5  # top_k past num_labels: every label, as transformers


@pytest.mark.parametrize("function_to_apply", ["sigmoid", "softmax", "none", "SIGMOID"])
def test_function_to_apply(classifier, function_to_apply):
    ours = tve.pipeline("image-classification", model=classifier)
    theirs = transformers.pipeline("image-classification", model=str(classifier))
    kw = {"function_to_apply": function_to_apply, "top_k": 3}
    _close(ours(PHOTOS, **kw), theirs(PHOTOS, **kw))
    with pytest.raises(ValueError, match="function_to_apply"):
        ours(PHOTOS[0], function_to_apply="relu")


def test_problem_type_set_after_loading_chooses_the_function(classifier):
    ours = tve.pipeline("image-classification", model=classifier)
    ours.model.config.problem_type = "multi_label_classification"
    theirs = transformers.pipeline("image-classification", model=str(classifier))
    theirs.model.config.problem_type = "multi_label_classification"
    _close(ours(PHOTOS), theirs(PHOTOS))


def test_batch_size_and_images_keyword(classifier):
    ours = tve.pipeline("image-classification", model=classifier)
    whole = ours(PHOTOS * 3, top_k=2)
    assert ours(images=PHOTOS * 3, top_k=2, batch_size=2) == whole
    with pytest.raises(ValueError, match="batch_size"):
        ours(PHOTOS, batch_size=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'top_kk'"):
        ours(PHOTOS, top_kk=2)


def test_segmentation_keywords_transformers_accepts(segmenter):
    """threshold, mask_threshold, overlap_mask_area_threshold, subtask, batch_size: accepted as transformers does
    (the thresholds are for instance and panoptic models), the same masks as transformers' pipeline."""
    ours = tve.pipeline("image-segmentation", model=segmenter)
    theirs = transformers.pipeline("image-segmentation", model=str(segmenter))
    kw = {"threshold": 0.8, "mask_threshold": 0.4, "overlap_mask_area_threshold": 0.6, "subtask": "semantic"}
    got, want = ours(PHOTOS, batch_size=1, **kw), theirs(PHOTOS, **kw)
    for g, w in zip(got, want, strict=True):
        assert [s["label"] for s in g] == [s["label"] for s in w]
        for a, b in zip(g, w, strict=True):
            agree = (np.asarray(a["mask"]) == np.asarray(b["mask"])).mean()
            assert agree >= 0.999 and a["score"] is None
    assert isinstance(ours(Image.open(PHOTOS[0])), list)


# ---------------------------------------------------------------- ImageSegmentationPipelineTests


def modes_of(photo):
    """RGBA, LA and L images, as upstream's fixtures_image_utils dataset gives them (made from a real photo here)."""
    image = Image.open(photo).convert("RGB")
    return [image.convert("RGBA"), image.convert("LA"), image.convert("L")]


def test_run_pipeline_test_segmentation(segmenter):
    """ImageSegmentationPipelineTests.run_pipeline_test: a path, RGBA / LA / L images, a batch of 5 at batch_size 2;
    [{"score", "label", "mask": a PIL image}] each time, with transformers' labels and masks."""
    ours = tve.pipeline("image-segmentation", model=segmenter)
    theirs = transformers.pipeline("image-segmentation", model=str(segmenter))
    kw = {"threshold": 0.0, "mask_threshold": 0, "overlap_mask_area_threshold": 0}
    outputs = ours(PHOTOS[0], **kw)
    n = len(outputs)
    assert n >= 1
    for image in [PHOTOS[0], *modes_of(PHOTOS[0])]:
        got, want = ours(image, **kw), theirs(image, **kw)
        assert all(set(o) == {"score", "label", "mask"} and isinstance(o["mask"], Image.Image) for o in got)
        assert [o["label"] for o in got] == [o["label"] for o in want]
        for a, b in zip(got, want, strict=True):
            assert a["mask"].size == b["mask"].size and a["mask"].mode == b["mask"].mode
            assert (np.asarray(a["mask"]) == np.asarray(b["mask"])).mean() >= 0.999
    batch = [PHOTOS[0]] * 5
    outputs = ours(batch, batch_size=2, **kw)
    assert len(outputs) == len(batch) and all(len(o) == n for o in outputs)


def test_small_model_pt_no_panoptic(segmenter):
    """MobileViT supports neither instance nor panoptic segmentation: a ValueError naming the subtask."""
    pipe = tve.pipeline(task="image-segmentation", model=segmenter)
    for subtask in ("panoptic", "instance"):
        with pytest.raises(ValueError, match=subtask):
            pipe(PHOTOS[0], subtask=subtask)


# ---------------------------------------------------------------- ImageClassificationPipelineTests


def test_run_pipeline_test_classification(classifier):
    """ImageClassificationPipelineTests.run_pipeline_test: one image, RGBA / LA / L images, a batch; each answer
    [{"score", "label"}] * top_k, as transformers' pipeline gives it."""
    ours = tve.pipeline("image-classification", model=classifier, top_k=2)
    theirs = transformers.pipeline("image-classification", model=str(classifier), top_k=2)
    images = [PHOTOS[0], *modes_of(PHOTOS[1])]
    _close(ours(images), theirs(images))
    _close([ours(PHOTOS[1])], [theirs(PHOTOS[1])])
