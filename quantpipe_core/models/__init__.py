"""Transformer encoders as sequences of cuttable units, and the models QuantPipe ships.

- `load_model(name_or_folder)`: ``digits-vit``, ``minilm``, ``vit-base`` or a Hugging Face folder;
- `StagedModel`: units ``embed``, ``blockN.attn``, ``blockN.gelu``, ``blockN.out``, ``head``; a
  unit's name is the id of the cut after it; `split(cuts)` gives the stages;
- `load_folder` / `save_folder`: Hugging Face layout (config.json + model.safetensors);
- `SentenceTokenizer`: input for text models.
"""

from quantpipe_core.models.encoder import Carry
from quantpipe_core.models.hf import load_folder, save_folder
from quantpipe_core.models.load import BUILTIN_MODELS, load_model, model_dir
from quantpipe_core.models.staged import CarrySpec, Stage, StagedModel
from quantpipe_core.models.text import SentenceTokenizer

__all__ = [
    "BUILTIN_MODELS",
    "Carry",
    "CarrySpec",
    "SentenceTokenizer",
    "Stage",
    "StagedModel",
    "load_folder",
    "load_model",
    "model_dir",
    "save_folder",
]
