"""MobileViTV2: config -> Graph, following transformers' modeling_mobilevitv2.py module by module.

stem (3x3 s2) -> layer 1-2: inverted residuals -> layer 3-5: MobileViTV2 blocks (depthwise kxk + 1x1, unfold into
(B, P, N, C) patches without resizing, transformer layers of GroupNorm + separable linear attention + 1x1-conv FFN,
GroupNorm, fold, 1x1 projection with BatchNorm and no activation) -> mean -> classifier. Widths all come from
width_multiplier through make_divisible.
"""

from __future__ import annotations

from ..config import MobileViTV2Config
from ..graph import Conv, Graph, GroupNorm, Linear, Patches
from .deeplabv3 import deeplabv3_head
from .mobilevit import inverted_residual, make_divisible, mobilenet_layer


def widths(cfg: MobileViTV2Config) -> tuple[list[int], list[int]]:
    """(stem and layer 1-5 output channels, layer 3-5 attention widths), as MobileViTV2Encoder computes them."""
    w = cfg.width_multiplier
    stem = make_divisible(max(16, min(64, 32 * w)), 8, min_value=16)
    channels = [stem, make_divisible(64 * w, 16)] + [make_divisible(c * w, 8) for c in (128, 256, 384, 512)]
    return channels, [make_divisible(d * w, 8) for d in cfg.base_attn_unit_dims]


def transformer_layer(g: Graph, cfg: MobileViTV2Config, name: str, x: str, dim: int) -> str:
    """x + out_proj(separable attention(GN(x))), then h + FFN(GN(h)); the 1x1 convs run on (B, P, N, C) tokens."""
    eps, ffn = cfg.layer_norm_eps, int(cfg.ffn_multiplier * dim // 16 * 16)
    h = g.add("group_norm", f"{name}.layernorm_before", x, GroupNorm(dim, eps))
    h = g.add("conv", f"{name}.attention.qkv_proj", h, Conv(dim, 1 + 2 * dim, 1))
    h = g.add("linear_attention", f"{name}.attention", h)
    x = g.add("conv", f"{name}.attention.out_proj", (h, x), Conv(dim, dim, 1))
    h = g.add("group_norm", f"{name}.layernorm_after", x, GroupNorm(dim, eps))
    h = g.add("conv", f"{name}.ffn.conv1", h, Conv(dim, ffn, 1, act=cfg.hidden_act))
    return g.add("conv", f"{name}.ffn.conv2", (h, x), Conv(ffn, dim, 1))


def mobilevitv2_layer(
    g: Graph, cfg: MobileViTV2Config, name: str, x: str, cin: int, cout: int, dim: int, blocks: int, dilation: int
) -> str:
    x = inverted_residual(
        g, cfg, f"{name}.downsampling_layer", x, cin, cout, 2 if dilation == 1 else 1, max(1, dilation // 2)
    )
    k = cfg.conv_kernel_size
    local = g.add("conv", f"{name}.conv_kxk", x, Conv(cout, cout, k, depthwise=True, act=cfg.hidden_act))
    local = g.add("conv", f"{name}.conv_1x1", local, Conv(cout, dim, 1, bias=False))
    p = cfg.patch_size
    h = g.add("unfold", f"{name}.unfolding", local, Patches(p, resize=False))
    for i in range(blocks):
        h = transformer_layer(g, cfg, f"{name}.transformer.layer.{i}", h, dim)
    h = g.add("group_norm", f"{name}.layernorm", h, GroupNorm(dim, cfg.layer_norm_eps))
    h = g.add("fold", f"{name}.folding", (h, local), Patches(p, resize=False))
    return g.add("conv", f"{name}.conv_projection", h, Conv(dim, cout, 1))


def build_mobilevitv2(cfg: MobileViTV2Config) -> Graph:
    g = Graph()
    ch, dims = widths(cfg)
    x = g.add("conv", "conv_stem", g.input, Conv(cfg.num_channels, ch[0], 3, stride=2, act=cfg.hidden_act))

    dilation4 = 2 if cfg.output_stride == 8 else 1
    dilation5 = dilation4 * 2 if cfg.output_stride in (8, 16) else 1
    blocks = cfg.n_attn_blocks
    states = [
        x := mobilenet_layer(g, cfg, "encoder.layer.0", x, ch[0], ch[1], 1, 1),
        x := mobilenet_layer(g, cfg, "encoder.layer.1", x, ch[1], ch[2], 2, 2),
        x := mobilevitv2_layer(g, cfg, "encoder.layer.2", x, ch[2], ch[3], dims[0], blocks[0], 1),
        x := mobilevitv2_layer(g, cfg, "encoder.layer.3", x, ch[3], ch[4], dims[1], blocks[1], dilation4),
        x := mobilevitv2_layer(g, cfg, "encoder.layer.4", x, ch[4], ch[5], dims[2], blocks[2], dilation5),
    ]
    g.outputs["hidden_states"] = states
    if cfg.task == "semantic-segmentation":
        g.outputs["logits"] = deeplabv3_head(g, cfg, x, ch[5])
        return g
    g.outputs["last_hidden_state"] = x
    g.outputs["pooler_output"] = g.add("global_avg_pool", "pooler", x)
    if cfg.task == "image-classification":
        g.outputs["logits"] = (
            g.add("linear", "classifier", "pooler", Linear(ch[5], cfg.num_labels)) if cfg.num_labels else "pooler"
        )
    return g
