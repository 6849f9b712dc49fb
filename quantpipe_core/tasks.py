"""What "accuracy" means for each model: the inputs it is scored on and a per-input score.

Every score is per input, so its mean is the metric and resampling inputs gives the noise.

- Image classifiers on the digits' held-out part: ``top1`` (1 if the label is predicted).
- Sentence encoders on standard-library sentences, against the float32 embeddings:
  ``nn_agreement`` (1 if a sentence's nearest *other* sentence is the same one float32 picks)
  and ``cosine`` (cosine similarity to its float32 embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from quantpipe_core.datasets import digits, stdlib_sentences
from quantpipe_core.models import Carry, SentenceTokenizer, StagedModel, model_dir


@dataclass
class Task:
    """Inputs in microbatches and how to score the model's outputs on them."""

    name: str
    metric: str
    metrics: tuple[str, ...]
    data: str
    microbatches: list[Carry]
    labels: torch.Tensor | None = None
    reference: torch.Tensor | None = field(default=None, repr=False)

    @property
    def samples(self) -> int:
        return sum(len(next(iter(mb.values()))) for mb in self.microbatches)

    def scores(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-input score of each metric for the model's outputs on every microbatch."""
        if self.labels is not None:
            return {"top1": (outputs.argmax(1) == self.labels).double().numpy()}
        assert self.reference is not None
        cosine = F.cosine_similarity(outputs.double(), self.reference.double(), dim=1)
        agree = nearest_other(outputs) == nearest_other(self.reference)
        return {
            "nn_agreement": agree.double().numpy(),
            "cosine": cosine.numpy(),
        }


def nearest_other(embeddings: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar other row."""
    unit = F.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-np.inf)
    return similarity.argmax(1)


def task_for(model: StagedModel, microbatch: int, samples: int | None = None) -> Task:
    """The task QuantPipe scores `model` on, with `microbatch` inputs per microbatch."""
    if model.kind == "embedding":
        sentences = stdlib_sentences(samples)
        tokenizer = SentenceTokenizer(model_dir(model.name))
        batches = [
            tokenizer(sentences[i : i + microbatch]) for i in range(0, len(sentences), microbatch)
        ]
        task = Task(
            "sentences", "nn_agreement", ("nn_agreement", "cosine"),
            f"{len(sentences)} first sentences of Python standard-library docstrings",
            batches,
        )
        task.reference = run_all(model, batches)
        return task
    if (model.embed.channels, model.embed.image_size) != (1, 8):
        raise ValueError(
            f"{model.name}: QuantPipe measures image classifiers on scikit-learn's 8x8 grey "
            f"digits only; this model takes {model.embed.channels}-channel "
            f"{model.embed.image_size}x{model.embed.image_size} images"
        )
    test = digits("test")
    images, labels = test.images[:samples], test.labels[:samples]
    return Task(
        "digits", "top1", ("top1",),
        f"{len(labels)} held-out images of scikit-learn's digits",
        [{"pixels": chunk} for chunk in images.split(microbatch)],
        labels=labels,
    )


def run_all(model: StagedModel, microbatches: list[Carry]) -> torch.Tensor:
    """The model's outputs on every microbatch, concatenated."""
    with torch.no_grad():
        return torch.cat([model(mb) for mb in microbatches])
