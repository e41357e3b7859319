"""Memory dependences between affine accesses: the legality checks of reorder, fuse and
compute_at.

MLIR's affine dependence analysis (`checkMemrefAccessDependence`) is C++ only and not
exposed by the Python bindings of the wheel, so this module carries its own test, built
the same way: for a pair of accesses to one memref (at least one a store) it asks
whether integer iteration vectors x, y exist with

    x, y in their loop domains,  f(x) = g(y),  <ordering constraints>

and answers with Fourier-Motzkin elimination over the integers' rational relaxation,
with GCD tightening of each constraint and exact elimination of unit-coefficient
equalities (loop steps become `iv = lb + step*k`). The answer is conservative: "no
dependence" is a proof; "dependence" may be spurious, in which case the primitive is
rejected although legal. Anything not understood (non-affine indices such as
`memref.load` on computed values, loop bounds on unknown values, an op with unknown
memory effects, a call) widens the test towards "dependent": an index not understood
constrains nothing, an unknown memory op conflicts with every buffer.

Distinct memref SSA values are assumed not to alias: in the captured designs every
kernel argument is a distinct buffer of the top function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd
from typing import Iterable

from torch_mlir import ir

Lin = dict  # var -> int coefficient; key None = constant term

_PURE_PREFIXES = ("arith.", "math.", "index.")
_PURE_OPS = {"affine.apply", "affine.yield", "affine.for", "affine.if", "memref.alloc", "memref.alloca",
             "memref.dealloc", "memref.get_global", "memref.dim", "scf.yield"}


def _iv_loops(op: ir.Operation) -> list[ir.Operation]:
    """Enclosing affine.for ops of `op`, outermost first (up to the function)."""
    out = []
    p = op.parent
    while p is not None and p.name != "func.func":
        if p.name == "affine.for":
            out.append(p)
        p = p.parent
    return out[::-1]


def loop_iv(loop: ir.Operation) -> ir.Value:
    return loop.regions[0].blocks[0].arguments[0]


def loop_bounds(loop: ir.Operation):
    """(lb_map, lb_operands, ub_map, ub_operands, step)."""
    lbm = ir.AffineMapAttr(loop.attributes["lowerBoundMap"]).value
    ubm = ir.AffineMapAttr(loop.attributes["upperBoundMap"]).value
    ops = list(loop.operands)
    nl, nu = lbm.n_inputs, ubm.n_inputs
    step = ir.IntegerAttr(loop.attributes["step"]).value
    return lbm, ops[:nl], ubm, ops[nl:nl + nu], step


def const_bounds(loop: ir.Operation) -> tuple[int, int, int] | None:
    """(lb, ub, step) when both bounds are single constants."""
    lbm, _, ubm, _, step = loop_bounds(loop)
    if len(lbm.results) == 1 and len(ubm.results) == 1:
        lb, ub = lbm.results[0], ubm.results[0]
        if isinstance(lb, ir.AffineConstantExpr) and isinstance(ub, ir.AffineConstantExpr):
            return lb.value, ub.value, step
    return None


def trip_count(loop: ir.Operation, bound: bool = False) -> int | None:
    """The constant trip count, also for `iv = x to x + c` bounds (split inner loops).

    With `bound=True`, an upper bound on the trip count is good enough (a `min` upper
    bound of a non-dividing split inner loop gives its factor)."""
    cb = const_bounds(loop)
    if cb is not None:
        lb, ub, st = cb
        return max(0, -(-(ub - lb) // st))
    lbm, lbo, ubm, ubo, st = loop_bounds(loop)
    if len(lbm.results) != 1 or (len(ubm.results) != 1 and not bound):
        return None
    sp = Space("t", {})
    opaque = {}

    def lin(m, ops):
        out = []
        for r in m.results:
            lins = []
            for v in ops:
                lv = sp.lin_value(v)
                if lv is None:
                    key = opaque.setdefault(v, f"v{len(opaque)}")
                    lv = {key: 1}
                lins.append(lv)
            out.append(_lin_expr(r, lins, m.n_dims))
        return out

    lb = lin(lbm, lbo)[0]
    best = None
    for r, ub in zip(ubm.results, lin(ubm, ubo)):
        if lb is None or ub is None:  # not linear (a flattened loop's `iv mod n`): subtract the expressions
            c = _const_difference(r, ubo, lbm.results[0], lbo, ubm.n_dims, lbm.n_dims)
            diff = None if c is None else {None: c}
        else:
            diff = dict(ub)
            for k, v in lb.items():
                diff[k] = diff.get(k, 0) - v
        if diff is not None and all(v == 0 for k, v in diff.items() if k is not None):
            n = max(0, -(-diff.get(None, 0) // st))
            best = n if best is None else min(best, n)
    return best


def _const_difference(a: ir.AffineExpr, a_ops, b: ir.AffineExpr, b_ops, a_dims: int, b_dims: int) -> int | None:
    """a - b when it simplifies to a constant, the two expressions' operands unified
    (MLIR's expression simplification cancels equal terms such as `(d0 mod 40) * 8`)."""
    ops: list = []

    def index(v) -> int:
        for k, w in enumerate(ops):
            if w == v:
                return k
        ops.append(v)
        return len(ops) - 1

    def remap(e, operands, n_dims):  # compose replaces dims only
        dims = [ir.AffineExpr.get_dim(index(v)) for v in operands[:n_dims]]
        return e.compose(ir.AffineMap.get(n_dims, 0, dims))

    if len(a_ops) != a_dims or len(b_ops) != b_dims:
        return None  # symbols in the bounds: left to the linear form
    with a.context:
        d = (remap(a, list(a_ops), a_dims) - remap(b, list(b_ops), b_dims)).maybe_downcast()
    return d.value if isinstance(d, ir.AffineConstantExpr) else None


# ------------------------------------------------------------------ linear forms


def _value_key(v: ir.Value):
    return v  # ir.Value is hashable and compares by identity of the SSA value


def _const_index(v: ir.Value) -> int | None:
    owner = v.owner
    if isinstance(owner, ir.Block):
        return None
    op = owner.operation if hasattr(owner, "operation") else owner
    if op.name == "arith.constant":
        a = op.attributes["value"]
        try:
            return ir.IntegerAttr(a).value
        except ValueError:
            return None
    return None


def _lin_expr(e: ir.AffineExpr, operand_lins: list[Lin | None], n_dims: int, fixed=frozenset()) -> Lin | None:
    """The linear form of `e` over the operands' linear forms, or None. A floordiv / mod /
    ceildiv over `fixed` variables only (values that do not change within the scope of
    the question, e.g. one pipelined iteration) is an unknown constant: {None: 0}."""
    if isinstance(e, ir.AffineConstantExpr):
        return {None: e.value}
    if isinstance(e, ir.AffineDimExpr):
        return operand_lins[e.position]
    if isinstance(e, ir.AffineSymbolExpr):
        return operand_lins[n_dims + e.position]
    if isinstance(e, (ir.AffineFloorDivExpr, ir.AffineModExpr, ir.AffineCeilDivExpr)):
        a = _lin_expr(e.lhs, operand_lins, n_dims, fixed)
        if fixed and a is not None and all(k is None or k in fixed or not c for k, c in a.items()):
            return {None: 0}
        return None
    if isinstance(e, ir.AffineAddExpr):
        a, b = _lin_expr(e.lhs, operand_lins, n_dims, fixed), _lin_expr(e.rhs, operand_lins, n_dims, fixed)
        if a is None or b is None:
            return None
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0) + c
        return out
    if isinstance(e, ir.AffineMulExpr):
        a, b = _lin_expr(e.lhs, operand_lins, n_dims, fixed), _lin_expr(e.rhs, operand_lins, n_dims, fixed)
        if a is None or b is None:
            return None
        for x, y in ((a, b), (b, a)):
            if set(y) <= {None}:
                c = y.get(None, 0)
                return {k: v * c for k, v in x.items()}
        return None
    return None  # floordiv / mod / ceildiv: not linear


class Space:
    """Maps SSA values (loop IVs) of one side of a dependence test to variables."""

    def __init__(self, tag: str, ivs: dict, fixed=frozenset()):
        self.tag = tag
        self.ivs = ivs  # ir.Value -> var name
        self.fixed = frozenset(fixed)  # var names constant within the question (see _lin_expr)

    def lin_value(self, v: ir.Value) -> Lin | None:
        for iv, name in self.ivs.items():
            if iv == v:
                return {name: 1}
        c = _const_index(v)
        if c is not None:
            return {None: c}
        owner = v.owner
        if not isinstance(owner, ir.Block):
            op = owner.operation if hasattr(owner, "operation") else owner
            if op.name == "affine.apply":
                m = ir.AffineMapAttr(op.attributes["map"]).value
                lins = [self.lin_value(x) for x in op.operands]
                return _lin_expr(m.results[0], lins, m.n_dims, self.fixed)
        return None

    def lin_map(self, m: ir.AffineMap, operands) -> list[Lin | None]:
        lins = [self.lin_value(x) for x in operands]
        return [_lin_expr(r, lins, m.n_dims, self.fixed) for r in m.results]


def spread_lin(v: ir.Value, space: Space, depth: int = 12) -> Lin | None:
    """How an index varies with the space's variables, for bank and beat analysis:
    `space.lin_value`, also through integer casts, additions and multiplications by
    constants, `x rem C` (taken as x: copies spanning fewer than C consecutive values
    stay distinct, and C's divisors see the same residues) and `x div C` (taken as
    constant: such copies share one quotient). None: unknown."""
    got = space.lin_value(v)
    if got is not None or depth == 0:
        return got
    o = v.owner
    if isinstance(o, ir.Block):
        return None
    op = o.operation if hasattr(o, "operation") else o
    n = op.name
    if n in ("arith.index_cast", "arith.index_castui", "arith.extsi", "arith.extui", "arith.trunci"):
        return spread_lin(op.operands[0], space, depth - 1)
    if n in ("arith.remsi", "arith.remui") and _const_index(op.operands[1]) is not None:
        return spread_lin(op.operands[0], space, depth - 1)
    if n in ("arith.divsi", "arith.divui", "arith.floordivsi") and _const_index(op.operands[1]) is not None:
        return {None: 0}
    if n in ("arith.addi", "arith.subi", "arith.muli"):
        a, b = (spread_lin(x, space, depth - 1) for x in op.operands)
        if a is None or b is None:
            return None
        if n == "arith.muli":
            for x, y in ((a, b), (b, a)):
                if set(y) <= {None}:
                    c = y.get(None, 0)
                    return {k: c * w for k, w in x.items()}
            return None
        sign = -1 if n == "arith.subi" else 1
        out = dict(a)
        for k, w in b.items():
            out[k] = out.get(k, 0) + sign * w
        return out
    return None


# --------------------------------------------------------------------- accesses


@dataclass
class Access:
    op: ir.Operation
    memref: ir.Value | None  # None: unknown memory effect (conflicts with everything)
    write: bool
    loops: list[ir.Operation]  # enclosing affine.for ops, outermost first
    map: ir.AffineMap | None = None  # None: indices not affine
    indices: list = field(default_factory=list)


def _walk(op: ir.Operation) -> Iterable[ir.Operation]:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                child = child.operation
                yield child
                yield from _walk(child)


def accesses(root: ir.Operation) -> list[Access]:
    """Every memory access under `root` (and `root` itself if it is one)."""
    out = []
    ops = [root] + list(_walk(root))
    for op in ops:
        n = op.name
        if n == "affine.load":
            out.append(Access(op, op.operands[0], False, _iv_loops(op),
                              ir.AffineMapAttr(op.attributes["map"]).value, list(op.operands)[1:]))
        elif n == "affine.store":
            out.append(Access(op, op.operands[1], True, _iv_loops(op),
                              ir.AffineMapAttr(op.attributes["map"]).value, list(op.operands)[2:]))
        elif n == "memref.load":
            out.append(Access(op, op.operands[0], False, _iv_loops(op)))
        elif n == "memref.store":
            out.append(Access(op, op.operands[1], True, _iv_loops(op)))
        elif n == "memref.copy":
            out.append(Access(op, op.operands[0], False, _iv_loops(op)))
            out.append(Access(op, op.operands[1], True, _iv_loops(op)))
        elif n.startswith(_PURE_PREFIXES) or n in _PURE_OPS:
            continue
        elif n.startswith("mf."):
            # stream ops: a FIFO is its own memory; reads and writes both change it
            out.append(Access(op, op.operands[0], True, _iv_loops(op)))
        else:
            out.append(Access(op, None, True, _iv_loops(op)))
    return out


def touched(root: ir.Operation) -> tuple[set, set, bool]:
    """(memrefs read, memrefs written, has unknown effects) under `root`."""
    r, w, unknown = set(), set(), False
    for a in accesses(root):
        if a.memref is None:
            unknown = True
        elif a.write:
            w.add(a.memref)
        else:
            r.add(a.memref)
    return r, w, unknown


def conflict(a: ir.Operation, b: ir.Operation) -> bool:
    """Whether two ops may touch a common buffer with at least one write (buffer level)."""
    ra, wa, ua = touched(a)
    rb, wb, ub = touched(b)
    if (ua and (rb or wb or ub)) or (ub and (ra or wa)):
        return True
    return bool(wa & (rb | wb) or wb & ra)


# ------------------------------------------------------------ Fourier-Motzkin


def _norm(c: Lin) -> Lin | None:
    """GCD-tighten `sum >= 0`; None when trivially true."""
    vars_ = {k: v for k, v in c.items() if k is not None and v != 0}
    const = c.get(None, 0)
    if not vars_:
        return {None: const}
    g = 0
    for v in vars_.values():
        g = gcd(g, abs(v))
    if g > 1:
        vars_ = {k: v // g for k, v in vars_.items()}
        const = const // g  # floor: valid tightening for integer variables
    vars_[None] = const
    return vars_


class System:
    """Integer constraints: `ge` entries mean sum >= 0, `eq` entries sum == 0."""

    def __init__(self):
        self.ge: list[Lin] = []
        self.eq: list[Lin] = []

    def add_ge(self, a: Lin, b: Lin | None = None, off: int = 0):
        """a - b + off >= 0."""
        c = dict(a)
        if b is not None:
            for k, v in b.items():
                c[k] = c.get(k, 0) - v
        c[None] = c.get(None, 0) + off
        self.ge.append(c)

    def add_eq(self, a: Lin, b: Lin):
        c = dict(a)
        for k, v in b.items():
            c[k] = c.get(k, 0) - v
        self.eq.append(c)

    def copy(self) -> "System":
        s = System()
        s.ge = [dict(c) for c in self.ge]
        s.eq = [dict(c) for c in self.eq]
        return s

    def feasible(self, limit: int = 4000) -> bool:
        ge = [dict(c) for c in self.ge]
        eq = [dict(c) for c in self.eq]
        # exact elimination of equalities with a unit coefficient
        while True:
            pick = None
            for i, c in enumerate(eq):
                for k, v in c.items():
                    if k is not None and abs(v) == 1:
                        pick = (i, k, v)
                        break
                if pick:
                    break
            if pick is None:
                break
            i, k, v = pick
            c = eq.pop(i)
            # k = -(rest)/v
            rest = {kk: -vv * v for kk, vv in c.items() if kk != k}  # since v = +-1, 1/v = v

            def subst(d: Lin) -> Lin:
                if k not in d:
                    return d
                a = d.pop(k)
                for kk, vv in rest.items():
                    d[kk] = d.get(kk, 0) + a * vv
                return d

            ge = [subst(d) for d in ge]
            eq = [subst(d) for d in eq]
        for c in eq:
            vars_ = {k: v for k, v in c.items() if k is not None and v != 0}
            const = c.get(None, 0)
            if not vars_:
                if const != 0:
                    return False
                continue
            g = 0
            for v in vars_.values():
                g = gcd(g, abs(v))
            if const % g:
                return False  # no integer solution
            ge.append(dict(c))
            ge.append({k: -v for k, v in c.items()})
        cons = []
        for c in ge:
            n = _norm(c)
            if set(n) == {None}:
                if n[None] < 0:
                    return False
                continue
            cons.append(n)
        while True:
            vars_ = {k for c in cons for k, v in c.items() if k is not None and v != 0}
            if not vars_:
                return True
            best, cost = None, None
            for x in vars_:
                p = sum(1 for c in cons if c.get(x, 0) > 0)
                n = sum(1 for c in cons if c.get(x, 0) < 0)
                if best is None or p * n - p - n < cost:
                    best, cost = x, p * n - p - n
            x = best
            pos = [c for c in cons if c.get(x, 0) > 0]
            neg = [c for c in cons if c.get(x, 0) < 0]
            new = [c for c in cons if c.get(x, 0) == 0]
            seen = {tuple(sorted((str(k), v) for k, v in c.items())) for c in new}
            for p in pos:
                for n in neg:
                    a, b = p[x], -n[x]
                    comb: Lin = {}
                    for k, v in p.items():
                        comb[k] = comb.get(k, 0) + v * b
                    for k, v in n.items():
                        comb[k] = comb.get(k, 0) + v * a
                    comb.pop(x, None)
                    nc = _norm(comb)
                    if set(nc) == {None}:
                        if nc[None] < 0:
                            return False
                        continue
                    key = tuple(sorted((str(k), v) for k, v in nc.items()))
                    if key not in seen:
                        seen.add(key)
                        new.append(nc)
            if len(new) > limit:
                return True  # too big to decide: assume dependent (conservative)
            cons = new


# ------------------------------------------------------------ domains, tests


def _domain(sys: System, space: Space, loops: list[ir.Operation], names: dict) -> None:
    """Add the iteration-domain constraints of `loops` (vars already in `space`)."""
    for L in loops:
        v = {names[L]: 1}
        lbm, lbo, ubm, ubo, step = loop_bounds(L)
        lbs = space.lin_map(lbm, lbo)
        ubs = space.lin_map(ubm, ubo)
        for lb in lbs:
            if lb is not None:
                sys.add_ge(v, lb)
        for ub in ubs:
            if ub is not None:
                sys.add_ge(ub, v, -1)
        if step > 1 and len(lbs) == 1 and lbs[0] is not None:
            k = names[L] + "#k"
            c = dict(lbs[0])
            c[k] = c.get(k, 0) + step
            sys.add_eq(v, c)
            sys.add_ge({k: 1})


def _side(acc: Access, tag: str, shared: dict) -> tuple[Space, dict]:
    """Variables for one side: loops in `shared` reuse the given names."""
    names = {}
    ivs = {}
    for i, L in enumerate(acc.loops):
        n = shared.get(L) or f"{tag}{i}"
        names[L] = n
        ivs[loop_iv(L)] = n
    return Space(tag, ivs), names


def may_depend(src: Access, dst: Access, order, shared_loops: Iterable[ir.Operation] = ()) -> bool:
    """Whether a conflicting pair of iterations exists under extra ordering constraints.

    `order(sys, xnames, ynames)` adds constraints (or returns a list of alternative
    Systems, a disjunction). Loops in `shared_loops` are the same iteration on both
    sides. Returns True when such iterations may exist (conservatively).
    """
    if src.memref is None or dst.memref is None:
        return True
    if src.memref != dst.memref or not (src.write or dst.write):
        return False
    shared = {L: f"s{i}" for i, L in enumerate(shared_loops)}
    xs, xn = _side(src, "x", shared)
    ys, yn = _side(dst, "y", shared)
    base = System()
    _domain(base, xs, src.loops, xn)
    _domain(base, ys, dst.loops, yn)
    if src.map is not None and dst.map is not None:
        fx = xs.lin_map(src.map, src.indices)
        fy = ys.lin_map(dst.map, dst.indices)
        for a, b in zip(fx, fy):
            if a is not None and b is not None:
                base.add_eq(a, b)
    alts = order(base, xn, yn)
    if alts is None:
        alts = [base]
    return any(s.feasible() for s in alts)


def lex_less(sys: System, a: list[str], b: list[str]) -> list[System]:
    """Alternatives for a <lex b over paired variable lists (strict)."""
    out = []
    for lvl in range(len(a)):
        s = sys.copy()
        for j in range(lvl):
            s.add_eq({a[j]: 1}, {b[j]: 1})
        s.add_ge({b[lvl]: 1}, {a[lvl]: 1}, -1)
        out.append(s)
    return out


def _kvar(names: dict, L: ir.Operation) -> str:
    """The variable that orders iterations of L (the step count when step > 1)."""
    return names[L] + "#k" if loop_bounds(L)[4] > 1 and len(loop_bounds(L)[0].results) == 1 else names[L]


def permutation_violations(chain: list[ir.Operation], perm: list[int]) -> list[tuple[Access, Access]]:
    """Access pairs whose dependence a reordering of the perfect nest `chain` would reverse.

    The new nest has chain[perm[0]] outermost. Loops enclosing the chain are shared.
    """
    root = chain[0]
    outer = _iv_loops(root)
    accs = accesses(root)
    bad = []
    for i, s in enumerate(accs):
        for t in accs[i:]:
            for src, dst in ((s, t), (t, s)) if s is not t else ((s, s),):
                if src.memref is not None and dst.memref is not None and (
                        src.memref != dst.memref or not (src.write or dst.write)):
                    continue

                def order(sys, xn, yn):
                    xo = [_kvar(xn, L) for L in chain]
                    yo = [_kvar(yn, L) for L in chain]
                    alts = []
                    for s1 in lex_less(sys, xo, yo):  # x before y originally
                        alts += lex_less(s1, [yo[p] for p in perm], [xo[p] for p in perm])
                    return alts

                if may_depend(src, dst, order, outer):
                    bad.append((src, dst))
                    break
    return bad


def fusion_violations(a_loops: list[ir.Operation], b_loops: list[ir.Operation]) -> list[tuple[Access, Access]]:
    """Pairs that fusing sibling nests level by level (a_loops[k] with b_loops[k]) breaks.

    A runs entirely before B; after fusion B's iteration y of the fused levels runs before
    A's iteration x whenever y <lex x. Loops enclosing both are shared.
    """
    outer = _iv_loops(a_loops[0])
    A = accesses(a_loops[0])
    B = accesses(b_loops[0])
    bad = []
    for s in A:
        for t in B:
            if s.memref is not None and t.memref is not None and (
                    s.memref != t.memref or not (s.write or t.write)):
                continue

            def order(sys, xn, yn):
                xo = [_kvar(xn, L) for L in a_loops]
                yo = [_kvar(yn, L) for L in b_loops]
                return lex_less(sys, yo, xo)

            if may_depend(s, t, order, outer):
                bad.append((s, t))
    return bad


def carried_dependences(loop: ir.Operation) -> list[tuple[Access, Access]]:
    """Access pairs that make different iterations of `loop` depend on each other."""
    outer = _iv_loops(loop)
    accs = accesses(loop)
    bad = []
    for i, s in enumerate(accs):
        for t in accs[i:]:
            for src, dst in ((s, t), (t, s)) if s is not t else ((s, s),):
                if src.memref is not None and dst.memref is not None and (
                        src.memref != dst.memref or not (src.write or dst.write)):
                    continue

                def order(sys, xn, yn):
                    return lex_less(sys, [_kvar(xn, loop)], [_kvar(yn, loop)])

                if may_depend(src, dst, order, outer):
                    bad.append((src, dst))
                    break
    return bad
