"""Ported from transformers' tests/models/mobilevit/test_image_processing_mobilevit.py (MobileViTImageProcessingTester,
MobileViTImageProcessingTest) and the ImageProcessingTestMixin tests of tests/test_image_processing_common.py it
runs, on tinyvit_engine.MobileViTImageProcessor, test names kept (issue 22). Values are held to
transformers' MobileViTImageProcessorPil, which the engine's processor matches bit for bit.

Not ported, and why:
- test_call_segmentation_maps, test_reduce_labels, PostProcessSemanticSegmentationTestMixin's label parts:
  segmentation maps are labels, for training; the engine takes images only (do_reduce_labels is kept as a setting).
- test_call_pytorch, return_tensors="pt": no torch at run time (return_tensors="np").
- test_backends_equivalence, the fast (torchvision) backend tests: the engine has one backend, held to the PIL one.
- test_cast_dtype_device, test_can_compile_torchvision_backend, test_new_models_require_torchvision_backend,
  test_save_load_backends*, test_pil_can_run_without_torchvision, test_valid_kwargs_set (a torch kwargs class):
  torch, torchvision and transformers' backend machinery.
- test_convert_to_rgb_mixed_input_batch: torch tensors (the PIL and numpy inputs of any layout are tested here).
- test_processor_can_use_legacy_annotation_format, test_fast_image_processor_explicit_none_preserved: annotations
  (detection) and the fast backend.
- test_call_numpy_4_channels: a 4-channel image with image_mean/std of 4 values: MobileViT's processor has no
  normalisation, and the engine reads a 4th channel as alpha (dropped, as Pillow's convert("RGB") does).
"""

import json

import numpy as np
import pytest
from PIL import Image
from transformers import MobileViTImageProcessorPil

from tinyvit_engine import MobileViTImageProcessor, ModelOutput, UnsupportedConfigError

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


# ---------------------------------------------------------------- the rest of ImageProcessingTestMixin


def assert_has_attributes(processor, expected_attributes):
    """ImageProcessingTestMixin._assert_has_attributes."""
    for key, expected_value in expected_attributes.items():
        assert getattr(processor, key) == expected_value, key


def test_image_processor_has_attributes():
    assert_has_attributes(MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT), IMAGE_PROCESSOR_DICT)


def test_image_processor_from_dict_has_attributes():
    assert_has_attributes(MobileViTImageProcessor.from_dict(IMAGE_PROCESSOR_DICT), IMAGE_PROCESSOR_DICT)


def test_image_processor_from_dict_with_kwargs_has_attributes():
    processor = MobileViTImageProcessor.from_dict(IMAGE_PROCESSOR_DICT, do_center_crop=False)
    assert_has_attributes(processor, {**IMAGE_PROCESSOR_DICT, "do_center_crop": False})


def test_image_processor_save_load_with_autoimageprocessor(tmp_path):
    from tinyvit_engine import AutoImageProcessor

    image_processor_first = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    saved_file = image_processor_first.save_pretrained(tmp_path)[0]
    json.loads(open(saved_file).read())  # check_json_file_has_correct_format
    image_processor_second = AutoImageProcessor.from_pretrained(tmp_path)
    assert image_processor_second.to_dict() == image_processor_first.to_dict()
    # and transformers' AutoImageProcessor reads the same file into its MobileViT processor
    from transformers import AutoImageProcessor as TheirAuto

    assert type(TheirAuto.from_pretrained(tmp_path)).__name__.startswith("MobileViTImageProcessor")


def test_image_processor_preprocess_arguments():
    """transformers warns about an unknown preprocess keyword and drops it; the engine refuses it (nothing is
    ignored silently), and takes every keyword transformers' MobileViT preprocess does that the engine has."""
    image_processor = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    with pytest.raises(TypeError, match="extra_argument"):
        image_processor(prepare_image_inputs(), extra_argument=True)
    for key, value in {**IMAGE_PROCESSOR_DICT, "resample": 2, "do_rescale": True, "rescale_factor": 0.5}.items():
        image_processor(prepare_image_inputs()[:1], **{key: value})


def test_settings_may_be_set_as_transformers_code_does():
    """image_processor.do_reduce_labels = True (test_reduce_labels), processor.size = ... : settings are attributes,
    checked as the constructor checks them; one instance's edits leave another's alone
    (test_override_instance_attributes_does_not_affect_other_instances, skipped upstream for MobileViT, which has no
    image_mean)."""
    first, second = MobileViTImageProcessor(), MobileViTImageProcessor()
    first.do_reduce_labels = True
    first.size = 42
    first.crop_size["height"] = 7
    assert first.size == {"shortest_edge": 42} and first.crop_hw == (7, 256) and first.do_reduce_labels
    assert second == MobileViTImageProcessor()
    first.do_center_crop = False
    reference = MobileViTImageProcessorPil(size={"shortest_edge": 42}, do_center_crop=False)
    images = prepare_image_inputs()[:2]
    for image in images:
        want = reference(image, return_tensors="np")["pixel_values"]
        np.testing.assert_array_equal(first(image, return_tensors="np")["pixel_values"], want)
    with pytest.raises(UnsupportedConfigError, match="resample"):
        first.resample = 2.0
    with pytest.raises(AttributeError, match="image_mean"):
        first.image_mean = [0.5, 0.5, 0.5]  # MobileViT's processor does not normalise
    first.do_center_crop = True
    first.crop_size["height"] = -1  # an edit of the dict itself is checked when it is used
    with pytest.raises(UnsupportedConfigError, match="crop_size"):
        first(images[0])


def prepare_post_process_semantic_segmentation_inputs(num_labels=5, seed=0):
    """MobileViTImageProcessingTester.prepare_post_process_semantic_segmentation_inputs (numpy logits)."""
    crop = IMAGE_PROCESSOR_DICT["crop_size"]
    logits = np.random.default_rng(seed).standard_normal((BATCH, num_labels, crop["height"], crop["width"]))
    return {"outputs": ModelOutput(logits=logits.astype(np.float32))}, {"num_labels": num_labels, **crop}


def test_post_process_semantic_segmentation():
    image_processor = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    inputs, expected_shape = prepare_post_process_semantic_segmentation_inputs()
    segmentation = image_processor.post_process_semantic_segmentation(**inputs)
    assert len(segmentation) == BATCH
    assert segmentation[0].shape == (expected_shape["height"], expected_shape["width"])
    segmentation_output = image_processor.post_process_semantic_segmentation(**inputs, return_segmentation_scores=True)
    assert len(segmentation_output) == BATCH
    np.testing.assert_array_equal(segmentation_output[0].segmentation, segmentation[0])
    assert segmentation_output[0].segmentation_scores.shape == (
        expected_shape["num_labels"],
        expected_shape["height"],
        expected_shape["width"],
    )


def test_post_process_semantic_segmentation_target_sizes():
    import torch
    from transformers import MobileViTImageProcessor as Theirs
    from transformers.modeling_outputs import SemanticSegmenterOutput

    image_processor = MobileViTImageProcessor(**IMAGE_PROCESSOR_DICT)
    inputs, expected_shape = prepare_post_process_semantic_segmentation_inputs()
    target_sizes = [(1, 4) for _ in range(BATCH)]
    segmentation_resized = image_processor.post_process_semantic_segmentation(**inputs, target_sizes=target_sizes)
    assert segmentation_resized[0].shape == target_sizes[0]
    segmentation_output_resized = image_processor.post_process_semantic_segmentation(
        **inputs, target_sizes=target_sizes, return_segmentation_scores=True
    )
    np.testing.assert_array_equal(segmentation_output_resized[0].segmentation, segmentation_resized[0])
    assert segmentation_output_resized[0].segmentation_scores.shape == (expected_shape["num_labels"], *target_sizes[0])
    # raise ValueError if target_sizes has wrong length
    with pytest.raises(ValueError):
        image_processor.post_process_semantic_segmentation(**inputs, target_sizes=target_sizes + [(1, 4)])
    # the same numbers as transformers' (its torch backend; bilinear, align_corners=False)
    theirs = Theirs(**IMAGE_PROCESSOR_DICT).post_process_semantic_segmentation(
        SemanticSegmenterOutput(logits=torch.from_numpy(inputs["outputs"].logits)),
        target_sizes=[(9, 31)] * BATCH,
        return_segmentation_scores=True,
    )
    ours = image_processor.post_process_semantic_segmentation(
        **inputs, target_sizes=[(9, 31)] * BATCH, return_segmentation_scores=True
    )
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a.segmentation_scores, b.segmentation_scores.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a.segmentation, b.segmentation.numpy())
