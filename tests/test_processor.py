"""The image processor and load_image against transformers' MobileViTImageProcessorPil and load_image: bit-exact
pixel_values on real photos, every mode Pillow decodes, and clear errors for bad files, arrays and configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import MobileViTImageProcessorPil
from transformers.image_utils import load_image as hf_load_image

from tinyvit_engine.errors import InputError, UnsupportedConfigError
from tinyvit_engine.processor import MobileViTImageProcessor, load_image

IMAGES = Path(__file__).parent / "data" / "images"
PHOTOS = sorted(p for p in IMAGES.iterdir() if p.suffix in (".png", ".jpg"))

CONFIGS = {
    # apple/mobilevit-*: the modern form of the classification config
    "classification": {
        "crop_size": {"height": 256, "width": 256},
        "do_center_crop": True,
        "do_flip_channel_order": True,
        "do_rescale": True,
        "do_resize": True,
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 288},
    },
    # apple/deeplabv3-mobilevit-*
    "segmentation": {
        "crop_size": {"height": 512, "width": 512},
        "do_flip_channel_order": True,
        "resample": 2,
        "size": {"shortest_edge": 544},
    },
    "bicubic": {"size": {"shortest_edge": 301}, "crop_size": {"height": 255, "width": 257}, "resample": 3},
    # the Hub's legacy feature-extractor config, as apple/mobilevit-small ships it
    "legacy": {
        "crop_size": 256,
        "do_center_crop": True,
        "do_flip_channels": True,
        "do_resize": True,
        "feature_extractor_type": "MobileViTFeatureExtractor",
        "resample": 2,
        "size": 288,
    },
    # crop larger than the resized image on both sides, odd padding: zeros, ceil on top/left
    "crop_pads": {"size": {"shortest_edge": 100}, "crop_size": {"height": 161, "width": 333}, "resample": 2},
    "class_defaults": {},
    "exact_size_lanczos": {"size": {"height": 200, "width": 150}, "crop_size": 180, "resample": 1},
    "no_resize": {"do_resize": False, "crop_size": 300},
    "no_rescale": {"do_rescale": False, "size": 288, "crop_size": 256, "resample": 2},
    "no_flip": {"do_flip_channel_order": False, "resample": 4},
    "no_crop": {"do_center_crop": False, "size": {"shortest_edge": 64}, "resample": 5},
    "all_off": {"do_resize": False, "do_rescale": False, "do_center_crop": False, "do_flip_channel_order": False},
}


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    """The photos as transformers' pipelines load them, plus one turned to portrait (width < height)."""
    images = [hf_load_image(str(p)) for p in PHOTOS]
    return images + [images[0].transpose(Image.Transpose.ROTATE_90)]


def reference(config: dict, images) -> np.ndarray:
    return MobileViTImageProcessorPil.from_dict(config)(images, return_tensors="np")["pixel_values"]


def assert_bit_exact(ours: np.ndarray, ref: np.ndarray) -> None:
    """The same values, and the same dtype: float32, or uint8 without do_rescale, as transformers gives them."""
    assert ours.dtype == ref.dtype and ours.dtype in (np.float32, np.uint8) and ours.flags.c_contiguous
    assert ours.shape == ref.shape and np.array_equal(ours, ref)


def test_photos_are_there():
    assert len(PHOTOS) >= 3


@pytest.mark.parametrize("name", CONFIGS)
def test_one_at_a_time_matches_transformers(name, photos):
    processor = MobileViTImageProcessor.from_dict(CONFIGS[name])
    for image in photos:
        assert_bit_exact(processor(image), reference(CONFIGS[name], image))


@pytest.mark.parametrize("name", CONFIGS)
def test_batch_matches_transformers(name, photos):
    processor = MobileViTImageProcessor.from_dict(CONFIGS[name])
    if processor.do_center_crop or (processor.do_resize and "height" in processor.size):
        assert_bit_exact(processor(photos), reference(CONFIGS[name], photos))
    else:
        with pytest.raises(InputError, match="differ in size"):
            processor(photos)


def test_paths_and_arrays_match_transformers(photos):
    processor = MobileViTImageProcessor.from_dict(CONFIGS["classification"])
    ref = reference(CONFIGS["classification"], photos[: len(PHOTOS)])
    assert_bit_exact(processor([str(p) for p in PHOTOS]), ref)
    assert_bit_exact(processor(PHOTOS), ref)
    arrays = [np.asarray(im) for im in photos[: len(PHOTOS)]]
    assert_bit_exact(processor(arrays), reference(CONFIGS["classification"], arrays))
    with pytest.raises(InputError, match="no images"):
        processor([])


def test_defaults_are_the_transformers_class_defaults():
    ours, theirs = MobileViTImageProcessor().to_dict(), MobileViTImageProcessorPil().to_dict()
    assert ours["resample"] == 3 and ours["size"] == {"shortest_edge": 224}
    assert {k: theirs[k] for k in ours} == ours


def test_to_dict_round_trips_through_both(photos, tmp_path):
    processor = MobileViTImageProcessor.from_dict(CONFIGS["legacy"])
    d = processor.to_dict()
    assert MobileViTImageProcessor.from_dict(d) == processor
    assert_bit_exact(processor(photos[1]), reference(d, photos[1]))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(d))
    assert MobileViTImageProcessor.from_pretrained(tmp_path) == processor
    assert MobileViTImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json") == processor


def test_legacy_flip_flag_false_is_honoured(photos):
    # transformers 5 ignores do_flip_channels (it is true on every Hub config); we read it
    ours = MobileViTImageProcessor.from_dict({"do_flip_channels": False})(photos[0])
    assert_bit_exact(ours, reference({"do_flip_channel_order": False}, photos[0]))
    keep = MobileViTImageProcessor.from_dict({"do_flip_channels": False, "do_flip_channel_order": True})
    assert keep.do_flip_channel_order


@pytest.mark.parametrize(
    "config, key",
    [
        ({"size": -5}, "size"),
        ({"size": {"shortest_edge": 0}}, "size"),
        ({"size": {"longest_edge": 5}}, "size"),
        ({"size": True}, "size"),
        ({"size": 2.5}, "size"),
        ({"crop_size": {"shortest_edge": 5}}, "crop_size"),
        ({"crop_size": [256, -1]}, "crop_size"),
        ({"resample": 9}, "resample"),
        ({"resample": "bilinear"}, "resample"),
        ({"do_resize": "yes"}, "do_resize"),
        ({"do_flip_channels": 1}, "do_flip_channel_order"),
        ({"rescale_factor": -1.0}, "rescale_factor"),
        ({"rescale_factor": "x"}, "rescale_factor"),
    ],
)
def test_bad_config_values_name_the_key(config, key):
    with pytest.raises(UnsupportedConfigError, match=rf"^preprocessor config: {key} must be"):
        MobileViTImageProcessor.from_dict(config)


def test_unknown_keys_are_ignored_and_bad_files_refused(tmp_path):
    assert MobileViTImageProcessor.from_dict({"image_mean": [0.5], "foo": 1}) == MobileViTImageProcessor()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UnsupportedConfigError, match="bad.json"):
        MobileViTImageProcessor.from_pretrained(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        MobileViTImageProcessor.from_pretrained(tmp_path)


def _modes(photo: Image.Image) -> dict[str, Image.Image]:
    """The photo in every mode a file may decode to; alpha and 16-bit data drawn fresh."""
    rng = np.random.default_rng()
    gray = np.asarray(photo.convert("L"))
    alpha = Image.fromarray(rng.integers(0, 256, gray.shape, dtype=np.uint8))
    rgba, la = photo.copy(), photo.convert("LA")
    rgba.putalpha(alpha)
    la.putalpha(alpha)
    return {
        "L": photo.convert("L"),
        "LA": la,
        "RGBA": rgba,
        "CMYK": photo.convert("CMYK"),
        "P": photo.convert("P", palette=Image.Palette.ADAPTIVE),
        "I;16": Image.fromarray((gray.astype(np.uint16) * rng.integers(1, 258)).astype(np.uint16)),
    }


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_load_image_modes_match_transformers(mode, photos, tmp_path):
    image = _modes(photos[1])[mode]
    path = tmp_path / ("im.jpg" if mode == "CMYK" else "im.png")
    image.save(path, **({"transparency": 0} if mode == "P" else {}))  # a palette image with a transparent index
    assert Image.open(path).mode == mode
    processor = MobileViTImageProcessor.from_dict(CONFIGS["classification"])
    for source in (str(path), Image.open(path)):
        ours, theirs = load_image(source), hf_load_image(source if isinstance(source, str) else Image.open(path))
        assert ours.mode == "RGB" and np.array_equal(np.asarray(ours), np.asarray(theirs))
        assert_bit_exact(processor(ours), reference(CONFIGS["classification"], theirs))
    # a non-RGB PIL image given to the processor itself is converted to RGB the same way
    assert_bit_exact(processor(Image.open(path)), reference(CONFIGS["classification"], hf_load_image(str(path))))


def test_exif_orientation_is_applied(photos, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    photos[1].save(tmp_path / "rotated.jpg", exif=exif)
    ours = load_image(tmp_path / "rotated.jpg")
    upright = Image.open(tmp_path / "rotated.jpg").transpose(Image.Transpose.ROTATE_270)
    assert ours.size == photos[1].size[::-1] and np.array_equal(np.asarray(ours), np.asarray(upright))
    assert np.array_equal(np.asarray(ours), np.asarray(hf_load_image(str(tmp_path / "rotated.jpg"))))
    # the processor itself, like transformers', takes a PIL image as given: no rotation
    processor = MobileViTImageProcessor.from_dict(CONFIGS["segmentation"])
    as_given = Image.open(tmp_path / "rotated.jpg")
    assert_bit_exact(processor(as_given), reference(CONFIGS["segmentation"], Image.open(tmp_path / "rotated.jpg")))
    assert processor(as_given).shape == (1, 3, 512, 512) and not np.array_equal(processor(as_given), processor(ours))


def test_numpy_arrays(photos):
    rgb = np.asarray(photos[1])
    assert np.array_equal(np.asarray(load_image(rgb)), rgb)
    gray = np.asarray(photos[1].convert("L"))
    for a in (gray, gray[..., None]):
        assert np.array_equal(np.asarray(load_image(a)), np.asarray(hf_load_image(Image.fromarray(gray))))
    rgba = np.concatenate([rgb, gray[..., None]], axis=-1)
    assert np.array_equal(np.asarray(load_image(rgba)), rgb)
    with pytest.raises(InputError, match="float32"):
        load_image(rgb.astype(np.float32))
    for shape in [(5, 5, 2), (1, 5, 5, 3), (0, 5, 3)]:
        with pytest.raises(InputError, match=rf"shape \({shape[0]}, 5"):
            load_image(np.zeros(shape, np.uint8))


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (32, 24), c) for c in [(200, 30, 10), (10, 30, 200)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    ours = np.asarray(load_image(tmp_path / "anim.gif"))
    assert np.array_equal(ours, np.asarray(hf_load_image(str(tmp_path / "anim.gif"))))
    assert (ours == ours[0, 0]).all() and ours[0, 0, 0] > 150 > ours[0, 0, 2]


def test_bad_files_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    for name in ("empty.png", "notes.txt"):
        with pytest.raises(InputError, match=rf"{name}: cannot read image: not an image"):
            load_image(tmp_path / name)
    for photo in (p for p in PHOTOS if p.suffix in (".png", ".jpg")):
        data = photo.read_bytes()
        (tmp_path / photo.name).write_bytes(data[: len(data) // 2])
        with pytest.raises(InputError, match=rf"{photo.name}.*truncated"):
            load_image(tmp_path / photo.name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match=rf"{PHOTOS[0].name}.*decompression-bomb"):
        load_image(PHOTOS[0])
