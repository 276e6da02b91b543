"""The user-facing model: load a weights file or checkpoint directory, call it on pixel_values, get numpy outputs
in transformers' layout."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .config import parse_config
from .errors import InputError, UnsupportedConfigError, WeightsFormatError
from .executor import Executor
from .formats import read_model, resolve
from .kernels.attention import attention_probs_reference
from .kernels.linear_attention import context_scores_reference
from .models import build, check_params
from .postprocess import post_process_semantic_segmentation, segments, top_labels
from .processor import MobileViTImageProcessor, load_image


@dataclass
class ModelOutput:
    """What transformers' model outputs carry, as numpy arrays in transformers' (B, C, H, W) layout.

    Like transformers' ModelOutput, it reads as attributes and as an ordered mapping of the fields that are set:
    out.logits, out["logits"], out[0] (the first field set), list(out) (their names), out.to_tuple()."""

    logits: np.ndarray | None = None
    last_hidden_state: np.ndarray | None = None
    pooler_output: np.ndarray | None = None
    hidden_states: tuple[np.ndarray, ...] | None = None
    attentions: tuple[np.ndarray, ...] | None = None

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        return len(self.keys())


class Model:
    def __init__(
        self,
        config: dict[str, Any],
        tensors: dict[str, np.ndarray],
        preprocessor: dict[str, Any] | None,
        source: str = "weights",
        reference: bool = False,
    ) -> None:
        self.config = parse_config(config)
        self.preprocessor_config = preprocessor
        self.path: Path | None = None  # the file or directory it was loaded from (set by `load`)
        self.graph = build(self.config)
        check_params(self.graph, tensors, source)
        self.executor = Executor(self.graph, tensors, reference=reference)

    def __call__(
        self,
        pixel_values: np.ndarray | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        timings: dict[str, float] | None = None,
        **unknown: Any,
    ) -> ModelOutput | tuple:
        """Run the model on pixel_values (B, C, H, W), as the transformers model's forward does.

        output_attentions adds one array per transformer layer: MobileViT (B, P, heads, N, N), the attention
        probabilities of each of the P pixel offsets of a patch over the N patches; MobileViTV2 (B, P, N), the
        separable attention's context scores. return_dict=False gives out.to_tuple(), as transformers does.
        Any other keyword is an error: nothing is ignored silently."""
        refuse_unknown(type(self).__name__, unknown)
        cfg = self.config  # a keyword left out (None) takes the config's value, as transformers does
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if pixel_values is None:
            raise InputError("pixel_values: missing (pass the processor's output: model(**inputs))")
        x = _channels_last(pixel_values, self.config.num_channels)
        outputs = self.graph.outputs
        wanted = {name for key, name in outputs.items() if key != "hidden_states"}
        if output_hidden_states:
            wanted |= set(outputs["hidden_states"])
        attention = [n for n in self.executor.graph.nodes if n.op in ("attention", "linear_attention")]
        if output_attentions:
            wanted |= {n.inputs[0] for n in attention}
        env = self.executor.run(x, wanted, timings)
        out = ModelOutput(
            **{key: _transformers_layout(env[name]) for key, name in outputs.items() if key != "hidden_states"}
        )
        if output_hidden_states:
            out.hidden_states = tuple(_transformers_layout(env[n]) for n in outputs["hidden_states"])
        if output_attentions:
            out.attentions = tuple(_attention_map(n, env[n.inputs[0]]) for n in attention)
        return out if return_dict else out.to_tuple()

    @cached_property
    def processor(self) -> MobileViTImageProcessor:
        """The image processor the checkpoint's preprocessor_config.json describes."""
        if self.preprocessor_config is None:
            raise WeightsFormatError(
                "this model carries no preprocessor config; build a MobileViTImageProcessor "
                "yourself and pass pixel_values to the model"
            )
        return MobileViTImageProcessor.from_dict(self.preprocessor_config)

    def classify(
        self,
        images: Any,
        top_k: int = 5,
        processor: MobileViTImageProcessor | None = None,
        function_to_apply: str | None = None,
    ) -> list:
        """Per image, the top_k [{"label", "score"}] by score, like transformers' image-classification pipeline; a
        single image gives its list directly. The images go through `processor`, by default the model's own;
        function_to_apply ("softmax", "sigmoid", "none") as the pipeline's, by default from the config."""
        if self.config.task != "image-classification":
            raise UnsupportedConfigError(
                f"classify needs an image-classification model, this one is {self.config.task}"
            )
        batch, single = _as_list(images)
        pixel_values = (processor or self.processor)([load_image(im) for im in batch])
        results = top_labels(self.config, self(pixel_values, return_dict=True).logits, top_k, function_to_apply)
        return results[0] if single else results

    def segment(self, images: Any, processor: MobileViTImageProcessor | None = None) -> Any:
        """Per image, like transformers' image-segmentation pipeline: {"label_map": (H, W) class indices at the
        image's own size, "segments": [{"score": None, "label", "mask": PIL "L" image, 255 inside}] for each label
        present}; a single image gives its dict directly."""
        if self.config.task != "semantic-segmentation":
            raise UnsupportedConfigError(f"segment needs a semantic-segmentation model, this one is {self.config.task}")
        batch, single = _as_list(images)
        pil = [load_image(im) for im in batch]
        logits = self((processor or self.processor)(pil), return_dict=True).logits
        maps = post_process_semantic_segmentation(logits, [(im.height, im.width) for im in pil])
        results = [{"label_map": m, "segments": segments(self.config, m)} for m in maps]
        return results[0] if single else results


def _as_list(images: Any) -> tuple[list, bool]:
    """(list of images, whether a single image was given)."""
    return (list(images), False) if isinstance(images, (list, tuple)) else ([images], True)


def refuse_unknown(caller: str, unknown: dict) -> None:
    """A keyword a model call does not know is an error that names it: nothing is ignored silently."""
    if unknown:
        name = next(iter(unknown))
        why = " (the engine runs inference only: no loss)" if name == "labels" else ""
        raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}{why}")


def load(path: str | os.PathLike, reference: bool = False) -> Model:
    """A model from an engine weights file, a transformers checkpoint directory, or a Hub id (through
    huggingface_hub's cache; see formats/hub.py).

    reference=True runs every op on the plain NumPy reference kernels (slow; for reading and bisecting).
    """
    path = resolve(path)
    config, preprocessor, tensors = read_model(path)
    model = Model(config, tensors, preprocessor, source=str(path), reference=reference)
    model.path = path
    return model


def _channels_last(pixel_values: Any, channels: int) -> np.ndarray:
    """Check pixel_values (B, C, H, W) and return it as a new C-contiguous float32 (B, H, W, C) array.

    Any floating dtype is cast to float32; integer, bool and complex arrays are refused (the processor makes float32
    pixel_values in [0, 1]). Non-contiguous and read-only arrays are copied. H and W may be any size >= 1. NaN and
    inf are refused: no image gives them, and the kernels would spread them over the whole output.
    """
    x = pixel_values
    if not isinstance(x, np.ndarray):
        raise InputError(
            f"pixel_values: expected a numpy array (B, C, H, W), got {type(x).__name__}; pass "
            "np.asarray(...) of it, or make pixel_values with model.processor(images)"
        )
    if x.ndim != 4:
        raise InputError(f"pixel_values: expected 4 dimensions (batch, channels, height, width), got shape {x.shape}")
    if x.shape[1] != channels:
        raise InputError(f"pixel_values: expected {channels} channels in axis 1, got shape {x.shape}")
    if 0 in x.shape:
        raise InputError(f"pixel_values: empty array of shape {x.shape} (an empty batch or a zero height or width)")
    if x.dtype.kind != "f":
        raise InputError(
            f"pixel_values: expected a floating-point array, got {x.dtype}; model.processor(images) "
            "makes float32 pixel_values in [0, 1]"
            + (
                " (a processor with do_rescale off gives uint8 pixels, which transformers' model refuses too)"
                if x.dtype == np.uint8
                else ""
            )
        )
    # always a fresh array: the user's may be read-only, strided or shared
    with np.errstate(over="ignore"):
        out = np.array(x.transpose(0, 2, 3, 1), dtype=np.float32, order="C")
    if not np.isfinite(out).all():
        raise InputError(
            f"pixel_values: {out.size - int(np.isfinite(out).sum())} value(s) are NaN or infinite (or overflow float32)"
        )
    return out


def _attention_map(node, qkv: np.ndarray) -> np.ndarray:
    """A transformer layer's attention, from the (B, P, N, features) qkv tokens its attention node read."""
    B, P, N, _ = qkv.shape
    tokens = qkv.reshape(B * P, N, -1)
    if node.op == "attention":
        return attention_probs_reference(tokens, node.attrs.heads).reshape(B, P, node.attrs.heads, N, N)
    return context_scores_reference(tokens).reshape(B, P, N)


def _transformers_layout(t: np.ndarray) -> np.ndarray:
    """Channels-last maps back to (B, C, H, W); vectors stay as they are."""
    return np.ascontiguousarray(t.transpose(0, 3, 1, 2)) if t.ndim == 4 else t
