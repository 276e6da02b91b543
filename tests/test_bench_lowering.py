"""bench/lowering.py: the modules rewritten for XNNPACK compute what transformers' do (the XNNPACK peer must run the
same model as every other contender). Torch and transformers only: ExecuTorch is the bench's opt-in extra."""

import pytest
import torch

from tinyvit_engine.bench.lowering import for_xnnpack
from tinyvit_engine.bench.reference import logits_only, v1_model, v2_model


@pytest.mark.parametrize(
    "make, arch, size",
    [
        (v1_model, "xx-small", 256),
        (v1_model, "x-small", 96),
        (v1_model, "small", 160),
        (v2_model, 0.5, 256),
        (v2_model, 0.75, 128),
        (v2_model, 1.0, 64),
    ],
)
def test_the_rewritten_model_equals_transformers(make, arch, size):
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = logits_only(make(arch, seed=1, num_labels=7))(x)
        got = for_xnnpack(make(arch, seed=1, num_labels=7))(x)
    assert got.shape == want.shape == (2, 7)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_segmentation_models_are_left_as_exported():
    assert for_xnnpack(v1_model("xx-small", num_labels=3, task="segmentation")) is None
    assert for_xnnpack(v2_model(0.5, num_labels=3, task="segmentation")) is None
