"""Quantization configurations: what is quantized to how many bits, with which scales,
groups and nonlinearity approximations. Frozen dataclasses, validated on construction
and again against a model (`QuantConfig.check(cfg)`).

Number formats used throughout: a quantized tensor is an integer tensor `q` with a
power-of-two exponent `e` (real value = q · 2^e). Exponents are static (from
calibration) except for the activations of the big linear layers, which get a dynamic
power-of-two scale per token and group computed online from the group's maximum
(LightMamba's "groups of 8 channels sharing a power-of-two scale").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mambaflow.errors import MambaflowError


class QuantError(MambaflowError):
    """An unsupported quantization configuration, a model it cannot apply to, or a model
    that is already quantized."""


APPROX_FUNCS = ("exp", "softplus", "silu", "rsqrt")
APPROX_KINDS = ("pwl", "lut")
SSM_TENSORS = ("x", "delta", "dA", "B", "C", "h", "y", "conv_w", "A", "D")


@dataclass(frozen=True)
class ApproxConfig:
    """How each nonlinearity is computed in the integer design.

    kind per function: "pwl" (first-order piecewise-linear, uniform segments whose
    breakpoints sit on power-of-two boundaries of the fixed-point input, so the segment
    index is a shift: FastMamba) or "lut" (a lookup table indexed by the input's top
    bits: LightMamba). `segments` is the number of segments (pwl) or table entries (lut)
    over the function's input range; a power of two.
    """

    exp: str = "pwl"
    softplus: str = "pwl"
    silu: str = "pwl"
    rsqrt: str = "pwl"
    segments: dict = field(default_factory=lambda: {"exp": 256, "softplus": 256, "silu": 256, "rsqrt": 64})
    lut_segments: dict = field(default_factory=lambda: {"exp": 4096, "softplus": 4096, "silu": 4096, "rsqrt": 1024})

    def __post_init__(self):
        for f in APPROX_FUNCS:
            k = getattr(self, f)
            if k not in APPROX_KINDS:
                raise QuantError(f"ApproxConfig.{f}={k!r}: choose one of {', '.join(APPROX_KINDS)}.")
        for name in ("segments", "lut_segments"):
            d = getattr(self, name)
            for f, s in d.items():
                if f not in APPROX_FUNCS:
                    raise QuantError(f"ApproxConfig.{name}: unknown function {f!r}; use {APPROX_FUNCS}.")
                if not isinstance(s, int) or s < 2 or s & (s - 1):
                    raise QuantError(f"ApproxConfig.{name}[{f!r}]={s!r}: must be a power of two >= 2.")

    def n_segments(self, f: str) -> int:
        kind = getattr(self, f)
        d = self.segments if kind == "pwl" else self.lut_segments
        default = ApproxConfig.__dataclass_fields__["segments" if kind == "pwl" else "lut_segments"].default_factory()
        return d.get(f, default[f])


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization of a Mamba1 / Mamba2 model.

    Linear layers in_proj / out_proj: `w_bits` / `a_bits` (8 or 4), weight groups of
    `w_group` input channels (None: one group per output row) with `w_scale` "pot"
    (power of two) or "sum2pot" (2^a + 2^b, LightMamba); activations quantized per token
    in groups of `a_group` (None: the whole row) with a dynamic power-of-two scale. A group
    larger than the largest power of two dividing the input width is capped to it.
    x_proj / dt_proj (Mamba1) and the LM head use `other_bits` for weights and
    activations. SSM block and conv: power-of-two, per-channel static exponents from
    calibration, widths in `ssm_bits` (8 by default; "dA" is exp(ΔA), unsigned).
    `clip`: static SSM/conv ranges are min(max, clip · rms) of the calibration data per
    channel (None: the maximum).
    `rotation`: Hadamard rotation of the residual stream (fused offline into the
    embedding, in_proj, out_proj and the head) and of out_proj's input (online FWHT).
    Fixed-point formats: residual stream `resid_bits` signed with `resid_frac`
    fraction bits (None: chosen by calibration so the largest residual seen uses half the
    range; LightMamba fixes 10); nonlinearity inputs `act_frac` fraction bits in 16-bit
    words; normalized activations `norm_frac`; logits `logit_frac`.
    """

    name: str = "custom"
    w_bits: int = 8
    a_bits: int = 8
    w_group: int | None = None
    a_group: int | None = None
    w_scale: str = "pot"
    other_bits: int = 8
    ssm_bits: dict = field(default_factory=dict)
    rotation: bool = True
    clip: float | None = None
    approx: ApproxConfig = field(default_factory=ApproxConfig)
    resid_bits: int = 24
    resid_frac: int | None = None
    act_frac: int = 10
    norm_frac: int = 12
    logit_frac: int = 8

    def __post_init__(self):
        for name in ("w_bits", "a_bits"):
            v = getattr(self, name)
            if v not in (4, 8):
                raise QuantError(f"QuantConfig.{name}={v!r} is not supported: use 4 or 8 bits.")
        if self.other_bits not in (4, 8):
            raise QuantError(f"QuantConfig.other_bits={self.other_bits!r}: use 4 or 8.")
        if self.w_scale not in ("pot", "sum2pot"):
            raise QuantError(f"QuantConfig.w_scale={self.w_scale!r}: use 'pot' or 'sum2pot'.")
        for name in ("w_group", "a_group"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1 or v & (v - 1)):
                raise QuantError(f"QuantConfig.{name}={v!r}: a group size is a power of two (or None for a whole row).")
        bad = set(self.ssm_bits) - set(SSM_TENSORS)
        if bad:
            raise QuantError(f"QuantConfig.ssm_bits: unknown tensors {sorted(bad)}; known: {', '.join(SSM_TENSORS)}.")
        for k, v in self.ssm_bits.items():
            if not isinstance(v, int) or not 2 <= v <= 16:
                raise QuantError(f"QuantConfig.ssm_bits[{k!r}]={v!r}: widths from 2 to 16 bits are supported.")
        if not 12 <= self.resid_bits <= 28:
            raise QuantError(f"QuantConfig.resid_bits={self.resid_bits}: use 12..28 (int64 sums of squares must not overflow).")
        if self.resid_frac is not None and not 0 <= self.resid_frac < self.resid_bits - 2:
            raise QuantError(f"QuantConfig.resid_frac={self.resid_frac} leaves no integer bits in {self.resid_bits}.")
        if not 4 <= self.act_frac <= 12:
            raise QuantError(f"QuantConfig.act_frac={self.act_frac}: use 4..12 (16-bit words).")
        if not 4 <= self.norm_frac <= 14:
            raise QuantError(f"QuantConfig.norm_frac={self.norm_frac}: use 4..14.")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and self.clip >= 1):
            raise QuantError(f"QuantConfig.clip={self.clip!r}: a clip ratio (x rms) >= 1, or None.")
        if not isinstance(self.approx, ApproxConfig):
            raise QuantError("QuantConfig.approx must be an ApproxConfig.")

    def group(self, which: str, K: int) -> int:
        """The group size used for an input width K: the configured one (None: K), capped
        at the largest power of two dividing K (e.g. 128 -> 64 for K = 192)."""
        g = getattr(self, which + "_group")
        return K if g is None else min(g, K & -K)

    def bits(self, tensor: str) -> int:
        return self.ssm_bits.get(tensor, 8)

    def with_(self, **kw) -> "QuantConfig":
        return replace(self, **kw)

    def check(self, cfg) -> None:
        """Raise QuantError unless this configuration applies to the model config."""
        from . import hadamard

        D, E = cfg.d_model, cfg.d_inner
        if self.rotation:
            for n, what in ((D, "d_model"), (E, "d_inner")):
                if not hadamard.is_supported(n):
                    raise QuantError(
                        f"{self.name}: rotation needs a Hadamard matrix of order {what}={n}, which "
                        "mambaflow cannot build; use rotation=False or a width m·2^k with a known m.")


W8A8 = QuantConfig(name="w8a8", w_bits=8, a_bits=8, w_group=None, a_group=None, w_scale="pot")
W4A4 = QuantConfig(name="w4a4", w_bits=4, a_bits=4, w_group=128, a_group=8, w_scale="sum2pot")
W4A4_NOROT = replace(W4A4, name="w4a4_norot", rotation=False)
PRESETS = {c.name: c for c in (W8A8, W4A4, W4A4_NOROT)}
