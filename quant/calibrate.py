"""Deterministic calibration: a few fixed windows of the training corpus, run through the
rotated float model, give the per-channel maxima every static power-of-two exponent is
chosen from. No randomness anywhere: the same model and data give the same exponents.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mambaflow.errors import MambaflowError

from . import float_sim


def calibration_tokens(n_seq: int = 8, seq_len: int = 256, split: str = "train") -> Tensor:
    """(n_seq, seq_len) byte tokens: evenly spaced windows of the project corpus's
    `split` (training data by default, never the held-out split)."""
    try:
        from mambaflow import data
    except ImportError as e:
        raise MambaflowError(
            "calibration_tokens needs mambaflow.data (the project corpus); pass calibration "
            "tokens to quantize() explicitly instead.") from e
    tokens = _split_tokens(data, split)
    n = tokens.numel()
    if n < seq_len + 1:
        raise MambaflowError(f"calibration: the {split} split has {n} tokens, fewer than seq_len={seq_len}")
    starts = torch.linspace(0, n - seq_len - 1, n_seq).round().to(torch.int64)
    return torch.stack([tokens[s:s + seq_len] for s in starts.tolist()]).to(torch.int64)


def _split_tokens(data, split: str) -> Tensor:
    return data.load_corpus().tokens(split).reshape(-1)


@torch.no_grad()
def collect(prepared: float_sim.Prepared, tokens: Tensor, batch: int = 8) -> float_sim.Observer:
    """Run the float model over calibration tokens (B, L) and record the maxima."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.int32, torch.int64):
        raise MambaflowError("calibration tokens must be an integer tensor (n_seq, seq_len)")
    if int(tokens.min()) < 0 or int(tokens.max()) >= prepared.cfg.vocab_size:
        raise MambaflowError("calibration tokens fall outside the model's vocabulary")
    obs = float_sim.Observer()
    for b in range(0, tokens.shape[0], batch):
        float_sim.run(prepared, tokens[b:b + batch].to(torch.int64), observe=obs)
    return obs
