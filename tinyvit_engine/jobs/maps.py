"""Segmentation maps as pictures: the label map in Pascal VOC's colours, and the classes over the photo."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from ..processor import load_image


@functools.cache
def palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: class k's RGB from the bits of k, so neighbouring classes differ (made once per
    process, read-only: every label map and overlay a server sends uses it)."""
    colors = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[k] = (r, g, b)
    colors.flags.writeable = False
    return colors


def label_image(label_map: np.ndarray) -> Image.Image:
    """The label map as a palette PNG: pixel values are class indices, shown in VOC's colours."""
    labels = Image.fromarray(label_map.astype(np.uint8), mode="P")
    labels.putpalette(palette().tobytes())
    return labels


def overlay(photo: Image.Image, label_map: np.ndarray) -> Image.Image:
    """The classes in VOC's colours over the photo (background, class 0, left as it is)."""
    pixels = np.asarray(photo, np.float32)
    mixed = np.where(label_map[..., None] > 0, 0.4 * pixels + 0.6 * palette()[label_map], pixels)
    return Image.fromarray(mixed.round().astype(np.uint8))


def save_maps(outdir: Path, path: Path, label_map: np.ndarray) -> None:
    """<stem>.labels.png (class indices, VOC colours) and <stem>.overlay.png (the classes over the photo)."""
    label_image(label_map).save(outdir / f"{path.stem}.labels.png")
    overlay(load_image(str(path)), label_map).save(outdir / f"{path.stem}.overlay.png")
