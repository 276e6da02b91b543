"""A tiny IR: a graph is a list of nodes in execution order.

Each node has an op name, a name (transformers' module path, which also names its output tensor and prefixes its
parameters: `encoder.layer.2.conv_kxk` reads `encoder.layer.2.conv_kxk.weight`), the names of its input tensors, and
typed attributes. Tensors between nodes are channels-last: (B, H, W, C) maps, (T, N, C) token sequences, (B, C)
vectors. The attribute classes say which parameters a node reads and their shapes, so a weights file can be checked
against the graph before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Conv:
    """Convolution with BatchNorm folded in; `depthwise` means one filter per channel (groups = channels)."""

    cin: int
    cout: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    depthwise: bool = False
    bias: bool = True
    act: str = "none"

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2 * self.dilation  # transformers: int((k - 1) / 2) * dilation

    def params(self) -> dict[str, Shape]:
        # weights are stored (kh, kw, cin / groups, cout), the channels-last layout every conv kernel reads
        w = (self.kernel, self.kernel, 1 if self.depthwise else self.cin, self.cout)
        return {"weight": w, "bias": (self.cout,)} if self.bias else {"weight": w}


@dataclass(frozen=True)
class Linear:
    cin: int
    cout: int
    bias: bool = True
    act: str = "none"

    def params(self) -> dict[str, Shape]:
        w = (self.cin, self.cout)  # stored (in, out)
        return {"weight": w, "bias": (self.cout,)} if self.bias else {"weight": w}


@dataclass(frozen=True)
class LayerNorm:
    channels: int
    eps: float

    def params(self) -> dict[str, Shape]:
        return {"weight": (self.channels,), "bias": (self.channels,)}


@dataclass(frozen=True)
class GroupNorm(LayerNorm):
    """GroupNorm with one group: statistics over the whole sample, affine per channel (same parameters)."""


@dataclass(frozen=True)
class Attention:
    heads: int


@dataclass(frozen=True)
class Pool:
    """Global average pooling; `keepdims` gives a (B, 1, 1, C) map instead of a (B, C) vector."""

    keepdims: bool = False


@dataclass(frozen=True)
class Patches:
    """Unfold/fold into patch x patch tokens (B, P, N, C). When the map is not a multiple of the patch, `resize`
    (MobileViT v1) resizes it bilinearly up to one and back; otherwise (v2) the last rows/columns are dropped and
    fold writes zeros there."""

    patch: int
    resize: bool


@dataclass(frozen=True)
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]
    attrs: object = None

    def params(self) -> dict[str, Shape]:
        """Full parameter names of this node and their shapes (a fused node's: those of the nodes it replaced)."""
        if isinstance(self.attrs, Fused):
            return {k: v for part in self.attrs.parts for k, v in part.params().items()}
        shapes = self.attrs.params() if hasattr(self.attrs, "params") else {}
        return {f"{self.name}.{k}": v for k, v in shapes.items()}


@dataclass(frozen=True)
class Fused:
    """The attributes of a node that the fusion pass made from a sequence of nodes (`parts`, in order); the fused
    node computes what the last part computed and keeps its name, and its parameters keep their names."""

    parts: tuple[Node, ...]


@dataclass
class Graph:
    """Nodes in execution order; `outputs` maps output names (logits, hidden_states...) to tensor names."""

    input: str = "pixel_values"
    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, str | list[str]] = field(default_factory=dict)

    def add(self, op: str, name: str, inputs: tuple[str, ...] | str, attrs: object = None) -> str:
        """Append a node and return the name of its output tensor."""
        if isinstance(inputs, str):
            inputs = (inputs,)
        self.nodes.append(Node(op, name, tuple(inputs), attrs))
        return name

    def params(self) -> dict[str, Shape]:
        """Every parameter the graph reads, with its shape."""
        return {k: v for node in self.nodes for k, v in node.params().items()}
