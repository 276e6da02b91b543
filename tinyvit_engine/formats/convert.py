"""The converter: the only place that knows transformers' checkpoint names and layouts.

A Hub-style checkpoint directory (config.json, model.safetensors or pytorch_model.bin, possibly sharded,
preprocessor_config.json) becomes engine tensors by these rules, applied in order:

    <base>.                                   dropped: "mobilevit." / "mobilevitv2." prefix of task models
    *.num_batches_tracked                     dropped
    M.convolution.weight (+ .bias)            -> M.weight (kh, kw, cin/groups, cout), M.bias
      + M.normalization.{weight, bias,           BatchNorm (eps 1e-5) folded into the conv in float64
        running_mean, running_var}
    M.attention.attention.{query,key,value}   -> M.attention.attention.qkv (in, 3 * out): one fused projection
    M.weight of rank 2 (nn.Linear)            -> M.weight transposed to (in, out)
    anything of rank 1 (LayerNorm, GroupNorm, biases)   unchanged

and the output is checked against the graph the config builds, naming any tensor missing, unexpected or misshapen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import parse_config, read_json
from ..errors import WeightsFormatError
from ..models import build, check_params
from . import weights_file

BASE_PREFIXES = ("mobilevit.", "mobilevitv2.")
BN_EPS = 1e-5  # transformers hard-codes it in MobileViT(V2)ConvLayer
BN_KEYS = ("weight", "bias", "running_mean", "running_var")
CONV = re.compile(r"(.+)\.convolution\.weight")
QKV = re.compile(r"(.+\.attention\.attention)\.query\.weight")


def convert(src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float32") -> Path:
    """Convert a transformers checkpoint directory into one engine weights file, written atomically. dtype: how
    the conv and linear weights are stored, "float32", "float16" or "int8" (per output channel; weights_file.py)."""
    if dtype not in weights_file.STORAGE:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(weights_file.STORAGE)}")
    config, preprocessor, tensors = read_checkpoint(src)
    engine = checked_engine(tensors, str(src))
    check_params(build(parse_config(config)), engine, source=str(src))
    weights_file.write(dst, engine, config, preprocessor, storage=dtype)
    return Path(dst)


def read_checkpoint(src: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, np.ndarray]]:
    """(config, preprocessor config or None, checkpoint tensors) of a Hub-style checkpoint directory."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such checkpoint directory")
    config = read_json(src / "config.json", "model config")
    preprocessor_file = src / "preprocessor_config.json"
    preprocessor = read_json(preprocessor_file, "preprocessor config") if preprocessor_file.exists() else None
    tensors = _read_tensors(src)
    config.setdefault("architectures", [_architecture(config, tensors)])
    return config, preprocessor, tensors


def checked_engine(tensors: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """to_engine, with every value finite before (naming the checkpoint's tensor) and after (folding BatchNorm can
    overflow: a variance of -eps, a huge scale)."""
    weights_file.check_finite(tensors, where)
    with np.errstate(all="ignore"):  # what overflows is refused just below, by name
        engine = to_engine(tensors)
    weights_file.check_finite(engine, f"{where} (after folding BatchNorm into the convolutions)")
    return engine


def to_engine(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Apply the renaming, BatchNorm folding, QKV fusion and transposition rules (see the module docstring)."""
    src = {_strip(k): v for k, v in tensors.items() if not k.endswith(".num_batches_tracked")}
    for name, t in src.items():
        if not np.issubdtype(t.dtype, np.floating):
            raise WeightsFormatError(f"checkpoint tensor {name} is {t.dtype}, expected a floating-point type")
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        # a tensor a rule needs, named when it is missing or does not fit the tensors it is combined with
        if key not in src:
            raise WeightsFormatError(f"checkpoint tensor {key} is missing")
        if shape is not None and src[key].shape != shape:
            raise WeightsFormatError(f"checkpoint tensor {key} has shape {src[key].shape}, expected {shape}")
        used.add(key)
        return src[key].astype(np.float64)

    for key in [k for k in src if CONV.fullmatch(k)]:
        module = CONV.fullmatch(key)[1]
        w = take(key)
        if w.ndim != 4:
            raise WeightsFormatError(f"checkpoint tensor {key} has shape {w.shape}, expected a 4-D conv weight")
        cout = (w.shape[0],)
        b = take(f"{module}.convolution.bias", cout) if f"{module}.convolution.bias" in src else None
        bn = f"{module}.normalization"
        if f"{bn}.running_mean" in src:
            gamma, beta, mean, var = (take(f"{bn}.{k}", cout) for k in BN_KEYS)
            scale = gamma / np.sqrt(var + BN_EPS)
            w = w * scale[:, None, None, None]
            b = beta - mean * scale + (0.0 if b is None else b * scale)
        out[f"{module}.weight"] = w.transpose(2, 3, 1, 0)  # (cout, cin/g, kh, kw) -> (kh, kw, cin/g, cout)
        if b is not None:
            out[f"{module}.bias"] = b

    for key in [k for k in src if QKV.fullmatch(k)]:
        module = QKV.fullmatch(key)[1]
        parts = [f"{module}.{p}" for p in ("query", "key", "value")]
        shape = src[key].shape
        if len(shape) != 2:
            raise WeightsFormatError(f"checkpoint tensor {key} has shape {shape}, expected a 2-D linear weight")
        out[f"{module}.qkv.weight"] = np.concatenate([take(f"{p}.weight", shape) for p in parts]).T
        if f"{module}.query.bias" in src:
            out[f"{module}.qkv.bias"] = np.concatenate([take(f"{p}.bias", shape[:1]) for p in parts])

    for key, t in src.items():
        if key in used:
            continue
        if t.ndim == 2 and key.endswith(".weight"):
            out[key] = t.T  # nn.Linear (out, in) -> (in, out)
        elif t.ndim == 1:
            out[key] = t
        else:
            raise WeightsFormatError(f"checkpoint tensor {key} of shape {t.shape} matches no conversion rule")
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _strip(key: str) -> str:
    for prefix in BASE_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _architecture(config: dict[str, Any], tensors: dict[str, np.ndarray]) -> str:
    """The transformers class a checkpoint without `architectures` in its config was saved from."""
    family = "MobileViTV2" if config.get("model_type") == "mobilevitv2" else "MobileViT"
    if "classifier.weight" in tensors:
        return f"{family}ForImageClassification"
    if any(k.startswith("segmentation_head.") for k in tensors):
        return f"{family}ForSemanticSegmentation"
    return f"{family}Model"


def _read_tensors(src: Path) -> dict[str, np.ndarray]:
    """Tensors of model.safetensors or pytorch_model.bin, sharded or not (safetensors preferred)."""
    for name, reader in (("model.safetensors", _read_safetensors), ("pytorch_model.bin", _read_bin)):
        if (src / name).exists():
            return reader(src / name)
        index = src / f"{name}.index.json"
        if index.exists():
            weight_map = read_json(index, "shard index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise WeightsFormatError(f"{index}: no weight_map object naming the shard of each tensor")
            tensors: dict[str, np.ndarray] = {}
            for shard in sorted(set(map(str, weight_map.values()))):
                if Path(shard).name != shard or shard in (".", ".."):
                    raise WeightsFormatError(f"{index}: shard name {shard!r} is not a file name in the directory")
                if not (src / shard).is_file():
                    raise FileNotFoundError(f"{src / shard}: missing; {index.name} names it as a shard")
                tensors.update(reader(src / shard))
            return tensors
    raise FileNotFoundError(f"{src}: no model.safetensors or pytorch_model.bin (nor a sharded index) in the directory")


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    # the engine's own parser: every size and offset checked before reading, BF16 widened to float32
    data = path.read_bytes()
    return weights_file.tensors(data, weights_file.parse(data, str(path))[1], str(path))


def _read_bin(path: Path) -> dict[str, np.ndarray]:
    from .torchbin import load_torch_bin

    return load_torch_bin(path)
