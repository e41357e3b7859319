"""Python reference for Vitis HLS arbitrary precision arithmetic (AMD UG1399).

Exact integer definitions of what ``ap_int`` / ``ap_fixed`` do, shared by the csim
header shims' tests, the quantization work and the emitter tests.

A fixed point number of type ``<W, I, signed>`` is a *raw* integer ``r`` with value
``r * 2**-(W - I)``; ``F = W - I`` fraction bits (``I`` may be negative or exceed
``W``). Raw values are plain Python ints in the type's range
(``[-2**(W-1), 2**(W-1))`` signed, ``[0, 2**W)`` unsigned); :func:`to_bits` /
:func:`from_bits` convert to and from the ``W``-bit pattern.

Converting a value into a type applies the quantization mode ``Q`` (how the bits
below the LSB are dropped) and then the overflow mode ``O`` (what happens beyond the
range)::

    >>> quantize(Fraction(-3, 8), W=4, I=2, Q="AP_RND_CONV", O="AP_SAT")
    -2
    >>> to_value(-2, W=4, I=2)
    Fraction(-1, 2)

Also here: full-precision result types (:func:`fixed_result_type`,
:func:`int_result_type`), conversions out (:func:`to_double`, :func:`to_float32`,
:func:`fixed_to_int`, :func:`int_from_float`) and Vitis' ap_int division, remainder
and ordering for mixed signedness (:func:`int_div`, :func:`int_rem`,
:func:`int_compare`). tests/test_hls_shims.py checks the C++ shims against these bit
for bit, and these against the real Vitis headers when they are available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Rational
from typing import Union

__all__ = [
    "QUANT_MODES",
    "OVERFLOW_MODES",
    "FixedType",
    "round_shift",
    "quantize",
    "overflow",
    "wrap",
    "to_bits",
    "from_bits",
    "to_value",
    "to_double",
    "to_float32",
    "int_from_float",
    "fixed_to_int",
    "int_result_type",
    "int_div",
    "int_rem",
    "int_compare",
    "fixed_result_type",
]

#: Quantization modes, as spelled in C++. Ties: AP_RND up, AP_RND_ZERO toward 0,
#: AP_RND_MIN_INF down, AP_RND_INF away from 0, AP_RND_CONV to even.
#: AP_TRN floors, AP_TRN_ZERO truncates toward 0.
QUANT_MODES = ("AP_RND", "AP_RND_ZERO", "AP_RND_MIN_INF", "AP_RND_INF", "AP_RND_CONV",
               "AP_TRN", "AP_TRN_ZERO")
#: Overflow modes supported by the shims (AP_WRAP_SM is not).
OVERFLOW_MODES = ("AP_SAT", "AP_SAT_ZERO", "AP_SAT_SYM", "AP_WRAP")

Number = Union[int, float, Fraction]


def _check_modes(Q: str, O: str) -> None:
    if Q not in QUANT_MODES:
        raise ValueError(f"unknown quantization mode {Q!r}; expected one of {QUANT_MODES}")
    if O not in OVERFLOW_MODES:
        raise ValueError(f"unsupported overflow mode {O!r}; expected one of {OVERFLOW_MODES}")


def round_shift(num: int, shift: int, Q: str = "AP_TRN") -> int:
    """``num / 2**shift`` rounded to an integer with quantization mode ``Q``.

    ``shift <= 0`` multiplies exactly. This is the quantization step of every
    conversion: ``num`` is the source raw value, ``shift`` the number of fraction
    bits dropped.
    """
    if Q not in QUANT_MODES:
        raise ValueError(f"unknown quantization mode {Q!r}; expected one of {QUANT_MODES}")
    if shift <= 0:
        return num << -shift
    floor = num >> shift                     # Python >> floors
    rem = num - (floor << shift)             # 0 <= rem < 2**shift
    half = 1 << (shift - 1)
    up = {
        "AP_TRN": False,
        "AP_TRN_ZERO": num < 0 and rem != 0,
        "AP_RND": rem >= half,
        "AP_RND_ZERO": rem > half or (rem == half and num < 0),
        "AP_RND_MIN_INF": rem > half,
        "AP_RND_INF": rem > half or (rem == half and num > 0),
        "AP_RND_CONV": rem > half or (rem == half and (floor & 1) == 1),
    }[Q]
    return floor + int(up)


def wrap(x: int, W: int, signed: bool = True) -> int:
    """``x`` reduced modulo ``2**W`` into the W-bit signed or unsigned range."""
    x &= (1 << W) - 1
    if signed and x >> (W - 1):
        x -= 1 << W
    return x


def to_bits(raw: int, W: int) -> int:
    """The W-bit two's complement pattern (a non-negative int) of ``raw``."""
    return raw & ((1 << W) - 1)


def from_bits(bits: int, W: int, signed: bool = True) -> int:
    """The raw value whose W-bit pattern is ``bits``."""
    return wrap(bits, W, signed)


def _range(W: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (W - 1)), (1 << (W - 1)) - 1
    return 0, (1 << W) - 1


def overflow(q: int, W: int, O: str = "AP_WRAP", signed: bool = True, N: int = 0) -> int:
    """Apply overflow mode ``O`` to the already quantized integer ``q``; return the raw.

    AP_WRAP keeps the low W bits; with ``N > 0`` the N MSBs saturate instead (signed:
    MSB = sign of ``q``, the next N-1 bits its inverse; unsigned: all N set, on either
    side, as Vitis does). AP_SAT clamps; AP_SAT_ZERO gives 0 on overflow; AP_SAT_SYM
    clamps to +-max, so the most negative code is also treated as underflow (for W=1
    signed that "symmetric" code is still -1, as in Vitis).
    """
    lo, hi = _range(W, signed)
    over, under = q > hi, q < lo
    if O == "AP_SAT_SYM" and signed and W > 1 and q == lo:
        under = True
    if not (over or under):
        return q
    if O == "AP_WRAP":
        bits = to_bits(q, W)
        if N > 0:
            if signed:
                msb, nxt = 1 << (W - 1), ((1 << (N - 1)) - 1) << (W - N)
                bits = (bits | msb) & ~nxt if under else (bits & ~msb) | nxt
            else:
                bits |= ((1 << N) - 1) << (W - N)
        return from_bits(bits, W, signed)
    if O == "AP_SAT_ZERO":
        return 0
    if O in ("AP_SAT", "AP_SAT_SYM"):
        if over:
            return hi
        if not signed:
            return 0
        return lo + 1 if O == "AP_SAT_SYM" and W > 1 else lo
    raise ValueError(f"unsupported overflow mode {O!r}; expected one of {OVERFLOW_MODES}")


def _exact(value: Number) -> Union[Fraction, float]:
    """Exact rational of ``value``; non-finite floats are returned unchanged."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else Fraction(value)
    if isinstance(value, (int, Rational)):
        return Fraction(value)
    raise TypeError(f"expected int, float or Fraction, got {type(value).__name__}")


def quantize(value: Number, W: int, I: int, Q: str = "AP_TRN", O: str = "AP_WRAP",
             signed: bool = True, N: int = 0) -> int:
    """Raw value of ``ap_[u]fixed<W, I, Q, O, N>`` assigned the exact ``value``.

    ``value`` is an int, a float (taken exactly) or a Fraction. NaN and +-inf act as
    an infinitely large value of their sign bit (overflow), as Vitis' double
    conversion does. The result is the raw integer; its value is
    ``to_value(raw, W, I)``.
    """
    _check_modes(Q, O)
    if not 1 <= W:
        raise ValueError(f"width W must be >= 1, got {W}")
    if not 0 <= N <= W:
        raise ValueError(f"saturation bits N must be in 0..W, got {N}")
    v = _exact(value)
    if isinstance(v, float):                 # nan or inf: a huge value, low W bits 0
        q = 1 << (W + 2)
        return overflow(-q if math.copysign(1.0, v) < 0 else q, W, O, signed, N)
    F = W - I
    num, den = v.numerator, v.denominator    # den is a power of two for binary inputs
    if den & (den - 1) == 0:
        q = round_shift(num, den.bit_length() - 1 - F, Q)
    else:                                     # general rational: round num/den * 2**F
        q = _round_fraction(v * Fraction(2) ** F, Q)
    return overflow(q, W, O, signed, N)


def _round_fraction(x: Fraction, Q: str) -> int:
    floor = x.numerator // x.denominator
    rem = x - floor
    half = Fraction(1, 2)
    up = {
        "AP_TRN": False,
        "AP_TRN_ZERO": x < 0 and rem != 0,
        "AP_RND": rem >= half,
        "AP_RND_ZERO": rem > half or (rem == half and x < 0),
        "AP_RND_MIN_INF": rem > half,
        "AP_RND_INF": rem > half or (rem == half and x > 0),
        "AP_RND_CONV": rem > half or (rem == half and (floor & 1) == 1),
    }[Q]
    return floor + int(up)


def to_value(raw: int, W: int, I: int) -> Fraction:
    """Exact value ``raw * 2**-(W - I)``."""
    return Fraction(raw) * Fraction(2) ** (I - W)


def to_double(raw: int, W: int, I: int) -> float:
    """``to_double()``: the value rounded to the nearest double (ties to even)."""
    return float(to_value(raw, W, I))


def to_float32(raw: int, W: int, I: int) -> float:
    """``to_float()``: the value rounded once to the nearest float32 (ties to even).

    Returned as a Python float holding that float32 value. Normal range only.
    """
    if raw == 0:
        return 0.0
    n = abs(raw).bit_length()
    drop = max(n - 24, 0)                     # keep 24 significant bits
    mant = round_shift(raw, drop, "AP_RND_CONV")
    return float(Fraction(mant) * Fraction(2) ** (drop + I - W))


def int_from_float(value: Number, W: int, signed: bool = True) -> int:
    """``ap_[u]int<W>`` constructed from a float: truncate toward zero, wrap mod 2**W.

    (Unlike ap_fixed<W, W>, which floors.) NaN and inf give 0, as Vitis.
    """
    v = _exact(value)
    if isinstance(v, float):
        return 0
    return wrap(int(v), W, signed)            # int() of a Fraction truncates toward 0


def fixed_to_int(raw: int, W: int, I: int, signed: bool = True) -> int:
    """Integer part of a fixed point raw value, as ``to_int()`` / ``ap_int = ap_fixed``.

    Truncates toward zero (C semantics), except that Vitis returns -1 for any negative
    value of a signed type with ``I <= 0`` (its integer part is held in a 1-bit signed
    int); the shims mirror that. The caller narrows the result (to_int: 32 bits).
    """
    if I <= 0:
        return -1 if signed and raw < 0 else 0
    v = to_value(raw, W, I)
    return int(v)                             # int() of a Fraction truncates toward 0


@dataclass(frozen=True)
class FixedType:
    """An ``ap_fixed`` / ``ap_ufixed`` type: width W, integer bits I, modes.

    >>> t = FixedType(8, 3, Q="AP_RND", O="AP_SAT")
    >>> t.cpp()
    'ap_fixed<8, 3, AP_RND, AP_SAT>'
    >>> t.quantize(1.3), t.value(t.quantize(1.3))
    (42, Fraction(21, 16))
    """

    W: int
    I: int
    signed: bool = True
    Q: str = "AP_TRN"
    O: str = "AP_WRAP"
    N: int = 0

    def __post_init__(self) -> None:
        _check_modes(self.Q, self.O)
        if self.W < 1:
            raise ValueError(f"width W must be >= 1, got {self.W}")
        if not 0 <= self.N <= self.W:
            raise ValueError(f"saturation bits N must be in 0..W, got {self.N}")

    @property
    def F(self) -> int:
        """Number of fraction bits, W - I."""
        return self.W - self.I

    @property
    def min_raw(self) -> int:
        return _range(self.W, self.signed)[0]

    @property
    def max_raw(self) -> int:
        return _range(self.W, self.signed)[1]

    @property
    def lsb(self) -> Fraction:
        """Value of one raw unit, 2**-F."""
        return Fraction(2) ** -self.F

    def quantize(self, value: Number) -> int:
        """Raw value of this type assigned ``value`` (Q, then O)."""
        return quantize(value, self.W, self.I, self.Q, self.O, self.signed, self.N)

    def value(self, raw: int) -> Fraction:
        return to_value(raw, self.W, self.I)

    def to_double(self, raw: int) -> float:
        return to_double(raw, self.W, self.I)

    def bits(self, raw: int) -> int:
        return to_bits(raw, self.W)

    def from_bits(self, bits: int) -> int:
        return from_bits(bits, self.W, self.signed)

    def cpp(self) -> str:
        """The C++ spelling; default trailing modes are omitted."""
        args = [str(self.W), str(self.I)]
        tail = [self.Q, self.O, str(self.N)]
        defaults = ["AP_TRN", "AP_WRAP", "0"]
        while tail and tail[-1] == defaults[len(tail) - 1]:
            tail.pop()
        name = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{name}<{', '.join(args + tail)}>"


def int_result_type(op: str, W1: int, S1: bool, W2: int, S2: bool) -> tuple[int, bool]:
    """(width, signed) of ``ap_int`` ``a op b`` for op in + - * / % & | ^ (Vitis RType)."""
    w1, w2 = W1 + (S2 and not S1), W2 + (S1 and not S2)
    table = {
        "+": (max(w1, w2) + 1, S1 or S2),
        "-": (max(w1, w2) + 1, True),
        "*": (W1 + W2, S1 or S2),
        "/": (W1 + S2, S1 or S2),
        "%": (min(W1, W2 + (S1 and not S2)), S1),
        "&": (max(w1, w2), S1 or S2),
        "|": (max(w1, w2), S1 or S2),
        "^": (max(w1, w2), S1 or S2),
    }
    if op not in table:
        raise ValueError(f"unknown operator {op!r}")
    w, s = table[op]
    return int(w), bool(s)


def fixed_result_type(op: str, a: FixedType, b: FixedType) -> FixedType:
    """Full-precision result type of ``a op b`` (op in + - * / & | ^), as Vitis.

    The result has default modes (AP_TRN, AP_WRAP). Division follows Vitis' csim
    rule ``<W1+S2+max(F2,0), I1+S2+F2>`` (quotient truncated toward zero).
    """
    S1, S2 = a.signed, b.signed
    i1, i2 = a.I + (S2 and not S1), b.I + (S1 and not S2)
    F = max(a.F, b.F)
    if op in "+-":
        i = max(i1, i2) + 1
        return FixedType(i + F, i, True if op == "-" else (S1 or S2))
    if op in ("&", "|", "^"):
        i = max(i1, i2)
        return FixedType(i + F, i, S1 or S2)
    if op == "*":
        return FixedType(a.W + b.W, a.I + b.I, S1 or S2)
    if op == "/":
        return FixedType(int(S2) + a.W + max(b.F, 0), int(S2) + a.I + b.F, S1 or S2)
    raise ValueError(f"unknown operator {op!r}")


def _to_width(v: int, m: int, signed: bool) -> int:
    v &= (1 << m) - 1
    return v - (1 << m) if signed and v >> (m - 1) else v


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def int_div(a: int, W1: int, S1: bool, b: int, W2: int, S2: bool) -> int:
    """Quotient of ``ap_[u]int<W1> a / ap_[u]int<W2> b`` before wrapping to the result
    type, as Vitis computes it.

    Same signedness: C division (toward zero). Mixed signedness: both operands are
    first taken modulo ``2**M``, ``M = max(W1, W2) + 1``, with the signedness of the
    wider operand (signed on a tie); e.g. ``ap_int<5>(-10) / ap_uint<8>(7)`` divides
    502 by 7.
    """
    if b == 0:
        raise ZeroDivisionError("ap_int division by zero")
    if S1 == S2:
        return _c_div(a, b)
    m = max(W1, W2) + 1
    s = S1 if W1 > W2 else S2 if W2 > W1 else True
    return _c_div(_to_width(a, m, s), _to_width(b, m, s))


def int_rem(a: int, W1: int, S1: bool, b: int, W2: int, S2: bool) -> int:
    """Remainder of ``a % b`` before wrapping, as Vitis (see :func:`int_div`): signed
    (dividend's sign) only if the dividend and the common M-bit type are signed, else
    the remainder of the M-bit unsigned patterns."""
    if b == 0:
        raise ZeroDivisionError("ap_int modulo by zero")
    if S1 == S2:
        return a - b * _c_div(a, b)
    m = max(W1, W2) + 1
    s = S1 if W1 > W2 else S2 if W2 > W1 else True
    x, y = _to_width(a, m, s), _to_width(b, m, s)
    if S1 and s:
        return x - y * _c_div(x, y)
    return _to_width(x, m, False) % _to_width(y, m, False)


def int_compare(a: int, W1: int, S1: bool, b: int, W2: int, S2: bool) -> int:
    """-1, 0 or 1: how Vitis orders ``a`` and ``b`` for < <= > >= (not == / !=, which
    compare values). With mixed signedness, a 32+ bit operand and the unsigned operand
    at least as wide as the signed one, both are compared as (max(W1, W2) + 1)-bit
    unsigned numbers, as C does (``ap_uint<32>(5) < -1`` is true). C integers act as
    ``ap_int<32>`` (int), ``ap_uint<32>`` (unsigned), ``ap_int<64>`` (long long)...
    """
    if S1 != S2 and (W1 >= 32 or W2 >= 32) and (W2 >= W1 if S1 else W1 >= W2):
        m = max(W1, W2) + 1
        a, b = _to_width(a, m, False), _to_width(b, m, False)
    return (a > b) - (a < b)
