"""Shaping dataflow regions the way Vitis accepts them: `outline` and `fork`.

`outline(loop, name, keep=())` (Allo's `outline`): the body of `loop` becomes a new
function `name`, called from the loop. Vitis takes a dataflow region as a function
body (or a loop body) of process calls; a loop *inside* a dataflow function is one
process, so the streams between the calls in it would never run concurrently (UG1399,
"Dataflow ... canonical forms"). Outlining the layer loop's body makes each layer one
dataflow region. Nests named in `keep` (band names; they must open or close the body)
stay in the loop: the residual copy that feeds the next layer reads what the region
writes and must not be a process of it (a feedback, which Vitis rejects).
Values from outside the loop become arguments (named after the ports and buffers they
are); buffers used only inside the body move into the new function (the region's
channels); constants and constant tables are copied in.

`fork(buffer)`: a buffer of a region read by several processes (the residual read by
`norm` and `out_proj`, the conv output read by `x_proj` and `ssm`) gets a `fork`
process that reads it once and writes one copy per reader, so every buffer has one
writer and one reader (HLS 200-779). The copies are local buffers `<buffer>_<reader>`
(the fork's ports `to_<reader>`).
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import func as func_d
from torch_mlir.dialects import memref as memref_d

from ..errors import ScheduleError
from ..flow.effects import Effects, callee
from ..flow.identity import LAYER_ARG, arg_names, arg_roles, buffer_label, set_identity, stacked_args
from ..flow.mlir import funcs, str_attr, walk
from .rewrite import BAND_ATTR, LOOP_ATTR

REGION_KIND = "layer"      # mf.kind of an outlined layer body
FORK_KIND = "fork"
_COPYABLE = ("arith.constant", "memref.get_global")


def _op(x) -> ir.Operation:
    return x.operation if hasattr(x, "operation") else x


def _body_ops(loop: ir.Operation) -> list[ir.Operation]:
    return [_op(o) for o in loop.regions[0].blocks[0].operations][:-1]  # without the yield


def _inside(op: ir.Operation, roots: list[ir.Operation]) -> bool:
    """Whether `op` is one of `roots` or nested in one (within its function)."""
    p = op
    while p is not None and p.name != "func.func":
        if any(p == r for r in roots):
            return True
        p = _op(p.parent) if p.parent is not None else None
    return False


def _def_op(v: ir.Value) -> ir.Operation | None:
    o = v.owner
    return None if isinstance(o, ir.Block) else _op(o)


def _def_site(v: ir.Value) -> ir.Operation:
    """The op defining `v`, or the op whose region has `v` as a block argument."""
    o = v.owner
    return _op(o.owner) if isinstance(o, ir.Block) else _op(o)


def _band(op: ir.Operation) -> str | None:
    return str_attr(op, BAND_ATTR) or str_attr(op, LOOP_ATTR)


def plan_outline(module: ir.Module, loop: ir.Operation, name: str, keep=()) -> tuple[list, list]:
    """(ops to outline, ops kept) of the loop body; raises ScheduleError with the reason."""
    if name in funcs(module):
        raise ScheduleError(f"outline: a function '{name}' exists already; choose another name")
    ops = _body_ops(loop)
    keep = set(keep)
    kept_flags = [o.name in ("affine.for", "scf.for") and _band(o) in keep for o in ops]
    missing = keep - {_band(o) for o, k in zip(ops, kept_flags) if k}
    if missing:
        raise ScheduleError(f"outline: the loop body has no nest named {sorted(missing)} to keep; its nests: "
                            f"{', '.join(sorted({_band(o) or '?' for o in ops if o.name == 'affine.for'}))}")
    # kept nests must form a prefix or a suffix of the body: moving a middle one out
    # would reorder it with the calls around it
    k = 0
    while k < len(ops) and kept_flags[k]:
        k += 1
    e = len(ops)
    while e > k and kept_flags[e - 1]:
        e -= 1
    if any(kept_flags[k:e]):
        bad = [_band(o) for o, f in zip(ops[k:e], kept_flags[k:e]) if f]
        raise ScheduleError(f"outline: the nests {bad} to keep sit between the body's other ops; only nests at "
                            "the start or the end of the body can stay in the loop")
    middle = ops[k:e]
    if not any(o.name == "func.call" or any(x.name == "func.call" for x in walk(o)) for o in middle):
        raise ScheduleError("outline: the loop body calls no kernel; nothing to make a region of")
    return middle, ops[:k] + ops[e:]


def apply_outline(module: ir.Module, fn: ir.Operation, loop: ir.Operation, name: str, keep=()) -> ir.Operation:
    """Outline (see the module doc); returns the new function. The caller validated with
    `plan_outline` and runs this inside a transaction."""
    middle, _ = plan_outline(module, loop, name, keep)
    fs = funcs(module)
    eff = Effects(fs)
    fargs = list(fn.regions[0].blocks[0].arguments)
    names, roles, stacked = arg_names(fn) or [], arg_roles(fn), stacked_args(fn)
    iv = loop.regions[0].blocks[0].arguments[0]

    # values from outside the body, in first-use order
    ext: list[ir.Value] = []
    for op in middle:
        for o in [op, *walk(op)]:
            for v in o.operands:
                if not _inside(_def_site(v), middle) and v not in ext:
                    ext.append(v)
    moved, copied, params = [], [], []
    for v in ext:
        d = _def_op(v)
        if d is not None and d.name in _COPYABLE:
            copied.append(v)
        elif d is not None and d.name in ("memref.alloc", "memref.alloca") and all(
                _inside(_op(u.owner), middle) for u in v.uses):
            moved.append(v)
        else:
            params.append(v)

    def label(v: ir.Value) -> tuple[str, str, bool]:
        if v == iv:
            return LAYER_ARG, "layer", False
        if v in fargs:
            i = fargs.index(v)
            return (names[i] if i < len(names) else f"arg{i}"), (roles[i] or "port") if i < len(roles) else "port", \
                (stacked[i] if i < len(stacked) else False)
        return buffer_label(v, eff) or "buf", "activation", False

    labels = [label(v) for v in params]
    seen: dict[str, int] = {}
    uniq = []
    for n, r, s in labels:
        seen[n] = seen.get(n, 0) + 1
        uniq.append((n if seen[n] == 1 else f"{n}_{seen[n]}", r, s))
    with module.context, ir.Location.unknown():
        new = func_d.FuncOp(name, ir.FunctionType.get([v.type for v in params], []), ip=ir.InsertionPoint(fn))
        entry = new.add_entry_block()
        set_identity(new.operation, REGION_KIND, [u[0] for u in uniq], [u[1] for u in uniq], [u[2] for u in uniq])
        ret = func_d.ReturnOp([], ip=ir.InsertionPoint(entry))
        mapping = dict(zip(params, entry.arguments))
        for v in copied:
            c = _def_op(v).clone(ir.InsertionPoint(ret))
            mapping[v] = c.results[0]
        for v in moved:
            a = _def_op(v)
            if "buffer_name" not in a.attributes:
                a.attributes["buffer_name"] = ir.StringAttr.get(buffer_label(v, eff) or "buf")
            a.move_before(ret)
        ip_call = ir.InsertionPoint(middle[0])
        func_d.CallOp([], ir.FlatSymbolRefAttr.get(name), params, ip=ip_call)
        for op in middle:
            op.move_before(ret)
        for op in middle:
            for o in [op, *walk(op)]:
                for i, v in enumerate(o.operands):
                    if v in mapping:
                        o.operands[i] = mapping[v]
    for v in copied:  # constants nobody outside uses any more
        d = _def_op(v)
        if not list(v.uses):
            d.erase()
    return new.operation


# ------------------------------------------------------------------------- fork


def processes(block: ir.Block) -> list[ir.Operation]:
    """The processes of a dataflow region's body: its calls and its loop nests."""
    return [_op(o) for o in block.operations if _op(o).name in ("func.call", "affine.for", "scf.for")]


def process_name(op: ir.Operation) -> str:
    if op.name == "func.call":
        return callee(op)
    return _band(op) or op.name


def readers_writers(block: ir.Block, v: ir.Value, eff: Effects):
    """(reader processes, writer processes) of `v` in a region body, in body order; a
    process that writes `v` is not counted as a reader of it."""
    rs, ws = [], []
    for p in processes(block):
        r, w = eff.touched([p])
        if v in w:
            ws.append(p)  # a producer reading back what it wrote is still one producer
        elif v in r:
            rs.append(p)
    return rs, ws


def plan_fork(region: ir.Operation, v: ir.Value, eff: Effects) -> list[ir.Operation]:
    """The reader processes of `v` to fork it for; raises ScheduleError with the reason."""
    block = region.regions[0].blocks[0]
    rs, ws = readers_writers(block, v, eff)
    if not isinstance(v.type, ir.MemRefType) or not ir.MemRefType(v.type).has_static_shape:
        raise ScheduleError("fork: only statically shaped buffers can be forked")
    if len(rs) < 2:
        raise ScheduleError(f"fork: the buffer has {len(rs)} reader process(es); a fork is for a buffer read by "
                            "several")
    if ws and not all(w.is_before_in_block(rs[0]) for w in ws):
        raise ScheduleError("fork: the buffer is written after its first reader runs (a feedback); fork a "
                            "value that is complete before it is read")
    return rs


def apply_fork(module: ir.Module, region: ir.Operation, v: ir.Value, base: str) -> ir.Operation:
    """Insert the fork process (see the module doc); returns the fork function."""
    from ..flow.capture import copy_nest

    eff = Effects(funcs(module), streams=True)
    readers = plan_fork(region, v, eff)
    block = region.regions[0].blocks[0]
    mtype = ir.MemRefType(v.type)
    with module.context, ir.Location.unknown():
        dense = ir.MemRefType.get(list(mtype.shape), mtype.element_type)
    fname = f"fork_{base}"
    n = 1
    while fname in funcs(module):
        n += 1
        fname = f"fork_{base}_{n}"
    outs = [f"to_{process_name(p)}" for p in readers]
    with module.context, ir.Location.unknown():
        fk = func_d.FuncOp(fname, ir.FunctionType.get([v.type] + [dense] * len(readers), []),
                           ip=ir.InsertionPoint(region))
        entry = fk.add_entry_block()
        set_identity(fk.operation, FORK_KIND, [base] + outs, ["activation"] * (1 + len(readers)))
        with ir.InsertionPoint(entry):
            copy_nest(entry.arguments[0], list(entry.arguments[1:]), None, "fork")
            func_d.ReturnOp([])
        first = _op(block.operations[0])
        copies = []
        for p in readers:
            c = memref_d.alloc(dense, [], [], ip=ir.InsertionPoint(first))
            _op(c.owner).attributes["buffer_name"] = ir.StringAttr.get(f"{base}_{process_name(p)}")
            copies.append(c)
        func_d.CallOp([], ir.FlatSymbolRefAttr.get(fname), [v] + copies, ip=ir.InsertionPoint(readers[0]))
        for p, c in zip(readers, copies):
            for o in [p, *walk(p)]:
                for i, x in enumerate(o.operands):
                    if x == v:
                        o.operands[i] = c
    return fk.operation
