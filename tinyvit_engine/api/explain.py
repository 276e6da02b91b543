"""What the global layers look at: one heatmap per transformer layer, from the model's attention maps.

MobileViT: the attention of one query patch (the one under a point of the image, its centre by default) over all
patches, averaged over heads and over the P pixel offsets of a patch. MobileViTV2's separable attention has no
query per patch: its map is the context scores (how much each patch weighs in the one context vector), averaged
over the offsets. Heatmaps are drawn over the model's view of the image (after resize and center crop).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..processor import load_image


def heatmaps(model, image: Any, point: tuple[float, float] | None = None) -> tuple[np.ndarray, list, tuple | None]:
    """(the model's view of the image as (H, W, 3) uint8 RGB, one (h, w) map per transformer layer scaled to [0, 1],
    the query point in the view's pixels or None for V2)."""
    processor = model.processor
    photo = load_image(image)
    pixel_values = processor(photo)
    view = pixel_values[0][::-1] if processor.do_flip_channel_order else pixel_values[0]  # back to RGB
    view = np.clip(view.transpose(1, 2, 0) / (processor.rescale_factor * 255 if processor.do_rescale else 1), 0, 1)
    H, W = view.shape[:2]
    query = _in_view(processor, photo, point) if model.config.model_type == "mobilevit" else None
    maps = []
    for attention in model(pixel_values, output_attentions=True, return_dict=True).attentions:
        N = attention.shape[-1]
        nh, nw = _grid(N, H, W)
        if attention.ndim == 5:  # (1, P, heads, N, N): the query patch's row
            row = int(min(query[1] * nh / H, nh - 1)) * nw + int(min(query[0] * nw / W, nw - 1))
            m = attention[0, :, :, row, :].mean(axis=(0, 1))
        else:  # (1, P, N) context scores
            m = attention[0].mean(axis=0)
        m = m.reshape(nh, nw)
        spread = float(m.max() - m.min())
        maps.append((m - m.min()) / spread if spread > 1e-12 else np.ones_like(m))  # one patch: all of it
    return (view * 255).round().astype(np.uint8), maps, query


def overlay(view: np.ndarray, heat: np.ndarray, query: tuple | None = None) -> Image.Image:
    """The heatmap (nearest patch, upsampled to the view) in a black-red-yellow-white scale over the view."""
    H, W = view.shape[:2]
    big = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize((W, H), Image.Resampling.BILINEAR)) / 255
    hot = np.stack([np.clip(3 * big, 0, 1), np.clip(3 * big - 1, 0, 1), np.clip(3 * big - 2, 0, 1)], axis=-1)
    out = (0.45 * view + 0.55 * 255 * hot).round().astype(np.uint8)
    if query is not None:  # a small cyan cross at the query point
        x, y = int(query[0]), int(query[1])
        out[max(0, y - 4) : y + 5, min(max(x, 0), W - 1)] = (0, 255, 255)
        out[min(max(y, 0), H - 1), max(0, x - 4) : x + 5] = (0, 255, 255)
    return Image.fromarray(out)


def _in_view(processor, photo: Image.Image, point: tuple[float, float] | None) -> tuple[float, float]:
    """A point of the photo (x, y pixels) in the model's view: through the resize, then the center crop."""
    w, h = photo.size
    x, y = (w / 2, h / 2) if point is None else point
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"point {x:g},{y:g} is outside the {w}x{h} image")
    if processor.do_resize:
        new_h, new_w = processor.resized_size(h, w)
        x, y, w, h = x * new_w / w, y * new_h / h, new_w, new_h
    if processor.do_center_crop:
        ch, cw = processor.crop_hw
        x, y = x - (w - cw) // 2, y - (h - ch) // 2
        if not (0 <= x < cw and 0 <= y < ch):
            raise InputError(f"point {point[0]:g},{point[1]:g} falls outside the model's {cw}x{ch} center crop")
    return x, y


def _grid(n: int, height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) of n patches over a height x width view: the factor pair nearest its aspect ratio."""
    pairs = [(r, n // r) for r in range(1, n + 1) if n % r == 0]
    return min(pairs, key=lambda rc: abs(math.log(rc[0] / rc[1]) - math.log(height / width)))
