"""Mamba1 (mamba_ssm ``modules/mamba_simple.py``; HF ``modeling_mamba.py``).

Every phase runs the selective-scan recurrence one token at a time (selective_scan_ref),
vectorized over batch and channels; the float32 oracle is the point here, not speed.
Training uses ``prefill(tokens, scan="fused")`` (models/scan.py): the same recurrence with
a hand-written backward, agreeing with the reference to float32 rounding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MambaLMBase, causal_conv_silu, inverse_softplus_dt, ssm_scan
from .config import MambaConfig
from .scan import fused_selective_scan


class Mamba1Mixer(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        di, n, r = cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.in_proj = nn.Linear(cfg.d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -r**-0.5, r**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(inverse_softplus_dt(di, cfg))
        # A = -exp(A_log) = -(1..N) for every channel (S4D-real init).
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, cfg.d_model, bias=False)

    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor, tree=None, scan=None):
        """u (B, T, d_model) normalized block input; returns (out (B, T, d_model), conv
        state(s), ssm state(s)) — final ones for a chain, per node for a tree."""
        n, r = self.cfg.d_state, self.cfg.dt_rank
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x, conv = causal_conv_silu(x, conv_state, self.conv1d.weight, self.conv1d.bias, tree)
        dt, B, C = self.x_proj(x).split([r, n, n], dim=-1)
        dt = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        if scan == "fused" and tree is None:
            y, ssm = fused_selective_scan(dt, A, x, B, C, ssm_state)
        else:
            y, ssm = ssm_scan(dt, A, x, B[:, :, None], C[:, :, None], ssm_state,
                              tree.parents if tree is not None else None)
        y = (y + self.D * x) * F.silu(z)
        return self.out_proj(y), conv, ssm


class Mamba1LM(MambaLMBase):
    """Mamba1 language model; see MambaLMBase for prefill / decode / verify."""

    mixer_cls = Mamba1Mixer
    # "fused" (models/scan.py) is the same recurrence with a hand-written backward: the
    # fast one for training; decode and verify always use the reference loop.
    scans = ("sequential", "fused")
