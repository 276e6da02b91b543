"""Model outputs to answers, as transformers' image processors post-process them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import kernels
from .errors import InputError


def post_process_semantic_segmentation(
    logits: np.ndarray, target_sizes: Sequence[tuple[int, int]] | None = None
) -> list[np.ndarray]:
    """One (H, W) int64 label map per image, like MobileViTImageProcessor.post_process_semantic_segmentation.

    logits (B, K, h, w) are upsampled bilinearly (align_corners=False) to each target (height, width), then the
    argmax over classes is taken (ties go to the lowest class index); with no target sizes, at logits resolution.
    """
    if not isinstance(logits, np.ndarray) or logits.ndim != 4:
        raise InputError(
            f"logits: expected a (batch, classes, height, width) array, got {getattr(logits, 'shape', logits)!r:.60}"
        )
    if target_sizes is None:
        return [m for m in logits.argmax(axis=1)]
    if len(target_sizes) != len(logits):
        raise InputError(f"target_sizes: {len(target_sizes)} sizes for a batch of {len(logits)} logits maps")
    maps = []
    for one, (h, w) in zip(logits, target_sizes, strict=True):
        x = np.ascontiguousarray(one.transpose(1, 2, 0)[None], dtype=np.float32)  # (1, h, w, K)
        maps.append(kernels.FAST.resize_bilinear(x, int(h), int(w))[0].argmax(axis=-1))
    return maps
