"""Mamba2 (mamba_ssm ``modules/mamba2.py`` and ``modules/ssd_minimal.py``).

Prefill runs either the chunked SSD (default; ``ssd_minimal_discrete`` plus padding to a
whole number of chunks and an initial state) or the token-by-token recurrence. Decode and
tree verification always use the recurrence. The gated RMSNorm normalizes each of the
ngroups groups separately, as mamba_ssm does (HF's normalizes the full width, which only
agrees for ngroups = 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MambaLMBase, causal_conv_silu, inverse_softplus_dt, ssm_scan
from .config import MambaConfig


def segsum(a: Tensor) -> Tensor:
    """(..., T) -> (..., T, T): out[..., i, j] = a[j+1] + ... + a[i] for j <= i, -inf above
    the diagonal (so exp gives the causal decay matrix). Masks before the cumsum rather
    than subtracting cumsums, which keeps it exact for long chunks."""
    t = a.shape[-1]
    a = a[..., None].expand(*a.shape, t)  # [..., i, j] = a[i]
    below = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=-1)
    s = a.masked_fill(~below, 0).cumsum(dim=-2)
    on_or_below = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device))
    return s.masked_fill(~on_or_below, -math.inf)


def ssd_chunked(X: Tensor, a: Tensor, B: Tensor, C: Tensor, chunk: int,
                h0: Tensor) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan (ssd_minimal_discrete). X = x*dt (b, l, h, p), a = A*dt (b, l, h),
    B, C (b, l, h, n) already per head, h0 (b, h, p, n). Returns Y (b, l, h, p) without the
    D skip and the final state (b, h, p, n)."""
    length = X.shape[1]
    pad = -length % chunk
    # Padded steps have a = 0 (decay 1) and X = 0 (no input): they leave the state alone.
    X, a, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (X, a, B, C))
    X, a, B, C = (t.unflatten(1, (-1, chunk)) for t in (X, a, B, C))  # (b, c, l, ...)
    a = a.permute(0, 3, 1, 2)  # (b, h, c, l)
    a_cum = a.cumsum(dim=-1)

    # 1. Outputs from inputs of the same chunk (diagonal blocks).
    decay = torch.exp(segsum(a))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, X)
    # 2. Each chunk's final state from its own inputs.
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
    # 3. Carry states across chunks, starting from h0.
    states = torch.cat([h0[:, None], states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = states[:, :-1], states[:, -1]
    # 4. Outputs from the state entering each chunk.
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(a_cum))
    Y = (Y_diag + Y_off).flatten(1, 2)[:, :length]
    return Y, final


class GatedRMSNorm(nn.Module):
    """mamba_ssm's RMSNormGated(norm_before_gate=False, group_size=d_inner/ngroups):
    RMS-normalize y * silu(z) within each group, then scale."""

    def __init__(self, dim: int, ngroups: int, eps: float):
        super().__init__()
        self.ngroups, self.eps = ngroups, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        g = (y * F.silu(z)).unflatten(-1, (self.ngroups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return g.flatten(-2) * self.weight


class Mamba2Mixer(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.nheads
        self.in_proj = nn.Linear(cfg.d_model, cfg.in_proj_out, bias=False)
        self.conv1d = nn.Conv1d(cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim,
                                padding=cfg.d_conv - 1)
        self.dt_bias = nn.Parameter(inverse_softplus_dt(h, cfg))
        self.A_log = nn.Parameter(torch.log(torch.empty(h).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(h))
        self.norm = GatedRMSNorm(cfg.d_inner, cfg.ngroups, cfg.rms_eps)
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=False)

    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, tree=None,
                scan="chunked"):
        """u (B, T, d_model) normalized block input; returns (out (B, T, d_model), conv
        state(s), ssm state(s)) — final ones for a chain, per node for a tree."""
        cfg = self.cfg
        di, h, g, n = cfg.d_inner, cfg.nheads, cfg.ngroups, cfg.d_state
        z, xBC, dt = self.in_proj(u).split([di, cfg.conv_dim, h], dim=-1)
        xBC, conv = causal_conv_silu(xBC, conv_state, self.conv1d.weight, self.conv1d.bias, tree)
        x, B, C = xBC.split([di, g * n, g * n], dim=-1)
        x = x.unflatten(-1, (h, cfg.headdim))
        # Head i reads group i // (H/G), as mamba_ssm's "(g h)" repeat.
        B = B.unflatten(-1, (g, n)).repeat_interleave(h // g, dim=2)
        C = C.unflatten(-1, (g, n)).repeat_interleave(h // g, dim=2)
        dt = F.softplus(dt + self.dt_bias)
        if cfg.time_step_limit != (0.0, math.inf):
            dt = dt.clamp(*cfg.time_step_limit)
        A = -torch.exp(self.A_log)
        if scan == "chunked" and tree is None:
            y, ssm = ssd_chunked(x * dt[..., None], A * dt, B, C, cfg.chunk_size, ssm_state)
        else:
            y, ssm = ssm_scan(dt[..., None], A[:, None, None], x, B[..., None, :],
                              C[..., None, :], ssm_state,
                              tree.parents if tree is not None else None)
        y = y + self.D[:, None] * x
        return self.out_proj(self.norm(y.flatten(-2), z)), conv, ssm


class Mamba2LM(MambaLMBase):
    """Mamba2 language model; see MambaLMBase for prefill / decode / verify."""

    mixer_cls = Mamba2Mixer
    scans = ("chunked", "sequential")
