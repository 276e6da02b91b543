"""Images in, MobileViT pixel_values out: resize (short side), rescale, center crop, RGB -> BGR.

Mirrors transformers' `MobileViTImageProcessorPil` (the numpy/PIL backend) bit for bit: the same PIL resize, the
same output-size arithmetic, float64 rescale then float32, the same floor/ceil crop and zero padding. No mean/std
normalisation: MobileViT takes pixels in [0, 1], in BGR order. `load_image` does what transformers' `load_image`
does for the pipelines (EXIF orientation, then `convert("RGB")`), with clear errors for bad files.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError, UnsupportedConfigError
from .kernels import preprocess
from .kernels.coldstart import compiling, start_compiling
from .postprocess import post_process_semantic_segmentation

_RESAMPLE = {int(r): r.name for r in Image.Resampling}  # 0 NEAREST .. 5 HAMMING


PROCESSOR_CLASSES = (
    "MobileViTImageProcessor",
    "MobileViTImageProcessorFast",
    "MobileViTImageProcessorPil",
    "MobileViTFeatureExtractor",
)  # what transformers builds for MobileViT checkpoints
NEEDS = {"do_resize": ("size", "resample"), "do_rescale": ("rescale_factor",), "do_center_crop": ("crop_size",)}
MAX_SIDE = 4096  # the largest size or crop_size side taken (MobileViT's are 256 to 512)
MAX_RESCALE = 1000.0  # the largest rescale_factor taken (MobileViT's is 1/255)
CHANNEL_FORMATS = ("channels_first", "channels_last")  # transformers' ChannelDimension values (input_data_format)


def load_image(
    image: Any, input_data_format: str | None = None, name: str | None = None, formats: tuple[str, ...] | None = None
) -> Image.Image:
    """A path, a file's bytes, a PIL image or a uint8 array -> an RGB PIL image, EXIF orientation applied.

    The one boundary where a decoded image enters the engine: whatever a decoder raises becomes InputError naming the
    file (`name` names bytes) and the cause. formats: Pillow's names of the formats to accept (None: any).

    An array is (H, W), (H, W, C) or (C, H, W) with C in 1, 3 (or 4, channels last); which of the last two,
    input_data_format says, else it is inferred as transformers does: channels first when the first axis has 1 or 3
    entries (also when the last has too: transformers' choice, with a warning), else channels last.
    A path to an animated image gives its first frame; a PIL image gives its current frame, as in transformers."""
    if isinstance(image, np.ndarray):
        return _from_array(image, input_data_format)
    if isinstance(image, Image.Image):
        return _to_rgb(image, "<PIL image>")
    if isinstance(image, (bytes, bytearray, memoryview)):  # a file's content (an upload)
        path, source = name or "<image bytes>", io.BytesIO(image)
    elif isinstance(image, (str, os.PathLike)):
        path = source = os.fspath(image)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file: {path}")
    else:
        raise TypeError(f"load_image takes a path, bytes, a PIL image or a numpy array, not {type(image).__name__}")
    try:
        # Image.open only reads the header; the pixels (and any truncation) come with load(), inside _to_rgb
        with Image.open(source, formats=formats) as im:
            return _to_rgb(im, path)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: larger than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {e}") from e
    except IsADirectoryError as e:
        raise InputError(f"{path}: a directory, not an image file") from e
    except UnidentifiedImageError as e:
        taken = f" ({', '.join(formats)})" if formats else ""
        raise InputError(f"{path}: cannot read image: not an image in a format taken{taken}") from e
    except Exception as e:  # noqa: BLE001 -- the one boundary: whatever a decoder raises (Pillow raises ValueError,
        raise InputError(f"{path}: cannot read image: {_cause(e)}") from e  # struct.error, ... on corrupt files)


def _to_rgb(image: Image.Image, name: str, exif: bool = True) -> Image.Image:
    """transformers' load_image: exif_transpose, then convert("RGB") (alpha dropped, palettes expanded)."""
    try:
        image.load()
        if not exif:
            return image.convert("RGB")
        image = ImageOps.exif_transpose(image)  # a new image (a copy when there is nothing to turn)
        return image if image.mode == "RGB" else image.convert("RGB")  # no second copy
    except Image.DecompressionBombError:
        raise
    except Exception as e:  # noqa: BLE001 -- as in load_image: every decoder failure, named
        raise InputError(f"{name}: cannot decode {image.mode} image: {_cause(e)}") from e


def _cause(e: Exception) -> str:
    """A decoder's exception as one short line: its type when its message does not say much."""
    text = " ".join(str(e).split())[:200]
    kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
    return text if isinstance(e, (OSError, UnidentifiedImageError)) and text else f"{kind}: {text}"


def _from_array(a: np.ndarray, input_data_format: str | None = None) -> Image.Image:
    """A uint8 HW / HWC / CHW array as an RGB PIL image, through the same conversion as a decoded file."""
    if input_data_format not in (None, *CHANNEL_FORMATS):
        raise InputError(f"input_data_format={input_data_format!r:.40}: expected one of {CHANNEL_FORMATS}")
    if a.dtype != np.uint8:
        raise InputError(f"image array must be uint8 (H, W), (H, W, C) or (C, H, W), got dtype {a.dtype}")
    if a.ndim == 3 and 0 not in a.shape:
        first = a.shape[0] in (1, 3) if input_data_format is None else input_data_format == "channels_first"
        if first and a.shape[0] in (1, 3):
            a = a.transpose(1, 2, 0)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4))) or 0 in a.shape:
        raise InputError(
            f"image array must be (H, W), (H, W, C) with C in 1, 3, 4 or (C, H, W) with C in 1, 3, got shape {a.shape}"
        )
    return _to_rgb(
        Image.fromarray(np.ascontiguousarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)), "<array>"
    )


def _bad(key: str, want: str, got: Any) -> UnsupportedConfigError:
    return UnsupportedConfigError(f"preprocessor config: {key} must be {want}, got {got!r}")


def _positive_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= MAX_SIDE:
        raise _bad(key, f"a positive int up to {MAX_SIDE}", v)
    return v


def _size(key: str, v: Any, square: bool) -> dict[str, int]:
    """transformers' get_size_dict: an int is a square (crop) or a shortest edge (resize), [h, w] a height and width;
    the result is transformers' dict, {"shortest_edge": S} or {"height": H, "width": W}."""
    want = "an int, [height, width], {'height', 'width'}" + ("" if square else " or {'shortest_edge'}")
    if isinstance(v, int) and not isinstance(v, bool):
        n = _positive_int(key, v)
        return {"height": n, "width": n} if square else {"shortest_edge": n}
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return {"height": _positive_int(key, v[0]), "width": _positive_int(key, v[1])}
    if isinstance(v, dict) and set(v) == {"height", "width"}:
        return {"height": _positive_int(key, v["height"]), "width": _positive_int(key, v["width"])}
    if isinstance(v, dict) and set(v) == {"shortest_edge"} and not square:
        return {"shortest_edge": _positive_int(key, v["shortest_edge"])}
    raise _bad(key, want, v)


@dataclasses.dataclass(frozen=True)
class MobileViTImageProcessor:
    """MobileViTImageProcessorPil's preprocessing; defaults are that class's (note: BICUBIC, 224 -> 256)."""

    do_resize: bool = True
    # as transformers holds them: {"shortest_edge": S} or {"height", "width"}; an int, [h, w] or a dict is taken
    size: dict[str, int] = dataclasses.field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = int(Image.Resampling.BICUBIC)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_center_crop: bool = True
    crop_size: dict[str, int] = dataclasses.field(default_factory=lambda: {"height": 256, "width": 256})
    do_flip_channel_order: bool = True
    # transformers' flag for segmentation maps (labels), which the engine does not take: kept so that configs and
    # code that set it round-trip, and refused with the maps themselves
    do_reduce_labels: bool = False

    def __post_init__(self) -> None:
        # sizes in any form transformers reads are normalised here, so the constructor takes them too
        object.__setattr__(self, "size", _size("size", self.size, square=False))
        object.__setattr__(self, "crop_size", _size("crop_size", self.crop_size, square=True))
        for key in ("do_resize", "do_rescale", "do_center_crop", "do_flip_channel_order", "do_reduce_labels"):
            if not isinstance(getattr(self, key), bool):
                raise _bad(key, "true or false", getattr(self, key))
        if isinstance(self.resample, bool) or not isinstance(self.resample, int) or self.resample not in _RESAMPLE:
            raise _bad("resample", f"a PIL resample filter, an int in {_RESAMPLE}", self.resample)
        object.__setattr__(self, "resample", int(self.resample))  # an Image.Resampling member is its int
        r = self.rescale_factor
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= MAX_RESCALE:
            # pixels past 255 * 1000 overflow the network's float32 arithmetic (transformers answers NaN there)
            raise _bad("rescale_factor", f"a number in (0, {MAX_RESCALE}]", r)

    @classmethod
    def from_dict(cls, d: dict, **kwargs: Any) -> MobileViTImageProcessor:
        """From a preprocessor_config.json dict, legacy keys (int size, do_flip_channels) included; keywords override
        its settings, as in transformers (from_dict(d, size=42, crop_size=84))."""
        unknown = [k for k in kwargs if k not in {f.name for f in dataclasses.fields(cls)}]
        if unknown:
            raise TypeError(f"{cls.__name__}.from_dict() got an unexpected keyword argument {unknown[0]!r}")
        for key in ("image_processor_type", "feature_extractor_type"):  # which class transformers would build
            kind = d.get(key)
            if kind is not None and kind not in PROCESSOR_CLASSES:
                raise UnsupportedConfigError(
                    f"preprocessor config: {key} {kind!r:.60}: tinyvit-engine has MobileViT's processor only"
                )
        d = {**d, **kwargs}
        # null, as transformers reads it: a flag that is null is off; a value that is null is missing, an error
        # when its flag is on (and its default, unused, when it is off)
        for flag in ("do_resize", "do_rescale", "do_center_crop", "do_flip_channel_order", "do_reduce_labels"):
            if flag in d and d[flag] is None:
                d[flag] = False
        for flag, values in NEEDS.items():
            missing = [v for v in values if v in d and d[v] is None]
            if missing and d.get(flag, getattr(cls, flag, True)) is not False:
                raise UnsupportedConfigError(f"preprocessor config: {missing[0]} is null, but {flag} is on")
            for v in missing:
                del d[v]
        kw: dict[str, Any] = {
            k: d[k]
            for k in (
                "do_resize",
                "size",
                "resample",
                "do_rescale",
                "rescale_factor",
                "do_center_crop",
                "crop_size",
                "do_flip_channel_order",
                "do_reduce_labels",
            )
            if k in d
        }
        # the old feature-extractor name of the flip flag (transformers 5 ignores it; it is true on the Hub)
        if "do_flip_channel_order" not in d and "do_flip_channels" in d:
            kw["do_flip_channel_order"] = d["do_flip_channels"]
        # an int size is the shortest edge, unless the config asks for a square (transformers' default_to_square)
        if isinstance(d.get("size"), int) and d.get("default_to_square") is True:
            kw["size"] = _size("size", d["size"], square=True)
        return cls(**kw)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> MobileViTImageProcessor:
        """From a preprocessor_config.json file (transformers' method of the same name)."""
        from .formats import read_json_config

        return cls.from_dict(read_json_config(json_file))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **hub: Any) -> MobileViTImageProcessor:
        """From a checkpoint directory (its preprocessor_config.json), that json file itself, an engine weights file
        (the config stored in it), or a Hub id (through huggingface_hub's cache: `hub` takes revision, cache_dir,
        local_files_only and token)."""
        from .formats import preprocessor_config, resolve

        path = resolve(name_or_path, **hub)
        d = preprocessor_config(path)
        if d is None and path.is_dir():
            raise FileNotFoundError(f"{path}: no preprocessor_config.json in this checkpoint directory")
        if d is None:
            raise UnsupportedConfigError(f"{path}: this weights file carries no preprocessor config")
        try:
            return cls.from_dict(d)
        except UnsupportedConfigError as e:
            raise UnsupportedConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        """A preprocessor_config.json dict that both this class and transformers read back to the same processor."""
        return {**dataclasses.asdict(self), "image_processor_type": "MobileViTImageProcessor"}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        Path(json_file_path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike, **unknown: Any) -> list[str]:
        """Write preprocessor_config.json into save_directory (made if missing), as transformers does; returns the
        files written. (push_to_hub and other Hub keywords: the engine writes locally only.)"""
        if unknown:
            raise TypeError(f"save_pretrained() got an unexpected keyword argument {next(iter(unknown))!r}")
        folder = Path(save_directory)
        if folder.is_file():
            raise InputError(f"{folder}: save_pretrained needs a directory, and this is a file")
        folder.mkdir(parents=True, exist_ok=True)
        self.to_json_file(folder / "preprocessor_config.json")
        return [str(folder / "preprocessor_config.json")]

    def __call__(self, images: Any = None, return_tensors: str | None = None, **overrides: Any) -> Any:
        """One image or a list (PIL, path or uint8 array) -> pixel_values (B, 3, H, W) float32 (uint8 without
        do_rescale, as transformers).

        return_tensors="np" gives transformers' form, a mapping {"pixel_values": ...} (also inputs.pixel_values),
        for model(**inputs); without it, the array itself. Keywords naming a setting (size, do_center_crop, ...)
        override it for this call, as in transformers; any other keyword is an error.

        A PIL image is taken as given, as transformers' processor takes it (no EXIF rotation), only converted to
        RGB; paths and arrays go through load_image."""
        if return_tensors not in (None, "np"):
            raise InputError(
                f"return_tensors={return_tensors!r}: tinyvit-engine runs without torch or tensorflow and returns "
                "numpy arrays; pass return_tensors='np'"
            )
        input_data_format = overrides.pop("input_data_format", None)
        settings = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in settings:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {key!r}")
        if overrides:
            return dataclasses.replace(self, **overrides)(images, return_tensors, input_data_format=input_data_format)
        if images is None:
            raise InputError("no images given")
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise InputError("no images given")
        out = [
            self.process_one(
                _to_rgb(im, "<PIL image>", exif=False)
                if isinstance(im, Image.Image)
                else load_image(im, input_data_format)
            )
            for im in images
        ]
        if len({x.shape for x in out}) > 1:
            raise InputError(
                f"images differ in size after preprocessing ({sorted({x.shape for x in out})}); "
                "enable do_center_crop or pass them one at a time"
            )
        # float32; without do_rescale, the uint8 pixels as transformers gives them (which its model and the engine's
        # refuse: the network takes [0, 1])
        dtype = np.float32 if self.do_rescale else np.uint8
        pixel_values = np.ascontiguousarray(np.stack(out), dtype=dtype)  # the flip left negative strides
        return pixel_values if return_tensors is None else BatchFeature(pixel_values=pixel_values)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Any = None, return_segmentation_scores: bool = False
    ) -> list:
        """One (H, W) label map per image from a segmentation model's outputs (or its logits), resized to each
        target (height, width) first when given: transformers' method of the same name (return_segmentation_scores:
        the resized logits too, each image's as a dict with `segmentation` and `segmentation_scores`)."""
        logits = outputs if isinstance(outputs, np.ndarray) else getattr(outputs, "logits", outputs)
        return post_process_semantic_segmentation(logits, target_sizes, return_segmentation_scores)

    def process_one(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> (3, H, W), in transformers' order: resize, rescale, center crop, flip."""
        height, width = image.height, image.width
        if self.do_resize:
            height, width = self.resized_size(image.height, image.width)
            # a thin strip resized to the short side would be huge (1 x 2000 -> 288 x 576000): refuse it as a bomb
            if Image.MAX_IMAGE_PIXELS and height * width > Image.MAX_IMAGE_PIXELS:
                raise InputError(
                    f"a {image.width}x{image.height} image would be resized to {width}x{height}, more "
                    f"than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS); crop it first"
                )
        fast = self.do_rescale and (not self.do_resize or self.resample in preprocess.SUPPORT)
        if fast:
            start_compiling()  # a first run on this CPU: the kernels compile on a second core meanwhile
            # ... and that helper compiles this op first: until it has, Pillow's path (the same values) costs less
            # than compiling it here too
            fast = not compiling() or preprocess.compiled()
        order = pass_order() if fast else None
        if order is not None:  # the same values, in one pass over the pixels the crop keeps (kernels/preprocess.py)
            return preprocess.preprocess(
                np.asarray(image),
                (height, width),
                self.resample,
                self.crop_hw if self.do_center_crop else (height, width),
                self.rescale_factor,
                self.do_flip_channel_order,
                order(image.height, image.width, height, width),
            )
        if self.do_resize:
            image = image.resize((width, height), resample=self.resample)
        x = np.asarray(image).transpose(2, 0, 1)  # (3, H, W) uint8
        if self.do_rescale:
            # upcast first, scale in float64, round once to float32
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_center_crop:
            x = _center_crop(x, *self.crop_hw)
        return x[::-1] if self.do_flip_channel_order else x

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' get_resize_output_image_size: short side -> S, long side truncated to int(S * long / short)."""
        size = _size("size", self.size, square=False)  # checked again: code may have edited the dict in place
        if "height" in size:
            return size["height"], size["width"]
        short, long = (width, height) if width <= height else (height, width)
        new_short = size["shortest_edge"]
        new_long = int(new_short * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    @property
    def crop_hw(self) -> tuple[int, int]:
        """crop_size as (height, width)."""
        crop = _size("crop_size", self.crop_size, square=True)  # checked again: the dict may have been edited
        return crop["height"], crop["width"]


def _set_setting(self: MobileViTImageProcessor, name: str, value: Any) -> None:
    """A setting changed after construction, as transformers code does (processor.do_center_crop = False,
    processor.size = {"shortest_edge": 128}): checked and normalised as the constructor does; a name that is not
    a setting is an error."""
    if name not in {f.name for f in dataclasses.fields(self)}:
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")
    object.__setattr__(self, name, getattr(dataclasses.replace(self, **{name: value}), name))


# a frozen dataclass (its fields checked once), but settable through the same checks
MobileViTImageProcessor.__setattr__ = _set_setting


class BatchFeature(dict):
    """What a processor returns with return_tensors="np": a dict that also reads its keys as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


MobileViTFeatureExtractor = MobileViTImageProcessor  # transformers' old name

# Pillow resizes in two passes, each rounded to uint8, so their order shows in the result. Pillow 13 runs the vertical
# pass first when the height shrinks by more than twice as many pixels as the width; Pillow 12 and before always ran
# the horizontal pass first.
PASS_ORDERS = {
    "Pillow >= 13": lambda height, width, new_height, new_width: (
        height - new_height > 0 and height - new_height > (width - new_width) * 2
    ),
    "Pillow <= 12": lambda height, width, new_height, new_width: False,
}


@functools.cache
def pass_order():
    """The order of passes of the Pillow installed here, as a function (old size, new size) -> vertical first,
    found by resizing a few small images both ways and comparing with Pillow; None if neither order matches (a
    future Pillow): then the processor leaves the resizing to Pillow."""
    rng = np.random.default_rng(0)
    cases = [(30, 40, 20, 60), (30, 40, 60, 20), (40, 30, 10, 29), (24, 20, 7, 18), (30, 40, 15, 20)]
    images = [(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), nh, nw) for h, w, nh, nw in cases]
    wanted = [np.asarray(Image.fromarray(a).resize((nw, nh), Image.Resampling.BICUBIC)) for a, nh, nw in images]
    for order in PASS_ORDERS.values():
        got = [
            preprocess.preprocess(
                a, (nh, nw), int(Image.Resampling.BICUBIC), (nh, nw), 1, False, order(*a.shape[:2], nh, nw)
            )
            for a, nh, nw in images
        ]
        if all(np.array_equal(g.transpose(1, 2, 0), w) for g, w in zip(got, wanted, strict=True)):
            return order
    return None


def _center_crop(x: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """transformers' center_crop on (C, H, W): floor offsets; a too-small image is first zero-padded (ceil top/left)."""
    _, height, width = x.shape
    top, left = (height - crop_height) // 2, (width - crop_width) // 2
    if top >= 0 and left >= 0:
        return x[:, top : top + crop_height, left : left + crop_width]
    # paste the image into a zero canvas at least as large as the crop, then crop that
    new_height, new_width = max(crop_height, height), max(crop_width, width)
    pad_top, pad_left = -(-(new_height - height) // 2), -(-(new_width - width) // 2)
    canvas = np.zeros((x.shape[0], new_height, new_width), dtype=x.dtype)
    canvas[:, pad_top : pad_top + height, pad_left : pad_left + width] = x
    top, left = top + pad_top, left + pad_left
    return canvas[:, top : top + crop_height, left : left + crop_width]
