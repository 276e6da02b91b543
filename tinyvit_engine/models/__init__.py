"""Model builders: one per family, each turning a config into a Graph named like transformers' modules."""

from __future__ import annotations

import numpy as np

from ..config import MobileViTConfig, MobileViTV2Config
from ..errors import WeightsFormatError
from ..graph import Graph
from .mobilevit import build_mobilevit
from .mobilevitv2 import build_mobilevitv2

BUILDERS = {MobileViTConfig: build_mobilevit, MobileViTV2Config: build_mobilevitv2}


def build(config) -> Graph:
    """The inference graph of a parsed config."""
    return BUILDERS[type(config)](config)


def check_params(graph: Graph, tensors: dict[str, np.ndarray], source: str) -> None:
    """Refuse weights that do not fit the graph, naming the tensors: missing, unexpected, or of the wrong shape."""
    expected = graph.params()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise WeightsFormatError(f"{source}: {len(missing)} tensor(s) missing for this config, e.g. {missing[:3]}")
    if unexpected:
        raise WeightsFormatError(
            f"{source}: {len(unexpected)} unexpected tensor(s) for this config, e.g. {unexpected[:3]}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise WeightsFormatError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, the config needs {tuple(shape)}"
            )
