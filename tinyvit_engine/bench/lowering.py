"""The transformers model with its few modules that XNNPACK's partitioner leaves out rewritten into ops it delegates,
the same maths, so that the XNNPACK peer runs the whole graph as it would for an edge user who did this work
(`bench --xnnpack`; the bench checks its output against PyTorch, as every peer's; tests/test_bench_lowering.py holds
the rewritten models to transformers).

As exported from transformers, ExecuTorch 1.5's XnnpackPartitioner leaves outside its delegate (MobileViT xx-small:
41 subgraphs and 58 ops outside):
- nn.LayerNorm and nn.GroupNorm(1, C) (no XNNPACK op): here their means as XNNPACK's global average pooling, which
  takes a 4-D tensor's two innermost dims, on a (rows, 1 or N, values, 1) view;
- MobileViT's 4-D torch.matmul (aten.matmul decomposes into expand_copy + bmm, and expand_copy is not taken): here
  a 3-D torch.bmm over (batch x heads, N, d), with the softmax on 3-D scores;
- MobileViTV2's linear attention: torch.split (here slices), softmax over a 4-D convolution output (which
  ExecuTorch 1.5.1 on XNNPACK computes along the wrong axis, silently: here on a 3-D view), the sum over patches
  (here a 3-D bmm) and expand_as (here broadcasting);
- MobileViTV2's nn.functional.unfold / fold (im2col / col2im): here reshapes and one 6-D permute each;
- the pooler's mean without keepdim: here keepdim, then a flatten.
Classification models are rewritten; the DeepLabV3 ones are lowered as exported.
"""

from __future__ import annotations

import math
import types

import torch
from torch import nn


class LayerNorm(nn.Module):
    """nn.LayerNorm over the last dim, its means as 4-D means over the two innermost dims."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x4 = x.reshape(-1, x.shape[-2], x.shape[-1], 1)
        centred = x4 - x4.mean(dim=[2, 3], keepdim=True)
        variance = (centred * centred).mean(dim=[2, 3], keepdim=True)
        return (centred * torch.rsqrt(variance + self.eps)).reshape(x.shape) * self.weight + self.bias


class SelfAttention(nn.Module):
    """MobileViTSelfAttention with 3-D products: (batch x heads, N, d)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.query, self.key, self.value = attention.query, attention.key, attention.value
        self.heads, self.size = attention.num_attention_heads, attention.attention_head_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, n, self.heads, self.size).transpose(1, 2).reshape(batch * self.heads, n, self.size)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.size), dim=-1)
        context = torch.bmm(probs, v).view(batch, self.heads, n, self.size).transpose(1, 2)
        return context.reshape(batch, n, self.heads * self.size)


class GroupNorm(nn.Module):
    """nn.GroupNorm(1, C) (MobileViTV2's layer norm over channels and pixels), its means as 4-D means."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def mean(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], 1, -1, 1).mean(dim=[2, 3], keepdim=True)

        centred = x - mean(x)
        scaled = centred * torch.rsqrt(mean(centred * centred) + self.eps)
        return scaled * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LinearSelfAttention(nn.Module):
    """MobileViTV2LinearSelfAttention on (batch, E, P, N) with slices, a 3-D softmax and a 3-D bmm."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.qkv_proj, self.out_proj, self.embed_dim = attention.qkv_proj, attention.out_proj, attention.embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv, e = self.qkv_proj(x), self.embed_dim
        query, key, value = qkv[:, :1], qkv[:, 1 : 1 + e], qkv[:, 1 + e :]
        batch, _, p, n = query.shape
        scores = torch.softmax(query.reshape(batch * p, 1, n), dim=-1)  # over the patches, one row per pixel
        keys = key.permute(0, 2, 1, 3).reshape(batch * p, e, n)
        context = torch.bmm(keys, scores.transpose(1, 2)).reshape(batch, p, e, 1).permute(0, 2, 1, 3)
        return self.out_proj(torch.relu(value) * context)


def unfolding(layer: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """MobileViTV2Layer.unfolding without im2col: (B, C, H, W) -> (B, C, ph * pw, patches)."""
    batch, channels, height, width = features.shape
    ph, pw = layer.patch_height, layer.patch_width
    grid = features.reshape(batch, channels, height // ph, ph, width // pw, pw).permute(0, 1, 3, 5, 2, 4)
    return grid.reshape(batch, channels, ph * pw, (height // ph) * (width // pw)), (height, width)


def folding(layer: nn.Module, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """MobileViTV2Layer.folding without col2im: unfolding's inverse."""
    batch, channels, _, _ = patches.shape
    (height, width), ph, pw = size, layer.patch_height, layer.patch_width
    grid = patches.reshape(batch, channels, ph, pw, height // ph, width // pw).permute(0, 1, 4, 2, 5, 3)
    return grid.reshape(batch, channels, height, width)


class Classifier(nn.Module):
    """MobileViT(V2)ForImageClassification from pixel_values to logits, its pooling a keepdim mean."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.body = getattr(model, "mobilevit", None) or model.mobilevitv2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.body.encoder(self.body.conv_stem(pixel_values), return_dict=False)[0]
        if hasattr(self.body, "conv_1x1_exp"):  # v1's last 1x1 expansion
            hidden = self.body.conv_1x1_exp(hidden)
        return self.model.classifier(hidden.mean(dim=[2, 3], keepdim=True).flatten(1))


def for_xnnpack(model: nn.Module) -> nn.Module | None:
    """The model as a pixel_values -> logits module of ops XNNPACK delegates, or None where no rewrite is written."""
    from transformers.models.mobilevit import modeling_mobilevit as v1
    from transformers.models.mobilevitv2 import modeling_mobilevitv2 as v2

    classifiers = (v1.MobileViTForImageClassification, v2.MobileViTV2ForImageClassification)
    if not isinstance(model, classifiers) or not (getattr(model, "mobilevit", None) or model.mobilevitv2).expand_output:
        return None
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, v1.MobileViTSelfAttention):
            setattr(parent, child, SelfAttention(module))
        elif isinstance(module, v2.MobileViTV2LinearSelfAttention):
            setattr(parent, child, LinearSelfAttention(module))
        elif isinstance(module, nn.LayerNorm):
            setattr(parent, child, LayerNorm(module))
        elif isinstance(module, nn.GroupNorm) and module.num_groups == 1:
            setattr(parent, child, GroupNorm(module))
        elif isinstance(module, v2.MobileViTV2Layer):  # the instance's own methods, called by its forward
            module.unfolding = types.MethodType(unfolding, module)
            module.folding = types.MethodType(folding, module)
    return Classifier(model).eval()
