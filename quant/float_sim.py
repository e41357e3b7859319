"""The float model after rotation and folding, run over whole sequences.

`prepare(model, rotation)` folds the RMSNorm weights into the next linear layer and, with
rotation, the orthonormal Hadamard Q of the residual stream into the embedding, in_proj,
out_proj and the LM head (QuaRot's computational invariance: RMSNorm(Qx) = Q·x/rms(x)),
and the out_proj input rotation as an online unnormalized FWHT with Hᵀ/n folded into
out_proj. The result computes the same function as the model, up to float rounding.

`run(prepared, tokens, ...)` is the float forward over (B, L) tokens from the zero state,
written in the integer design's order, with three uses:
- the rotation check (no approximations: logits equal the model's);
- calibration (an `Observer` records per-channel maxima of every quantized tensor);
- the accuracy of each nonlinearity approximation alone (`approx={"exp": Approx}`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mambaflow.errors import MambaflowError

from . import hadamard
from .approx import TORCH_FUNCS, Approx, RsqrtApprox


@dataclass
class PreparedLayer:
    w: dict[str, Tensor]


@dataclass
class Prepared:
    """Folded (and rotated) float weights; `rotation` says whether Q/H were applied."""

    cfg: object
    rotation: bool
    emb: Tensor          # (V, D) rows of the rotated residual stream
    head: Tensor         # (V, D) = E diag(w_f) Qᵀ
    layers: list[dict[str, Tensor]]
    dtype: torch.dtype = torch.float32


def prepare(model, rotation: bool = True, dtype=torch.float64) -> Prepared:
    cfg = model.config
    sd = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    D, E = cfg.d_model, cfg.d_inner
    Q = hadamard.orthonormal(D, dtype) if rotation else torch.eye(D, dtype=dtype)
    Hn = hadamard.hadamard_matrix(E).to(dtype) / E if rotation else torch.eye(E, dtype=dtype)
    emb = sd["backbone.embeddings.weight"]
    layers = []
    for i in range(cfg.n_layer):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        w_norm = sd[p + "norm.weight"]
        L = {
            "in_proj": sd[m + "in_proj.weight"] * w_norm[None, :] @ Q.T,
            "conv_w": sd[m + "conv1d.weight"][:, 0, :],
            "conv_b": sd[m + "conv1d.bias"],
            "D": sd[m + "D"],
        }
        out_w = sd[m + "out_proj.weight"]
        if cfg.arch == "mamba1":
            L.update(x_proj=sd[m + "x_proj.weight"], dt_proj=sd[m + "dt_proj.weight"],
                     dt_bias=sd[m + "dt_proj.bias"], A=-torch.exp(sd[m + "A_log"]))
        else:
            L.update(dt_bias=sd[m + "dt_bias"], A=-torch.exp(sd[m + "A_log"]))
            out_w = out_w * sd[m + "norm.weight"][None, :]
        # out_proj(y) = Q W y = (Q W Hᵀ/n) (H y): H applied online (unnormalized)
        L["out_proj"] = Q @ out_w @ Hn.T if rotation else out_w
        layers.append(L)
    head = emb * sd["backbone.norm_f.weight"][None, :] @ Q.T
    return Prepared(cfg, rotation, emb @ Q.T, head, layers, dtype)


class Observer:
    """Running per-channel statistics per layer and tensor, reduced over all but the kept
    dims (the channel dims of each tensor's quantization granularity): the absolute
    maximum, and the mean square (for clipped ranges)."""

    def __init__(self):
        self.stats: dict[tuple[int, str], Tensor] = {}
        self.sumsq: dict[tuple[int, str], Tensor] = {}
        self.count: dict[tuple[int, str], int] = {}

    def __call__(self, layer: int, name: str, t: Tensor, keep: int = 0) -> None:
        a = t.detach().abs().to(torch.float64)
        a = a.reshape(-1, *a.shape[a.dim() - keep:]) if keep else a.reshape(-1)
        key = (layer, name)
        m, ss = a.amax(0), a.pow(2).sum(0)
        if key not in self.stats:
            self.stats[key], self.sumsq[key], self.count[key] = m, ss, a.shape[0]
        else:
            self.stats[key] = torch.maximum(self.stats[key], m)
            self.sumsq[key] = self.sumsq[key] + ss
            self.count[key] += a.shape[0]

    def get(self, layer: int, name: str, clip: float | None = None) -> Tensor:
        """The absolute maximum, or with `clip` min(max, clip · rms) per channel."""
        try:
            m = self.stats[(layer, name)]
        except KeyError:
            raise MambaflowError(f"calibration has no statistics for layer {layer} '{name}'") from None
        if clip is None:
            return m
        rms = (self.sumsq[(layer, name)] / self.count[(layer, name)]).sqrt()
        return torch.minimum(m, clip * rms)


def _fn(approx: dict, name: str):
    a = approx.get(name)
    if a is None:
        return TORCH_FUNCS[name]
    return a.float_eval


def rsqrt_float(a: RsqrtApprox | None, v: Tensor) -> Tensor:
    """1/√v through the integer design's mantissa/exponent split (exact when a is None)."""
    if a is None:
        return torch.rsqrt(v)
    vd = v.double()
    j = torch.floor(torch.log2(vd) / 2)
    m = vd / 4.0**j
    # guard the float log2 at exact powers of 4
    j = torch.where(m >= 4, j + 1, torch.where(m < 1, j - 1, j))
    m = vd / 4.0**j
    mi = torch.floor(m * 2**a.M)  # mantissa truncated to M bits (as the shift does)
    g = a.apply(mi.to(torch.int64)).double() * a.fout.lsb
    return (g * 2.0**-j).to(v.dtype)


def _rms(x: Tensor, eps: float, rs) -> Tensor:
    return x * rsqrt_float(rs, x.pow(2).mean(-1, keepdim=True) + eps)


def run(P: Prepared, tokens: Tensor, approx: dict | None = None, observe: Observer | None = None,
        dtype=None) -> Tensor:
    """Logits (B, L, V) of tokens (B, L) from the zero state."""
    cfg = P.cfg
    approx = approx or {}
    dtype = dtype or P.dtype
    exp, softplus, silu = _fn(approx, "exp"), _fn(approx, "softplus"), _fn(approx, "silu")
    rs = approx.get("rsqrt")
    obs = observe or (lambda *a, **k: None)
    h = P.emb.to(dtype)[tokens]  # (B, L, D)
    B_, L_ = tokens.shape
    E, N, K = cfg.d_inner, cfg.d_state, cfg.d_conv
    for i, W in enumerate(P.layers):
        W = {k: v.to(dtype) for k, v in W.items()}
        obs(i, "resid", h)
        xn = _rms(h, cfg.rms_eps, rs)
        p = xn @ W["in_proj"].T
        if cfg.arch == "mamba1":
            x_pre, z = p[..., :E], p[..., E:]
        else:
            C_ = cfg.conv_dim
            z, x_pre, dt = p[..., :E], p[..., E:E + C_], p[..., E + C_:]
        obs(i, "x_pre", x_pre, 1)
        obs(i, "z", z, 1)
        # causal depthwise conv from a zero state
        seq = F.pad(x_pre.transpose(1, 2), (K - 1, 0))
        acc = F.conv1d(seq, W["conv_w"][:, None, :], W["conv_b"], groups=seq.shape[1]).transpose(1, 2)
        obs(i, "conv_acc", acc, 1)
        xc = silu(acc)
        obs(i, "xc", xc, 1)
        if cfg.arch == "mamba1":
            R = cfg.dt_rank
            dbc = xc @ W["x_proj"].T
            dtl, Bm, Cm = dbc[..., :R], dbc[..., R:R + N], dbc[..., R + N:]
            obs(i, "dtl", dtl, 1)
            obs(i, "B", Bm, 1)
            obs(i, "C", Cm, 1)
            dt_pre = dtl @ W["dt_proj"].T + W["dt_bias"]
            obs(i, "dt_pre", dt_pre, 1)
            delta = softplus(dt_pre)                          # (B, L, E)
            obs(i, "delta", delta, 1)
            A = W["A"]                                        # (E, N)
            hs = torch.zeros(B_, E, N, dtype=dtype)
            ys = []
            for t in range(L_):
                dA = exp(delta[:, t, :, None] * A)
                hs = dA * hs + (delta[:, t] * xc[:, t])[:, :, None] * Bm[:, t, None, :]
                obs(i, "h", hs, 2)
                ys.append((hs * Cm[:, t, None, :]).sum(-1))
            y = torch.stack(ys, 1) + W["D"] * xc
            obs(i, "y", y, 1)
            g = y * silu(z)
        else:
            H, Pd, G = cfg.nheads, cfg.headdim, cfg.ngroups
            x = xc[..., :E].reshape(B_, L_, H, Pd)
            Bm = xc[..., E:E + G * N].reshape(B_, L_, G, N).repeat_interleave(H // G, dim=2)
            Cm = xc[..., E + G * N:].reshape(B_, L_, G, N).repeat_interleave(H // G, dim=2)
            dt_pre = dt + W["dt_bias"]
            obs(i, "dt_pre", dt_pre, 1)
            delta = softplus(dt_pre)                           # (B, L, H)
            lo, hi = cfg.time_step_limit
            if lo > 0.0 or hi != math.inf:
                delta = delta.clamp(lo, hi)
            obs(i, "delta", delta, 1)
            A = W["A"]                                         # (H,)
            hs = torch.zeros(B_, H, Pd, N, dtype=dtype)
            ys = []
            for t in range(L_):
                dA = exp(delta[:, t] * A)                      # (B, H)
                hs = dA[:, :, None, None] * hs + (delta[:, t, :, None] * x[:, t])[..., None] * Bm[:, t, :, None, :]
                obs(i, "h", hs, 3)
                ys.append((hs * Cm[:, t, :, None, :]).sum(-1))
            y = torch.stack(ys, 1) + W["D"][:, None] * x       # (B, L, H, P)
            obs(i, "y", y, 2)
            y = y.reshape(B_, L_, E)
            g = y * silu(z)
            obs(i, "g_pre", g)
            gg = g.unflatten(-1, (G, E // G))
            g = _rms(gg, cfg.rms_eps, rs).flatten(-2)
        obs(i, "g", g)
        gh = hadamard.fwht(g) if P.rotation else g
        obs(i, "gh", gh)
        h = h + gh @ W["out_proj"].T
    obs(-1, "resid", h)
    return _rms(h, cfg.rms_eps, rs) @ P.head.to(dtype).T
