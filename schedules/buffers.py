"""buffer_at and reuse_at: on-chip buffers for the part of a buffer one loop iteration uses.

`buffer_at(buffer, loop)` (Allo): every access to `buffer` inside `loop`'s body is
redirected to a local buffer holding the box of elements one iteration of `loop`
touches (the footprint, computed from the affine access maps with interval arithmetic
over the inner loops). The box is copied in at the start of each iteration and, when
the body writes it, copied back at the end. Always legal: within an iteration every
access goes through the copy, outside nothing changes. The local buffer is one
`memref.alloca` at function entry (named `<buffer>.buf`; HLS: a local array; CPU: a
small stack object that LLVM promotes to registers, which turns accumulator
load/store chains into register reductions the vectorizer accepts).

`reuse_at(buffer, loop)` (Allo's reuse buffer / line buffer): for a read-only buffer
whose per-iteration footprint slides by one along a dimension as `loop` advances
(stencils: `b[i + k]`, k in a window), a window buffer `<buffer>.reuse` is kept across
iterations: before the loop it is preloaded with all but the last column, each
iteration shifts it by one and loads only the new column. Each element is then read
from the big buffer once instead of window-times.
"""

from __future__ import annotations

import itertools

from torch_mlir import ir
from torch_mlir.dialects import affine as affine_d
from torch_mlir.dialects import memref as memref_d

from ..errors import ScheduleError
from . import deps as dp
from .rewrite import BAND_ATTR, LOOP_ATTR, new_for

_LETTERS = "abcdefgh"


class _Fail(Exception):
    pass


def _uses_in(buf: ir.Value, loop: ir.Operation) -> list[ir.Operation]:
    out = []
    for u in buf.uses:
        op = u.owner.operation if hasattr(u.owner, "operation") else u.owner
        p = op
        while p is not None and p != loop:
            p = p.parent
        if p is not None:
            out.append(op)
    return out


def _inner_loops(loop: ir.Operation) -> list[ir.Operation]:
    return [o for o in dp._walk(loop) if o.name == "affine.for"]


def footprint(buf: ir.Value, loop: ir.Operation):
    """Per-dim (fixed linear form, lo, hi) of the elements one iteration of `loop` touches,
    and the access ops. Fixed variables are `loop`'s IV and the IVs outside it."""
    ops = _uses_in(buf, loop)
    if not ops:
        raise _Fail("the loop does not access the buffer")
    fixed_loops = dp._iv_loops(loop) + [loop]
    inner = _inner_loops(loop)
    names = {}
    for k, L in enumerate(fixed_loops):
        names[dp.loop_iv(L)] = f"f{k}"
    for k, L in enumerate(inner):
        names[dp.loop_iv(L)] = f"n{k}"
    fixed = {f"f{k}": dp.loop_iv(L) for k, L in enumerate(fixed_loops)}
    # index arguments of the function (a layer kernel's layer index) are fixed too
    for op in ops:
        for v in list(op.operands)[1 if op.name == "affine.load" else 2:]:
            o = v.owner
            if isinstance(o, ir.Block) and isinstance(v.type, ir.IndexType) and v not in names \
                    and (o.owner.operation if hasattr(o.owner, "operation") else o.owner).name == "func.func":
                names[v] = f"f{len(fixed)}"
                fixed[names[v]] = v
    sp = dp.Space("b", names)
    # ranges of inner IVs: name -> (fixed form, lo, hi)
    rng: dict[str, tuple[dict, int, int]] = {}

    def bound(lin, want_min):
        if lin is None:
            raise _Fail("a bound or index is not affine in the loop variables")
        base = {k: v for k, v in lin.items() if k is not None and k.startswith("f")}
        c = lin.get(None, 0)
        for k, v in lin.items():
            if k is None or k.startswith("f"):
                continue
            if k not in rng:
                raise _Fail("an index uses a variable that is not an enclosing loop")
            b2, lo, hi = rng[k]
            for kk, vv in b2.items():
                base[kk] = base.get(kk, 0) + v * vv
            c += v * (lo if (v > 0) == want_min else hi)
        return {k: v for k, v in base.items() if v}, c

    for k, L in enumerate(inner):
        lbm, lbo, ubm, ubo, step = dp.loop_bounds(L)
        lbs = sp.lin_map(lbm, lbo)
        ubs = sp.lin_map(ubm, ubo)
        cands = []
        for lb in lbs:
            for ub in ubs:
                b1, lo = bound(lb, True)
                b2, hi = bound(ub, False)
                if b1 == b2:  # the last value a step > 1 reaches, not ub - 1
                    cands.append((b1, lo, lo + (hi - 1 - lo) // step * step))
        if not cands:
            raise _Fail(f"the extent of inner loop '{_lname(L)}' is not constant")
        base = cands[0][0]
        rng[f"n{k}"] = (base, min(c[1] for c in cands if c[0] == base), min(c[2] for c in cands if c[0] == base))
    box = None
    for op in ops:
        if op.name not in ("affine.load", "affine.store"):
            raise _Fail(f"'{op.name}' accesses the buffer with non-affine indices")
        if op.name == "affine.store" and op.operands[1] != buf:
            raise _Fail("the buffer itself is stored as a value")
        m = ir.AffineMapAttr(op.attributes["map"]).value
        idx = list(op.operands)[1 if op.name == "affine.load" else 2:]
        dims = []
        for lin in sp.lin_map(m, idx):
            b1, lo = bound(lin, True)
            b2, hi = bound(lin, False)
            dims.append((b1, lo, hi))
        if box is None:
            box = dims
        else:
            new = []
            for (ba, la, ha), (bb, lb_, hb) in zip(box, dims):
                if ba != bb:
                    raise _Fail("accesses to the buffer are offset differently along the loop")
                new.append((ba, min(la, lb_), max(ha, hb)))
            box = new
    return box, ops, fixed


def _lname(op):
    return ir.StringAttr(op.attributes[LOOP_ATTR]).value if LOOP_ATTR in op.attributes else "?"


def _offset_map(old: ir.AffineMap, operands: list, box, fixed: dict):
    """New (map, operands): old results minus the box origin (fixed form + lo)."""
    operands = list(operands)
    n_dims, n_syms = old.n_dims, old.n_symbols
    dim_ops = operands[:n_dims]
    sym_ops = operands[n_dims:]
    extra = []
    pos = {}
    for name, v in fixed.items():
        hit = next((k for k, x in enumerate(dim_ops) if x == v), None)
        if hit is None:
            hit = n_dims + len(extra)
            extra.append(v)
        pos[name] = hit
    nd = n_dims + len(extra)
    results = []
    for r, (base, lo, _) in zip(old.results, box):
        # the same dims (extra dims appended) and symbols
        sub = [ir.AffineExpr.get_dim(k) for k in range(n_dims)] + [ir.AffineExpr.get_symbol(k) for k in range(n_syms)]
        e = r.compose(ir.AffineMap.get(nd, n_syms, sub))
        for name, c in base.items():
            e = e - ir.AffineExpr.get_dim(pos[name]) * c if c != 1 else e - ir.AffineExpr.get_dim(pos[name])
        e = e - lo if lo else e
        results.append(ir.AffineExpr.simplify_affine_expr(e, nd, n_syms))
    return ir.AffineMap.get(nd, n_syms, results), dim_ops + extra + sym_ops


def _origin(box, fixed: dict, iv_exprs):
    """Results (over dims: fixed IVs first) of the big-buffer element for copy index."""
    names = list(fixed)
    res = []
    for d, (base, lo, _) in enumerate(box):
        e = iv_exprs[d] + lo
        for name, c in base.items():
            e = e + ir.AffineExpr.get_dim(names.index(name)) * c
        res.append(e)
    return res


def _mk(nprefix: int, ivs, results_fn):
    """(map, iv operands) for copy-loop IVs `ivs` (None = the constant 0) after
    `nprefix` leading dims."""
    exprs, ops = [], []
    for iv in ivs:
        if iv is None:
            exprs.append(ir.AffineExpr.get_constant(0))
        else:
            exprs.append(ir.AffineExpr.get_dim(nprefix + len(ops)))
            ops.append(iv)
    return ir.AffineMap.get(nprefix + len(ops), 0, results_fn(exprs)), ops


def _copy(box, ip, band_name, body):
    """A loop nest over the box extents (no loop for an extent of 1; its IV is None)."""
    ext = [hi - lo + 1 for _, lo, hi in box]
    loops, cur, ivs = [], ip, []
    for d, n in enumerate(ext):
        if n == 1:
            ivs.append(None)
            continue
        L = new_for(ir.AffineMap.get_constant(0), [], ir.AffineMap.get_constant(n), [], 1, cur)
        L.attributes[LOOP_ATTR] = ir.StringAttr.get(f"{band_name}.{_LETTERS[d]}")
        loops.append(L)
        ivs.append(dp.loop_iv(L))
        cur = ir.InsertionPoint([o.operation for o in L.regions[0].blocks[0].operations][-1])
    body(ivs, cur)
    return loops


def apply_buffer_at(func: ir.Operation, buf: ir.Value, loop: ir.Operation, name: str) -> None:
    box, ops, fixed = footprint(buf, loop)
    mtype = ir.MemRefType(buf.type)
    ext = [hi - lo + 1 for _, lo, hi in box]
    el = mtype.element_type
    writes = any(o.name == "affine.store" for o in ops)
    with loop.context, loop.location:
        entry = func.regions[0].blocks[0]
        local = memref_d.alloca(ir.MemRefType.get(ext, el), [], [], ip=ir.InsertionPoint(entry.operations[0]))
        local.owner.attributes["buffer_name"] = ir.StringAttr.get(name)
        for op in ops:
            m = ir.AffineMapAttr(op.attributes["map"]).value
            first = 1 if op.name == "affine.load" else 2
            nm, nops = _offset_map(m, list(op.operands)[first:], box, fixed)
            ip = ir.InsertionPoint(op)
            if op.name == "affine.load":
                v = affine_d.load(el, local, nops, nm, ip=ip)
                op.results[0].replace_all_uses_with(v)
            else:
                affine_d.store(op.operands[0], local, nops, nm, ip=ip)
            op.erase()
        body = loop.regions[0].blocks[0]
        fops = list(fixed.values())
        nf = len(fops)

        def copy_in(ivs, ip):
            gm, gops = _mk(nf, ivs, lambda e: _origin(box, fixed, e))
            lm, lops = _mk(0, ivs, lambda e: e)
            affine_d.store(affine_d.load(el, buf, fops + gops, gm, ip=ip), local, lops, lm, ip=ip)

        def copy_out(ivs, ip):
            gm, gops = _mk(nf, ivs, lambda e: _origin(box, fixed, e))
            lm, lops = _mk(0, ivs, lambda e: e)
            affine_d.store(affine_d.load(el, local, lops, lm, ip=ip), buf, fops + gops, gm, ip=ip)

        _copy(box, ir.InsertionPoint(body.operations[0]), f"{name}.in", copy_in)
        if writes:
            term = [o.operation for o in body.operations][-1]
            _copy(box, ir.InsertionPoint(term), f"{name}.out", copy_out)


def apply_reuse_at(func: ir.Operation, buf: ir.Value, loop: ir.Operation, name: str) -> None:
    box, ops, fixed = footprint(buf, loop)
    cb = dp.const_bounds(loop)
    liv = dp.loop_iv(loop)
    lvar = [k for k, v in fixed.items() if v == liv][0]
    sd = [d for d, (base, _, _) in enumerate(box) if base.get(lvar, 0)][0]
    W = box[sd][2] - box[sd][1] + 1
    mtype = ir.MemRefType(buf.type)
    ext = [hi - lo + 1 for _, lo, hi in box]
    el = mtype.element_type
    names = list(fixed)
    fops = [fixed[n] for n in names]
    nf = len(fops)
    with loop.context, loop.location:
        entry = func.regions[0].blocks[0]
        local = memref_d.alloca(ir.MemRefType.get(ext, el), [], [], ip=ir.InsertionPoint(entry.operations[0]))
        local.owner.attributes["buffer_name"] = ir.StringAttr.get(name)
        for op in ops:
            m = ir.AffineMapAttr(op.attributes["map"]).value
            nm, nops = _offset_map(m, list(op.operands)[1:], box, fixed)
            v = affine_d.load(el, local, nops, nm, ip=ir.InsertionPoint(op))
            op.results[0].replace_all_uses_with(v)
            op.erase()

        outer_names = [n for n in names if n != lvar]
        outer_ops = [fixed[n] for n in outer_names]

        def src(e, pos_shift: int, const_l: int | None = None):
            """Big-buffer element at window position e (+pos_shift along sd) for the
            current iteration (dims: all fixed IVs) or the constant iteration const_l
            (dims: the fixed IVs outside the loop)."""
            nl = outer_names if const_l is not None else names
            res = []
            for d, (base, lo, _) in enumerate(box):
                x = e[d] + lo + (pos_shift if d == sd else 0)
                for n, c in base.items():
                    if n == lvar and const_l is not None:
                        x = x + const_l * c
                    else:
                        x = x + ir.AffineExpr.get_dim(nl.index(n)) * c
                res.append(x)
            return res

        def shifted(e, k):
            return [x + k if d == sd else x for d, x in enumerate(e)]

        # before the loop: position p+1 <- element p of the first iteration's window
        pre_box = list(box)
        pre_box[sd] = (box[sd][0], 0, W - 2)

        def pre(ivs, ip):
            gm, gops = _mk(len(outer_ops), ivs, lambda e: src(e, 0, const_l=cb[0]))
            lm, lops = _mk(0, ivs, lambda e: shifted(e, 1))
            affine_d.store(affine_d.load(el, buf, outer_ops + gops, gm, ip=ip), local, lops, lm, ip=ip)

        _copy(pre_box, ir.InsertionPoint(loop), f"{name}.pre", pre)
        body = loop.regions[0].blocks[0]
        first = body.operations[0]

        def shift(ivs, ip):
            am, aops = _mk(0, ivs, lambda e: shifted(e, 1))
            bm, bops = _mk(0, ivs, lambda e: e)
            affine_d.store(affine_d.load(el, local, aops, am, ip=ip), local, bops, bm, ip=ip)

        _copy(pre_box, ir.InsertionPoint(first), f"{name}.shift", shift)
        new_box = list(box)
        new_box[sd] = (box[sd][0], 0, 0)

        def load_new(ivs, ip):
            gm, gops = _mk(nf, ivs, lambda e: src(e, W - 1))
            lm, lops = _mk(0, ivs, lambda e: shifted(e, W - 1))
            affine_d.store(affine_d.load(el, buf, fops + gops, gm, ip=ip), local, lops, lm, ip=ip)

        _copy(new_box, ir.InsertionPoint(first), f"{name}.new", load_new)


def check_and_apply(kind: str, func, buf, loop, name):
    try:
        (apply_buffer_at if kind == "buffer_at" else apply_reuse_at)(func, buf, loop, name)
    except _Fail as e:
        raise ScheduleError(str(e)) from None


def precheck(kind: str, buf: ir.Value, loop: ir.Operation) -> str | None:
    """The reason `kind` cannot apply, or None (runs the analysis without rewriting)."""
    try:
        box, ops, fixed = footprint(buf, loop)
        if kind == "reuse_at":
            if any(o.name == "affine.store" for o in ops):
                return "reuse_at needs a buffer the loop only reads"
            cb = dp.const_bounds(loop)
            if cb is None or cb[2] != 1:
                return "reuse_at needs a loop with constant bounds and step 1"
            lvar = [k for k, v in fixed.items() if v == dp.loop_iv(loop)][0]
            sliding = [d for d, (base, _, _) in enumerate(box) if base.get(lvar, 0)]
            if len(sliding) != 1 or box[sliding[0]][0][lvar] != 1:
                return "the footprint must slide by exactly one element along one dimension per iteration"
            if box[sliding[0]][2] - box[sliding[0]][1] < 1:
                return "the window along the sliding dimension is one element: nothing to reuse"
    except _Fail as e:
        return str(e)
    return None
