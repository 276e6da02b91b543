"""What a user touches: images in, answers out, as transformers' image-classification and image-segmentation
pipelines give them (same scores, same order, same masks)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .errors import UnsupportedConfigError
from .postprocess import post_process_semantic_segmentation
from .processor import load_image


def _as_list(images: Any) -> tuple[list, bool]:
    """(list of images, whether a single image was given)."""
    return (list(images), False) if isinstance(images, (list, tuple)) else ([images], True)


def _scores(model, logits: np.ndarray) -> np.ndarray:
    """Softmax over the labels; sigmoid for multi-label or single-label models; raw logits for regression."""
    cfg = model.config
    logits = logits.astype(np.float32)
    if cfg.problem_type == "regression":
        return logits
    if cfg.problem_type == "multi_label_classification" or cfg.num_labels == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classify(model, images: Any, top_k: int = 5, processor=None) -> list:
    """Per image, the top_k [{"label", "score"}] by score; a single image gives its list directly. The images go
    through `processor`, by default the model's own."""
    if model.config.task != "image-classification":
        raise UnsupportedConfigError(f"classify needs an image-classification model, this one is {model.config.task}")
    batch, single = _as_list(images)
    pixel_values = (processor or model.processor)([load_image(im) for im in batch])
    results = top_labels(model, model(pixel_values).logits, top_k)
    return results[0] if single else results


def top_labels(model, logits: np.ndarray, top_k: int) -> list[list[dict]]:
    """Per row of logits, the top_k [{"label", "score"}] by score, as the image-classification pipeline gives."""
    results = []
    for row in _scores(model, logits):
        # highest first, ties in label order (a stable sort of the negated scores): 0.35 -> 0.07 ms per image
        order = np.argsort(-row, kind="stable")[: max(0, min(top_k, len(row)))]
        results.append([{"label": model.config.id2label[int(i)], "score": float(row[i])} for i in order])
    return results


def segment(model, images: Any, processor=None) -> Any:
    """Per image: {"label_map": (H, W) class indices at the image's own size, "segments": [{"score": None,
    "label", "mask": PIL "L" image, 255 inside}] for each label present}, as the image-segmentation pipeline."""
    if model.config.task != "semantic-segmentation":
        raise UnsupportedConfigError(f"segment needs a semantic-segmentation model, this one is {model.config.task}")
    batch, single = _as_list(images)
    pil = [load_image(im) for im in batch]
    logits = model((processor or model.processor)(pil)).logits
    maps = post_process_semantic_segmentation(logits, [(im.height, im.width) for im in pil])
    results = []
    for label_map in maps:
        segments = [
            {
                "score": None,
                "label": model.config.id2label[int(k)],
                "mask": Image.fromarray(((label_map == k) * 255).astype(np.uint8), mode="L"),
            }
            for k in np.unique(label_map)
        ]
        results.append({"label_map": label_map, "segments": segments})
    return results[0] if single else results
