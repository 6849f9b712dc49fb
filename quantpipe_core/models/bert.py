"""BERT-family sentence encoders (Devlin et al. 2019; sentence-transformers pooling) as units.

Word, position and token-type embeddings with LayerNorm, a post-LN encoder, then mean pooling
over real tokens (padding excluded) and, as all-MiniLM-L6-v2 does, L2 normalization.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from quantpipe_core.models.encoder import Carry, EncoderConfig, hf_block_names
from quantpipe_core.models.staged import StagedModel


class TextEmbeddings(nn.Module):
    """The ``embed`` unit: token ids (and the padding mask, passed on) -> first hidden states."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        width = config["hidden_size"]
        self.word_embeddings = nn.Embedding(config["vocab_size"], width)
        self.position_embeddings = nn.Embedding(config.get("max_position_embeddings", 512), width)
        self.token_type_embeddings = nn.Embedding(config.get("type_vocab_size", 2), width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.get("layer_norm_eps", 1e-12))

    def forward(self, carry: Carry) -> Carry:
        ids = carry["input_ids"]
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(torch.zeros_like(ids))
        )
        return {"hidden": self.LayerNorm(x), "mask": carry["mask"]}


class MeanPoolingHead(nn.Module):
    """The ``head`` unit: mean of the real tokens' last hidden states, optionally unit length."""

    def __init__(self, normalize: bool) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, carry: Carry) -> Carry:
        mask = carry["mask"].to(carry["hidden"].dtype)[..., None]
        pooled = (carry["hidden"] * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return {"hidden": F.normalize(pooled, dim=-1) if self.normalize else pooled}


def build_bert(name: str, config: dict[str, Any], *, normalize: bool) -> StagedModel:
    """A sentence encoder from a Hugging Face BERT config (``model_type`` "bert")."""
    encoder = EncoderConfig.from_hf(config, pre_norm=False)
    return StagedModel(
        name, "embedding", encoder, TextEmbeddings(config), MeanPoolingHead(normalize), None
    )


def hf_names(model: StagedModel, prefix: str) -> dict[str, str]:
    """Our module names -> Hugging Face's ``BertModel`` names (``prefix`` "bert." or "")."""
    names = {
        f"embed.{part}": f"{prefix}embeddings.{part}"
        for part in (
            "word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"
        )
    }
    for index in range(len(model.blocks)):
        names.update(hf_block_names(prefix, index, pre_norm=False))
    return names
