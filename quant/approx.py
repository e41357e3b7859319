"""Integer approximations of exp, softplus, SiLU and rsqrt, each with a stated error bound.

Every approximation maps a fixed-point integer input (format `fin`) to a fixed-point
integer output (format `fout`) with integer operations only: a clamp, a shift that
picks the segment (breakpoints on power-of-two boundaries of the input), a table read
and, for the first-order piecewise-linear kind, one multiply, an add and a rounding
shift:

    u   = clamp(x, XLO, XHI) - XLO          segment i = u >> k, offset r = u & (2^k - 1)
    pwl : y = c0[i] + ((c1[i] * r + 2^(k-1)) >> k)     c0 = f at the breakpoint, c1 = slope·2^k
    lut : y = T[(u + 2^(k-1)) >> k]                    T = f at the nearest grid point

Outside [XLO, XHI] the value is f at the clamped end, or, for softplus and SiLU on the
right, the identity (both approach x there). The output saturates to `fout`.

Stated bound (`Approx.bound`, absolute, in real units) over the whole `domain`:
    pwl : h²/8 · max|f''| + 1 LSB_out   (interpolation error of the chord, table rounding
          ½ LSB, final rounding ½ LSB), h = 2^k · LSB_in the segment width;
    lut : h/2 · max|f'| + ½ LSB_out;
    tails and output saturation: the exact supremum of |f - approximation| there, from
          the function's monotonicity.
max|f'|, max|f''| are taken over the core range from the closed-form derivatives on a
dense grid with a 1% margin. Tests check every input of the domain against the bound.

`rsqrt` is used by RMSNorm through `norm_int`: v > 0 is split as m · 4^j with the
mantissa m in [1, 4) carried on M fraction bits; the table approximates 1/√m and the
4^-j factor becomes a shift. Its relative error bound is `RsqrtApprox.rel_bound`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .schemes import QuantError


@dataclass(frozen=True)
class Fmt:
    """A fixed-point format: `bits`-wide signed/unsigned integer, `frac` fraction bits."""

    bits: int
    frac: int
    signed: bool = True

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.frac

    def __str__(self):
        return f"{'s' if self.signed else 'u'}{self.bits}.{self.frac}"


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# f, f', f'' in float64 (numpy)
_FUNCS = {
    "exp": (np.exp, np.exp, np.exp),
    "softplus": (lambda x: np.logaddexp(0.0, x), _sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "silu": (lambda x: x * _sigmoid(x),
             lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
             lambda x: _sigmoid(x) * (1 - _sigmoid(x)) * (2 + x * (1 - 2 * _sigmoid(x)))),
    "rsqrt": (lambda m: m ** -0.5, lambda m: -0.5 * m ** -1.5, lambda m: 0.75 * m ** -2.5),
}

TORCH_FUNCS = {
    "exp": torch.exp,
    "softplus": torch.nn.functional.softplus,
    "silu": torch.nn.functional.silu,
    "rsqrt": torch.rsqrt,
}


def shl(x: Tensor, s) -> Tensor:
    """x << s: s a Python int or an integer tensor (the two lower to different ATen ops)."""
    return x << s if isinstance(s, int) else torch.bitwise_left_shift(x, s)


def shr(x: Tensor, s) -> Tensor:
    """x >> s (arithmetic): s a Python int or an integer tensor."""
    return x >> s if isinstance(s, int) else torch.bitwise_right_shift(x, s)


def _round_half_up(a: np.ndarray) -> np.ndarray:
    return np.floor(a + 0.5)


def _shift_right_round(x: Tensor, k: int) -> Tensor:
    """round-half-up(x / 2^k) for an integer tensor, k >= 0 (a Python int)."""
    if k == 0:
        return x
    return shr(x + (1 << (k - 1)), k)


def convert(x: Tensor, fin: Fmt, fout: Fmt) -> Tensor:
    """Re-express an integer in format fin with fout's fraction bits (rounding half up),
    no saturation."""
    d = fout.frac - fin.frac
    if d >= 0:
        return shl(x, d)
    return _shift_right_round(x, -d)


class Approx:
    """One nonlinearity approximation (see the module docstring)."""

    def __init__(self, func: str, kind: str, segments: int, fin: Fmt, fout: Fmt,
                 core: tuple[float, float], domain: tuple[int, int], right: str = "clamp"):
        if func not in _FUNCS:
            raise QuantError(f"no approximation for {func!r}; known: {', '.join(_FUNCS)}")
        if kind not in ("pwl", "lut"):
            raise QuantError(f"approximation kind {kind!r}: use 'pwl' or 'lut'")
        self.func, self.kind, self.fin, self.fout, self.right = func, kind, fin, fout, right
        self.domain = domain
        XLO = int(round(core[0] * 2**fin.frac))
        XHI = int(round(core[1] * 2**fin.frac))
        span = XHI - XLO
        if span % segments:
            raise QuantError(f"{func}: core range {core} in {fin} is not {segments} equal segments")
        step = span // segments
        if step < 2 or step & (step - 1):
            raise QuantError(
                f"{func} {kind}: {segments} segments over {core} give a segment of {step} input "
                f"LSBs; it must be a power of two >= 2 (change the number of segments).")
        self.XLO, self.XHI, self.S, self.k = XLO, XHI, segments, step.bit_length() - 1
        f, f1, f2 = _FUNCS[func]
        grid = (XLO + np.arange(segments + 1, dtype=np.float64) * step) * fin.lsb
        raw = _round_half_up(f(grid) * 2**fout.frac)
        vals = np.clip(raw, fout.lo, fout.hi)
        if kind == "pwl":
            # the chord ends on the unsaturated values (exp(0) = 1 is 2^frac, one above
            # an unsigned fraction-only format): saturating them first would bend the last
            # segment down; the output saturates after the interpolation instead
            c0 = raw.astype(np.int64)
            c1 = np.zeros_like(c0)
            c1[:-1] = c0[1:] - c0[:-1]
            self._tables = (torch.from_numpy(c0), torch.from_numpy(c1))
        else:
            self._tables = (torch.from_numpy(vals.astype(np.int64)),)
        self.bound = self._stated_bound(f, f1, f2)

    # ------------------------------------------------------------------ evaluation

    def tables(self) -> tuple[Tensor, ...]:
        """The ROM contents (int64 tensors; narrowed by the flow to their bit width)."""
        return tuple(t.clone() for t in self._tables)

    @property
    def table_bits(self) -> int:
        m = max(int(t.abs().max()) for t in self._tables)
        return max(2, m.bit_length() + 1)

    def apply(self, x: Tensor, *tables: Tensor) -> Tensor:
        """The integer approximation: x int tensor in `fin` units -> int64 in `fout`
        units. Integer ops only; `tables` as returned by `tables()`."""
        tables = tables or self._tables
        x = x.to(torch.int64)
        u = torch.clamp(x, self.XLO, self.XHI) - self.XLO
        k = self.k
        if self.kind == "pwl":
            c0, c1 = tables
            i = shr(u, k)
            r = torch.bitwise_and(u, (1 << k) - 1)
            y = c0.to(torch.int64)[i] + _shift_right_round(c1.to(torch.int64)[i] * r, k)
        else:
            (t,) = tables
            i = shr(u + (1 << (k - 1)), k)
            y = t.to(torch.int64)[i]
        if self.right == "identity":
            y = torch.where(x > self.XHI, convert(x, self.fin, self.fout), y)
        return torch.clamp(y, self.fout.lo, self.fout.hi)

    def float_eval(self, x: Tensor) -> Tensor:
        """The approximation seen from float code: round x onto the input grid (clamped to
        the domain), apply, and return the real value (same dtype as x)."""
        q = torch.clamp(torch.floor(x.double() * 2**self.fin.frac + 0.5), *self.domain).to(torch.int64)
        return (self.apply(q).double() * self.fout.lsb).to(x.dtype)

    # ------------------------------------------------------------------ the bound

    def _stated_bound(self, f, f1, f2) -> float:
        lo, hi = self.XLO * self.fin.lsb, self.XHI * self.fin.lsb
        dense = np.linspace(lo, hi, 200001)
        h = 2**self.k * self.fin.lsb
        lsb = self.fout.lsb
        if self.kind == "pwl":
            core = h * h / 8 * float(np.max(np.abs(f2(dense)))) * 1.01 + lsb
        else:
            core = h / 2 * float(np.max(np.abs(f1(dense)))) * 1.01 + lsb / 2
        tails = [0.0]
        d_lo, d_hi = self.domain[0] * self.fin.lsb, self.domain[1] * self.fin.lsb
        if d_lo < lo:  # left clamp: f is monotone on the left tail of every function here
            tails.append(abs(f(d_lo) - f(lo)) + lsb / 2)
        if d_hi > hi:
            if self.right == "identity":
                x = np.linspace(hi, d_hi, 10001)
                rnd = 0.0 if self.fout.frac >= self.fin.frac else lsb / 2
                tails.append(float(np.max(np.abs(f(x) - x))) * 1.01 + rnd)
            else:
                tails.append(abs(f(d_hi) - f(hi)) + lsb / 2)
        # saturation of the output format
        x = np.linspace(d_lo, d_hi, 200001)
        fx = f(x)
        sat = float(np.max(np.maximum(0, np.maximum(fx - self.fout.hi * lsb, self.fout.lo * lsb - fx))))
        return max(core, max(tails)) + sat

    def __repr__(self):
        return (f"Approx({self.func}, {self.kind}, {self.S} segments of 2^{self.k} LSB, "
                f"in {self.fin} out {self.fout}, bound {self.bound:.3g})")


class RsqrtApprox(Approx):
    """1/√m on the mantissa m in [1, 4) with M fraction bits (input = m · 2^M, an
    unsigned integer of M+2 bits), output unsigned with `out_frac` fraction bits."""

    def __init__(self, kind: str, segments: int, M: int = 12, out_frac: int = 15):
        self.M = M
        # segments counts over [0, 4); the table covers [1, 4): 3/4 of them
        S = segments * 3 // 4
        super().__init__("rsqrt", kind, S, Fmt(M + 2, M, False), Fmt(out_frac + 1, out_frac, False),
                         core=(1.0, 4.0), domain=(1 << M, (1 << (M + 2)) - 1))
        # mantissa truncation (relative ½·2^-M at most) + table error (relative, g >= 1/2)
        self.rel_bound = 0.5 * 2.0**-M * 1.01 + 2 * self.bound


# --------------------------------------------------------------------- builders


def build(func: str, kind: str, segments: int, act_frac: int = 10, out: Fmt | None = None,
          rsqrt_M: int = 12, rsqrt_frac: int = 15) -> Approx:
    """The approximation of `func` used by the integer design.

    exp      : input s16 (act_frac) over [-32·, 0] (ΔA <= 0), core [-16, 0]; out `out`.
    softplus : input s16 (act_frac), core [-16, 16), identity above; out u24.16 default.
    silu     : input s16 (act_frac), core [-16, 16), identity above; out s20.12 default.
    rsqrt    : see RsqrtApprox.
    """
    fin = Fmt(16, act_frac)
    R = 2.0 ** (15 - act_frac)  # the input format's range
    core = min(16.0, R / 2)
    if func == "exp":
        return Approx("exp", kind, segments, fin, out or Fmt(16, 16, False), (-core, 0.0), (fin.lo, 0))
    if func == "softplus":
        return Approx("softplus", kind, segments, fin, out or Fmt(24, 16, False), (-core, core),
                      (fin.lo, fin.hi), right="identity")
    if func == "silu":
        return Approx("silu", kind, segments, fin, out or Fmt(20, 12), (-core, core),
                      (fin.lo, fin.hi), right="identity")
    if func == "rsqrt":
        return RsqrtApprox(kind, segments, rsqrt_M, rsqrt_frac)
    raise QuantError(f"no approximation for {func!r}")


# ------------------------------------------------------------- integer RMSNorm


def ilog2(v: Tensor, max_bits: int = 62) -> Tensor:
    """floor(log2 v) for v >= 1 (int64), as a count of thresholds: a priority encoder."""
    thr = shl(torch.ones(max_bits, dtype=torch.int64), torch.arange(1, max_bits + 1))
    return (v[..., None] >= thr).to(torch.int64).sum(-1)


NORM_CFRAC = 14  # fraction bits of the sqrt(L) constant of norm_int


def norm_int(v: Tensor, rs: RsqrtApprox, tables: tuple[Tensor, ...], c_sqrt_l: int,
             eps_int, out_frac: int) -> Tensor:
    """Integer RMS normalization of the last dim: v (int, exponent e) -> v / rms(v) with
    `out_frac` fraction bits (int64).

    1/rms = √L · 1/√(Σv² + L·eps): V = Σv² + eps_int (eps_int = L·eps in v's squared
    units, >= 1) is split as m · 2^e2 (e2 even, m in [1, 4) on M bits: a priority encoder
    and a shift), the table gives g = 2^F/√m, one multiply per row folds in √L
    (c_sqrt_l = round(√L · 2^14)), and each element costs one multiply and a rounding
    shift by F + e2/2 - out_frac."""
    v = v.to(torch.int64)
    V = (v * v).sum(-1, keepdim=True) + eps_int
    e = ilog2(V)
    e2 = e - torch.bitwise_and(e, 1)                      # V = m · 2^e2, m in [1, 4)
    M = rs.M
    up = torch.clamp(M - e2, 0, 62)
    down = torch.clamp(e2 - M, 0, 62)
    mant = shr(shl(V, up), down)                          # m · 2^M (truncated)
    g = rs.apply(mant, *tables)                           # 2^F / √m
    G = shr(g * c_sqrt_l + (1 << (NORM_CFRAC - 1)), NORM_CFRAC)   # 2^F · √L / √m
    sh = rs.fout.frac + shr(e2, 1) - out_frac
    rnd = shr(shl(torch.ones_like(sh), sh), 1)
    return shr(v * G + rnd, sh)


def norm_consts(L: int, eps: float, exponent: int) -> tuple[int, int]:
    """(c_sqrt_l, eps_int) of norm_int for rows of L values with exponent `exponent`."""
    c = int(round(math.sqrt(L) * 2**NORM_CFRAC))
    eps_int = max(1, int(round(L * eps / 2.0 ** (2 * exponent))))
    return c, eps_int
