"""Autoregressive generation over any backend: the prompt through prefill, then decode.

Greedy (temperature 0) or sampled with temperature, top-k and top-p (nucleus), from a
seeded generator so a run is reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import MambaflowError
from .backends import Backend


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. temperature 0 means greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    seed: int = 0
    vocab_limit: int | None = None  # ids >= this are never produced (padded vocab rows)

    def __post_init__(self):
        if self.temperature < 0:
            raise MambaflowError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise MambaflowError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise MambaflowError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Temperature-scaled logits with vocab limit, top-k and top-p applied (-inf outside)."""
    logits = logits.float().clone()
    if s.vocab_limit is not None:
        logits[..., s.vocab_limit :] = float("-inf")
    if s.temperature == 0:
        return logits
    logits = logits / s.temperature
    if s.top_k:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always the first token)
        drop = probs.cumsum(-1) - probs >= s.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def choose(logits: torch.Tensor, s: Sampling, gen: torch.Generator) -> int:
    logits = filter_logits(logits, s)
    if s.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


@dataclass
class Generation:
    tokens: list[int]  # the new tokens only
    logits: list[torch.Tensor] = field(repr=False)  # the logits each new token was chosen from
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.tokens) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else float("nan")


def generate(backend: Backend, prompt: list[int], max_new_tokens: int, sampling: Sampling = Sampling(),
             draft: Backend | None = None, **spec) -> Generation:
    """Generate `max_new_tokens` after `prompt` on `backend` (batch 1).

    With `draft`, speculative decoding is used (see runtime.speculative).
    """
    if draft is not None:
        from .speculative import speculative_generate

        return speculative_generate(backend, draft, prompt, max_new_tokens, sampling, **spec)
    if not prompt:
        raise MambaflowError("generate: the prompt is empty; give at least one token")
    if max_new_tokens < 1:
        raise MambaflowError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    gen = torch.Generator().manual_seed(sampling.seed)
    t0 = time.perf_counter()
    logits, state = backend.prefill(torch.tensor(prompt, dtype=torch.long))
    last = logits[-1]
    t1 = time.perf_counter()
    out, seen = [], []
    for step in range(max_new_tokens):
        tok = choose(last, sampling, gen)
        out.append(tok)
        seen.append(last)
        if step + 1 < max_new_tokens:
            last, state = backend.decode(tok, state)
    t2 = time.perf_counter()
    return Generation(out, seen, prefill_s=t1 - t0, decode_s=t2 - t1)
