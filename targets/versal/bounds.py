"""Static bounds check of a scheduled design: every affine access lies inside its buffer.

An access past the end of an array is undefined behaviour in C: g++ may or may not
notice it (-Waggressive-loop-optimizations sometimes does), csim may read a neighbour
and still pass, and on the device it reads or writes another buffer. Loop bounds and
access maps are affine with constant extents, so the range of every index follows from
the enclosing loops: each IV is its lower bound plus step times a counter of the loop's
trip count (relations between nested IVs are kept, so `x[j - i]` in `for j in [i, i+4)`
is x[0..3]), and intervals where a bound is not a fixed distance apart; an access
whose index may leave [0, size) in some dimension is reported. Indices that depend on
values the check cannot bound (a function argument such as the layer index, a loaded
value) are not checked in that dimension.
"""

from __future__ import annotations

from torch_mlir import ir

from ...flow.mlir import funcs, str_attr
from ...flow.naming import LOOP_ATTR

Interval = tuple[int, int]  # inclusive


class _Form:
    """An affine form c + sum(k_v * v) over independent variables v, each in a known
    interval: a loop's IV is its lower bound plus step * (its own counter), so `j - i`
    in `for j in [i, i + 4)` is the counter of j, in [0, 3], not [-12, 15]."""

    _ids = iter(range(1 << 62))

    def __init__(self, const: int = 0, coefs: dict | None = None, ranges: dict | None = None):
        self.const, self.coefs, self.ranges = const, dict(coefs or {}), dict(ranges or {})

    @classmethod
    def var(cls, lo: int, hi: int) -> _Form:
        v = next(cls._ids)
        return cls(0, {v: 1}, {v: (lo, hi)})

    def __add__(self, o: _Form) -> _Form:
        c = dict(self.coefs)
        for v, k in o.coefs.items():
            c[v] = c.get(v, 0) + k
        return _Form(self.const + o.const, {v: k for v, k in c.items() if k}, self.ranges | o.ranges)

    def scale(self, k: int) -> _Form:
        return _Form(self.const * k, {v: c * k for v, c in self.coefs.items() if c * k}, self.ranges)

    @property
    def constant(self) -> int | None:
        return None if self.coefs else self.const

    def interval(self) -> Interval:
        lo = hi = self.const
        for v, k in self.coefs.items():
            a, b = self.ranges[v]
            lo += min(k * a, k * b)
            hi += max(k * a, k * b)
        return lo, hi


def _expr(e, dims: list[_Form | None], syms: list[_Form | None]) -> _Form | None:
    if isinstance(e, ir.AffineConstantExpr):
        return _Form(e.value)
    if isinstance(e, ir.AffineDimExpr):
        return dims[e.position]
    if isinstance(e, ir.AffineSymbolExpr):
        return syms[e.position]
    if isinstance(e, (ir.AffineAddExpr, ir.AffineMulExpr, ir.AffineModExpr, ir.AffineFloorDivExpr,
                      ir.AffineCeilDivExpr)):
        a, b = _expr(e.lhs, dims, syms), _expr(e.rhs, dims, syms)
        if a is None or b is None:
            return None
        if isinstance(e, ir.AffineAddExpr):
            return a + b
        if isinstance(e, ir.AffineMulExpr):  # affine: one side is a constant
            k, f = (b.constant, a) if b.constant is not None else (a.constant, b)
            return f.scale(k) if k is not None else None
        k = b.constant
        if k is None or k <= 0:  # affine mod / div take a positive constant
            return None
        lo, hi = a.interval()
        if isinstance(e, ir.AffineModExpr):
            return _Form.var(lo % k, hi % k) if lo // k == hi // k else _Form.var(0, k - 1)
        if isinstance(e, ir.AffineFloorDivExpr):
            return _Form.var(lo // k, hi // k)
        return _Form.var(-(-lo // k), -(-hi // k))
    return None


def _map(m: ir.AffineMap, operands, forms) -> list[_Form | None]:
    vals = [forms.get(v) for v in operands]
    dims, syms = vals[:m.n_dims], vals[m.n_dims:]
    return [_expr(r, dims, syms) for r in m.results]


def _loop_form(loop: ir.Operation, forms) -> _Form | None | bool:
    """The loop's IV as a form; None: unknown; False: the loop never runs."""
    lbm = ir.AffineMapAttr(loop.attributes["lowerBoundMap"]).value
    ubm = ir.AffineMapAttr(loop.attributes["upperBoundMap"]).value
    ops = list(loop.operands)
    lbs = _map(lbm, ops[:lbm.n_inputs], forms)
    ubs = _map(ubm, ops[lbm.n_inputs:lbm.n_inputs + ubm.n_inputs], forms)
    if any(x is None for x in lbs + ubs) or not lbs or not ubs:
        return None
    step = ir.IntegerAttr(loop.attributes["step"]).value
    if len(lbs) == 1 and len(ubs) == 1:
        trip = (ubs[0] + lbs[0].scale(-1)).constant
        if trip is not None:  # iv = lb + step * t, t in [0, n-1]: keeps iv's relation to the outer IVs
            n = -(-trip // step)
            return lbs[0] + _Form.var(0, n - 1).scale(step) if n > 0 else False
    lo = max(x.interval()[0] for x in lbs)  # a max of lower bounds, a min of upper bounds
    hi = min(x.interval()[1] for x in ubs) - 1
    return _Form.var(lo, hi) if hi >= lo else False


def out_of_bounds(module: ir.Module) -> list[str]:
    """One line per affine load / store that may index outside its buffer."""
    found: list[str] = []

    def visit(block, fn_name: str, ranges: dict, where: list[str]) -> None:
        for op in block.operations:
            op = op.operation
            if op.name == "affine.for":
                f = _loop_form(op, ranges)
                if f is False:
                    continue  # never runs
                inner = dict(ranges)
                if f is not None:
                    inner[op.regions[0].blocks[0].arguments[0]] = f
                visit(op.regions[0].blocks[0], fn_name, inner, where + [str_attr(op, LOOP_ATTR) or "?"])
                continue
            if op.name in ("affine.load", "affine.store"):
                ops = list(op.operands)
                mem, idx = (ops[0], ops[1:]) if op.name == "affine.load" else (ops[1], ops[2:])
                shape = ir.MemRefType(mem.type).shape
                m = ir.AffineMapAttr(op.attributes["map"]).value
                for d, (f, n) in enumerate(zip(_map(m, idx, ranges), shape)):
                    r = f.interval() if f is not None else None
                    if r is not None and n >= 0 and (r[0] < 0 or r[1] >= n):
                        kind = "reads" if op.name == "affine.load" else "writes"
                        found.append(f"{fn_name}: {kind} dim {d} of a {'x'.join(map(str, shape))} buffer at "
                                     f"[{r[0]}, {r[1]}] in loop {'.'.join(where) or '(none)'}")
                        break
            for region in op.regions:
                for b in region.blocks:
                    visit(b, fn_name, ranges, where)

    for name, fn in funcs(module).items():
        for region in fn.regions:
            for b in region.blocks:
                visit(b, name, {}, [])
    return found
