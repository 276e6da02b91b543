"""MobileViT (v1): config -> Graph, following transformers' modeling_mobilevit.py module by module.

stem (3x3 s2) -> layer 1-2: MobileNetV2 inverted residuals -> layer 3-5: MobileViT blocks
(local 3x3 + 1x1, unfold into 2x2 patches, pre-norm transformer layers, fold, 1x1 projection, 3x3 fusion with the
block input) -> conv_1x1_exp -> mean -> classifier.
"""

from __future__ import annotations

from ..config import MobileViTConfig
from ..graph import Attention, Conv, Graph, LayerNorm, Linear, Patches
from .deeplabv3 import deeplabv3_head


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """transformers' channel rounding: nearest multiple of `divisor`, never more than 10% below `value`."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * value else new)


def inverted_residual(
    g: Graph, cfg: MobileViTConfig, name: str, x: str, cin: int, cout: int, stride: int, dilation: int = 1
) -> str:
    """MobileNetV2 block: expand 1x1 -> depthwise 3x3 -> reduce 1x1 (+ input when shapes allow)."""
    mid = make_divisible(int(round(cin * cfg.expand_ratio)), 8)
    h = g.add("conv", f"{name}.expand_1x1", x, Conv(cin, mid, 1, act=cfg.hidden_act))
    h = g.add("conv", f"{name}.conv_3x3", h, Conv(mid, mid, 3, stride, dilation, depthwise=True, act=cfg.hidden_act))
    residual = (x,) if stride == 1 and cin == cout else ()
    return g.add("conv", f"{name}.reduce_1x1", (h, *residual), Conv(mid, cout, 1))


def mobilenet_layer(
    g: Graph, cfg: MobileViTConfig, name: str, x: str, cin: int, cout: int, stride: int, stages: int
) -> str:
    for i in range(stages):
        x = inverted_residual(g, cfg, f"{name}.layer.{i}", x, cin, cout, stride if i == 0 else 1)
        cin = cout
    return x


def transformer_layer(g: Graph, cfg: MobileViTConfig, name: str, x: str, hidden: int) -> str:
    """Pre-norm: x + attention(LN(x)), then h + FFN(LN(h)); residual adds are fused into the output linears."""
    h = g.add("layer_norm", f"{name}.layernorm_before", x, LayerNorm(hidden, cfg.layer_norm_eps))
    h = g.add("linear", f"{name}.attention.attention.qkv", h, Linear(hidden, 3 * hidden, bias=cfg.qkv_bias))
    h = g.add("attention", f"{name}.attention.attention", h, Attention(cfg.num_attention_heads))
    x = g.add("linear", f"{name}.attention.output.dense", (h, x), Linear(hidden, hidden))
    h = g.add("layer_norm", f"{name}.layernorm_after", x, LayerNorm(hidden, cfg.layer_norm_eps))
    ffn = int(hidden * cfg.mlp_ratio)
    h = g.add("linear", f"{name}.intermediate.dense", h, Linear(hidden, ffn, act=cfg.hidden_act))
    return g.add("linear", f"{name}.output.dense", (h, x), Linear(ffn, hidden))


def mobilevit_layer(
    g: Graph, cfg: MobileViTConfig, name: str, x: str, cin: int, cout: int, hidden: int, stages: int, dilation: int
) -> str:
    act, k = cfg.hidden_act, cfg.conv_kernel_size
    # a dilated layer keeps its resolution: stride 1, and the depthwise conv dilates by half the layer's dilation
    x = inverted_residual(
        g, cfg, f"{name}.downsampling_layer", x, cin, cout, 2 if dilation == 1 else 1, max(1, dilation // 2)
    )
    local = g.add("conv", f"{name}.conv_kxk", x, Conv(cout, cout, k, act=act))
    local = g.add("conv", f"{name}.conv_1x1", local, Conv(cout, hidden, 1, bias=False))
    p = cfg.patch_size
    h = g.add("unfold", f"{name}.unfolding", local, Patches(p, resize=True))
    for i in range(stages):
        h = transformer_layer(g, cfg, f"{name}.transformer.layer.{i}", h, hidden)
    h = g.add("layer_norm", f"{name}.layernorm", h, LayerNorm(hidden, cfg.layer_norm_eps))
    h = g.add("fold", f"{name}.folding", (h, local), Patches(p, resize=True))
    h = g.add("conv", f"{name}.conv_projection", h, Conv(hidden, cout, 1, act=act))
    h = g.add("concat", f"{name}.fusion.input", (x, h))  # block input first, as torch.cat((residual, features))
    return g.add("conv", f"{name}.fusion", h, Conv(2 * cout, cout, k, act=act))


def build_mobilevit(cfg: MobileViTConfig) -> Graph:
    g = Graph()
    neck, hidden, act = cfg.neck_hidden_sizes, cfg.hidden_sizes, cfg.hidden_act
    x = g.add("conv", "conv_stem", g.input, Conv(cfg.num_channels, neck[0], 3, stride=2, act=act))

    # output_stride 16 stops layer 5 downsampling; 8 also stops layer 4 (transformers' MobileViTEncoder)
    dilation4 = 2 if cfg.output_stride == 8 else 1
    dilation5 = dilation4 * 2 if cfg.output_stride in (8, 16) else 1
    states = [
        x := mobilenet_layer(g, cfg, "encoder.layer.0", x, neck[0], neck[1], 1, 1),
        x := mobilenet_layer(g, cfg, "encoder.layer.1", x, neck[1], neck[2], 2, 3),
        x := mobilevit_layer(g, cfg, "encoder.layer.2", x, neck[2], neck[3], hidden[0], 2, 1),
        x := mobilevit_layer(g, cfg, "encoder.layer.3", x, neck[3], neck[4], hidden[1], 4, dilation4),
        x := mobilevit_layer(g, cfg, "encoder.layer.4", x, neck[4], neck[5], hidden[2], 3, dilation5),
    ]
    g.outputs["hidden_states"] = states
    if cfg.task == "semantic-segmentation":
        g.outputs["logits"] = deeplabv3_head(g, cfg, x, neck[5])
        return g

    x = g.add("conv", "conv_1x1_exp", x, Conv(neck[5], neck[6], 1, act=act))
    g.outputs["last_hidden_state"] = x
    g.outputs["pooler_output"] = g.add("global_avg_pool", "pooler", x)
    if cfg.task == "image-classification":
        g.outputs["logits"] = (
            g.add("linear", "classifier", "pooler", Linear(neck[6], cfg.num_labels)) if cfg.num_labels else "pooler"
        )
    return g
