"""Model configs: typed, frozen dataclasses parsed once from a transformers config.json dict.

Only the fields that change the inference graph are kept; training-only fields (dropouts, initializer_range, loss
settings) are checked and then ignored, as transformers ignores them at inference. Every field is checked as
transformers checks it (its config classes' types, strictly: a float field refuses an int, as theirs do; what its
modules refuse when they are built: an unknown activation, heads that do not divide a width, an even kernel, a
dropout outside [0, 1]) and against LIMITS, which keep a config's work and memory sane (transformers has none: a
patch size of 1000 makes one 64x64 image take a minute). Anything else raises UnsupportedConfigError naming the
field, before a byte is allocated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnsupportedConfigError

ACTIVATIONS = ("silu", "swish", "relu", "gelu")  # transformers' ACT2FN names the kernels implement exactly
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")  # as transformers
TASKS = {
    "Model": "feature-extraction",
    "ForImageClassification": "image-classification",
    "ForSemanticSegmentation": "semantic-segmentation",
}


TORCH_DTYPES = ("float32", "float16", "bfloat16", "float64", "float", "half", "double", "auto")
# What the engine runs at most (transformers has no limits; the published models are far inside them).
LIMITS = {
    "channels": 8192,  # any width: hidden sizes, neck, ASPP, attention units (after the width multiplier)
    "patch_size": 32,  # published: 2
    "conv_kernel_size": 15,  # published: 3
    "ratio": 64.0,  # mlp_ratio, expand_ratio, ffn_multiplier
    "width_multiplier": 16.0,  # published: 0.5 to 2.0
    "heads": 64,
    "blocks": 64,  # transformer layers per stage (n_attn_blocks)
    "atrous_rate": 1024,
    "num_labels": 100_000,
}
# transformers' annotations for each field, as its strict config dataclasses check them:
# "int" an int (not a bool), "float" a float (not an int), "number" either, "ints" a list of ints, "bool", "str"
# (and the range the engine runs, as (low, high), inclusive)
FIELDS_COMMON = {
    "num_channels": ("int", (1, 64)),
    "image_size": ("int or ints", (1, 1 << 16)),  # not used at inference (any input size runs), but typed
    "patch_size": ("int", (1, LIMITS["patch_size"])),
    "expand_ratio": ("float", (1e-6, LIMITS["ratio"])),
    "hidden_act": ("str", ACTIVATIONS),
    "conv_kernel_size": ("odd int", (1, LIMITS["conv_kernel_size"])),  # even kernels break transformers' shapes
    "output_stride": ("int", (1, 1 << 16)),  # 8 and 16 dilate the last stages; any other value acts as 32
    "classifier_dropout_prob": ("number", (0.0, 1.0)),  # torch.nn.Dropout refuses anything outside [0, 1]
    "initializer_range": ("float", (-math.inf, math.inf)),
    "layer_norm_eps": ("float", (1e-30, 1.0)),
    "aspp_out_channels": ("int", (1, LIMITS["channels"])),
    "atrous_rates": ("3 ints", (1, LIMITS["atrous_rate"])),
    "aspp_dropout_prob": ("number", (0.0, 1.0)),
    "semantic_loss_ignore_index": ("int", (-math.inf, math.inf)),
    # the dtype the checkpoint was saved in (transformers resolves the name in torch; the engine computes in float32)
    "dtype": ("str or null", TORCH_DTYPES),
    "torch_dtype": ("str or null", TORCH_DTYPES),
}
FIELDS_V1 = {
    **FIELDS_COMMON,
    "hidden_sizes": ("3 ints", (1, LIMITS["channels"])),
    "neck_hidden_sizes": ("7 ints", (1, LIMITS["channels"])),
    "num_attention_heads": ("int", (1, LIMITS["heads"])),
    "mlp_ratio": ("float", (1e-6, LIMITS["ratio"])),
    "hidden_dropout_prob": ("number", (0.0, 1.0)),
    "attention_probs_dropout_prob": ("number", (0.0, 1.0)),
    "qkv_bias": ("bool", None),
}
FIELDS_V2 = {
    **FIELDS_COMMON,
    "n_attn_blocks": ("3 ints", (1, LIMITS["blocks"])),
    "base_attn_unit_dims": ("3 ints", (1, LIMITS["channels"])),
    "width_multiplier": ("number", (1e-6, LIMITS["width_multiplier"])),
    "ffn_multiplier": ("int", (1, int(LIMITS["ratio"]))),
    "attn_dropout": ("number", (0.0, 1.0)),
    "ffn_dropout": ("number", (0.0, 1.0)),
}


def check_field(name: str, value: Any, kind: str, bounds: Any) -> None:
    """One config value against its kind and bounds (FIELDS_*): UnsupportedConfigError naming both otherwise."""
    if kind in ("str", "str or null"):
        if value is None and kind == "str or null":
            return
        _require(isinstance(value, str) and value in bounds, name, value, f"one of {bounds}")
        return
    if kind == "bool":
        _require(isinstance(value, bool), name, value, "true or false")
        return
    if kind.endswith("ints"):
        count = int(kind.split()[0]) if kind[0].isdigit() else None
        if kind == "int or ints" and _is_int(value):
            value = [value]
        many = f"{count} integers" if count else "integers"
        _require(isinstance(value, (list, tuple)), name, value, f"a list of {many}")
        _require(count is None or len(value) == count, name, value, f"a list of {many}")
        for v in value:
            _require(_is_int(v) and bounds[0] <= v <= bounds[1], name, value, f"{many} in [{bounds[0]}, {bounds[1]}]")
        return
    typed = {
        "int": _is_int(value),
        "odd int": _is_int(value) and value % 2 == 1,
        "float": type(value) is float,
        "number": _number(value),
    }[kind]
    want = {"int": "an integer", "odd int": "an odd integer", "float": "a float (2.0, not 2: transformers "
            "refuses an int here)", "number": "a number"}[kind]  # fmt: skip
    _require(typed, name, value, want)
    _require(type(value) is int or math.isfinite(value) or bounds[0] == -math.inf, name, value, f"a finite {kind}")
    _require(
        bounds[0] <= value <= bounds[1], name, value, f"in [{bounds[0]}, {bounds[1]}] (tinyvit_engine.config.LIMITS)"
    )


def _is_int(v: Any) -> bool:
    return type(v) is int


@dataclass(frozen=True)
class MobileViTConfig:
    """transformers' MobileViTConfig, the fields inference needs (same names, same defaults)."""

    model_type = "mobilevit"
    num_channels: int = 3
    image_size: int = 256
    patch_size: int = 2
    hidden_sizes: tuple[int, ...] = (144, 192, 240)
    neck_hidden_sizes: tuple[int, ...] = (16, 32, 64, 96, 128, 160, 640)
    num_attention_heads: int = 4
    mlp_ratio: float = 2.0
    expand_ratio: float = 4.0
    hidden_act: str = "silu"
    conv_kernel_size: int = 3
    output_stride: int = 32
    layer_norm_eps: float = 1e-5
    qkv_bias: bool = True
    aspp_out_channels: int = 256
    atrous_rates: tuple[int, ...] = (6, 12, 18)
    problem_type: str | None = None  # how the classification pipeline turns logits into scores
    # what a call returns when its keywords do not say (transformers' PretrainedConfig fields, as config.json sets
    # them); these and problem_type may be set after loading (RUNTIME), the rest shape the graph and are fixed
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    architecture: str = "MobileViTForImageClassification"

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    @property
    def task(self) -> str:
        return TASKS[self.architecture.removeprefix(self.class_prefix)]

    class_prefix = "MobileViT"
    int_lists = ("hidden_sizes", "neck_hidden_sizes", "atrous_rates")
    checks = FIELDS_V1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MobileViTConfig:
        model_type = d.get("model_type", cls.model_type)
        _require(isinstance(model_type, str) and model_type == cls.model_type, "model_type", model_type, cls.model_type)
        for name, (kind, bounds) in cls.checks.items():
            if name in d:  # null too: transformers' typed fields refuse it
                check_field(name, d[name], kind, bounds)
        values = {
            f.name: d[f.name]
            for f in dataclasses.fields(cls)
            if d.get(f.name) is not None or f.name in RUNTIME and f.name in d
        }
        values["id2label"] = _id2label(d)
        values["architecture"] = _architecture(d, cls.class_prefix)
        for name in cls.int_lists:
            if name in values:
                values[name] = _int_tuple(name, values[name])
        cfg = cls(**values)
        cfg._validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("id2label", "architecture")
        }
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        return {
            "model_type": self.model_type,
            "architectures": [self.architecture],
            **d,
            "id2label": {str(k): v for k, v in self.id2label.items()},
        }

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MobileViTConfig:
        """The config of a checkpoint directory (its config.json) or of a config.json file; OSError if none."""
        return cls.from_dict(read_json(Path(path) / "config.json" if Path(path).is_dir() else path, "config"))

    def to_json_string(self) -> str:
        """config.json's text, which transformers' config class and the engine both read back."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        Path(json_file_path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """config.json in save_directory (made if missing), as transformers' save_pretrained writes it."""
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(Path(save_directory) / "config.json")

    def _validate(self) -> None:
        """What no single field says: the checks across fields, once each field passed check_field."""
        self._validate_common()
        for h in self.hidden_sizes:
            _require(
                h % self.num_attention_heads == 0,
                "hidden_sizes",
                self.hidden_sizes,
                f"multiples of num_attention_heads={self.num_attention_heads}",
            )
        _require(
            int(min(self.hidden_sizes) * self.mlp_ratio) >= 1,
            "mlp_ratio",
            self.mlp_ratio,
            "a ratio giving at least one FFN unit",
        )
        _require(
            max(self.hidden_sizes) * self.mlp_ratio <= LIMITS["channels"],
            "mlp_ratio",
            self.mlp_ratio,
            f"FFN widths up to {LIMITS['channels']} (tinyvit_engine.config.LIMITS)",
        )

    def _validate_common(self) -> None:
        for name in RUNTIME:
            _check_runtime(name, getattr(self, name))
        if self.task == "semantic-segmentation":
            _require(self.num_labels >= 1, "num_labels", self.num_labels, "at least 1 for segmentation")
        if self.task == "image-classification":
            _require(
                self.num_labels >= 1,
                "num_labels",
                self.num_labels,
                "at least 1: with 0, transformers replaces the classifier by an identity and returns the pooled "
                "features as logits; load the checkpoint with the base model (MobileViTModel) for features",
            )


@dataclass(frozen=True)
class MobileViTV2Config(MobileViTConfig):
    """transformers' MobileViTV2Config, the fields inference needs (same names, same defaults).

    Fields of v1 that v2 does not read (hidden_sizes, neck_hidden_sizes, heads, mlp_ratio, qkv_bias) are inherited
    but unused; the Hub's v2 configs carry some of them (mlp_ratio), which is harmless.
    """

    model_type = "mobilevitv2"
    class_prefix = "MobileViTV2"
    int_lists = ("n_attn_blocks", "base_attn_unit_dims", "atrous_rates")
    checks = FIELDS_V2
    expand_ratio: float = 2.0
    hidden_act: str = "swish"
    aspp_out_channels: int = 512
    n_attn_blocks: tuple[int, ...] = (2, 4, 3)
    base_attn_unit_dims: tuple[int, ...] = (128, 192, 256)
    width_multiplier: float = 1.0
    ffn_multiplier: int = 2
    architecture: str = "MobileViTV2ForImageClassification"

    def to_dict(self) -> dict[str, Any]:
        v1_only = ("hidden_sizes", "neck_hidden_sizes", "num_attention_heads", "mlp_ratio", "qkv_bias")
        return {k: v for k, v in super().to_dict().items() if k not in v1_only}

    def _validate(self) -> None:
        self._validate_common()
        widest = max(self.base_attn_unit_dims) * self.width_multiplier * self.ffn_multiplier
        _require(
            widest <= LIMITS["channels"],
            "width_multiplier",
            self.width_multiplier,
            f"widths up to {LIMITS['channels']} after the multipliers (tinyvit_engine.config.LIMITS)",
        )


RUNTIME = ("problem_type", "output_hidden_states", "output_attentions", "return_dict")


def _check_runtime(name: str, value: Any) -> None:
    if name == "problem_type":
        _require(value in PROBLEM_TYPES, "problem_type", value, f"one of {PROBLEM_TYPES}")
    else:
        _require(isinstance(value, bool), name, value, "true or false")


def _set_runtime(self: MobileViTConfig, name: str, value: Any) -> None:
    """Setting a field after loading, as transformers user code does (model.config.problem_type = ...): the fields
    that change what a call returns may be set; those that shape the graph cannot, and say so."""
    if name not in RUNTIME:
        raise UnsupportedConfigError(
            f"config.{name} is fixed once the model is loaded (it shapes the network); only "
            f"{', '.join(RUNTIME)} may be set"
        )
    _check_runtime(name, value)
    object.__setattr__(self, name, value)


def read_json(file: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON object from a file (a config, a preprocessor config, a shard index), or an error naming the file:
    FileNotFoundError when it is missing, UnsupportedConfigError when it is not one JSON object."""
    try:
        d = json.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: missing; the {what} is read from it") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise UnsupportedConfigError(f"{file}: not a JSON {what} ({reason})") from None
    if not isinstance(d, dict):
        raise UnsupportedConfigError(f"{file}: a {what} is a JSON object, got {type(d).__name__}")
    return d


def parse_config(d: dict[str, Any]) -> MobileViTConfig:
    """The engine config for a transformers config.json dict; the family comes from its model_type."""
    if not isinstance(d, dict):
        raise UnsupportedConfigError(f"config: expected a JSON object, got {type(d).__name__}")
    families = {c.model_type: c for c in (MobileViTConfig, MobileViTV2Config)}
    model_type = d.get("model_type")
    if not isinstance(model_type, str) or model_type not in families:
        raise UnsupportedConfigError(
            f"config: model_type {model_type!r:.60} is not supported; supported: {sorted(families)}"
        )
    return families[model_type].from_dict(d)


def _architecture(d: dict[str, Any], prefix: str) -> str:
    archs = d.get("architectures") or [f"{prefix}ForImageClassification"]
    known = [prefix + suffix for suffix in TASKS]
    _require(isinstance(archs, list) and len(archs) == 1, "architectures", archs, "a list of one name")
    _require(archs[0] in known, "architectures", archs, f"one of {known}")
    return archs[0]


def _id2label(d: dict[str, Any]) -> dict[int, str]:
    """The labels as transformers reads them: id2label, unless num_labels is given too and disagrees with it (then
    LABEL_0 ... LABEL_{n-1}, as PretrainedConfig does)."""
    n = d.get("num_labels")
    if "num_labels" in d:  # null too: transformers refuses it
        _require(_is_int(n) and 0 <= n <= LIMITS["num_labels"], "num_labels", n, "an integer in [0, 100000]")
    labels = d.get("id2label")
    if labels is not None:
        _require(isinstance(labels, dict), "id2label", labels, "an object mapping class indices to names")
        try:
            labels = {int(k): str(v) for k, v in labels.items()}
        except (TypeError, ValueError, OverflowError):
            raise UnsupportedConfigError(
                f"config: id2label must map class indices to names, got {d['id2label']!r:.80}"
            ) from None
        _require(sorted(labels) == list(range(len(labels))), "id2label", sorted(labels)[:5], "keys 0..num_labels-1")
        _require(len(labels) <= LIMITS["num_labels"], "id2label", len(labels), "at most 100000 labels")
        if n is None or n == len(labels):
            return labels
    n = 2 if n is None else n
    return {i: f"LABEL_{i}" for i in range(n)}


def _int_tuple(name: str, v: Any) -> tuple[int, ...]:
    _require(isinstance(v, (list, tuple)), name, v, "a list of integers")
    for x in v:
        _positive_int(name, x)
    return tuple(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(name: str, v: Any) -> None:
    _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, v, "a positive integer")


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise UnsupportedConfigError(f"config: {name} = {value!r:.80} is not supported (expected {expected})")


# frozen dataclasses, but for the RUNTIME fields (a frozen dataclass may not define __setattr__ in its body)
MobileViTConfig.__setattr__ = _set_runtime
MobileViTV2Config.__setattr__ = _set_runtime
