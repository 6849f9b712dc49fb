"""A transformer as a sequence of named units that a pipeline cuts into stages.

The units are ``embed``, then ``blockN.attn``, ``blockN.gelu``, ``blockN.out`` for every block,
then ``head``. A unit's name is also the id of the cut right after it: the partitioner, the
accuracy profiles and the configs all name cuts this way. A stage is a contiguous range of units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from quantpipe_core.models.encoder import Block, Carry, EncoderConfig


@dataclass(frozen=True)
class CarrySpec:
    """One tensor crossing a cut, for one microbatch.

    ``exact`` tensors (the padding mask) are sent losslessly; the others at the link's bitwidth.
    """

    name: str
    shape: tuple[int, ...]
    exact: bool = False


class StagedModel(nn.Module):
    """Embedding, encoder blocks and head, runnable as a whole or unit range by unit range.

    ``kind`` says what the head returns: ``"classifier"`` (logits) or ``"embedding"`` (one
    vector per input, e.g. a sentence embedding). ``tokens`` is the sequence length of image
    models (fixed by the patch grid) or ``None`` for text models, whose length varies.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        encoder: EncoderConfig,
        embed: nn.Module,
        head: nn.Module,
        tokens: int | None,
    ) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.encoder = encoder
        self.tokens = tokens
        self.embed = embed
        self.blocks = nn.ModuleList(Block(encoder) for _ in range(encoder.num_hidden_layers))
        self.head = head
        self._units = [("embed", self.embed)]
        for index, block in enumerate(self.blocks):
            self._units += block.units(index)
        self._units.append(("head", self.head))

    @property
    def unit_names(self) -> list[str]:
        """Every unit's name in order; all but ``head`` are also cut ids."""
        return [name for name, _ in self._units]

    @property
    def cut_ids(self) -> list[str]:
        """The places a link may go: after every unit except the head."""
        return self.unit_names[:-1]

    def cut_index(self, cut_id: str) -> int:
        """Index of the unit the cut `cut_id` follows."""
        try:
            return self.cut_ids.index(cut_id)
        except ValueError:
            raise ValueError(
                f"{self.name} has no cut {cut_id!r}; cuts are embed, blockN.attn, blockN.gelu, "
                f"blockN.out for N in 0..{len(self.blocks) - 1}"
            ) from None

    def run(self, carry: Carry, start: int = 0, stop: int | None = None) -> Carry:
        """Run units ``start`` up to (not including) ``stop``."""
        for _, unit in self._units[start:stop]:
            carry = unit(carry)
        return carry

    def forward(self, carry: Carry) -> torch.Tensor:
        return self.run(carry)["hidden"]

    def split(self, cuts: Sequence[str]) -> list[Stage]:
        """The stages that links after `cuts` (in model order) make."""
        indices = [self.cut_index(c) for c in cuts]
        if indices != sorted(set(indices)):
            raise ValueError(f"cuts must be distinct and in model order, got {list(cuts)}")
        bounds = [0, *(i + 1 for i in indices), len(self._units)]
        return [Stage(self._units[a:b]) for a, b in pairwise(bounds)]

    def carry_specs(self, cut_id: str, batch: int, tokens: int | None = None) -> list[CarrySpec]:
        """The tensors that cross cut `cut_id` for a microbatch of `batch` inputs.

        Text models need `tokens` (the padded sequence length); image models know theirs.
        """
        self.cut_index(cut_id)
        tokens = self.tokens if self.tokens is not None else tokens
        if tokens is None:
            raise ValueError(f"{self.name} is a text model: give the sequence length (tokens)")
        width = self.encoder.hidden_size
        if cut_id.endswith(".gelu"):
            specs = [
                CarrySpec("hidden", (batch, tokens, self.encoder.intermediate_size)),
                CarrySpec("residual", (batch, tokens, width)),
            ]
        else:
            specs = [CarrySpec("hidden", (batch, tokens, width))]
        if self.tokens is None:
            specs.append(CarrySpec("mask", (batch, tokens), exact=True))
        return specs


class Stage(nn.Module):
    """A contiguous run of a model's units: what one device runs. It holds only its own units,
    so a device that keeps a stage and drops the model keeps only that stage's weights."""

    def __init__(self, units: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.unit_names = [name for name, _ in units]
        self.units = nn.ModuleList(unit for _, unit in units)

    def forward(self, carry: Carry) -> Carry:
        for unit in self.units:
            carry = unit(carry)
        return carry
