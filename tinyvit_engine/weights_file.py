"""The engine's weights file: one safetensors file holding float32, C-contiguous tensors in engine layout, and in its
metadata a format name, a format version, the transformers config and the preprocessor config (both as JSON).

Engine layout: conv weights (kh, kw, cin / groups, cout) with BatchNorm folded in, linear weights (in, out), fused
query/key/value projections. Version 1 is the first; a file of another version is refused with a hint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from .errors import WeightsFormatError

FORMAT = "tinyvit-engine"
VERSION = 1


def write(path: str | os.PathLike, tensors: dict[str, np.ndarray], config: dict, preprocessor: dict | None) -> None:
    """Write atomically: a temporary file beside `path`, renamed over it only once complete."""
    path = Path(path)
    metadata = {
        "format": FORMAT,
        "format_version": str(VERSION),
        "config": json.dumps(config),
        "preprocessor_config": json.dumps(preprocessor) if preprocessor is not None else "",
    }
    data = save({k: np.ascontiguousarray(v, np.float32) for k, v in sorted(tensors.items())}, metadata=metadata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any] | None]:
    """(tensors, config, preprocessor config) of an engine weights file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise WeightsFormatError(f"{path}: is a directory; pass a checkpoint directory to tve.load or convert") from None
    try:
        tensors = load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, OverflowError) as e:
        raise WeightsFormatError(f"{path}: not a valid safetensors file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise WeightsFormatError(f"{path}: a safetensors file, but not a {FORMAT} weights file; convert the "
                                 "checkpoint with tve.convert (or `tinyvit convert`) first")
    if metadata.get("format_version") != str(VERSION):
        raise WeightsFormatError(f"{path}: {FORMAT} format version {metadata.get('format_version')!r}, this engine "
                                 f"reads version {VERSION}; convert the checkpoint again with this version")
    try:
        config = json.loads(metadata["config"])
        pre = json.loads(metadata["preprocessor_config"]) if metadata.get("preprocessor_config") else None
    except (KeyError, json.JSONDecodeError) as e:
        raise WeightsFormatError(f"{path}: the stored config is not valid JSON ({e})") from None
    for name, t in tensors.items():
        if t.dtype != np.float32:
            raise WeightsFormatError(f"{path}: tensor {name} is {t.dtype}, expected float32")
    return tensors, config, pre


def _metadata(data: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors blob (safetensors.numpy.load does not return it)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not an object")
    return meta
