"""transformers' names for the engine, so that working transformers code runs without torch by changing its import:

    from tinyvit_engine import AutoImageProcessor, MobileViTForImageClassification   # was: from transformers ...

Every class loads with `from_pretrained` (a checkpoint directory, an engine weights file, or a Hub id through
huggingface_hub's cache) and checks that the checkpoint is one it can run: the family (MobileViT or MobileViTV2) and
the head (a classifier, a DeepLabV3 head, or none). A model call returns exactly the fields transformers' class
returns. `pipeline` gives transformers' image-classification and image-segmentation results.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..config import RUNTIME
from ..errors import UnsupportedConfigError
from ..formats import resolve
from ..model import Model, ModelOutput, load, refuse_unknown
from ..processor import MobileViTImageProcessor

HUB_KEYWORDS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "proxies")
# from_pretrained keywords of transformers that cannot change what the engine computes (the same maths either way)
HARMLESS = ("low_cpu_mem_usage", "trust_remote_code", "use_safetensors", "attn_implementation")
# those that would, when given a value the engine cannot honour: the reason it refuses
LIMITS = {
    "dtype": (
        ("auto", "float32", "torch.float32"),
        "the engine computes in float32 (for smaller weights files, convert with --dtype float16 or int8)",
    ),
    "torch_dtype": (
        ("auto", "float32", "torch.float32"),
        "the engine computes in float32 (for smaller weights files, convert with --dtype float16 or int8)",
    ),
    "device_map": (("cpu", "auto"), "the engine runs on the CPU"),
    "ignore_mismatched_sizes": (
        (False,),
        "a head re-initialised to fit would give random answers; the engine runs checkpoints as they were trained",
    ),
}
FIELDS = {  # what each kind of transformers model returns, in its order
    "base": ("last_hidden_state", "pooler_output", "hidden_states", "attentions"),
    "classification": ("logits", "hidden_states", "attentions"),
    "segmentation": ("logits", "hidden_states", "attentions"),
}
TASKS = {"classification": "image-classification", "segmentation": "semantic-segmentation"}


class PreTrainedModel:
    family: str | None = None  # config.model_type this class runs; None: either (the Auto classes)
    kind = "base"

    def __init__(self, model: Model) -> None:
        self.model = model
        self.config = model.config

    main_input_name = "pixel_values"

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, reference: bool = False, subfolder: str = "", **kwargs: Any
    ):
        """The model at a checkpoint directory, an engine weights file, or a Hub id ("apple/mobilevit-small").

        Keywords, as transformers takes them: huggingface_hub's (revision, cache_dir, local_files_only, token,
        force_download, proxies) and subfolder; the config's runtime fields (output_hidden_states,
        output_attentions, return_dict, problem_type) and, when they agree with the checkpoint, num_labels,
        id2label and label2id; dtype / torch_dtype float32 or "auto", device_map "cpu",
        ignore_mismatched_sizes=False; low_cpu_mem_usage, trust_remote_code, use_safetensors and
        attn_implementation, which change nothing here. reference=True runs the plain NumPy kernels. Any other
        keyword, or a value the engine cannot honour, is an error that says why."""
        hub = {k: kwargs.pop(k) for k in HUB_KEYWORDS if k in kwargs}
        hub.pop("force_download", None), hub.pop("proxies", None)  # a fresh download gives the same bytes
        runtime = {k: kwargs.pop(k) for k in RUNTIME if k in kwargs}
        labels = {k: kwargs.pop(k) for k in ("num_labels", "id2label", "label2id") if k in kwargs}
        for key, (allowed, why) in LIMITS.items():
            value = kwargs.pop(key, None)
            if value is not None and not any(value is a or str(value) == str(a) for a in allowed):
                raise UnsupportedConfigError(f"{cls.__name__}.from_pretrained({key}={value!r:.40}): {why}")
        unknown = [k for k in kwargs if k not in HARMLESS]
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained() got an unexpected keyword argument {unknown[0]!r}")
        path = resolve(name_or_path, **hub)
        model = load(os.path.join(path, subfolder) if subfolder else path, reference=reference)
        cls._check(model, str(name_or_path))
        cls._agree(model.config, labels)
        for key, value in runtime.items():
            setattr(model.config, key, value)
        return cls(model)

    @classmethod
    def _agree(cls, cfg, labels: dict[str, Any]) -> None:
        """num_labels, id2label, label2id given to from_pretrained: transformers would resize the head to fit them
        (random weights); the engine takes them only when they say what the checkpoint says."""
        mine = {"num_labels": cfg.num_labels, "id2label": cfg.id2label, "label2id": cfg.label2id}
        for key, value in labels.items():
            if isinstance(value, dict):
                value = {
                    (int(k) if key == "id2label" else k): (v if key == "id2label" else int(v)) for k, v in value.items()
                }
            if value != mine[key]:
                raise UnsupportedConfigError(
                    f"{cls.__name__}.from_pretrained({key}=...): the checkpoint has {cfg.num_labels} labels "
                    f"({mine[key]!r:.60}); a head resized to fit would give random answers"
                )

    @classmethod
    def _check(cls, model: Model, name: str) -> None:
        cfg = model.config
        if cls.family is not None and cfg.model_type != cls.family:
            raise UnsupportedConfigError(
                f"{name} holds {cfg.architecture} (model_type {cfg.model_type}); {cls.__name__} runs "
                f"{cls.family} checkpoints"
            )
        if cls.kind == "base":
            if cfg.task == "semantic-segmentation":  # its backbone has no final 1x1 expansion: transformers would
                raise UnsupportedConfigError(  # make one up with random weights
                    f"{name} is a DeepLabV3 checkpoint, whose backbone lacks the base model's last expansion "
                    f"layer; load it with {cls._name('ForSemanticSegmentation', cfg)}"
                )
        elif cfg.task != TASKS[cls.kind]:
            raise UnsupportedConfigError(
                f"{name} holds {cfg.architecture} ({cfg.task}); {cls.__name__} needs a {TASKS[cls.kind]} "
                "checkpoint (a head with random weights would give random answers)"
            )

    @staticmethod
    def _name(suffix: str, cfg) -> str:
        return ("MobileViTV2" if cfg.model_type == "mobilevitv2" else "MobileViT") + suffix

    def __call__(
        self,
        pixel_values: np.ndarray | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **unknown: Any,
    ) -> ModelOutput | tuple:
        """transformers' forward: ModelOutput with this class's fields (return_dict=False: their tuple)."""
        refuse_unknown(type(self).__name__, unknown)
        full = self.model(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        out = ModelOutput(**{k: getattr(full, k) for k in FIELDS[self.kind]})
        return out if (self.config.return_dict if return_dict is None else return_dict) else out.to_tuple()

    forward = __call__

    def eval(self):
        """A no-op, for code written for torch modules (the engine only runs inference)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.model_type}, {self.config.architecture})"


class MobileViTModel(PreTrainedModel):
    family = "mobilevit"


class MobileViTForImageClassification(PreTrainedModel):
    family, kind = "mobilevit", "classification"


class MobileViTForSemanticSegmentation(PreTrainedModel):
    family, kind = "mobilevit", "segmentation"


class MobileViTV2Model(PreTrainedModel):
    family = "mobilevitv2"


class MobileViTV2ForImageClassification(PreTrainedModel):
    family, kind = "mobilevitv2", "classification"


class MobileViTV2ForSemanticSegmentation(PreTrainedModel):
    family, kind = "mobilevitv2", "segmentation"


class AutoModel(PreTrainedModel):
    pass


class AutoModelForImageClassification(PreTrainedModel):
    kind = "classification"


class AutoModelForSemanticSegmentation(PreTrainedModel):
    kind = "segmentation"


class AutoImageProcessor:
    """transformers' AutoImageProcessor, for the one processor MobileViT checkpoints use."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> MobileViTImageProcessor:
        return MobileViTImageProcessor.from_pretrained(name_or_path, **kwargs)


class Pipeline:
    """A callable like transformers' image-classification or image-segmentation pipeline."""

    KEYWORDS = {  # what a call takes, by task; pipeline(...) takes them too, as defaults for every call
        "image-classification": ("top_k", "function_to_apply", "batch_size", "timeout"),
        "image-segmentation": (
            "subtask", "threshold", "mask_threshold", "overlap_mask_area_threshold", "batch_size", "timeout",
        ),
    }  # fmt: skip

    def __init__(
        self, task: str, model: PreTrainedModel, image_processor: MobileViTImageProcessor, **defaults: Any
    ) -> None:
        self.task, self.model, self.image_processor, self.defaults = task, model, image_processor, defaults

    def __call__(self, images: Any = None, **kwargs: Any) -> list:
        """transformers' keywords: classification top_k, function_to_apply; segmentation subtask, and threshold,
        mask_threshold, overlap_mask_area_threshold (which, as in transformers, only instance and panoptic models
        use); both batch_size (images per model call) and timeout (for URLs, which the engine does not fetch)."""
        if images is None:
            images = kwargs.pop("images", None)
        if images is None:
            raise TypeError(f"the {self.task} pipeline needs images")
        kwargs = {**self.defaults, **kwargs}
        engine = self.model.model
        kwargs.pop("timeout", None)
        batch_size = kwargs.pop("batch_size", None)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size={batch_size!r:.40}: expected a positive integer")
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        step = batch_size or max(1, len(images))
        batches = [images[i : i + step] for i in range(0, len(images), step)]
        if self.task == "image-classification":
            top_k = kwargs.pop("top_k", 5)
            function_to_apply = kwargs.pop("function_to_apply", None)
            self._no_more(kwargs)
            results = [r for b in batches for r in engine.classify(b, top_k, self.image_processor, function_to_apply)]
            return results[0] if single else results
        subtask = kwargs.pop("subtask", None)
        if subtask not in (None, "semantic"):
            raise UnsupportedConfigError(f"subtask={subtask!r}: these are semantic segmentation models")
        for key in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            value = kwargs.pop(key, 0.5)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key}={value!r:.40}: expected a number")
        self._no_more(kwargs)
        results = [r["segments"] for b in batches for r in engine.segment(b, self.image_processor)]
        return results[0] if single else results

    def _no_more(self, kwargs: dict) -> None:
        if kwargs:
            raise TypeError(f"the {self.task} pipeline got an unexpected keyword argument {next(iter(kwargs))!r}")


def pipeline(
    task: str,
    model: str | os.PathLike | PreTrainedModel | Model,
    image_processor: MobileViTImageProcessor | str | os.PathLike | None = None,
    **kwargs: Any,
) -> Pipeline:
    """transformers' pipeline() for "image-classification" and "image-segmentation" (semantic): model is a Hub
    id, a checkpoint directory, an engine weights file, or a loaded model; the image processor is the checkpoint's
    unless given. Keywords: the calls' own (top_k, function_to_apply, subtask, thresholds, batch_size, timeout),
    which become every call's defaults; model_kwargs (from_pretrained's keywords), and huggingface_hub's
    revision, cache_dir, local_files_only and token; device "cpu" or -1."""
    classes = {
        "image-classification": AutoModelForImageClassification,
        "image-segmentation": AutoModelForSemanticSegmentation,
    }
    if task not in classes:
        raise UnsupportedConfigError(f"pipeline task {task!r}: tinyvit-engine has {sorted(classes)}")
    defaults = {k: kwargs.pop(k) for k in Pipeline.KEYWORDS.get(task, ()) if k in kwargs}
    device = kwargs.pop("device", None)
    if device not in (None, "cpu", -1):
        raise UnsupportedConfigError(f"pipeline(device={device!r:.40}): the engine runs on the CPU")
    kwargs.update(kwargs.pop("model_kwargs", None) or {})
    if isinstance(model, Model):
        classes[task]._check(model, "the model")
        model = classes[task](model)
    elif isinstance(model, PreTrainedModel):
        classes[task]._check(model.model, "the model")
    else:
        model = classes[task].from_pretrained(model, **kwargs)
        kwargs = {}
    if kwargs:
        raise TypeError(f"pipeline() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if image_processor is None:
        image_processor = model.model.processor
    elif not isinstance(image_processor, MobileViTImageProcessor):
        image_processor = MobileViTImageProcessor.from_pretrained(image_processor)
    return Pipeline(task, model, image_processor, **defaults)
