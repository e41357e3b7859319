"""`to(buffer, dst, depth)`: turn a buffer between two kernels into a FIFO stream.

The buffer is an output argument of the producer kernel (`"in_proj:x"`), the
top function's local buffer behind it must be written by that kernel only and read by
`dst` only (a second reader or writer is rejected, as Vitis rejects a stream with
several consumers or producers). The top function gets an `mf.stream_create` of the
given depth and becomes a dataflow region; the two kernels take the stream.

Inside each kernel the accesses are rewritten *directly* when they are FIFO-exact:
the producer stores every element exactly once, the consumer loads every element
exactly once, in the same order (checked by enumerating the affine loops). Otherwise
that side gets an adapter: the producer writes a local buffer and streams it out
row-major at its end, or the consumer streams the input into a local buffer at its
start (named `<port>.local`, bands `S_<port>_out` / `S_<port>_in`). Adapters keep the
values right but make the other side wait for the whole stream, which is what the
deadlock check then sees. After the rewrite the whole dataflow function is simulated
as a Kahn process network with the declared depths (`dialects.stream.check_dataflow`);
a deadlock is raised as `DeadlockError` and the IR is rolled back.

The layer kernels are called inside the top's `layer` loop. Both ends of a stream must
be called in one loop body: each iteration then writes and reads every element once, so
the FIFO is empty again at the end of an iteration, and the simulation of one pass over
the calls (what the check does) holds for every layer.
"""

from __future__ import annotations

import re

from torch_mlir import ir
from torch_mlir.dialects import affine as affine_d
from torch_mlir.dialects import func as func_d
from torch_mlir.dialects import memref as memref_d

from ..dialects import directives as D
from ..dialects import stream as S
from ..errors import ScheduleError
from ..flow.mlir import funcs, walk
from .deps import trip_count
from .rewrite import BAND_ATTR, LOOP_ATTR, new_for

_LETTERS = "ijklmnop"


def _owner_op(v: ir.Value):
    o = v.owner
    if isinstance(o, ir.Block):
        return None
    return o.operation if hasattr(o, "operation") else o


def _user_op(u) -> ir.Operation:
    return u.owner.operation if hasattr(u.owner, "operation") else u.owner


def _calls(top: ir.Operation) -> list[ir.Operation]:
    return [o for o in walk(top) if o.name == "func.call"]


def _callee(c: ir.Operation) -> str:
    return ir.FlatSymbolRefAttr(c.attributes["callee"]).value


def _order(fn: ir.Operation, arg: ir.Value, opname: str, memref_pos: int, expect: int):
    """Element order of `opname` accesses to `arg` (None if not FIFO-exact-able)."""
    uses = [_user_op(u) for u in arg.uses]
    if not uses or any(u.name != opname for u in uses):
        return None
    if opname == "affine.store" and any(u.operands[1] != arg for u in uses):
        return None
    # cheap count first: each access must run exactly N times in total
    total = 0
    for u in uses:
        n = 1
        for L in _loops_around(u):
            tc = _trip(L)
            if tc is None:
                return None
            n *= tc
        total += n
    if total != expect:
        return None
    order = []
    maps = {}

    def visit(op, env):
        m = maps.get(op)
        if m is None:
            m = maps[op] = (ir.AffineMapAttr(op.attributes["map"]).value, list(op.operands)[memref_pos + 1:])
        order.append(tuple(S.eval_map(m[0], m[1], env)))

    targets = set(uses)
    try:
        S.enumerate_ops(fn, lambda o: o in targets, visit, limit=expect)
    except S.NotStatic:
        return None
    return order


def _loops_around(op):
    out = []
    p = op.parent
    while p is not None and p.name != "func.func":
        if p.name == "affine.for":
            out.append(p)
        p = p.parent
    return out


def _trip(L):
    return trip_count(L, bound=False)


def _set_arg_type(fn: ir.Operation, k: int, t: ir.Type) -> None:
    ft = ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)
    ins = list(ft.inputs)
    ins[k] = t
    fn.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(ins, list(ft.results)))
    fn.regions[0].blocks[0].arguments[k].set_type(t)


def _copy_nest(shape, ip, band: str, body):
    """Row-major loop nest over `shape` at `ip`; body(ivs, ip_inner)."""
    loops = []
    cur_ip = ip
    for d, n in enumerate(shape):
        L = new_for(ir.AffineMap.get_constant(0), [], ir.AffineMap.get_constant(n), [], 1, cur_ip)
        L.attributes[LOOP_ATTR] = ir.StringAttr.get(_LETTERS[d % len(_LETTERS)])
        loops.append(L)
        cur_ip = ir.InsertionPoint([o.operation for o in L.regions[0].blocks[0].operations][-1])
    if loops:
        loops[0].attributes[BAND_ATTR] = ir.StringAttr.get(band)
    body([L.regions[0].blocks[0].arguments[0] for L in loops], cur_ip)


def _identity(n: int) -> ir.AffineMap:
    return ir.AffineMap.get_identity(n) if n else ir.AffineMap.get(0, 0, [])


def _local(fn: ir.Operation, mtype: ir.MemRefType, name: str) -> ir.Value:
    entry = fn.regions[0].blocks[0]
    L = memref_d.alloc(mtype, [], [], ip=ir.InsertionPoint(entry.operations[0]))
    _owner_op(L).attributes["buffer_name"] = ir.StringAttr.get(name)
    return L


def _return_op(fn: ir.Operation) -> ir.Operation:
    ops = [o.operation for o in fn.regions[0].blocks[0].operations]
    return ops[-1]


def _cname(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", s)


def apply_to(s, buffer, dst: str, depth: int = 2, adapt: bool = True):
    """The `to` primitive (see module doc). Returns a dict describing what was built."""
    h, ref = s._buffer(buffer, "to")
    target = f"{h.path} -> {dst}"
    if ref.arg is None:
        raise ScheduleError(f"to {target}: '{h.name}' is a local buffer of {h.kernel}; a stream connects "
                            "kernels, so name an output argument of the producer kernel")
    if S.is_stream_type(ref.value.type):
        raise ScheduleError(f"to {target}: '{h.name}' is already a stream")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ScheduleError(f"to {target}: depth must be an integer >= 1, got {depth!r}")
    top = s.top
    if top is None:
        raise ScheduleError(f"to {target}: the module has no top function (attribute mf.top) calling the kernels")
    s._func(dst, "to")
    if dst == h.kernel:
        raise ScheduleError(f"to {target}: producer and consumer are the same kernel")
    # the function that calls both kernels (the top, or an outlined layer region)
    sites = {n: [c for c in _calls(f) if _callee(c) in (h.kernel, dst)] for n, f in funcs(s.module).items()}
    pcalls = [(n, c) for n, cs in sites.items() for c in cs if _callee(c) == h.kernel]
    dcalls = [(n, c) for n, cs in sites.items() for c in cs if _callee(c) == dst]
    if len(pcalls) != 1 or len(dcalls) != 1:
        raise ScheduleError(f"to {target}: each kernel must be called exactly once in the design "
                            f"({h.kernel}: {len(pcalls)}, {dst}: {len(dcalls)})")
    if pcalls[0][0] != dcalls[0][0]:
        raise ScheduleError(f"to {target}: {h.kernel} is called by '{pcalls[0][0]}' and {dst} by "
                            f"'{dcalls[0][0]}'; a stream connects two calls of one function")
    top = pcalls[0][0]
    topfn = funcs(s.module)[top]
    pcalls, dcalls = [pcalls[0][1]], [dcalls[0][1]]
    pcall = pcalls[0]
    v = pcall.operands[ref.arg]
    mtype = ref.type
    if S.is_stream_type(v.type):
        raise ScheduleError(f"to {target}: '{h.name}' is already a stream")
    alloc = _owner_op(v)
    if alloc is None or alloc.name != "memref.alloc":
        raise ScheduleError(f"to {target}: '{h.name}' is not a buffer of '{top}' (a port in external "
                            "memory?); only buffers between two kernels can become streams")
    if not mtype.has_static_shape:
        raise ScheduleError(f"to {target}: only statically shaped buffers can be streamed")
    all_funcs = funcs(s.module)
    readers, writers, users = set(), set(), []
    for u in v.uses:
        op = _user_op(u)
        if op.name == "memref.dealloc":
            continue
        if op.name != "func.call":
            raise ScheduleError(f"to {target}: the buffer is used by '{op.name}' in '{top}', not only by kernels")
        callee = _callee(op)
        pos = u.operand_number
        r, w = S._arg_effects(all_funcs[callee])[pos]
        users.append((op, callee, pos))
        if r:
            readers.add(callee)
        if w:
            writers.add(callee)
    if h.kernel not in writers:
        raise ScheduleError(f"to {target}: {h.kernel} does not write '{h.name}'")
    if writers != {h.kernel}:
        raise ScheduleError(f"to {target}: '{h.name}' is written by {sorted(writers)}; a stream has exactly one "
                            "producer (Vitis rejects a stream with several)")
    others = sorted(readers - {h.kernel, dst})
    if others:
        raise ScheduleError(f"to {target}: '{h.name}' is also read by {others}; a stream has exactly one "
                            "consumer (Vitis rejects a stream with several). Stream a copy, or keep a buffer")
    if dst not in readers:
        raise ScheduleError(f"to {target}: {dst} does not read '{h.name}'")
    if len(users) != 2 or {c for _, c, _ in users} != {h.kernel, dst}:
        raise ScheduleError(f"to {target}: the buffer must be passed once to each of the two kernels")
    if pcall.parent != dcalls[0].parent:
        raise ScheduleError(f"to {target}: {h.kernel} and {dst} are called in different loops of '{top}' (one "
                            "inside the layer loop, one outside?); a stream connects two calls of one loop body, "
                            "which write and read it once per iteration")
    if not pcall.is_before_in_block(dcalls[0]):
        raise ScheduleError(f"to {target}: {dst} is called before {h.kernel}")
    dpos = next(p for _, c, p in users if c == dst)

    shape = list(mtype.shape)
    N = 1
    for d in shape:
        N *= d
    elem = mtype.element_type
    pfn, dfn = all_funcs[h.kernel], all_funcs[dst]
    parg = pfn.regions[0].blocks[0].arguments[ref.arg]
    darg = dfn.regions[0].blocks[0].arguments[dpos]
    porder = _order(pfn, parg, "affine.store", 1, N)
    p_direct = porder is not None and len(porder) == N and len(set(porder)) == N
    if not p_direct:
        import itertools

        porder = list(itertools.product(*[range(d) for d in shape]))
    dorder = _order(dfn, darg, "affine.load", 0, N)
    d_direct = dorder is not None and dorder == porder
    if not adapt and not (p_direct and d_direct):
        side = h.kernel if not p_direct else dst
        from ..targets.versal.dataflow import RULES

        r = RULES["stream-order"]
        raise ScheduleError(f"to {target}: [{r.key}] {side} does not access '{h.name}' FIFO-exactly (every element "
                            f"once, in the other side's order) and adapt=False; fix: {r.fix} [{r.source}]")
    name = _cname(f"{h.kernel}_{h.name}")
    port = _cname(h.name)
    info = {"stream": name, "depth": depth, "elements": N, "producer_adapter": not p_direct,
            "consumer_adapter": not d_direct}
    kernels = [top, h.kernel, dst]
    entry = {"op": "to", "buffer": h.path, "dst": dst, "depth": depth}
    if not adapt:
        entry["adapt"] = False

    def work():
        ctx = s.module.context
        S.ensure_loaded(ctx)
        with ctx, ir.Location.unknown():
            fs = funcs(s.module)
            pfn, dfn, tfn = fs[h.kernel], fs[dst], fs[top]
            st = S.stream_type(elem, N)
            # producer
            parg = pfn.regions[0].blocks[0].arguments[ref.arg]
            if p_direct:
                stores = [_user_op(u) for u in parg.uses]
                _set_arg_type(pfn, ref.arg, st)
                for op in stores:
                    S.write(parg, op.operands[0], ip=ir.InsertionPoint(op))
                    op.erase()
            else:
                loc = _local(pfn, mtype, f"{h.name}.local")
                parg.replace_all_uses_with(loc)
                _set_arg_type(pfn, ref.arg, st)

                def out_body(ivs, ip):
                    x = affine_d.load(elem, loc, ivs, _identity(len(ivs)), ip=ip)
                    S.write(parg, x, ip=ip)

                _copy_nest(shape, ir.InsertionPoint(_return_op(pfn)), f"S_{port}_out", out_body)
            # consumer
            darg = dfn.regions[0].blocks[0].arguments[dpos]
            if d_direct:
                loads = [_user_op(u) for u in darg.uses]
                _set_arg_type(dfn, dpos, st)
                for op in loads:
                    r = S.read(darg, ip=ir.InsertionPoint(op))
                    op.results[0].replace_all_uses_with(r)
                    op.erase()
            else:
                loc = _local(dfn, mtype, f"{h.name}.local")
                darg.replace_all_uses_with(loc)
                _set_arg_type(dfn, dpos, st)
                after_alloc = [o.operation for o in dfn.regions[0].blocks[0].operations][1]

                def in_body(ivs, ip):
                    x = S.read(darg, ip=ip)
                    affine_d.store(x, loc, ivs, _identity(len(ivs)), ip=ip)

                _copy_nest(shape, ir.InsertionPoint(after_alloc), f"S_{port}_in", in_body)
            # top
            calls = [c for c in _calls(tfn) if _callee(c) == h.kernel]
            val = calls[0].operands[ref.arg]
            al = _owner_op(val)
            sv = S.create(elem, N, depth, name, ip=ir.InsertionPoint(al))
            for u in list(val.uses):
                op = _user_op(u)
                if op.name == "memref.dealloc":
                    op.erase()
            val.replace_all_uses_with(sv)
            al.erase()
            D.set_dataflow(tfn)
        info["fifo_peak"] = S.check_dataflow(s.module, top, s._dataflow_cache, s._versions).get(top, {})

    s._transact("to", target, kernels, entry, work)
    return info
