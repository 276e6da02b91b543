"""The DeepLabV3 segmentation head both families share (transformers' MobileViT(V2)DeepLabV3), reading layer 5.

ASPP: five branches on the same map, concatenated in this order: a 1x1 conv; three 3x3 convs dilated by each of
the atrous rates (dilation = padding = rate); image pooling (global mean -> 1x1 conv -> broadcast back). Each branch
has BatchNorm + ReLU. Then a 1x1 projection (BatchNorm, ReLU) and the 1x1 classifier with bias. Logits stay at
1/output_stride of the input.
"""

from __future__ import annotations

from ..config import MobileViTConfig
from ..graph import Conv, Graph, Pool


def deeplabv3_head(g: Graph, cfg: MobileViTConfig, x: str, cin: int) -> str:
    name, out = "segmentation_head.aspp", cfg.aspp_out_channels
    branches = [g.add("conv", f"{name}.convs.0", x, Conv(cin, out, 1, act="relu"))]
    for i, rate in enumerate(cfg.atrous_rates, start=1):
        branches.append(g.add("conv", f"{name}.convs.{i}", x, Conv(cin, out, 3, dilation=rate, act="relu")))
    pooled = g.add("global_avg_pool", f"{name}.convs.4.global_pool", x, Pool(keepdims=True))
    pooled = g.add("conv", f"{name}.convs.4.conv_1x1", pooled, Conv(cin, out, 1, act="relu"))
    # bilinear upsampling of a 1x1 map is a broadcast; the resize kernel does it exactly
    branches.append(g.add("resize_like", f"{name}.convs.4", (pooled, x)))
    h = g.add("concat", f"{name}.pyramid", tuple(branches))
    h = g.add("conv", f"{name}.project", h, Conv(5 * out, out, 1, act="relu"))
    return g.add("conv", "segmentation_head.classifier", h, Conv(out, cfg.num_labels, 1))
