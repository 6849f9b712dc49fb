"""The transformer encoder block, cut into the three units a pipeline may split between.

A block is ``attention half -> MLP up-projection + activation -> MLP down-projection``. Each
piece is a unit, so a link can sit after the attention half (``blockN.attn``), after the wide
post-activation tensor (``blockN.gelu``) or after the whole block (``blockN.out``).

Units pass a *carry*: a dict of tensors. ``hidden`` is the activation a link quantizes;
``residual`` rides along between the up- and down-projection (the down-projection adds it back);
``mask`` (text models) marks real tokens with 1.0 and padding with 0.0 and is always sent exactly.

ViT and DeiT put LayerNorm before each half (pre-LN); BERT puts it after the residual sum
(post-LN). Parameter names follow Hugging Face's layout, so its weights load by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Carry = dict[str, torch.Tensor]

ACTIVATIONS = {
    "gelu": nn.GELU(),
    "gelu_new": nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": nn.GELU(approximate="tanh"),
    "relu": nn.ReLU(),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of one encoder; the field names are Hugging Face's config.json keys."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pre_norm: bool = True

    @classmethod
    def from_hf(cls, config: dict[str, Any], *, pre_norm: bool) -> EncoderConfig:
        """The encoder part of a Hugging Face config.json (ViT, DeiT and BERT share the keys)."""
        return cls(
            hidden_size=config["hidden_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            hidden_act=config.get("hidden_act", "gelu"),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            pre_norm=pre_norm,
        )

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}"
            )


class SelfAttention(nn.Module):
    """Multi-head self-attention; padding keys (mask 0) get no weight."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(width // self.heads)
        if mask is not None:
            scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        context = scores.softmax(dim=-1) @ v
        return context.transpose(1, 2).reshape(batch, tokens, width)


class AttentionHalf(nn.Module):
    """First unit of a block: self-attention with its residual connection and LayerNorm."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SelfAttention(config)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, carry: Carry) -> Carry:
        x, mask = carry["hidden"], carry.get("mask")
        if self.pre_norm:
            x = x + self.output(self.attention(self.norm(x), mask))
        else:
            x = self.norm(x + self.output(self.attention(x, mask)))
        return {**carry, "hidden": x}


class MlpUp(nn.Module):
    """Second unit: LayerNorm (pre-LN) and the up-projection with its activation.

    Its output is the wide post-activation tensor; the block's input travels on as ``residual``.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_norm
            else nn.Identity()
        )
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, carry: Carry) -> Carry:
        x = carry["hidden"]
        return {**carry, "hidden": self.activation(self.dense(self.norm(x))), "residual": x}


class MlpDown(nn.Module):
    """Third unit: the down-projection, added back to the residual (then LayerNorm, post-LN)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = (
            nn.Identity() if config.pre_norm
            else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        )

    def forward(self, carry: Carry) -> Carry:
        rest = {k: v for k, v in carry.items() if k != "residual"}
        x = carry["residual"] + self.dense(carry["hidden"])
        return {**rest, "hidden": self.norm(x)}


class Block(nn.Module):
    """One encoder block as its three units, in order."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attn = AttentionHalf(config)
        self.gelu = MlpUp(config)
        self.out = MlpDown(config)

    def units(self, index: int) -> list[tuple[str, nn.Module]]:
        """The named units of block `index`; each name is the cut id after that unit."""
        return [(f"block{index}.{name}", unit) for name, unit in self.named_children()]


def hf_block_names(prefix: str, index: int, pre_norm: bool) -> dict[str, str]:
    """Map our module names in block `index` to Hugging Face's (``prefix`` e.g. "vit.")."""
    attention = "attention.attention." if pre_norm else "attention.self."
    ours = {
        "attn.attention.query": attention + "query",
        "attn.attention.key": attention + "key",
        "attn.attention.value": attention + "value",
        "attn.output": "attention.output.dense",
        "attn.norm": "layernorm_before" if pre_norm else "attention.output.LayerNorm",
        "gelu.dense": "intermediate.dense",
        "out.dense": "output.dense",
    }
    if pre_norm:
        ours["gelu.norm"] = "layernorm_after"
    else:
        ours["out.norm"] = "output.LayerNorm"
    return {f"blocks.{index}.{k}": f"{prefix}encoder.layer.{index}.{v}" for k, v in ours.items()}
