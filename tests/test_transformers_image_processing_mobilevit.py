"""Ported from transformers' tests/models/mobilevit/test_image_processing_mobilevit.py (MobileViTImageProcessingTester,
MobileViTImageProcessingTest) and the ImageProcessingTestMixin tests of tests/test_image_processing_common.py it
runs, on tinyvit_engine.MobileViTImageProcessor, test names kept (issue 22; a start). Values are held to
transformers' MobileViTImageProcessorPil, which the engine's processor matches bit for bit.

Not ported, and why:
- test_call_segmentation_maps, test_reduce_labels, PostProcessSemanticSegmentationTestMixin's label parts:
  segmentation maps are labels, for training; the engine takes images only (do_reduce_labels is kept as a setting).
- test_call_pytorch, return_tensors="pt": no torch at run time (return_tensors="np").
- test_backends_equivalence, the fast (torchvision) backend tests: the engine has one backend, held to the PIL one.
- test_call_numpy_4_channels: a 4-channel image with image_mean/std of 4 values: MobileViT's processor has no
  normalisation, and the engine reads a 4th channel as alpha (dropped, as Pillow's convert("RGB") does).
"""

import json

import numpy as np
import pytest
from PIL import Image
from transformers import MobileViTImageProcessorPil

from tinyvit_engine import MobileViTImageProcessor

BATCH, CHANNELS, MIN_RESOLUTION, MAX_RESOLUTION = 7, 3, 30, 400
IMAGE_PROCESSOR_DICT = {  # MobileViTImageProcessingTester.prepare_image_processor_dict
    "do_resize": True,
    "size": {"shortest_edge": 20},
    "do_center_crop": True,
    "crop_size": {"height": 18, "width": 18},
    "do_flip_channel_order": True,
    "do_reduce_labels": False,
}


def prepare_image_inputs(equal_resolution=False, numpify=False, seed=0):
    """ImageProcessingTester.prepare_image_inputs: BATCH random images of 30 to 400 pixels a side."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(BATCH):
        h, w = (MAX_RESOLUTION,) * 2 if equal_resolution else rng.integers(MIN_RESOLUTION, MAX_RESOLUTION, 2)
        images.append(rng.integers(0, 256, (h, w, CHANNELS), dtype=np.uint8))
    return images if numpify else [Image.fromarray(a) for a in images]


def expected_output_image_shape():
    return CHANNELS, IMAGE_PROCESSOR_DICT["crop_size"]["height"], IMAGE_PROCESSOR_DICT["crop_size"]["width"]


def test_image_processor_properties():
    image_processing = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    for name in ("do_resize", "size", "do_center_crop", "crop_size", "do_flip_channel_order", "do_reduce_labels"):
        assert hasattr(image_processing, name)


def test_image_processor_from_dict_with_kwargs():
    image_processor = MobileViTImageProcessor.from_dict(IMAGE_PROCESSOR_DICT)
    assert image_processor.size == {"shortest_edge": 20}
    assert image_processor.crop_size == {"height": 18, "width": 18}
    assert image_processor.do_reduce_labels is False
    image_processor = MobileViTImageProcessor.from_dict(
        IMAGE_PROCESSOR_DICT, size=42, crop_size=84, do_reduce_labels=True
    )
    assert image_processor.size == {"shortest_edge": 42}
    assert image_processor.crop_size == {"height": 84, "width": 84}
    assert image_processor.do_reduce_labels is True


def test_image_processor_to_json_string():
    obj = json.loads(MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT).to_json_string())
    for key, value in IMAGE_PROCESSOR_DICT.items():
        assert obj[key] == value


def test_image_processor_to_json_file(tmp_path):
    image_processor_first = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    json_file_path = tmp_path / "image_processor.json"
    image_processor_first.to_json_file(json_file_path)
    image_processor_second = MobileViTImageProcessor.from_json_file(json_file_path)
    assert image_processor_second.to_dict() == image_processor_first.to_dict()


def test_image_processor_from_and_save_pretrained(tmp_path):
    image_processor_first = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    saved_file = image_processor_first.save_pretrained(tmp_path)[0]
    json.loads(open(saved_file).read())  # check_json_file_has_correct_format
    image_processor_second = MobileViTImageProcessor.from_pretrained(tmp_path)
    assert image_processor_second.to_dict() == image_processor_first.to_dict()


def test_saved_processors_read_back_both_ways_with_transformers(tmp_path):
    """(Issue 22: readable by transformers' own processor, both ways.)"""
    ours = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    ours.save_pretrained(tmp_path / "ours")
    theirs = MobileViTImageProcessorPil.from_pretrained(tmp_path / "ours")
    MobileViTImageProcessorPil(**IMAGE_PROCESSOR_DICT).save_pretrained(tmp_path / "theirs")
    back = MobileViTImageProcessor.from_pretrained(tmp_path / "theirs")
    assert back == ours
    images = prepare_image_inputs()
    want = theirs(images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(back(images, return_tensors="np")["pixel_values"], want)


def test_init_without_params():
    assert MobileViTImageProcessor() is not None


@pytest.mark.parametrize("numpify", [False, True], ids=["test_call_pil", "test_call_numpy"])
def test_call(numpify):
    image_processing = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    reference = MobileViTImageProcessorPil(**IMAGE_PROCESSOR_DICT)
    image_inputs = prepare_image_inputs(equal_resolution=False, numpify=numpify)
    # Test not batched input
    encoded_images = image_processing(image_inputs[0], return_tensors="np").pixel_values
    assert encoded_images.shape == (1, *expected_output_image_shape())
    want = reference(image_inputs[0], return_tensors="np").pixel_values
    np.testing.assert_array_equal(encoded_images, want)
    # Test batched
    encoded_images = image_processing(image_inputs, return_tensors="np").pixel_values
    assert encoded_images.shape == (BATCH, *expected_output_image_shape())
    np.testing.assert_array_equal(encoded_images, reference(image_inputs, return_tensors="np").pixel_values)


@pytest.mark.parametrize("input_data_format", [None, "channels_first"])
def test_call_numpy_channels_first(input_data_format):
    """(Issue 22: images in any layout transformers accepts.) (3, H, W) arrays, inferred or said, as transformers."""
    image_processing = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    reference = MobileViTImageProcessorPil(**IMAGE_PROCESSOR_DICT)
    image_inputs = [a.transpose(2, 0, 1).copy() for a in prepare_image_inputs(numpify=True, seed=3)]
    kw = {} if input_data_format is None else {"input_data_format": input_data_format}
    got = image_processing(image_inputs, return_tensors="np", **kw).pixel_values
    np.testing.assert_array_equal(got, reference(image_inputs, return_tensors="np", **kw).pixel_values)
    hwc = image_processing([a.transpose(1, 2, 0) for a in image_inputs], return_tensors="np").pixel_values
    np.testing.assert_array_equal(got, hwc)


def test_an_ambiguous_array_is_channels_first_unless_said():
    """(3, H, 3): both ends could be channels; transformers takes the first (with a warning), and so does the engine;
    input_data_format="channels_last" says otherwise."""
    a = np.random.default_rng(5).integers(0, 256, (3, 40, 3), dtype=np.uint8)
    image_processing = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    reference = MobileViTImageProcessorPil(**IMAGE_PROCESSOR_DICT)
    for kw in ({}, {"input_data_format": "channels_last"}):
        np.testing.assert_array_equal(
            image_processing(a, return_tensors="np", **kw).pixel_values,
            reference(a, return_tensors="np", **kw).pixel_values,
        )
