"""The shipped byte-level models (Mamba pairs, and the transformers gpt-target /
gpt-draft): they load, they are good language models (target better than its draft,
every one far below a unigram model), they talk, and the Mambas' training scans equal
the inference scans."""

import json
from pathlib import Path

import pytest
import torch

from mambaflow.data import TOKENIZER, VOCAB_SIZE, bits_per_byte, load_corpus, unigram_bits_per_byte
from mambaflow.errors import CheckpointError
from mambaflow.models import Mamba1LM, MambaConfig, load_model
from mambaflow.models.zoo import (DEFAULT_MODEL, PAIRS, SHIPPED, checkpoint_dir, default_model,
                                  draft_for, load_shipped)

MAX_FILE = 8 * 1024 * 1024
WINDOW = 256
SLICE_WINDOWS = 6  # ~1.5 KB of held-out text: enough to order the models, fast on 2 cores


@pytest.fixture(scope="module")
def models():
    return {name: load_shipped(name) for name in SHIPPED}


@pytest.fixture(scope="module")
def heldout_slice():
    corpus = load_corpus()
    return corpus.tokens("heldout")[: SLICE_WINDOWS * WINDOW], unigram_bits_per_byte(corpus)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_checkpoint_loads(name, models):
    path = checkpoint_dir(name)
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").stat().st_size < MAX_FILE
    m = models[name]
    assert m.config == SHIPPED[name]
    assert m.config.vocab_size >= VOCAB_SIZE
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in m.parameters())
    assert not m.training
    # The same loader as downloaded HF checkpoints, with an HF config.json.
    assert json.loads((path / "config.json").read_text())["model_type"] in ("mamba", "mamba2", "llama")
    assert load_model(path).config == m.config


def test_pairs_share_vocabulary_and_default():
    for target, draft in PAIRS.items():
        assert draft_for(target) == draft
        t, d = SHIPPED[target], SHIPPED[draft]
        assert t.vocab_size == d.vocab_size  # a Mamba drafts for a transformer too (gpt-target)
        assert d.n_layer < t.n_layer and d.d_model <= t.d_model
    assert DEFAULT_MODEL == "mamba1-target"
    assert isinstance(default_model(), Mamba1LM)
    with pytest.raises(CheckpointError, match="unknown shipped model"):
        load_shipped("gpt-5")
    with pytest.raises(CheckpointError, match="not a shipped target"):
        draft_for("mamba1-draft")


def test_heldout_bits_per_byte(models, heldout_slice):
    held, unigram = heldout_slice
    bpb = {n: bits_per_byte(m, held, window=WINDOW,
                            scan="fused" if m.config.arch == "mamba1" else "chunked")
           for n, m in models.items()}
    for target, draft in [*PAIRS.items(), ("gpt-target", "gpt-draft")]:
        assert bpb[target] < bpb[draft] - 0.1, bpb
    for name, value in bpb.items():
        assert value < unigram - 1.5, (name, value, unigram)


@torch.no_grad()
def _greedy(model, prompt, n):
    logits, state = model.prefill(TOKENIZER(prompt), scan="sequential")
    out, nxt = [], logits[:, -1].argmax(-1)
    for _ in range(n):
        out.append(int(nxt))
        logits, state = model.decode(nxt, state)
        nxt = logits.argmax(-1)
    return out


@pytest.mark.parametrize("name", list(PAIRS))
def test_target_continues_english(name, models):
    ids = _greedy(models[name], "The Python language", 60)
    text = TOKENIZER.decode(ids)
    assert all(i < 256 for i in ids), ids
    assert text.isascii() and all(c.isprintable() or c == "\n" for c in text), text
    letters = sum(c.isalpha() or c == " " for c in text)
    assert letters >= 0.8 * len(text), text
    assert len(text.split()) >= 6, text  # words, not one repeated character


def test_training_scan_equals_inference_scan(models, heldout_slice):
    """prefill with the training scan (fused for Mamba1, chunked SSD for Mamba2) gives the
    sequential reference's logits and states on real text through trained weights.
    float32 tolerance 1e-4 (atol = rtol): logits are O(10) and pass through 4 layers of
    differently ordered sums; observed worst |a-b| / (1+|b|) is about 1e-5."""
    held, _ = heldout_slice
    tokens = held[: 2 * 96].view(2, 96)
    for name, m in models.items():
        if not isinstance(m.config, MambaConfig):
            continue  # a transformer has one forward (no scans)
        fast = "fused" if m.config.arch == "mamba1" else "chunked"
        a_logits, a_state = m.prefill(tokens, scan=fast)
        b_logits, b_state = m.prefill(tokens, scan="sequential")
        tol = dict(atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a_logits, b_logits, **tol)
        torch.testing.assert_close(a_state.ssm, b_state.ssm, **tol)
        torch.testing.assert_close(a_state.conv, b_state.conv, **tol)
        # From a non-zero state too (the decode loop's continuation).
        c_logits, _ = m.prefill(tokens[:, :10], a_state, scan=fast)
        d_logits, _ = m.prefill(tokens[:, :10], b_state, scan="sequential")
        torch.testing.assert_close(c_logits, d_logits, **tol)


def test_checkpoint_files_are_compact():
    for name in SHIPPED:
        from safetensors import safe_open

        with safe_open(Path(checkpoint_dir(name)) / "model.safetensors", "pt") as f:
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
        if isinstance(SHIPPED[name], MambaConfig):
            assert dtypes["backbone.embeddings.weight"] == "F16"
            assert all(v == "F32" for k, v in dtypes.items() if k.endswith(("A_log", ".D")))
        else:
            assert dtypes["model.embed_tokens.weight"] == "F16" and "lm_head.weight" not in dtypes  # tied
            assert all(v == "F32" for k, v in dtypes.items() if "norm" in k)
