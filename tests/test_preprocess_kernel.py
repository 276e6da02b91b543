"""kernels/preprocess.py: the processor's resize, crop, rescale and flip in one pass, against its NumPy reference and
against what it stands for, Pillow's Image.resize followed by transformers' arithmetic. Equal, not close: the
processor is bit-exact."""

import numpy as np
import pytest
from PIL import Image
from tinyvit_engine.kernels import KernelArgumentError
from tinyvit_engine.kernels.preprocess import BICUBIC, BILINEAR, BOX, HAMMING, LANCZOS, preprocess, preprocess_reference

from tinyvit_engine.processor import pass_order

FILTERS = [BILINEAR, BICUBIC, BOX, HAMMING, LANCZOS]


def pillow(image, size, resample, crop, factor, flip):
    """Image.resize, then transformers' rescale (float64, rounded to float32), zero-padded center crop, flip."""
    (h, w), (ch, cw) = size, crop
    x = np.asarray(Image.fromarray(image).resize((w, h), resample=resample)).transpose(2, 0, 1)
    x = (x.astype(np.float64) * factor).astype(np.float32)
    top, left = (h - ch) // 2, (w - cw) // 2
    canvas = np.zeros((3, max(h, ch) + abs(top) * 2, max(w, cw) + abs(left) * 2), np.float32)
    pad_top, pad_left = max(-top, 0), max(-left, 0)
    canvas[:, pad_top : pad_top + h, pad_left : pad_left + w] = x
    out = canvas[:, pad_top + top : pad_top + top + ch, pad_left + left : pad_left + left + cw]
    return out[::-1] if flip else out


def test_this_pillows_order_of_passes_is_known():
    assert pass_order() is not None, "this Pillow orders its resize passes in a way kernels/preprocess.py lacks"


@pytest.mark.parametrize("resample", FILTERS)
@pytest.mark.parametrize(
    "shape, size, crop",
    [
        ((300, 451), (288, 433), (256, 256)),  # a photo: shrink a little, crop
        ((23, 17), (61, 44), (30, 50)),  # enlarge; the crop pads the width
        ((97, 31), (11, 40), (13, 9)),  # the height shrinks a lot, the width grows: Pillow 13 goes vertical first
        ((1, 1), (5, 3), (7, 7)),  # one pixel
        ((40, 30), (40, 30), (40, 30)),  # no resize at all
        ((40, 300), (40, 9), (5, 9)),  # one axis only, 33x down: many taps
        ((64, 48), (17, 48), (20, 50)),
    ],
)
def test_preprocess_is_pillow_and_transformers(resample, shape, size, crop):
    rng = np.random.default_rng(resample)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    order = pass_order()(*shape, *size)
    fast = preprocess(image, size, resample, crop, 1 / 255, True, order)
    want = pillow(image, size, resample, crop, 1 / 255, True)
    assert fast.dtype == np.float32 and fast.shape == (3, *crop)
    np.testing.assert_array_equal(fast, want)
    np.testing.assert_array_equal(preprocess_reference(image, size, resample, crop, 1 / 255, True, order), want)


def test_fast_and_reference_agree_on_random_shapes_both_orders():
    rng = np.random.default_rng(7)
    for _ in range(40):
        shape, size, crop = rng.integers(1, 60, 2), rng.integers(1, 80, 2), rng.integers(1, 70, 2)
        image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        args = (tuple(map(int, size)), int(rng.choice(FILTERS)), tuple(map(int, crop)), float(rng.random()))
        for flip in (False, True):
            for vertical_first in (False, True):
                np.testing.assert_array_equal(
                    preprocess(image, *args, flip, vertical_first),
                    preprocess_reference(image, *args, flip, vertical_first),
                )


def test_preprocess_refuses_bad_arguments():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(KernelArgumentError, match="uint8"):
        preprocess(image.astype(np.float32), (4, 4), BILINEAR, (4, 4), 1 / 255, True)
    with pytest.raises(KernelArgumentError, match=r"\(H, W, 3\)"):
        preprocess(image[..., :2], (4, 4), BILINEAR, (4, 4), 1 / 255, True)
    with pytest.raises(KernelArgumentError, match="non-empty"):
        preprocess(image[:0], (4, 4), BILINEAR, (4, 4), 1 / 255, True)
    with pytest.raises(KernelArgumentError, match="resample"):
        preprocess(image, (4, 4), 0, (4, 4), 1 / 255, True)  # nearest: not a convolution in Pillow
    with pytest.raises(KernelArgumentError, match="ch"):
        preprocess(image, (4, 4), BILINEAR, (0, 4), 1 / 255, True)


def test_an_unknown_order_of_passes_falls_back_to_pillow(monkeypatch):
    """A Pillow whose order of passes matches no rule we know (a future one): the processor notices at first use
    and resizes with Pillow itself, with the same values as before."""
    from tinyvit_engine import processor as proc

    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    p = proc.MobileViTImageProcessor(size=64, crop_size=(48, 48), resample=int(Image.Resampling.BILINEAR))
    fast = p(photo)
    pass_order.cache_clear()
    monkeypatch.setattr(proc, "PASS_ORDERS", {"never": lambda *sizes: True})  # vertical first: wrong for 30x40->60x20
    try:
        assert pass_order() is None
        np.testing.assert_array_equal(p(photo), fast)
    finally:
        pass_order.cache_clear()
