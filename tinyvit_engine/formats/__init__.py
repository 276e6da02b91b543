"""Bytes on disk or on the Hub -> (config, preprocessor config, tensors): the only code that knows checkpoint names
and file layouts.

- weights_file.py  the engine's own safetensors file (format, version, storage dtype, both configs in its header)
- convert.py       a transformers checkpoint directory -> engine tensors (renames, BatchNorm folding, QKV fusion)
- torchbin.py      pytorch_model.bin without torch and without running pickle code
- hub.py           Hub ids ("apple/mobilevit-small") -> a local snapshot directory
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import read_json
from . import weights_file
from .convert import checked_engine, read_checkpoint, to_engine
from .hub import HubError, resolve


def read_model(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, np.ndarray]]:
    """(config, preprocessor config or None, engine tensors) of an engine weights file or a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        config, preprocessor, tensors = read_checkpoint(path)
        return config, preprocessor, checked_engine(tensors, str(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file or checkpoint directory")
    tensors, config, preprocessor = weights_file.read(path)
    weights_file.check_finite(tensors, str(path))
    return config, preprocessor, tensors


def preprocessor_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The preprocessor config of a checkpoint directory (its preprocessor_config.json), of that JSON file itself, or
    of an engine weights file (read from its header: no tensor is read). None when the model carries none."""
    path = Path(path)
    if path.is_dir():
        file = path / "preprocessor_config.json"
        return read_json_config(file) if file.exists() else None
    if path.suffix == ".json":
        return read_json_config(path)
    return weights_file.read_configs(path)[1]


def read_json_config(file: str | os.PathLike) -> dict[str, Any]:
    """A preprocessor config JSON file as a dict, or an error naming the file and the problem."""
    return read_json(file, "preprocessor config")


__all__ = [
    "HubError",
    "preprocessor_config",
    "read_json_config",
    "read_checkpoint",
    "read_model",
    "resolve",
    "to_engine",
    "weights_file",
]
