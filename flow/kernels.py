"""The Mamba layer as hardware kernels.

Each kernel is a pure PyTorch function over a leading token axis T (1 for decode, L for
prefill, the node count for tree verify) and becomes one `func.func` of the captured
module. A layer kernel is captured once and runs every layer (its weights and states
stacked by layer, `flow.identity`), so a 24-layer model costs as much to capture, and
as much hardware, as a 1-layer one.

The SSM kernel is special: its function is the state update of ONE token, and the flow
builds the loop over tokens (or tree nodes) around it in MLIR, so FX never unrolls a
scan (see `flow.scan`).

Kernels read weights by their Hugging Face names, relative to `backbone.layers.{i}.`
(per-layer kernels) or to the model root (embed / final norm / head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.config import MambaConfig


@dataclass(frozen=True)
class Port:
    """One argument or result of a kernel: an activation, a state or a weight."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    weight: str | None = None  # HF parameter name (layer-relative) or DERIVED_WEIGHTS key


# Weights the hardware stores precomputed rather than as checkpointed: name (relative to
# a layer) -> (checkpoint name, how to derive it). A = -exp(A_log) is loop-invariant in
# the scan; computed in the kernel it costs a second exp per state element and token.
DERIVED_WEIGHTS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "mixer.A": ("mixer.A_log", lambda a_log: -torch.exp(a_log.float())),  # as the models compute it
}


@dataclass(frozen=True)
class Kernel:
    """A hardware kernel: `fn(*inputs) -> outputs`, all positional tensors."""

    kind: str  # "norm", "in_proj", ... : the func of the kernel (one per kind, every layer reuses it)
    fn: Callable
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    scan: bool = False  # fn is a one-token step; the flow loops it over tokens


# --------------------------------------------------------------------------- math


def _rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _linear(x, w):
    # x (T, K), w (N, K): written as a broadcast-reduce so it lowers to one matvec/matmul
    # nest after elementwise fusion (aten.mm would materialize a transposed weight).
    return (x[:, None, :] * w[None, :, :]).sum(-1)


def _conv(x, conv_state, windows, w, b):
    """Depthwise causal conv + SiLU over T tokens whose windows are given as indices.

    `windows[t]` indexes `seq = [conv_state[:, 1:], x.T]`: for a chain it is
    [t .. t+d_conv-1]; for a tree node it walks the node's ancestors. The new conv
    state is the last token's window.
    """
    seq = torch.cat([conv_state[:, 1:], x.t()], dim=1)
    win = seq[:, windows]  # (C, T, K)
    y = (win * w).sum(-1) + b[:, None]
    return F.silu(y.t()), seq[:, windows[-1]]


# ------------------------------------------------------------------------- kernels


def norm_kernel(eps: float):
    def norm(resid, w):
        return _rmsnorm(resid, w, eps)

    return norm


def in_proj(xn, w):
    return _linear(xn, w)


def conv(x, conv_state, windows, w, b):
    return _conv(x, conv_state, windows, w, b)


def m1_x_proj_dt(xc, w_x, w_dt, b_dt, dt_rank: int, d_state: int):
    dbc = _linear(xc, w_x)
    dt = dbc[:, :dt_rank]
    delta = F.softplus(_linear(dt, w_dt) + b_dt)
    return delta, dbc[:, dt_rank : dt_rank + d_state], dbc[:, dt_rank + d_state :]


def m1_ssm_step(h, x, delta, B, C, z, A, D):
    """One token of the Mamba1 selective state update (selective_state_update).

    h (E, N); x, delta, z (1, E); B, C (1, N); A = -exp(A_log) (a derived weight).
    """
    dA = torch.exp(delta[0, :, None] * A)
    h_new = h * dA + (delta[0] * x[0])[:, None] * B
    y = (h_new * C).sum(-1) + D * x[0]
    y = y * F.silu(z[0])
    return y[None, :], h_new


def m2_ssm_step(h, xbc, dt, dt_bias, A, D, d_inner, headdim, ngroups, d_state, dt_min, dt_max):
    """One token of the Mamba2 state update; h (H, P, N), xbc (1, conv_dim), dt (1, H);
    A = -exp(A_log) (a derived weight)."""
    H = d_inner // headdim
    x = xbc[0, :d_inner].reshape(H, headdim)
    Bg = xbc[0, d_inner : d_inner + ngroups * d_state].reshape(ngroups, d_state)
    Cg = xbc[0, d_inner + ngroups * d_state :].reshape(ngroups, d_state)
    rep = H // ngroups  # heads per group
    B = Bg.repeat_interleave(rep, dim=0)  # (H, N)
    C = Cg.repeat_interleave(rep, dim=0)
    delta = F.softplus(dt[0] + dt_bias)
    if dt_min > 0.0 or dt_max != float("inf"):
        delta = delta.clamp(dt_min, dt_max)
    dA = torch.exp(delta * A)
    h_new = h * dA[:, None, None] + (delta[:, None] * x)[:, :, None] * B[:, None, :]
    y = (h_new * C[:, None, :]).sum(-1) + D[:, None] * x
    return y.reshape(1, d_inner), h_new


def m2_gated_norm(y, z, w, ngroups: int, eps: float):
    """RMSNorm(y * silu(z)) * w over groups of d_inner / ngroups (mamba_ssm's order)."""
    T, E = y.shape
    g = (y * F.silu(z)).reshape(T, ngroups, E // ngroups)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.reshape(T, E) * w


def out_proj(y, w, resid):
    return resid + _linear(y, w)


def embed(tokens, w):
    return w[tokens]


def lm_head(xn, w):
    return _linear(xn, w)


# ------------------------------------------------------------------- kernel graphs


def _bind(fn, **static):
    def bound(*args):
        return fn(*args, **static)

    bound.__name__ = fn.__name__
    return bound


def layer_kernels(cfg: MambaConfig, T: int) -> list[Kernel]:
    """The kernels of one layer for T tokens, in execution order.

    Activation ports with the same name connect a producer to its consumers; `resid`
    enters the layer and `resid_out` leaves it; `conv_state`/`ssm_state` are the layer's
    incoming states and `conv_state_out`/`ssm_state_out` the outgoing ones.
    """
    D, E, N, K = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.d_conv
    f32, i64 = torch.float32, torch.int64
    norm = Kernel(
        "norm",
        norm_kernel(cfg.rms_eps),
        (Port("resid", (T, D)), Port("norm_w", (D,), f32, "norm.weight")),
        (Port("xn", (T, D)),),
    )
    windows = Port("windows", (T, K), i64)
    if cfg.arch == "mamba1":
        R = cfg.dt_rank
        return [
            norm,
            Kernel("in_proj", _bind(_split_xz, E=E),
                   (Port("xn", (T, D)), Port("in_proj_w", (2 * E, D), f32, "mixer.in_proj.weight")),
                   (Port("x", (T, E)), Port("z", (T, E)))),
            Kernel("conv", conv,
                   (Port("x", (T, E)), Port("conv_state", (E, K)), windows,
                    Port("conv_w", (E, 1, K), f32, "mixer.conv1d.weight"),
                    Port("conv_b", (E,), f32, "mixer.conv1d.bias")),
                   (Port("xc", (T, E)), Port("conv_state_out", (E, K)))),
            Kernel("x_proj", _bind(m1_x_proj_dt, dt_rank=R, d_state=N),
                   (Port("xc", (T, E)), Port("x_proj_w", (R + 2 * N, E), f32, "mixer.x_proj.weight"),
                    Port("dt_proj_w", (E, R), f32, "mixer.dt_proj.weight"),
                    Port("dt_proj_b", (E,), f32, "mixer.dt_proj.bias")),
                   (Port("delta", (T, E)), Port("B", (T, N)), Port("C", (T, N)))),
            Kernel("ssm", m1_ssm_step,
                   (Port("ssm_state", (E, N)), Port("xc", (1, E)), Port("delta", (1, E)),
                    Port("B", (1, N)), Port("C", (1, N)), Port("z", (1, E)),
                    Port("A", (E, N), f32, "mixer.A"), Port("D", (E,), f32, "mixer.D")),
                   (Port("y", (1, E)), Port("ssm_state_out", (E, N))), scan=True),
            Kernel("out_proj", out_proj,
                   (Port("y", (T, E)), Port("out_proj_w", (D, E), f32, "mixer.out_proj.weight"),
                    Port("resid", (T, D))),
                   (Port("resid_out", (T, D)),)),
        ]
    H, P, G = cfg.nheads, cfg.headdim, cfg.ngroups
    CD = cfg.conv_dim
    lo, hi = cfg.time_step_limit
    return [
        norm,
        Kernel("in_proj", _bind(_split_zxbcdt, E=E, CD=CD),
               (Port("xn", (T, D)), Port("in_proj_w", (cfg.in_proj_out, D), f32, "mixer.in_proj.weight")),
               (Port("z", (T, E)), Port("x", (T, CD)), Port("dt", (T, H)))),
        Kernel("conv", conv,
               (Port("x", (T, CD)), Port("conv_state", (CD, K)), windows,
                Port("conv_w", (CD, 1, K), f32, "mixer.conv1d.weight"),
                Port("conv_b", (CD,), f32, "mixer.conv1d.bias")),
               (Port("xc", (T, CD)), Port("conv_state_out", (CD, K)))),
        Kernel("ssm", _bind(m2_ssm_step, d_inner=E, headdim=P, ngroups=G, d_state=N,
                            dt_min=float(lo), dt_max=float(hi)),
               (Port("ssm_state", (H, P, N)), Port("xc", (1, CD)), Port("dt", (1, H)),
                Port("dt_bias", (H,), f32, "mixer.dt_bias"), Port("A", (H,), f32, "mixer.A"),
                Port("D", (H,), f32, "mixer.D")),
               (Port("y", (1, E)), Port("ssm_state_out", (H, P, N))), scan=True),
        Kernel("gated_norm", _bind(m2_gated_norm, ngroups=G, eps=cfg.rms_eps),
               (Port("y", (T, E)), Port("z", (T, E)), Port("gnorm_w", (E,), f32, "mixer.norm.weight")),
               (Port("yn", (T, E)),)),
        Kernel("out_proj", out_proj,
               (Port("yn", (T, E)), Port("out_proj_w", (D, E), f32, "mixer.out_proj.weight"),
                Port("resid", (T, D))),
               (Port("resid_out", (T, D)),)),
    ]


def _split_xz(xn, w, E):
    xz = _linear(xn, w)
    return xz[:, :E], xz[:, E:]


def _split_zxbcdt(xn, w, E, CD):
    p = _linear(xn, w)
    return p[:, :E], p[:, E : E + CD], p[:, E + CD :]


def model_kernels(cfg: MambaConfig, T: int) -> tuple[Kernel, Kernel, Kernel]:
    """The kernels around the layers: embedding lookup, final norm, tied lm_head."""
    D, V = cfg.d_model, cfg.vocab_size
    f32 = torch.float32
    emb = Kernel("embed", embed,
                 (Port("tokens", (T,), torch.int64), Port("embed_w", (V, D), f32, "backbone.embeddings.weight")),
                 (Port("resid", (T, D)),))
    norm_f = Kernel("norm_f", norm_kernel(cfg.rms_eps),
                    (Port("resid", (T, D)), Port("norm_f_w", (D,), f32, "backbone.norm_f.weight")),
                    (Port("xn", (T, D)),))
    head = Kernel("lm_head", lm_head,
                  (Port("xn", (T, D)), Port("embed_w", (V, D), f32, "backbone.embeddings.weight")),
                  (Port("logits", (T, V)),))
    return emb, norm_f, head
