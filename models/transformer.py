"""Hugging Face transformers causal LMs (GPT-2 and Llama) as mambaflow models.

`TransformerLM` wraps a transformers ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` with the
two phases the runtime and the trainer use on Mamba models: ``prefill(tokens)`` (batch of
token rows -> float32 logits, KV cache) and ``decode(token, cache)``; ``.config`` is a
`TransformerConfig` (arch, sizes, vocab) that the CLI and the runtime read as they read a
MambaConfig. Tree verification and the KV-cache bookkeeping of speculative decoding live
in runtime/transformer.py.

Checkpoints are Hugging Face folders (config.json + safetensors), read with
``from_pretrained`` on the directory. ``load_transformer`` refuses any other
architecture with a CheckpointError naming it and the supported ones; ``save_compact``
writes the large matrices in float16 (the shipped ``gpt-target`` / ``gpt-draft``), and
loading widens them to float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from mambaflow.errors import CheckpointError

from .config import TOKENIZER_KEY

#: config.json model_type -> the transformers class that loads it
ARCHS = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
MAMBA_TYPES = ("mamba", "mamba2")  # read by models.loader.load_checkpoint


@dataclass(frozen=True)
class TransformerConfig:
    """What mambaflow reads of a transformer's HF config (batch 1 runtime, memory model)."""

    arch: str  # "gpt2" | "llama"
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab_size: int
    max_positions: int
    d_ff: int  # the MLP's hidden width

    @property
    def num_params(self) -> int:
        """Parameters with the LM head tied to the embedding (as built here)."""
        d, f, kv = self.d_model, self.d_ff, self.n_kv_head * self.head_dim
        attn = d * self.n_head * self.head_dim * 2 + 2 * d * kv
        if self.arch == "gpt2":  # biases, two LayerNorms per block, learned positions
            block = attn + 2 * d * f + (self.n_head * self.head_dim * 2 + 2 * kv) + f + d + 4 * d
            return self.n_layer * block + (self.vocab_size + self.max_positions) * d + 2 * d
        return self.n_layer * (attn + 3 * d * f + 2 * d) + self.vocab_size * d + d

    @classmethod
    def from_hf(cls, c) -> "TransformerConfig":
        if c.model_type == "gpt2":
            return cls("gpt2", c.n_embd, c.n_layer, c.n_head, c.n_head, c.n_embd // c.n_head, c.vocab_size,
                       c.n_positions, c.n_inner or 4 * c.n_embd)
        heads = c.num_attention_heads
        return cls("llama", c.hidden_size, c.num_hidden_layers, heads, c.num_key_value_heads or heads,
                   getattr(c, "head_dim", None) or c.hidden_size // heads, c.vocab_size,
                   c.max_position_embeddings, c.intermediate_size)


class TransformerLM(nn.Module):
    """A transformers causal LM with mambaflow's phase methods (see the module docstring)."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        self.config = TransformerConfig.from_hf(hf.config)

    def prefill(self, tokens: torch.Tensor, cache=None, scan: str | None = None):
        """tokens (B, L) -> logits (B, L, V) float32 and the KV cache after them (None
        while training). `scan` is accepted for the Mamba models' signature and unused."""
        out = self.hf(input_ids=tokens, cache=cache, use_cache=not self.training)
        return out.logits.float(), out.cache

    def decode(self, token: torch.Tensor, cache):
        """token (B,) -> logits (B, V), the cache one token longer."""
        logits, cache = self.prefill(token[:, None], cache)
        return logits[:, -1], cache


def transformer_config(arch: str, *, d_model: int, n_layer: int, n_head: int, vocab_size: int,
                       max_positions: int = 1024, d_ff: int | None = None,
                       n_kv_head: int | None = None) -> TransformerConfig:
    """The sizes of a GPT-2 or Llama; `d_ff` defaults to 4 d_model (GPT-2) or 8/3
    d_model rounded up to 32 (Llama's SwiGLU)."""
    if arch not in ARCHS:
        raise CheckpointError(f"unknown transformer architecture {arch!r}; use one of {', '.join(ARCHS)}")
    if d_model % n_head:
        raise CheckpointError(f"transformer_config: d_model {d_model} is not a multiple of n_head {n_head}")
    d_ff = d_ff or (4 * d_model if arch == "gpt2" else -(-8 * d_model // 3 // 32) * 32)
    return TransformerConfig(arch, d_model, n_layer, n_head, n_kv_head or n_head, d_model // n_head, vocab_size,
                             max_positions, d_ff)


def hf_config(cfg: TransformerConfig):
    """The transformers config of `cfg`: tied embeddings, no dropout, the byte
    tokenizer's BOS / EOS ids (mambaflow.data; no padding row)."""
    import transformers

    from mambaflow.data import BOS, EOS

    specials = dict(bos_token_id=BOS, eos_token_id=EOS) if cfg.vocab_size > EOS else {}
    if cfg.arch == "gpt2":
        return transformers.GPT2Config(vocab_size=cfg.vocab_size, n_embd=cfg.d_model, n_layer=cfg.n_layer,
                                       n_head=cfg.n_head, n_positions=cfg.max_positions, n_inner=cfg.d_ff,
                                       tie_word_embeddings=True, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                       **specials)
    return transformers.LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layer,
                                    num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
                                    head_dim=cfg.head_dim, intermediate_size=cfg.d_ff,
                                    max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
                                    **specials)


def build_transformer(cfg: TransformerConfig) -> TransformerLM:
    """A randomly initialized (transformers' init; seed with torch.manual_seed) float32
    GPT-2 or Llama of `cfg`'s sizes, in eval mode."""
    import transformers

    return TransformerLM(getattr(transformers, ARCHS[cfg.arch])(hf_config(cfg)).float()).eval()


def model_type(path) -> str | None:
    """The model_type of checkpoint folder `path`'s config.json (None when unreadable:
    the Mamba loader then reports what is wrong with it)."""
    try:
        d = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return d.get("model_type") if isinstance(d, dict) else None


def check_supported(path, kind: str | None) -> None:
    """Raise a CheckpointError unless `kind` (a config.json model_type) is one mambaflow reads."""
    if kind not in ARCHS and kind not in MAMBA_TYPES:
        raise CheckpointError(
            f"checkpoint {path}: architecture {kind!r} (config.json model_type) is not supported; mambaflow reads "
            f"{', '.join(MAMBA_TYPES + tuple(ARCHS))} checkpoints: convert the model to one of them or pick another")


def load_transformer(path) -> TransformerLM:
    """The float32 GPT-2 / Llama model in checkpoint folder `path` (from_pretrained)."""
    import transformers

    path = Path(path)
    kind = model_type(path)
    if kind not in ARCHS:
        check_supported(path, kind)
        raise CheckpointError(f"checkpoint {path} is a {kind} model, not a transformer; load it with "
                              "models.load_model, which reads both")
    log = transformers.utils.logging
    bars, verbosity = log.is_progress_bar_enabled(), log.get_verbosity()
    log.disable_progress_bar()  # a small model: no "Loading weights" bar, and a bad
    log.set_verbosity_error()  # checkpoint is reported once, by the error below
    try:
        hf, info = getattr(transformers, ARCHS[kind]).from_pretrained(path, dtype=torch.float32,
                                                                      output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot load the {kind} checkpoint {path} ({first}); re-save it with "
                              "save_pretrained or copy the folder again") from e
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()
    # transformers fills missing weights with random ones and only warns: refuse that here
    bad = sorted(info.get("missing_keys", ())) + [str(k) for k in info.get("mismatched_keys", ())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"checkpoint {path} lacks or mis-shapes weights of its {kind} config ({shown}); "
                              "check that config.json belongs to these weights, or re-save the model")
    return TransformerLM(hf.float()).eval()


def save_compact(model: TransformerLM, path, byte_level: bool = True, half: bool = True) -> Path:
    """Write `model` as an HF folder: config.json (marked as reading mambaflow's byte
    tokens with `byte_level`) and model.safetensors with the 2-D weight matrices in
    float16 (`half`; else float32) and the rest (norms, biases) in float32; the tied LM
    head is left out, as transformers does."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = model.hf.config.to_dict()
    if byte_level:
        config[TOKENIZER_KEY] = "bytes"
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tied = model.hf.config.tie_word_embeddings
    tensors = {}
    for k, v in model.hf.state_dict().items():
        if tied and k == "lm_head.weight":
            continue
        v = v.detach().cpu().contiguous()
        tensors[k] = v.to(torch.float16) if half and v.dim() == 2 else v.float()
    safetensors.torch.save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return path


def is_transformer(model) -> bool:
    """Whether `model` is a TransformerLM (the runtime picks its backend by this)."""
    return isinstance(model, TransformerLM)


__all__ = ["ARCHS", "TransformerConfig", "TransformerLM", "build_transformer", "check_supported", "hf_config",
           "is_transformer", "load_transformer", "model_type", "save_compact", "transformer_config"]
