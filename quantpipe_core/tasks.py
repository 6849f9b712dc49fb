"""What "accuracy" means for each model: the inputs it is scored on and a per-input score.

Every score is per input, so its mean is the metric and resampling inputs gives the noise.
A live run's sink scores microbatches as they arrive, in any number of passes over the data:
each task makes its own `RunningScore` (`Task.running_score()`), so a new task brings its own.

- Image classifiers on the digits' held-out part: ``top1`` (1 if the label is predicted).
- Sentence encoders on standard-library sentences, against the float32 embeddings:
  ``nn_agreement`` (1 if a sentence's nearest *other* sentence is the same one float32 picks;
  asking whether a sentence still retrieves itself saturates near 1 and hides damage) and
  ``cosine`` (cosine similarity to its float32 embedding).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from quantpipe_core.datasets import digits, stdlib_sentences
from quantpipe_core.models import Carry, SentenceTokenizer, StagedModel, model_dir


class Task(Protocol):
    metric: str | None  # the metric policies use (None: the inputs are not scored)
    metrics: tuple[str, ...]
    data: str  # what the inputs are, for people
    microbatches: list[Carry]

    def scores(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Per-input score of each metric, for the outputs on every microbatch in order."""
        ...

    def running_score(self) -> RunningScore:
        """A score for a live run's sink, fed one microbatch at a time."""
        ...


class RunningScore(Protocol):
    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        """The outputs of `microbatch` (counted from 0 over repeated passes of the data)."""
        ...

    def result(self) -> dict[str, Any]:
        """``metric``, ``measured_accuracy`` (None where nothing is scored) and ``inputs``;
        JSON-able."""
        ...


class DigitsTop1:
    """Top-1 accuracy on the held-out digits."""

    metric = "top1"
    metrics = ("top1",)

    def __init__(self, microbatch: int, samples: int | None = None, skip: int = 0) -> None:
        test = digits("test")
        chosen = _chosen(len(test.labels), samples, skip, "images")
        images, self.labels = test.images[chosen], test.labels[chosen]
        self.microbatches = [{"pixels": chunk} for chunk in images.split(microbatch)]
        self.data = f"{len(self.labels)} held-out images of scikit-learn's digits{_after(skip)}"

    def scores(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        return {"top1": (outputs.argmax(1) == self.labels).double().numpy()}

    def running_score(self) -> RunningTop1:
        return RunningTop1(self)


class RunningTop1:
    """Top-1 of the predictions so far, and the predictions (the runtime's tests compare them)."""

    def __init__(self, task: DigitsTop1) -> None:
        self.task = task
        self.size = inputs_in(task.microbatches[0])
        self.correct = self.inputs = 0
        self.predictions: dict[int, list[int]] = {}

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        start = (microbatch % len(self.task.microbatches)) * self.size
        predicted = outputs.argmax(1)
        self.correct += int((predicted == self.task.labels[start : start + len(outputs)]).sum())
        self.inputs += len(outputs)
        self.predictions[microbatch] = predicted.tolist()

    def result(self) -> dict[str, Any]:
        return {"metric": "top1", "measured_accuracy": self.correct / self.inputs if self.inputs
                else None, "inputs": self.inputs,
                "predictions": {str(k): v for k, v in self.predictions.items()}}


class SentenceFidelity:
    """Agreement of a sentence encoder's embeddings with its own float32 embeddings."""

    metric = "nn_agreement"
    metrics = ("nn_agreement", "cosine")

    def __init__(self, model: StagedModel, microbatch: int, samples: int | None = None,
                 skip: int = 0, tokens: int | None = None) -> None:
        every = stdlib_sentences()
        sentences = every[_chosen(len(every), samples, skip, "sentences")]
        tokenizer = SentenceTokenizer(model_dir(model.name), tokens)
        self.microbatches = [
            tokenizer(sentences[i : i + microbatch]) for i in range(0, len(sentences), microbatch)
        ]
        self.data = (f"{len(sentences)} first sentences of Python standard-library docstrings"
                     f"{_after(skip)}" + (f", cut at and padded to {tokens} tokens" if tokens
                                          else ""))
        self.reference = run_all(model, self.microbatches)
        self.reference_neighbours = nearest_other(self.reference)

    def scores(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        agree = nearest_other(outputs) == self.reference_neighbours
        cosine = F.cosine_similarity(outputs.double(), self.reference.double(), dim=1)
        return {"nn_agreement": agree.double().numpy(), "cosine": cosine.numpy()}

    def running_score(self) -> RunningAgreement:
        return RunningAgreement(self)


class RunningAgreement:
    """nn_agreement over the sentences seen so far (every one after a full pass), each with its
    latest embedding."""

    def __init__(self, task: SentenceFidelity) -> None:
        self.task = task
        self.size = inputs_in(task.microbatches[0])
        self.inputs = 0
        self.latest: dict[int, torch.Tensor] = {}

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        self.latest[microbatch % len(self.task.microbatches)] = outputs
        self.inputs += len(outputs)

    def result(self) -> dict[str, Any]:
        return {"metric": "nn_agreement", "measured_accuracy": self.agreement(),
                "inputs": self.inputs}

    def agreement(self) -> float | None:
        indices = sorted(self.latest)
        if sum(len(self.latest[i]) for i in indices) < 2:
            return None
        outputs = torch.cat([self.latest[i] for i in indices])
        rows = torch.cat([torch.arange(i * self.size, i * self.size + len(self.latest[i]))
                          for i in indices])
        reference = self.task.reference[rows]
        return float((nearest_other(outputs) == nearest_other(reference)).double().mean())


def nearest_other(embeddings: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar other row."""
    unit = F.normalize(embeddings.double(), dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-np.inf)
    return similarity.argmax(1)


def takes_digits(model: StagedModel) -> bool:
    """Whether an image model takes the digits' 8x8 grey images, the labelled images here."""
    return (model.embed.channels, model.embed.image_size) == (1, 8)


def _chosen(total: int, samples: int | None, skip: int, what: str) -> slice:
    """The inputs scored of `total`: `samples` of them (all if None) after the first `skip`; a
    ValueError if there are not that many, or none."""
    chosen = slice(skip, None if samples is None else skip + samples)
    count = len(range(total)[chosen])
    if not count or (samples is not None and count < samples):
        raise ValueError(f"asked for {samples or 'the'} {what} after the first {skip}, which "
                         f"leaves {count}: there are {total}")
    return chosen


def _after(skip: int) -> str:
    """How a task's data names a held-out part: the inputs after the first `skip`."""
    return f", after the first {skip}" if skip else ""


def task_for(model: StagedModel, microbatch: int, samples: int | None = None,
             skip: int = 0, tokens: int | None = None) -> Task:
    """The task QuantPipe scores `model` on, with `microbatch` inputs per microbatch: `samples`
    inputs (all if None) after the first `skip` (those a change was developed on, say); a text
    model's sentences cut at and padded to `tokens` where given (else to each microbatch's
    longest)."""
    if model.kind == "embedding":
        return SentenceFidelity(model, microbatch, samples, skip, tokens)
    if not takes_digits(model):
        raise ValueError(
            f"{model.name}: QuantPipe measures image classifiers on scikit-learn's 8x8 grey "
            f"digits only; this model takes {model.embed.channels}-channel "
            f"{model.embed.image_size}x{model.embed.image_size} images"
        )
    return DigitsTop1(microbatch, samples, skip)


class RandomImages:
    """Seeded random images, for image models that have no labelled data here (ViT-Base/16's
    ImageNet): they let the runtime time a pipeline of such a model, and score nothing."""

    metric = None
    metrics = ()

    def __init__(self, model: StagedModel, microbatch: int, count: int = 8) -> None:
        generator = torch.Generator().manual_seed(0)
        shape = (microbatch, model.embed.channels, model.embed.image_size, model.embed.image_size)
        self.microbatches = [{"pixels": torch.randn(shape, generator=generator)}
                             for _ in range(count)]
        self.data = (f"{count * microbatch} seeded random {'x'.join(map(str, shape[1:]))} images "
                     "(no labels: nothing is scored)")

    def scores(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        return {}

    def running_score(self) -> InputCount:
        return InputCount()


class InputCount:
    """Counts the inputs that reached the sink; scores nothing."""

    def __init__(self) -> None:
        self.inputs = 0

    def add(self, microbatch: int, outputs: torch.Tensor) -> None:
        self.inputs += len(outputs)

    def result(self) -> dict[str, Any]:
        return {"metric": None, "measured_accuracy": None, "inputs": self.inputs}


def inputs_for(model: StagedModel, microbatch: int, tokens: int | None = None) -> Task:
    """What the runtime feeds `model`: its scored task (a text model's sentences at `tokens`,
    the length the simulator sizes its frames with), or `RandomImages` for an image model
    without labelled data here."""
    if model.kind != "embedding" and not takes_digits(model):
        return RandomImages(model, microbatch)
    return task_for(model, microbatch, tokens=tokens)


def inputs_in(carry: Carry) -> int:
    """Inputs a microbatch holds (its tensors' first dimension; a data set's last may be short)."""
    return len(next(iter(carry.values())))


def sample_count(task: Task) -> int:
    """Inputs the task scores."""
    return sum(inputs_in(mb) for mb in task.microbatches)


def run_all(model: StagedModel, microbatches: list[Carry]) -> torch.Tensor:
    """The model's outputs on every microbatch, concatenated."""
    with torch.no_grad():
        return torch.cat([model(mb) for mb in microbatches])
