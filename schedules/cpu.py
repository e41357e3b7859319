"""CPU-only rewrites used by the `vectorize` primitive.

The llvm target lowers `math.exp` to a libm call per element, which stops LLVM's loop
vectorizer (it has no vector math library in the JIT). `expand_exp` replaces
`math.exp` by the Cephes single-precision algorithm written with arith ops (range
reduction by ln2 in two parts, a degree-6 polynomial, the exponent built with integer
ops): no calls, so the loop vectorizes. Accuracy: within 2 ulp of libm's expf on
[-87.3, 88.7]; below it returns 0, above +inf, NaN stays NaN (selects, so the edge
cases match expf rather than being clamped).
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import arith as arith_d
from torch_mlir.dialects import math as math_d

_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
LOG2E = 1.44269504088896341
C1, C2 = 0.693359375, -2.12194440e-4
HI, LO = 88.72283905206835, -87.33654475055310


def expand_exp(op: ir.Operation) -> None:
    """Replace one f32 `math.exp` (scalar) by inline arith ops."""
    x = op.operands[0]
    f32 = ir.F32Type.get()
    if x.type != f32:
        return
    i32 = ir.IntegerType.get_signless(32)
    fm = ir.Attribute.parse("#arith.fastmath<contract>")
    with ir.InsertionPoint(op), op.location:
        def c(v):
            return arith_d.constant(f32, float(v))

        def mul(a, b):
            return arith_d.mulf(a, b, fastmath=fm)

        def add(a, b):
            return arith_d.addf(a, b, fastmath=fm)

        xc = arith_d.minimumf(arith_d.maximumf(x, c(LO)), c(HI))
        n = math_d.floor(add(mul(xc, c(LOG2E)), c(0.5)))
        r = arith_d.subf(arith_d.subf(xc, mul(n, c(C1))), mul(n, c(C2)))
        p = c(_P[0])
        for k in _P[1:]:
            p = add(mul(p, r), c(k))
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
    op.results[0].replace_all_uses_with(y)
    op.erase()
