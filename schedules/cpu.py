"""CPU-only rewrites used by the `vectorize` primitive.

The llvm target lowers `math.exp` and `math.log1p` to libm calls per element, which
stop LLVM's loop vectorizer (it has no vector math library in the JIT). These rewrites
replace them by the Cephes single-precision algorithms written with arith ops: no
calls, so the loops vectorize.
- `expand_exp`: range reduction by ln2 in two parts, a degree-6 polynomial, the exponent
  built with integer ops. Within 2 ulp of libm's expf on [-87.3, 88.7]; below it returns
  0, above +inf, NaN stays NaN (selects, so the edge cases match expf rather than being
  clamped).
- `expand_log1p`: w = 1 + u split into exponent and mantissa with integer ops, Cephes'
  degree-8 polynomial for log of the mantissa, and Kahan's correction log(w) * u / (w - 1)
  for the rounding of 1 + u (exact for tiny u). Within 2 ulp of log1pf for u > -1;
  -1 gives -inf, below it NaN, +inf stays +inf, NaN stays NaN (tested over a sweep).
"""

from __future__ import annotations

import functools

from torch_mlir import ir
from torch_mlir.dialects import arith as arith_d
from torch_mlir.dialects import math as math_d

_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
LOG2E = 1.44269504088896341
C1, C2 = 0.693359375, -2.12194440e-4
HI, LO = 88.72283905206835, -87.33654475055310


def _float_ops(f32):
    """Builders of f32 constants, and of multiplies and adds LLVM may contract to FMAs."""
    fm = ir.Attribute.parse("#arith.fastmath<contract>")
    return (lambda v: arith_d.constant(f32, float(v)), lambda a, b: arith_d.mulf(a, b, fastmath=fm),
            lambda a, b: arith_d.addf(a, b, fastmath=fm))


def _horner(coeffs, x, c, mul, add):
    """coeffs[0] x^(n-1) + ... + coeffs[-1], by Horner's rule."""
    p = c(coeffs[0])
    for k in coeffs[1:]:
        p = add(mul(p, x), c(k))
    return p


def _f32_expansion(build):
    """An expansion of a one-operand f32 math op: `build(x, c, mul, add)` emits the arith
    ops computing it before the op (the op's location), which its result then replaces.
    Ops on other types are left alone."""

    @functools.wraps(build)
    def expand(op: ir.Operation) -> None:
        x = op.operands[0]
        f32 = ir.F32Type.get()
        if x.type != f32:
            return
        with ir.InsertionPoint(op), op.location:
            y = build(x, *_float_ops(f32))
        op.results[0].replace_all_uses_with(y)
        op.erase()

    return expand


@_f32_expansion
def expand_exp(x: ir.Value, c, mul, add) -> ir.Value:
    """Replace one f32 `math.exp` (scalar) by inline arith ops."""
    f32, i32 = ir.F32Type.get(), ir.IntegerType.get_signless(32)
    xc = arith_d.minimumf(arith_d.maximumf(x, c(LO)), c(HI))
    n = math_d.floor(add(mul(xc, c(LOG2E)), c(0.5)))
    r = arith_d.subf(arith_d.subf(xc, mul(n, c(C1))), mul(n, c(C2)))
    p = _horner(_P, r, c, mul, add)
    r2 = mul(r, r)
    y = add(add(mul(p, r2), r), c(1.0))
    ni = arith_d.fptosi(i32, n)
    # 2^n in two halves so n = 128 (x near HI) does not overflow the exponent field
    half = arith_d.shrsi(ni, arith_d.constant(i32, 1))
    rest = arith_d.subi(ni, half)
    e1 = arith_d.bitcast(f32, arith_d.shli(arith_d.addi(half, arith_d.constant(i32, 127)), arith_d.constant(i32, 23)))
    e2 = arith_d.bitcast(f32, arith_d.shli(arith_d.addi(rest, arith_d.constant(i32, 127)), arith_d.constant(i32, 23)))
    y = mul(mul(y, e1), e2)
    ogt = arith_d.CmpFPredicate.OGT
    olt = arith_d.CmpFPredicate.OLT
    y = arith_d.select(arith_d.cmpf(ogt, x, c(HI)), c(float("inf")), y)
    y = arith_d.select(arith_d.cmpf(olt, x, c(LO)), c(0.0), y)
    y = arith_d.select(arith_d.cmpf(arith_d.CmpFPredicate.UNO, x, x), x, y)
    return y


_LOGP = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
SQRTHF = 0.707106781186547524
FLT_MIN = 1.17549435e-38


@_f32_expansion
def expand_log1p(u: ir.Value, c, mul, add) -> ir.Value:
    """Replace one f32 `math.log1p` (scalar) by inline arith ops."""
    f32, i32 = ir.F32Type.get(), ir.IntegerType.get_signless(32)
    P = arith_d.CmpFPredicate

    def ci(v):
        return arith_d.constant(i32, int(v))

    w = arith_d.addf(u, c(1.0))
    # subnormal w (u just above -1): scale by 2^23 first so the exponent field is exact
    tiny = arith_d.cmpf(P.OLT, w, c(FLT_MIN))
    ws = arith_d.select(tiny, arith_d.mulf(w, c(2.0**23)), w)
    bits = arith_d.bitcast(i32, ws)
    e = arith_d.subi(arith_d.shrui(bits, ci(23)), ci(126))
    e = arith_d.select(tiny, arith_d.subi(e, ci(23)), e)
    m = arith_d.bitcast(f32, arith_d.ori(arith_d.andi(bits, ci(0x807FFFFF)), ci(0x3F000000)))  # [0.5, 1)
    low = arith_d.cmpf(P.OLT, m, c(SQRTHF))
    e = arith_d.select(low, arith_d.subi(e, ci(1)), e)
    m = arith_d.subf(arith_d.select(low, arith_d.addf(m, m), m), c(1.0))
    ef = arith_d.sitofp(f32, e)
    z = mul(m, m)
    p = _horner(_LOGP, m, c, mul, add)
    y = mul(mul(p, m), z)
    y = add(y, mul(ef, c(-2.12194440e-4)))
    y = arith_d.subf(y, mul(z, c(0.5)))
    r = add(add(m, y), mul(ef, c(0.693359375)))  # log(w)
    # log1p(u) = log(w) * u / (w - 1): w - 1 is exactly the part of u that w kept
    d = arith_d.subf(w, c(1.0))
    corrected = arith_d.select(arith_d.cmpf(P.OEQ, d, c(0.0)), u, mul(r, arith_d.divf(u, d)))
    # above 2^24, 1 + u rounds to u itself (nothing to correct), and the product above,
    # which the llvm target may reassociate into (r * u) / d, could overflow
    r = arith_d.select(arith_d.cmpf(P.OGT, u, c(2.0**24)), r, corrected)
    r = arith_d.select(arith_d.cmpf(P.OEQ, w, c(float("inf"))), w, r)
    r = arith_d.select(arith_d.cmpf(P.OEQ, w, c(0.0)), c(float("-inf")), r)
    r = arith_d.select(arith_d.cmpf(P.OLT, w, c(0.0)), c(float("nan")), r)
    r = arith_d.select(arith_d.cmpf(P.UNO, u, u), u, r)
    return r


EXPANSIONS = {"math.exp": expand_exp, "math.log1p": expand_log1p}
