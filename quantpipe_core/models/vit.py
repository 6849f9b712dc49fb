"""ViT and DeiT image classifiers (Dosovitskiy et al. 2021; Touvron et al. 2021) as units.

Patch embedding with a class token (and DeiT's distillation token) and learned positions, a
pre-LN encoder, then a final LayerNorm and a linear classifier on the class token; DeiT trained
with a teacher averages the class-token and distillation-token classifiers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from quantpipe_core.models.encoder import Carry, EncoderConfig, hf_block_names
from quantpipe_core.models.staged import StagedModel


class PatchEmbeddings(nn.Module):
    """Non-overlapping patches projected to the model width by one strided convolution."""

    def __init__(self, channels: int, patch: int, width: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, width, kernel_size=patch, stride=patch)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class ImageEmbeddings(nn.Module):
    """The ``embed`` unit: pixels -> class (and distillation) token, patch tokens, positions."""

    def __init__(self, config: dict[str, Any], distilled: bool) -> None:
        super().__init__()
        width = config["hidden_size"]
        self.image_size = config["image_size"]
        self.channels = config.get("num_channels", 3)
        patches = (self.image_size // config["patch_size"]) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, width)) if distilled else None
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, patches + 1 + int(distilled), width)
        )
        self.patch_embeddings = PatchEmbeddings(self.channels, config["patch_size"], width)

    def forward(self, carry: Carry) -> Carry:
        patches = self.patch_embeddings(carry["pixels"])
        batch = patches.shape[0]
        extra = [self.cls_token.expand(batch, -1, -1)]
        if self.distillation_token is not None:
            extra.append(self.distillation_token.expand(batch, -1, -1))
        return {"hidden": torch.cat([*extra, patches], dim=1) + self.position_embeddings}


class ClassifierHead(nn.Module):
    """The ``head`` unit: final LayerNorm, then logits from the class (and distillation) token."""

    def __init__(self, config: dict[str, Any], classes: int, with_teacher: bool) -> None:
        super().__init__()
        width = config["hidden_size"]
        self.layernorm = nn.LayerNorm(width, eps=config.get("layer_norm_eps", 1e-12))
        self.classifier = nn.Linear(width, classes)
        self.distillation_classifier = nn.Linear(width, classes) if with_teacher else None

    def forward(self, carry: Carry) -> Carry:
        x = self.layernorm(carry["hidden"])
        logits = self.classifier(x[:, 0])
        if self.distillation_classifier is not None:
            logits = (logits + self.distillation_classifier(x[:, 1])) / 2
        return {"hidden": logits}


def class_count(config: dict[str, Any]) -> int:
    """Number of classes from a Hugging Face config (``id2label`` or ``num_labels``)."""
    if "id2label" in config:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def build_vit(name: str, config: dict[str, Any], *, with_teacher: bool = False) -> StagedModel:
    """A ViT (``model_type`` "vit") or DeiT ("deit") classifier from a Hugging Face config."""
    distilled = config.get("model_type") == "deit"
    if with_teacher and not distilled:
        raise ValueError("only DeiT has a distillation token to feed a teacher classifier")
    encoder = EncoderConfig.from_hf(config, pre_norm=True)
    tokens = (config["image_size"] // config["patch_size"]) ** 2 + 1 + int(distilled)
    return StagedModel(
        name,
        "classifier",
        encoder,
        ImageEmbeddings(config, distilled),
        ClassifierHead(config, class_count(config), with_teacher),
        tokens,
    )


def hf_names(model: StagedModel, prefix: str, with_teacher: bool) -> dict[str, str]:
    """Our module names -> Hugging Face's, for ``ViTForImageClassification`` and DeiT's."""
    names = {
        "embed.cls_token": f"{prefix}embeddings.cls_token",
        "embed.distillation_token": f"{prefix}embeddings.distillation_token",
        "embed.position_embeddings": f"{prefix}embeddings.position_embeddings",
        "embed.patch_embeddings": f"{prefix}embeddings.patch_embeddings",
        "head.layernorm": f"{prefix}layernorm",
        "head.classifier": "cls_classifier" if with_teacher else "classifier",
        "head.distillation_classifier": "distillation_classifier",
    }
    for index in range(len(model.blocks)):
        names.update(hf_block_names(prefix, index, pre_norm=True))
    return names
