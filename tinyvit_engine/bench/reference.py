"""transformers models with real-scale random weights, saved as the Hub saves checkpoints: the reference that the
parity tests and the benchmark compare the engine with. Needs torch and transformers (test/bench extras); nothing
in the engine imports it.

transformers' default init (std 0.02, BatchNorm at identity) shrinks MobileViT activations towards denormals, which
would make a parity test pass on near-zero outputs and a timing measure denormal arithmetic. Instead: fan-in-scaled
weights, random norm affines, and BatchNorm running statistics taken from a forward pass on a random batch, so every
layer sees activations of order 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

# the published configs (Apple's Hub checkpoints), and one of our own with other widths
V1_CONFIGS = {
    "xx-small": dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0),
    "x-small": dict(hidden_sizes=[96, 120, 144], neck_hidden_sizes=[16, 32, 48, 64, 80, 96, 384]),
    "small": dict(),
    "custom": dict(
        hidden_sizes=[36, 60, 84],
        neck_hidden_sizes=[8, 24, 24, 40, 56, 72, 200],
        num_attention_heads=3,
        mlp_ratio=1.5,
        expand_ratio=3.0,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    ),
}
PREPROCESSOR = {
    "crop_size": {"height": 256, "width": 256},
    "do_center_crop": True,
    "do_flip_channel_order": True,
    "do_rescale": True,
    "do_resize": True,
    "image_processor_type": "MobileViTImageProcessor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 288},
}


@torch.no_grad()
def realistic_init(model: torch.nn.Module, seed: int, image_size: int = 96) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.5 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)):
            m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    # BatchNorm running statistics from one batch (momentum 1: running stats = this batch's stats)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    channels = model.config.num_channels
    model(torch.rand((4, channels, image_size, image_size), generator=g))
    model.eval()
    for bn in bns:
        bn.momentum = 0.1
        # a little spread, so that a wrong fold (mean / var swapped, eps dropped) shows
        bn.running_var.mul_(1 + 0.1 * torch.rand(bn.running_var.shape, generator=g))
    return model


def v1_model(name_or_kwargs, seed: int = 0, num_labels: int = 10, task: str = "classification", **extra):
    kwargs = V1_CONFIGS[name_or_kwargs] if isinstance(name_or_kwargs, str) else name_or_kwargs
    return _model("MobileViT", {**kwargs, **extra}, seed, num_labels, task)


def v2_model(width: float = 1.0, seed: int = 0, num_labels: int = 10, task: str = "classification", **extra):
    return _model("MobileViTV2", {"width_multiplier": width, **extra}, seed, num_labels, task)


def _model(family: str, kwargs: dict, seed: int, num_labels: int, task: str):
    config = getattr(transformers, f"{family}Config")(**kwargs, num_labels=num_labels)
    suffix = {"classification": "ForImageClassification", "base": "Model", "segmentation": "ForSemanticSegmentation"}[
        task
    ]
    torch.manual_seed(seed)
    return realistic_init(getattr(transformers, family + suffix)(config), seed)


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def logits_only(model: torch.nn.Module) -> torch.nn.Module:
    """The model as a module from pixel_values to logits alone (what torch.export-based runtimes take)."""
    return _Logits(model).eval()


def save_checkpoint(model, path: Path, safetensors: bool = True) -> Path:
    """Save as a Hub checkpoint directory: config.json, weights, preprocessor_config.json.

    transformers 5 only writes model.safetensors; Apple's repositories ship pytorch_model.bin, which is
    torch.save(state_dict) (the zip format), so that is what safetensors=False writes.
    """
    if safetensors:
        model.save_pretrained(path)
    else:
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return path
