"""The bit-exact integer decode step: the oracle of every quantized design.

Every kernel below is a pure PyTorch function on integer tensors, using only integer
multiply-accumulates, additions, shifts, comparisons, clamps, selects and table reads
(no float op anywhere, no division, no data-dependent Python control flow). The same
functions are run eagerly here (the reference) and captured by the flow
(`mambaflow.quant.flow`), so the llvm run and the HLS C simulation are checked against
exactly this arithmetic.

Arithmetic conventions
- A quantized tensor is an integer q with a power-of-two exponent e (value q·2^e).
- `requant(acc, sh, lo, hi)`: move acc by `sh` binary places (sh > 0: right shift with
  round-half-up; sh < 0: left shift), then saturate to [lo, hi]. `sh` is a per-channel
  int8 vector: a power-of-two rescale is a shift.
- `dynquant(v, bits, group)`: per token and group of `group` channels, the smallest shift
  s >= 0 with round(max|v| / 2^s) <= qmax (a priority encoder over thresholds), q = round
  (v / 2^s): LightMamba's groups sharing a power-of-two scale, computed online.
- `gemm`: integer MACs per block of g0 input channels, each block's partial sum shifted
  by the activation's dynamic shift plus the weight group's shift(s) (a weight scale is
  2^a or 2^a + 2^b: one or two shifted copies of the partial sum), summed.
- Signed quantized tensors are symmetric: [-(2^(b-1) - 1), 2^(b-1) - 1].

Widths: weights/activations/states are int8 (4-bit values stored in int8 ports), Δ and
exp(ΔA) uint8, nonlinearity inputs int16, the residual stream int32 (resid_bits wide),
accumulators int32 (MACs) and int64 (shifted sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from . import hadamard
from .approx import Approx, RsqrtApprox, norm_int, shl, shr

i8, u8, i16, i32, i64 = torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64


# ---------------------------------------------------------------- integer primitives


def iabs(x: Tensor) -> Tensor:
    return torch.maximum(x, torch.zeros_like(x) - x)


def requant(acc: Tensor, sh: Tensor, lo: int, hi: int) -> Tensor:
    """round(acc · 2^-sh) saturated to [lo, hi] (int64); sh an integer tensor."""
    acc = acc.to(i64)
    sh = sh.to(i64)
    lsh = torch.clamp(torch.zeros_like(sh) - sh, min=0)
    rsh = torch.clamp(sh, min=0)
    rnd = shr(shl(torch.ones_like(rsh), rsh), 1)
    return torch.clamp(shr(shl(acc, lsh) + rnd, rsh), lo, hi)


def sat(x: Tensor, bits: int) -> Tensor:
    """Saturate to a signed `bits`-wide integer."""
    return torch.clamp(x, -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1)


DYN_IN_BITS = 24  # dynamic quantizer inputs are saturated to this signed width


def dyn_thresholds(bits: int, kmax: int = DYN_IN_BITS) -> list[int]:
    qmax = (1 << (bits - 1)) - 1
    return [qmax + 1] + [(2 * qmax + 1) << (k - 1) for k in range(1, kmax)]


def dynquant(v: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    """(q int8 (.., K), s int8 (.., K/group)): per-group dynamic power-of-two quantization."""
    qmax = (1 << (bits - 1)) - 1
    v = sat(v.to(i64), DYN_IN_BITS)
    K = v.shape[-1]
    lead = v.shape[:-1]
    m = iabs(v).reshape(*lead, K // group, group).amax(-1)             # (.., nG)
    # thresholds dyn_thresholds(bits), generated from an index (no constant table)
    k = torch.arange(DYN_IN_BITS, dtype=i64)
    thr = torch.where(k == 0, torch.full_like(k, qmax + 1),
                      shl(torch.full_like(k, 2 * qmax + 1), torch.clamp(k - 1, min=0)))
    s = (m[..., None] >= thr).to(i64).sum(-1)                           # (.., nG)
    se = s[..., None].expand(*lead, K // group, group).reshape(*lead, K)
    rnd = shr(shl(torch.ones_like(se), se), 1)
    q = torch.clamp(shr(v + rnd, se), -qmax, qmax)
    return q.to(i8), s.to(i8)


#: input channels whose products a gemm sums explicitly before a block's shift (a MAC
#: lane group): each power-of-two shift then applies to one partial sum of DOT products
DOT = 8


def gemm(q: Tensor, s: Tensor | None, w: Tensor, wsh1: Tensor, wsh2: Tensor | None,
         a_group: int) -> Tensor:
    """acc[t, o] = Σ_b (P[t,o,b] << (s_b + wsh1[o,b])) (+ the second power of two),
    P the integer MACs of q (T, K) and w (N, K) over blocks of g0 = K / wsh1.shape[1]."""
    T, K = q.shape
    N, nb = wsh1.shape
    g0 = K // nb
    # Σ_g q·w << e = Σ_(sub-blocks) (Σ_(DOT lanes) q·w) << e, exactly (int64; e >= 0 by
    # construction, quant.ptq; b = -1: no second power). How it is written decides the
    # hardware the flow builds from it:
    # - the DOT products of a sub-block are written out one by one (slices of q and w),
    #   so one nest iteration holds DOT MACs and their adder tree, and the shifts apply
    #   to its partial sum, once per DOT MACs (as LightMamba's MAC array shifts per
    #   group), not to every product;
    # - the slices of q keep the quantizer out of the MAC nest: elementwise fusion does
    #   not go through a slice, so q is computed once per activation, not once per MAC;
    # - the reduction over (block, sub-block) stays one nest with a register
    #   accumulator: no (T, N, blocks) partial sums on chip.
    # The power-of-two scale is applied as shifts, not as a multiply by 2^a + 2^b: in
    # hardware a shift-add (LUTs), where a variable 64-bit multiplier takes DSP58s.
    # Every operand is shaped (.., N, nb, sub-blocks) up front: no reshape between the
    # elementwise ops and the reduction, which would stop their fusion.
    d = min(DOT, g0)
    sb = g0 // d
    e1 = wsh1.to(i64).reshape(1, N, nb, 1, 1)
    e2 = wsh2.to(i64).reshape(1, N, nb, 1, 1) if wsh2 is not None else None
    if s is not None:
        sa = s.to(i64)
        if a_group > g0:  # one activation group spans several blocks
            r = a_group // g0
            sa = sa[:, :, None].expand(T, sa.shape[1], r).reshape(T, nb)
        sa = sa.reshape(T, 1, nb, 1, 1)
        e1 = e1 + sa                                                     # (T, N, nb, 1, 1)
        e2 = e2 + sa if e2 is not None else None
    q5 = q.reshape(T, 1, nb, sb, d)
    w5 = w.reshape(1, N, nb, sb, d)
    p = None
    for k in range(d):  # lane k of every sub-block (a size-1 slice: no reshape after it)
        qk = q5[..., k:k + 1].to(i64)
        wk = w5[..., k:k + 1].to(i64)
        p = qk * wk if p is None else p + qk * wk                        # (T, N, nb, sb, 1)
    out = shl(p, e1)
    if e2 is not None:  # b = -1 (e2 < sa): the second power is absent
        present = wsh2.to(i64).reshape(1, N, nb, 1, 1) >= 0
        out = out + torch.where(present, shl(p, torch.clamp(e2, min=0)), torch.zeros((), dtype=i64))
    return out.sum((-3, -2, -1))


def _expanded_weight(w, wsh1, wsh2, g0):
    """w · (2^sh1 + [sh2 >= 0] 2^sh2) per input channel, as float64 (exact integers)."""
    sh1 = wsh1.to(i64).repeat_interleave(g0, dim=1)
    W = shl(w.to(i64), sh1)
    if wsh2 is not None:
        sh2 = wsh2.to(i64).repeat_interleave(g0, dim=1)
        W = W + torch.where(sh2 >= 0, shl(w.to(i64), torch.clamp(sh2, min=0)), torch.zeros_like(W))
    return W.double()


_CACHE_LIMIT = 1 << 24  # elements of expanded weights kept per model (float64)


def exact_gemm_fast(q, s, w, wsh1, wsh2, a_group, cache: dict | None = None):
    """The same integers as `gemm`, computed as X @ W'ᵀ with X = q·2^s and W' the
    weights times their group scales: float64 matmuls on exact integers whose partial
    sums stay below 2^53 (X is split into 16-bit halves), so the result is exact and
    equal to `gemm`'s (tests check it). Used only to speed up accuracy runs."""
    T, K = q.shape
    N, nb = wsh1.shape
    g0 = K // nb
    key = (id(w), id(wsh1), id(wsh2))
    hit = cache.get(key) if cache is not None else None
    if hit is None:
        Wd = _expanded_weight(w, wsh1, wsh2, g0)
        wmax = float(Wd.abs().max())
        hit = (w, wsh1, wsh2, Wd.T.contiguous(), wmax)  # keep the tensors alive: ids stay valid
        if cache is not None and cache.setdefault("_n", 0) + Wd.numel() <= _CACHE_LIMIT:
            cache[key] = hit
            cache["_n"] += Wd.numel()
    _, _, _, WdT, wmax = hit
    X = q.to(i64)
    if s is not None:
        sa = s.to(i64).repeat_interleave(a_group, dim=1)
        X = shl(X, sa)
    lo = torch.bitwise_and(X, 0xFFFF)
    hi = shr(X, 16)
    hmax = float(hi.abs().max()) if hi.numel() else 0.0
    if max(hmax, 65535.0) * wmax * K >= 2.0 ** 52:
        return X @ WdT.to(i64)  # exact int64 matmul (slow path)
    acc = shl((hi.double() @ WdT).to(i64), 16) + (lo.double() @ WdT).to(i64)
    return acc


# ------------------------------------------------------------------- static spec


@dataclass
class Spec:
    """Everything static about an integer design (Python ints and approximations)."""

    arch: str
    d_model: int
    d_inner: int
    d_state: int
    d_conv: int
    n_layer: int
    vocab: int
    dt_rank: int = 0
    nheads: int = 0
    headdim: int = 0
    ngroups: int = 1
    conv_dim: int = 0
    w_bits: int = 8
    a_bits: int = 8
    a_group: int = 0          # resolved group sizes (<= K)
    a_group_out: int = 0
    other_bits: int = 8
    sum2pot: bool = False
    rotation: bool = True
    bits: dict = field(default_factory=dict)
    resid_bits: int = 24
    resid_frac: int = 10
    act_frac: int = 10
    norm_frac: int = 12
    logit_frac: int = 8
    approx: dict = field(default_factory=dict)  # func -> Approx
    norm: tuple = ()          # (c_sqrt_l, eps_int) of the residual RMSNorm
    gnorm: tuple = ()         # (c_sqrt_l,) of the gated RMSNorm (mamba2; eps is a parameter)
    dt_limit: tuple | None = None               # (lo, hi) in softplus-output units (mamba2)
    fast_gemm: bool = False

    def qmax(self, name: str) -> int:
        return (1 << (self.bits.get(name, 8) - 1)) - 1

    def umax(self, name: str) -> int:
        return (1 << self.bits.get(name, 8)) - 1

    def dtype(self, name: str, signed: bool = True) -> torch.dtype:
        """The narrowest torch integer type that stores tensor `name` at its width."""
        b = self.bits.get(name, 8)
        if signed:
            return i8 if b <= 8 else (i16 if b <= 16 else i32)
        return u8 if b <= 8 else (i16 if b <= 15 else i32)


def _gemm(spec: Spec) -> Callable:
    if not spec.fast_gemm:
        return gemm
    cache = spec.__dict__.setdefault("_fast_cache", {})
    return lambda *a: exact_gemm_fast(*a, cache=cache)


# ----------------------------------------------------------------------- kernels
# Each kernel: fn(*inputs) -> tuple of outputs; inputs are activations (by name) and
# parameters (`layer.` + name). Batch rows lead every activation.


@dataclass(frozen=True)
class QKernel:
    kind: str
    fn: Callable
    inputs: tuple[str, ...]   # names; parameters start with "p:"
    outputs: tuple[str, ...]


def k_embed(spec: Spec):
    def embed(tokens, table):
        return (table[tokens],)
    return QKernel("embed", embed, ("tokens", "p:embed"), ("resid",))


def k_norm(spec: Spec, kind: str, src: str, dst: str):
    rs: RsqrtApprox = spec.approx["rsqrt"]
    c_sqrt_l, eps_int = spec.norm

    def norm(resid, c0, c1=None):
        tabs = (c0,) if c1 is None else (c0, c1)
        xn = norm_int(resid, rs, tabs, c_sqrt_l, eps_int, spec.norm_frac)
        return (sat(xn, 32).to(i32),)
    tabs = ("p:rsqrt.c0", "p:rsqrt.c1") if rs.kind == "pwl" else ("p:rsqrt.c0",)
    return QKernel(kind, norm, (src, *tabs), (dst,))


def _lin_inputs(prefix: str, spec: Spec, second: bool):
    ins = (f"p:{prefix}.w", f"p:{prefix}.wsh1")
    return ins + ((f"p:{prefix}.wsh2",) if second else ())


def k_in_proj(spec: Spec):
    E, gq = spec.d_inner, _gemm(spec)
    a_bits, ag = spec.a_bits, spec.a_group
    x8, xd = spec.qmax("x"), spec.dtype("x")

    if spec.arch == "mamba1":
        def in_proj(xn, sh, w, wsh1, wsh2=None):
            q, s = dynquant(xn, a_bits, ag)
            acc = gq(q, s, w, wsh1, wsh2, ag)
            x = requant(acc[:, :E], sh[:E], -x8, x8).to(xd)
            z = requant(acc[:, E:], sh[E:], -32768, 32767).to(i16)
            return x, z
        outs = ("x_pre", "z")
    else:
        CD = spec.conv_dim

        def in_proj(xn, sh, w, wsh1, wsh2=None):
            q, s = dynquant(xn, a_bits, ag)
            acc = gq(q, s, w, wsh1, wsh2, ag)
            z = requant(acc[:, :E], sh[:E], -32768, 32767).to(i16)
            x = requant(acc[:, E:E + CD], sh[E:E + CD], -x8, x8).to(xd)
            dt = requant(acc[:, E + CD:], sh[E + CD:], -32768, 32767).to(i16)
            return z, x, dt
        outs = ("z", "x_pre", "dt")
    return QKernel("in_proj", in_proj, ("xn", "p:in_proj.sh", *_lin_inputs("in_proj", spec, spec.sum2pot)), outs)


def _approx_tabs(spec: Spec, f: str) -> tuple[str, ...]:
    a = spec.approx[f]
    return (f"p:{f}.c0", f"p:{f}.c1") if a.kind == "pwl" else (f"p:{f}.c0",)


def _split_tabs(spec: Spec, f: str, tabs: tuple) -> tuple[tuple, tuple]:
    n = 2 if spec.approx[f].kind == "pwl" else 1
    return tabs[:n], tabs[n:]


def k_conv(spec: Spec):
    silu: Approx = spec.approx["silu"]
    x8 = spec.qmax("x")

    def conv(x_pre, conv_state, w, b, sh_in, sh_out, *tabs):
        win = torch.cat([conv_state[:, :, 1:], x_pre[:, :, None]], dim=2)      # (B, C, K) int8
        acc = (win.to(i32) * w.to(i32)[None]).sum(-1, dtype=i32).to(i64) + b.to(i64)[None]
        a = requant(acc, sh_in, -32768, 32767)
        y = silu.apply(a, *tabs)                                               # s20.12
        xc = requant(y, sh_out, -x8, x8).to(spec.dtype("x"))
        return xc, win
    ins = ("x_pre", "conv_state", "p:conv.w", "p:conv.b", "p:conv.sh_in", "p:conv.sh_out", *_approx_tabs(spec, "silu"))
    return QKernel("conv", conv, ins, ("xc", "conv_state_out"))


def k_x_proj(spec: Spec):
    """Mamba1: x_proj, dt_proj and softplus -> Δ (uint8), B, C (int8)."""
    R, N, gq = spec.dt_rank, spec.d_state, _gemm(spec)
    sp: Approx = spec.approx["softplus"]
    dmax, bmax, cmax = spec.umax("delta"), spec.qmax("B"), spec.qmax("C")

    def x_proj(xc, wx, wxsh, xsh, wdt, wdtsh, bdt, dtsh, dsh, *tabs):
        acc = gq(xc, None, wx, wxsh, None, 0)
        dtl = requant(acc[:, :R], xsh[:R], -127, 127).to(i8)
        Bq = requant(acc[:, R:R + N], xsh[R:R + N], -bmax, bmax).to(spec.dtype("B"))
        Cq = requant(acc[:, R + N:], xsh[R + N:], -cmax, cmax).to(spec.dtype("C"))
        acc2 = gq(dtl, None, wdt, wdtsh, None, 0) + bdt.to(i64)[None]
        a = requant(acc2, dtsh, -32768, 32767)
        d = sp.apply(a, *tabs)                                                 # u24.16
        delta = requant(d, dsh, 0, dmax).to(spec.dtype("delta", signed=False))
        return delta, Bq, Cq
    ins = ("xc", "p:x_proj.w", "p:x_proj.wsh1", "p:x_proj.sh", "p:dt_proj.w", "p:dt_proj.wsh1",
           "p:dt_proj.b", "p:dt_proj.sh", "p:delta.sh", *_approx_tabs(spec, "softplus"))
    return QKernel("x_proj", x_proj, ins, ("delta", "B", "C"))


def _h_update(spec, dA, h, u, Bh, l1, l2, sh_h):
    hmax = spec.qmax("h")
    t1 = dA * h.to(i64)
    t2 = u * Bh
    acc = shl(t1, l1.to(i64)) + shl(t2, l2.to(i64))
    return requant(acc, sh_h, -hmax, hmax)


def k_m1_ssm(spec: Spec):
    exp: Approx = spec.approx["exp"]
    silu: Approx = spec.approx["silu"]
    ymax, gbits = spec.qmax("y"), 24
    af = spec.act_frac

    def ssm(h, xc, delta, Bq, Cq, z, A, sh_dA, l1, l2, sh_h, ly, Dq, lD, sh_y, sh_g, *tabs):
        etabs, stabs = _split_tabs(spec, "exp", tabs)
        d = delta.to(i64)                                                       # (B, E)
        x = xc.to(i64)
        dAin = requant(d[:, :, None] * A.to(i64)[None], sh_dA, -32768, 0)      # (B, E, N)
        dA = exp.apply(dAin, *etabs)                                            # u(b).b
        u = (d * x)[:, :, None]
        hn = _h_update(spec, dA, h, u, Bq.to(i64)[:, None, :], l1, l2, sh_h)
        p = hn * Cq.to(i64)[:, None, :]
        acc = shl(p, ly.to(i64)).sum(-1) + shl(Dq.to(i64) * x, lD.to(i64))
        y = requant(acc, sh_y, -ymax, ymax)                                     # int8 (B, E)
        s = silu.apply(z, *stabs)                                               # s20.12
        g = requant(y * s, sh_g, -(1 << (gbits - 1)) + 1, (1 << (gbits - 1)) - 1)
        return g.to(i32), hn.to(spec.dtype("h"))
    ins = ("ssm_state", "xc", "delta", "B", "C", "z", "p:ssm.A", "p:ssm.sh_dA", "p:ssm.l1", "p:ssm.l2",
           "p:ssm.sh_h", "p:ssm.ly", "p:ssm.D", "p:ssm.lD", "p:ssm.sh_y", "p:ssm.sh_g",
           *_approx_tabs(spec, "exp"), *_approx_tabs(spec, "silu"))
    return QKernel("ssm", ssm, ins, ("g", "ssm_state_out"))


def k_m2_ssm(spec: Spec):
    exp: Approx = spec.approx["exp"]
    sp: Approx = spec.approx["softplus"]
    E, N, H, P, G = spec.d_inner, spec.d_state, spec.nheads, spec.headdim, spec.ngroups
    ymax, dmax = spec.qmax("y"), spec.umax("delta")
    lim = spec.dt_limit

    def ssm(h, xbc, dt, dtb, dsh, A, sh_dA, l1, l2, sh_h, ly, Dq, lD, sh_y, *tabs):
        stabs, etabs = _split_tabs(spec, "softplus", tabs)
        Bt = xbc.shape[0]
        a = torch.clamp(dt.to(i64) + dtb.to(i64)[None], -32768, 32767)
        sp_out = sp.apply(a, *stabs)                                            # u24.16
        if lim is not None:
            sp_out = torch.clamp(sp_out, lim[0], lim[1])
        d = requant(sp_out, dsh, 0, dmax)                                       # (B, H)
        dAin = requant(d * A.to(i64)[None], sh_dA, -32768, 0)
        dA = exp.apply(dAin, *etabs)                                            # (B, H)
        xb = xbc.to(i64)
        x = xb[:, :E].reshape(Bt, H, P)
        Bg = xb[:, E:E + G * N].reshape(Bt, G, 1, N).expand(Bt, G, H // G, N).reshape(Bt, H, N)
        Cg = xb[:, E + G * N:].reshape(Bt, G, 1, N).expand(Bt, G, H // G, N).reshape(Bt, H, N)
        u = (d[:, :, None] * x)[..., None]                                      # (B, H, P, 1)
        hn = _h_update(spec, dA[:, :, None, None], h, u, Bg[:, :, None, :], l1, l2, sh_h)
        p = hn * Cg[:, :, None, :]
        acc = shl(p, ly.to(i64)).sum(-1) + shl(Dq.to(i64)[None, :, None] * x, lD.to(i64))
        y = requant(acc, sh_y, -ymax, ymax).reshape(Bt, E)
        return y.to(spec.dtype("y")), hn.to(spec.dtype("h"))
    ins = ("ssm_state", "xc", "dt", "p:ssm.dt_bias", "p:delta.sh", "p:ssm.A", "p:ssm.sh_dA",
           "p:ssm.l1", "p:ssm.l2", "p:ssm.sh_h", "p:ssm.ly", "p:ssm.D", "p:ssm.lD", "p:ssm.sh_y",
           *_approx_tabs(spec, "softplus"), *_approx_tabs(spec, "exp"))
    return QKernel("ssm", ssm, ins, ("y", "ssm_state_out"))


def k_gated_norm(spec: Spec, layer: int):
    silu: Approx = spec.approx["silu"]
    rs: RsqrtApprox = spec.approx["rsqrt"]
    E, G = spec.d_inner, spec.ngroups
    (c_sqrt_l,) = spec.gnorm
    gbits = 24

    def gated_norm(y, z, sh_g, eps, *tabs):
        stabs, rtabs = _split_tabs(spec, "silu", tabs)
        s = silu.apply(z, *stabs)
        g = requant(y.to(i64) * s, sh_g, -(1 << (gbits - 1)) + 1, (1 << (gbits - 1)) - 1)
        Bt = g.shape[0]
        gn = norm_int(g.reshape(Bt, G, E // G), rs, rtabs, c_sqrt_l, eps.to(i64), spec.norm_frac)
        return (sat(gn.reshape(Bt, E), 32).to(i32),)
    ins = ("y", "z", "p:gnorm.sh_g", "p:gnorm.eps", *_approx_tabs(spec, "silu"), *_approx_tabs(spec, "rsqrt"))
    return QKernel("gated_norm", gated_norm, ins, ("g",))


def k_out_proj(spec: Spec):
    E, gq = spec.d_inner, _gemm(spec)
    a_bits, ag = spec.a_bits, spec.a_group_out
    rb = spec.resid_bits
    rot = spec.rotation

    m_small = hadamard.factor(E)[0] if rot else 1

    def out_proj(g, resid, sh, w, wsh1, wsh2=None, sign=None):
        v = g.to(i64)
        if rot:
            v = hadamard.fwht(v, E, sign)
        q, s = dynquant(v, a_bits, ag)
        acc = gq(q, s, w, wsh1, wsh2, ag)
        o = requant(acc, sh, -(1 << 40), 1 << 40)
        return (sat(resid.to(i64) + o, rb).to(i32),)
    ins = ("g", "resid", "p:out_proj.sh", *_lin_inputs("out_proj", spec, spec.sum2pot))
    if m_small > 1:
        # the small Hadamard factor's signs are a ROM port (H_m, m x m, +1 / -1)
        fn = out_proj if spec.sum2pot else (lambda g, resid, sh, w, wsh1, sign: out_proj(g, resid, sh, w, wsh1, None, sign))
        return QKernel("out_proj", fn, ins + ("p:hadamard.sign",), ("resid_out",))
    return QKernel("out_proj", out_proj, ins, ("resid_out",))


def k_head(spec: Spec):
    gq = _gemm(spec)
    bits = spec.other_bits

    def lm_head(xn, sh, w, wsh1):
        q, s = dynquant(xn, bits, xn.shape[-1])
        acc = gq(q, s, w, wsh1, None, xn.shape[-1])
        return (requant(acc, sh, -(1 << 31) + 1, (1 << 31) - 1).to(i32),)
    return QKernel("lm_head", lm_head, ("xn", "p:head.sh", "p:head.w", "p:head.wsh1"), ("logits",))


def layer_kernels(spec: Spec, layer: int = 0) -> list[QKernel]:
    """The integer kernels of one layer, in execution order. Activation names connect
    producers and consumers; `resid` enters, `resid_out` leaves."""
    ks = [k_norm(spec, "norm", "resid", "xn"), k_in_proj(spec), k_conv(spec)]
    if spec.arch == "mamba1":
        ks += [k_x_proj(spec), k_m1_ssm(spec)]
    else:
        ks += [k_m2_ssm(spec), k_gated_norm(spec, layer)]
    ks.append(k_out_proj(spec))
    return ks


def model_kernels(spec: Spec) -> tuple[QKernel, QKernel, QKernel]:
    return k_embed(spec), k_norm(spec, "norm_f", "resid", "xn"), k_head(spec)


def run_kernel(k: QKernel, env: dict, params: dict, prefix: str) -> None:
    args = []
    for n in k.inputs:
        if n.startswith("p:"):
            key = n[2:]
            args.append(params[prefix + key] if prefix + key in params else params[key])
        else:
            args.append(env[n])
    outs = k.fn(*args)
    for n, v in zip(k.outputs, outs):
        env[n] = v
