"""mambaflow's own trained models, shipped with the package (models/checkpoints/<name>/).

Two Mamba target/draft pairs, one per architecture, trained on the CPython text corpus of
``mambaflow.data`` with the byte tokenizer (ids 0..255 bytes, 256 BOS, 257 EOS, 258 PAD;
vocabulary padded to 264 for Mamba1, 272 for Mamba2 — a draft shares its target's). They
are Hugging Face checkpoints (config.json + model.safetensors) read by the same
``load_checkpoint`` as downloaded ones. Large matrices are stored in float16 to keep each
file small; the loader widens them to float32. ``benchmarks/train_models.py`` retrains
them; ``benchmarks/eval_models.py`` measures them.

Two byte-level transformers (Llama architecture, transformers' LlamaForCausalLM) serve
the Mamba-drafter experiments (issue 15): ``gpt-target``, a transformer target whose
default draft is ``mamba1-draft``, and ``gpt-draft``, a transformer drafter of about
``mamba1-draft``'s quality for the baseline. Both have vocabulary 264, Mamba1's padded
byte vocabulary, so every Mamba1 model drafts for them (Mamba2's 272 rows do not match:
a draft must share the target's vocabulary). ``mambaflow train gpt-target`` retrains one
(recipes in benchmarks/train_models.py). Held-out bits/byte (benchmarks/eval_models.py,
full split): gpt-target 2.139 (mamba1-target 2.228, mamba2-target 2.167), gpt-draft
2.752 (mamba1-draft 2.746). gpt-target took 855 s of CPU on one thread (3200 steps of
4 x 256 tokens), gpt-draft 66 s.
"""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from mambaflow.errors import CheckpointError

from .config import MambaConfig, config_to_hf
from .loader import LM_HEAD, load_model
from .transformer import TransformerConfig, transformer_config

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"

# name -> (config, the target it drafts for or None). Sizes were chosen so each trains
# in under 15 minutes on 2 CPU cores (see benchmarks/train_models.py).
_M1_VOCAB, _M2_VOCAB = 264, 272
SHIPPED: dict[str, MambaConfig | TransformerConfig] = {
    "mamba1-target": MambaConfig("mamba1", d_model=192, n_layer=4, vocab_size=_M1_VOCAB,
                                 d_state=16),
    "mamba1-draft": MambaConfig("mamba1", d_model=128, n_layer=1, vocab_size=_M1_VOCAB,
                                d_state=16),
    "mamba2-target": MambaConfig("mamba2", d_model=192, n_layer=4, vocab_size=_M2_VOCAB,
                                 d_state=64, headdim=64, chunk_size=64),
    "mamba2-draft": MambaConfig("mamba2", d_model=128, n_layer=1, vocab_size=_M2_VOCAB,
                                d_state=32, headdim=32, chunk_size=64),
    "gpt-target": transformer_config("llama", d_model=192, n_layer=4, n_head=6, vocab_size=_M1_VOCAB,
                                     max_positions=2048, d_ff=512),
    "gpt-draft": transformer_config("llama", d_model=96, n_layer=2, n_head=3, vocab_size=_M1_VOCAB,
                                    max_positions=2048, d_ff=256),
}
PAIRS: dict[str, str] = {"mamba1-target": "mamba1-draft", "mamba2-target": "mamba2-draft",
                         "gpt-target": "mamba1-draft"}
DEFAULT_MODEL = "mamba1-target"

# Tensors stored as float16: the big matrices. The SSM parameters (A_log, D, dt biases),
# norms and conv weights stay float32.
_HALF_SUFFIXES = ("proj.weight", "embeddings.weight")


def checkpoint_dir(name: str) -> Path:
    """Folder of shipped model ``name`` (see SHIPPED)."""
    if name not in SHIPPED:
        raise CheckpointError(
            f"unknown shipped model {name!r}; shipped models: {', '.join(SHIPPED)}."
        )
    return CHECKPOINTS / name


def load_shipped(name: str = DEFAULT_MODEL) -> nn.Module:
    """The shipped model ``name`` as a float32 model in eval mode."""
    path = checkpoint_dir(name)
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(
            f"shipped model {name!r} has no weights at {path}; reinstall mambaflow or "
            "retrain it with `python benchmarks/train_models.py --only " + name + "`."
        )
    return load_model(path).eval()


def default_model() -> nn.Module:
    """The default model of ``mambaflow run``: the trained Mamba1 target."""
    return load_shipped(DEFAULT_MODEL)


def is_transformer_name(name: str) -> bool:
    """Whether shipped model `name` is a transformer (not a Mamba)."""
    return isinstance(SHIPPED.get(name), TransformerConfig)


def draft_for(target: str) -> str:
    """Name of the draft model paired with shipped target ``target``."""
    if target not in PAIRS:
        raise CheckpointError(
            f"{target!r} is not a shipped target; targets with drafts: {', '.join(PAIRS)}."
        )
    return PAIRS[target]


def save_compact(model: nn.Module, path, byte_level: bool = False) -> Path:
    """Write ``model`` like ``save_checkpoint`` (HF config.json + model.safetensors), with
    the large matrices in float16 (about half the size). ``load_checkpoint`` reads it
    back as float32; the loaded model is the one that is shipped and evaluated."""
    import json

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, MambaConfig):
        raise CheckpointError(
            f"save_compact: {type(model).__name__} has no MambaConfig in .config; pass a "
            "model made by build_model or load_checkpoint."
        )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(
        json.dumps(config_to_hf(cfg, byte_level), indent=2, sort_keys=True) + "\n")
    tensors = {}
    for k, v in model.state_dict().items():
        if k == LM_HEAD:
            continue
        v = v.detach().cpu().contiguous()
        tensors[k] = v.to(torch.float16) if k.endswith(_HALF_SUFFIXES) else v.float()
    safetensors.torch.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path
