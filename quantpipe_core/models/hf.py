"""Hugging Face folders (config.json + model.safetensors) in and out, never a download.

A folder's ``model_type`` picks its family in `FAMILIES`: "vit" and "deit" (image classifiers
with their classification head) or "bert" (sentence encoder with mean pooling; unit length if the
folder's sentence-transformers ``modules.json`` lists a Normalize module). A new family is one
`Family` entry there, with its builder module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from quantpipe_core.models import bert, vit
from quantpipe_core.models.staged import StagedModel

WEIGHTS_FILE = "model.safetensors"
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Family:
    """How folders of one Hugging Face ``model_type`` become a staged model."""

    # (name, config.json, the weights, folder) -> the model and its Hugging Face names
    build: Callable[[str, dict[str, Any], Tensors, Path], tuple[StagedModel, dict[str, str]]]
    # (model, model_type, prefix or None for the family's own) -> our names -> Hugging Face's
    hf_names: Callable[[StagedModel, str, str | None], dict[str, str]]


def _build_encoder(
    name: str, config: dict[str, Any], tensors: Tensors, folder: Path
) -> tuple[StagedModel, dict[str, str]]:
    prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
    modules = folder / "modules.json"
    normalize = modules.is_file() and "Normalize" in modules.read_text()
    model = bert.build_bert(name, config, normalize=normalize)
    return model, bert.hf_names(model, prefix)


def _encoder_names(model: StagedModel, model_type: str, prefix: str | None) -> dict[str, str]:
    return bert.hf_names(model, "" if prefix is None else prefix)


def _build_classifier(
    name: str, config: dict[str, Any], tensors: Tensors, folder: Path
) -> tuple[StagedModel, dict[str, str]]:
    if "classifier.weight" not in tensors and "cls_classifier.weight" not in tensors:
        raise ValueError(
            f"{folder}: no classifier weights; QuantPipe runs image models with their head "
            "(ViTForImageClassification, DeiTForImageClassification[WithTeacher])"
        )
    with_teacher = "cls_classifier.weight" in tensors
    model = vit.build_vit(name, config, with_teacher=with_teacher)
    return model, vit.hf_names(model, f"{config['model_type']}.", with_teacher)


def _classifier_names(model: StagedModel, model_type: str, prefix: str | None) -> dict[str, str]:
    with_teacher = model.head.distillation_classifier is not None
    return vit.hf_names(model, f"{model_type}." if prefix is None else prefix, with_teacher)


IMAGE_CLASSIFIER = Family(_build_classifier, _classifier_names)
FAMILIES = {
    "vit": IMAGE_CLASSIFIER,
    "deit": IMAGE_CLASSIFIER,
    "bert": Family(_build_encoder, _encoder_names),
}
SUPPORTED_TYPES = tuple(FAMILIES)


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, with a clear error if it is missing or not a model config."""
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a model folder: it has no config.json")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read it: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object (a model config), got "
                         f"{type(config).__name__}")
    if config.get("model_type") not in SUPPORTED_TYPES:
        raise ValueError(
            f"{path}: model_type {config.get('model_type')!r} is not supported; "
            f"QuantPipe loads {', '.join(SUPPORTED_TYPES)}"
        )
    return config


def load_folder(folder: str | Path, name: str | None = None) -> StagedModel:
    """Build the model a Hugging Face folder describes and load its safetensors weights."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"{folder} has no {WEIGHTS_FILE} (QuantPipe reads safetensors only)")
    with safe_open(str(weights), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    family = FAMILIES[config["model_type"]]
    model, names = family.build(name or folder.name, config, tensors, folder)
    _load_state(model, names, tensors, weights)
    return model.eval()


def save_folder(model: StagedModel, folder: str | Path, config: dict[str, Any]) -> Path:
    """Write `model` as a Hugging Face folder that `load_folder` (and transformers) can read."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = hf_names(model, config)
    state = {
        _rename(key, names): value.detach().contiguous()
        for key, value in model.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def hf_names(
    model: StagedModel, config: dict[str, Any], prefix: str | None = None
) -> dict[str, str]:
    """Our module names -> the Hugging Face names of a classification/base model."""
    model_type = config["model_type"]
    return FAMILIES[model_type].hf_names(model, model_type, prefix)


def _rename(key: str, names: dict[str, str]) -> str:
    """Our parameter name -> Hugging Face's, by its longest mapped prefix."""
    if key in names:
        return names[key]
    module, _, leaf = key.rpartition(".")
    while module and module not in names:
        module, _, parent = module.rpartition(".")
        leaf = f"{parent}.{leaf}"
    if not module:
        raise KeyError(f"no Hugging Face name for parameter {key}")
    return f"{names[module]}.{leaf}"


def _load_state(
    model: StagedModel, names: dict[str, str], tensors: dict[str, torch.Tensor], source: Path
) -> None:
    """Copy every parameter from `tensors`; old checkpoints' LayerNorm gamma/beta are accepted."""
    legacy = {"weight": "gamma", "bias": "beta"}
    state = {}
    missing = []
    for key, param in model.state_dict().items():
        hf_key = _rename(key, names)
        stem, _, leaf = hf_key.rpartition(".")
        found = tensors.get(hf_key, tensors.get(f"{stem}.{legacy.get(leaf, leaf)}"))
        if found is None:
            missing.append(hf_key)
        elif found.shape != param.shape:
            raise ValueError(
                f"{source}: {hf_key} has shape {tuple(found.shape)}, the config implies "
                f"{tuple(param.shape)}"
            )
        else:
            state[key] = found.to(param.dtype)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{source}: {len(missing)} weights missing: {shown}")
    model.load_state_dict(state)
