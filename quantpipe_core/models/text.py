"""Tokenizing sentences for BERT-family models from the folder's own tokenizer.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer

from quantpipe_core.models.encoder import Carry


class SentenceTokenizer:
    """Turns sentences into the ``embed`` unit's input: padded token ids and the padding mask.

    Sequences are cut at the folder's ``max_seq_length`` (sentence-transformers' setting in
    sentence_bert_config.json) or else 512, as sentence-transformers does, and a microbatch is
    padded to its longest. With `length` every microbatch is cut at and padded to `length`
    tokens: its frames then have the one size the simulator gives them (``[model] tokens``).
    """

    def __init__(self, folder: str | Path, length: int | None = None) -> None:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"{folder} has no tokenizer.json; a text model needs one")
        self.max_length = 512
        settings = folder / "sentence_bert_config.json"
        if settings.is_file():
            self.max_length = json.loads(settings.read_text()).get("max_seq_length", 512)
        self.tokenizer = Tokenizer.from_file(str(path))
        if length is not None:
            self.max_length = length
        self.length = length
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()

    def __call__(self, sentences: Sequence[str]) -> Carry:
        encodings = self.tokenizer.encode_batch(list(sentences))
        length = self.length or max(len(e.ids) for e in encodings)
        ids = torch.zeros(len(encodings), length, dtype=torch.long)
        mask = torch.zeros(len(encodings), length)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
            mask[row, : len(encoding.ids)] = 1.0
        return {"input_ids": ids, "mask": mask}
