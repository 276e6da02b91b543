"""The transformers model with its few modules that XNNPACK's partitioner leaves out rewritten into ops it delegates,
the same maths, so that the XNNPACK peer runs the whole graph as it would for an edge user who did this work
(`bench --xnnpack`; `peers.xnnpack_program` checks the result against PyTorch, as every peer).

As exported from transformers, ExecuTorch 1.5's XnnpackPartitioner leaves outside its delegate (for MobileViT
xx-small: 41 subgraphs, 58 ops outside):
- nn.LayerNorm (no XNNPACK op): here the mean over the channels as XNNPACK's global average pooling, which takes a
  4-D tensor's two innermost dims, on a (rows, N, C, 1) view;
- the attention's 4-D torch.matmul (aten.matmul decomposes into expand_copy + bmm, and expand_copy is not taken):
  here a 3-D torch.bmm over (batch x heads, N, d), with the softmax on 3-D scores;
- the pooler's mean without keepdim: here keepdim, then a flatten.
Only MobileViT (v1) classification is rewritten so far; other models are lowered as exported.
"""

from __future__ import annotations

import math

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


class Classifier(nn.Module):
    """MobileViTForImageClassification from pixel_values to logits, its pooling a keepdim mean."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        body = self.model.mobilevit
        hidden = body.encoder(body.conv_stem(pixel_values), return_dict=False)[0]
        pooled = body.conv_1x1_exp(hidden).mean(dim=[2, 3], keepdim=True).flatten(1)
        return self.model.classifier(pooled)


def for_xnnpack(model: nn.Module) -> nn.Module | None:
    """The model as a pixel_values -> logits module of ops XNNPACK delegates, or None where no rewrite is written."""
    from transformers.models.mobilevit.modeling_mobilevit import MobileViTForImageClassification, MobileViTSelfAttention

    if not isinstance(model, MobileViTForImageClassification) or not model.mobilevit.expand_output:
        return None
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, MobileViTSelfAttention):
            setattr(parent, child, SelfAttention(module))
        elif isinstance(module, nn.LayerNorm):
            setattr(parent, child, LayerNorm(module))
    return Classifier(model).eval()
