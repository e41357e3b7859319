"""Checkpoints and tokenizers saved by transformers itself, from tiny configs (nothing is
downloaded): what a user's real Hugging Face folder looks like, for both architectures."""

from __future__ import annotations

from pathlib import Path

import pytest

VOCAB = 300  # more ids than bytes, and not a multiple of the pad (8 / 16): padded rows exist
WORDS = [f"w{i}" for i in range(VOCAB - 1)]


def hf_model(arch: str, seed: int = 0):
    """transformers' own MambaForCausalLM / Mamba2ForCausalLM, tiny, random, eval."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(seed)
    if arch == "mamba1":
        cfg = transformers.MambaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, state_size=8)
        return transformers.MambaForCausalLM(cfg).eval()
    cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, state_size=16,
                                    head_dim=16, n_groups=2, num_heads=8, expand=2, chunk_size=8,
                                    tie_word_embeddings=True)
    return transformers.Mamba2ForCausalLM(cfg).eval()


def save_hf_checkpoint(path: Path, arch: str, tokenizer: bool = True, seed: int = 0):
    """Save a tiny transformers model (and, with `tokenizer`, a word-level tokenizer of
    VOCAB ids saved by transformers' fast tokenizer) to `path`; returns the HF model."""
    transformers = pytest.importorskip("transformers")
    model = hf_model(arch, seed)
    model.save_pretrained(path)
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({"<unk>": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(path)
    return model
