"""Ported from transformers' tests/models/mobilevitv2/test_modeling_mobilevitv2.py (MobileViTV2ModelTester,
MobileViTV2ModelTest, MobileViTV2ModelIntegrationTest), on the drop-in classes, test names kept (issue 22).

The tester's config (64x64 inputs, width_multiplier 0.25, base_attn_unit_dims [16, 24, 32], n_attn_blocks [1, 1, 2],
ASPP 32, "swish", batch 2) is built in transformers with real-scale weights (tests/hf.py: its default init makes
these tiny models output near zero, so comparisons would pass vacuously), saved as a checkpoint and loaded with
from_pretrained; every shape test here also holds the engine's values to transformers'. ModelTesterMixin's generic
tests run for both families in tests/test_transformers_modeling_common.py.

Not ported, and why:
- labels / loss (`model(pixel_values, labels=...)`, is_training, use_labels, the pixel_labels pass of
  create_and_check_for_semantic_segmentation): the engine runs inference only; `labels` is refused with that reason.
- test_inputs_embeds, test_model_get_set_embeddings, test_attention_outputs: skipped upstream too (no embeddings;
  MobileViTV2 returns no attentions).
- test_multi_gpu_data_parallel_forward, test_model_from_pretrained: GPUs; the Hub (no network at test time).
- the integration tests' expected slices: they are Apple's trained weights' numbers; the checkpoints are rebuilt
  locally with the published configs and preprocessor configs, and the engine is held to transformers on them, on a
  real photo, at the tests' own tolerance (rtol 2e-4, atol 2e-4).
"""

import numpy as np
import pytest
import transformers
from hf import on_photo, pixels, rebuilt_checkpoint, save_checkpoint, torch_forward, v2_model

import tinyvit_engine as tve

TESTER = dict(
    image_size=64,
    patch_size=2,
    num_channels=3,
    hidden_act="swish",
    conv_kernel_size=3,
    output_stride=32,
    classifier_dropout_prob=0.1,
    ffn_dropout=0.0,
    attn_dropout=0.0,
    base_attn_unit_dims=[16, 24, 32],
    n_attn_blocks=[1, 1, 2],
    aspp_out_channels=32,
)
WIDTH = 0.25
BATCH, IMAGE_SIZE, NUM_LABELS, OUTPUT_STRIDE = 2, 64, 10, 32
LAST_HIDDEN_SIZE = 128  # make_divisible(512 * width_multiplier, divisor=8)
CLASSES = {
    "base": tve.MobileViTV2Model,
    "classification": tve.MobileViTV2ForImageClassification,
    "segmentation": tve.MobileViTV2ForSemanticSegmentation,
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tester")
    out = {}
    for seed, task in enumerate(CLASSES):
        torch_model = v2_model(WIDTH, seed=seed, num_labels=NUM_LABELS, task=task, **TESTER)
        out[task] = (save_checkpoint(torch_model, root / task), torch_model)
    return out


@pytest.fixture(scope="module")
def pixel_values():
    return pixels(BATCH, IMAGE_SIZE, IMAGE_SIZE, seed=8)


def _close(got, want, rtol=2e-4):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_model(checkpoints, pixel_values):
    path, torch_model = checkpoints["base"]
    result = tve.MobileViTV2Model.from_pretrained(path)(pixel_values)
    side = IMAGE_SIZE // OUTPUT_STRIDE
    assert result.last_hidden_state.shape == (BATCH, LAST_HIDDEN_SIZE, side, side)
    _close(result.last_hidden_state, torch_forward(torch_model, pixel_values).last_hidden_state.numpy())


@pytest.mark.parametrize("task", CLASSES)
def test_hidden_states_output(checkpoints, pixel_values, task):
    model = CLASSES[task].from_pretrained(checkpoints[task][0])

    def check_hidden_states_output(outputs):
        hidden_states = outputs.hidden_states
        assert len(hidden_states) == 5  # expected_num_stages
        divisor = 2  # (batch, channels, height, width), height and width successively divided by 2
        for h in hidden_states:
            assert list(h.shape[-2:]) == [IMAGE_SIZE // divisor, IMAGE_SIZE // divisor]
            divisor *= 2
        assert OUTPUT_STRIDE == divisor // 2

    outputs = model(pixel_values=pixel_values, output_hidden_states=True)
    check_hidden_states_output(outputs)
    want = torch_forward(checkpoints[task][1], pixel_values, output_hidden_states=True).hidden_states
    for got, ref in zip(outputs.hidden_states, want, strict=True):
        _close(got, ref.numpy())
    # check that output_hidden_states also work using config
    model.config.output_hidden_states = True
    check_hidden_states_output(model(pixel_values=pixel_values))
    model.config.output_hidden_states = False


def test_for_image_classification(checkpoints, pixel_values):
    path, torch_model = checkpoints["classification"]
    result = tve.MobileViTV2ForImageClassification.from_pretrained(path)(pixel_values)
    assert result.logits.shape == (BATCH, NUM_LABELS)
    _close(result.logits, torch_forward(torch_model, pixel_values).logits.numpy())


def test_for_semantic_segmentation(checkpoints, pixel_values):
    path, torch_model = checkpoints["segmentation"]
    result = tve.MobileViTV2ForSemanticSegmentation.from_pretrained(path)(pixel_values)
    side = IMAGE_SIZE // OUTPUT_STRIDE
    assert result.logits.shape == (BATCH, NUM_LABELS, side, side)
    _close(result.logits, torch_forward(torch_model, pixel_values).logits.numpy())


# ---------------------------------------------------------------- MobileViTV2ModelIntegrationTest


def test_inference_image_classification_head(tmp_path):
    """apple/mobilevitv2-1.0-imagenet1k-256, rebuilt: 1000 labels, 256x256 crops of a 288 shortest edge."""
    torch_model = v2_model(1.0, seed=21, num_labels=1000)
    path = rebuilt_checkpoint(tmp_path, "mobilevitv2-1.0-imagenet1k-256", torch_model)
    outputs, expected = on_photo(path, tve.MobileViTV2ForImageClassification, torch_model)
    assert outputs.logits.shape == (1, 1000)  # expected_shape
    np.testing.assert_allclose(outputs.logits, expected.logits.numpy(), rtol=2e-4, atol=2e-4)


@pytest.fixture(scope="module")
def deeplab(tmp_path_factory):
    """shehan97/mobilevitv2-1.0-voc-deeplabv3, rebuilt: 21 labels, output stride 16, 512x512 inputs."""
    torch_model = v2_model(1.0, seed=22, num_labels=21, task="segmentation", output_stride=16)
    size = {"crop_size": {"height": 512, "width": 512}, "size": {"shortest_edge": 512}}
    return rebuilt_checkpoint(
        tmp_path_factory.mktemp("voc"), "mobilevitv2-1.0-voc-deeplabv3", torch_model, **size
    ), torch_model


def test_inference_semantic_segmentation(deeplab):
    path, torch_model = deeplab
    outputs, expected = on_photo(path, tve.MobileViTV2ForSemanticSegmentation, torch_model)
    assert outputs.logits.shape == (1, 21, 32, 32)  # expected_shape
    np.testing.assert_allclose(outputs.logits, expected.logits.numpy(), rtol=2e-4, atol=2e-4)


def test_post_processing_semantic_segmentation(deeplab):
    path, torch_model = deeplab
    outputs, expected = on_photo(path, tve.MobileViTV2ForSemanticSegmentation, torch_model)
    image_processor = tve.MobileViTImageProcessor.from_pretrained(path)
    theirs = transformers.MobileViTImageProcessor.from_pretrained(path)

    segmentation = image_processor.post_process_semantic_segmentation(outputs=outputs, target_sizes=[(50, 60)])
    assert segmentation[0].shape == (50, 60)  # expected_shape
    want = theirs.post_process_semantic_segmentation(outputs=expected, target_sizes=[(50, 60)])
    assert np.mean(segmentation[0] == want[0].numpy()) > 0.99  # argmax ties may fall either way at 2e-4

    segmentation = image_processor.post_process_semantic_segmentation(outputs=outputs)
    assert segmentation[0].shape == (32, 32)  # expected_shape

    scored = image_processor.post_process_semantic_segmentation(
        outputs=outputs, target_sizes=[(50, 60)], return_segmentation_scores=True
    )
    want = theirs.post_process_semantic_segmentation(
        outputs=expected, target_sizes=[(50, 60)], return_segmentation_scores=True
    )
    assert set(scored[0]) == set(want[0]) == {"segmentation", "segmentation_scores"}
    assert scored[0].segmentation_scores.shape == tuple(want[0].segmentation_scores.shape) == (21, 50, 60)
    np.testing.assert_allclose(scored[0].segmentation_scores, want[0].segmentation_scores.numpy(), rtol=2e-4, atol=2e-4)
    plain = image_processor.post_process_semantic_segmentation(outputs=outputs, target_sizes=[(50, 60)])
    np.testing.assert_array_equal(scored[0].segmentation, plain[0])
