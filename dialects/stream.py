"""The `mf` dialect: streams (FIFOs) between kernels, defined in Python on IRDL.

Defined with `torch_mlir.dialects.ext` (Python-defined dialects lowered to IRDL and
loaded into a context at run time); `ensure_loaded(ctx)` loads it once per context.
Ops use the generic syntax.

Type
    ``!mf.stream<T, N>``  a FIFO of element type T (f32, i64, ...) that carries N
    elements per kernel invocation (N = the elements of the buffer it replaced).
    HLS: ``hls::stream<T>``; as a kernel argument ``hls::stream<T>& name``.

Ops
    ``%s = "mf.stream_create"() {depth = D : i64, name = "x"} : () -> !mf.stream<T, N>``
        in the dataflow function (the top) that connects two kernels. HLS:
        ``hls::stream<T> x("x"); #pragma HLS stream variable=x depth=D``.
        `directives.stream_depth(op)` reads D; `stream_name(op)` the name.
    ``"mf.stream_write"(%s, %v) : (!mf.stream<T, N>, T) -> ()``   HLS ``s.write(v);``
    ``%v = "mf.stream_read"(%s) : (!mf.stream<T, N>) -> T``       HLS ``v = s.read();``

Rules (checked by `schedules` when a stream is made, and again here before the CPU
runs the design): one producer kernel writes the stream and one consumer kernel reads
it, N times each; in the dataflow function the kernels run as concurrent processes
with blocking reads and blocking writes on a FIFO of `depth` elements (Kahn process
network). `check_dataflow` simulates exactly that over the kernels' stream-event
traces (static: streams are only touched inside affine loops with constant trip
counts) and raises `DeadlockError` naming the blocked kernels and FIFOs when the
declared depths would deadlock in hardware.

CPU execution (`lower_streams`, called from `directives.strip_directives`, which the
llvm target runs before lowering): after the check passes, each stream becomes a
memref queue of N elements with a per-kernel position counter, and the kernels run in
call order. A deadlock-free Kahn network is determinate, so this sequential run gives
the values the concurrent hardware computes, and the values go through the queue in
FIFO order (a consumer that read in another order than the producer wrote would get
other numbers).
"""

# no `from __future__ import annotations`: ext reads the class annotations as types

import sys
from typing import Any

from torch_mlir import ir
from torch_mlir.dialects import arith as arith_d
from torch_mlir.dialects import ext
from torch_mlir.dialects import memref as memref_d

from ..errors import ScheduleError

DIALECT = "mf"
CREATE, WRITE, READ = "mf.stream_create", "mf.stream_write", "mf.stream_read"
STREAM_OPS = (CREATE, WRITE, READ)


class DeadlockError(ScheduleError):
    """The declared FIFO depths would deadlock the dataflow design in hardware."""


class MF(ext.Dialect, name=DIALECT):
    """mambaflow's dialect: streams."""


class StreamType(MF.Type, name="stream"):
    elem: Any
    size: Any


class StreamCreateOp(MF.Operation, name="stream_create"):
    depth: ir.IntegerAttr
    name: ir.StringAttr
    out: ext.Result[StreamType]


class StreamWriteOp(MF.Operation, name="stream_write"):
    stream: ext.Operand[StreamType]
    value: ext.Operand[Any]


class StreamReadOp(MF.Operation, name="stream_read"):
    stream: ext.Operand[StreamType]
    value: ext.Result[Any]


# The bindings look a dialect's Python module up as `torch_mlir.dialects.<namespace>`
# whenever they wrap one of its ops, and retry (an import search on disk) every time the
# lookup fails; answering with this module makes wrapping `mf` ops cheap.
sys.modules.setdefault(f"torch_mlir.dialects.{DIALECT}", sys.modules[__name__])


def ensure_loaded(ctx=None) -> None:
    """Load the `mf` dialect into `ctx` (the current context by default), once."""
    ctx = ctx or ir.Context.current
    with ctx, ir.Location.unknown():
        if not ctx.is_dialect_loaded(DIALECT):
            MF.load()


def _i64(v: int) -> ir.IntegerAttr:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(v))


def stream_type(elem: ir.Type, size: int) -> ir.Type:
    return ir.Type.parse(f"!mf.stream<{elem}, {int(size)} : i64>")


def is_stream_type(t: ir.Type) -> bool:
    return str(t).startswith("!mf.stream<")


def stream_info(t: ir.Type) -> tuple[ir.Type, int]:
    """(element type, N) of a stream type."""
    s = str(t)[len("!mf.stream<"):-1]
    elem, size = s.rsplit(",", 1)
    return ir.Type.parse(elem.strip()), int(size.split(":")[0])


def create(elem: ir.Type, size: int, depth: int, name: str, ip=None) -> ir.Value:
    op = ir.Operation.create(CREATE, results=[stream_type(elem, size)],
                             attributes={"depth": _i64(depth), "name": ir.StringAttr.get(name)}, ip=ip)
    return op.results[0]


def write(stream: ir.Value, value: ir.Value, ip=None) -> ir.Operation:
    return ir.Operation.create(WRITE, operands=[stream, value], ip=ip)


def read(stream: ir.Value, ip=None) -> ir.Value:
    elem, _ = stream_info(stream.type)
    return ir.Operation.create(READ, results=[elem], operands=[stream], ip=ip).results[0]


def stream_name(op: ir.Operation) -> str:
    return ir.StringAttr(op.attributes["name"]).value if "name" in op.attributes else "?"


# ------------------------------------------------------------------ traces


def _walk(op):
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                child = child.operation
                yield child
                yield from _walk(child)


def _contains(op: ir.Operation, names) -> bool:
    return any(o.name in names for o in _walk(op))


def eval_expr(e: ir.AffineExpr, dims: list[int], syms: list[int]) -> int:
    if isinstance(e, ir.AffineConstantExpr):
        return e.value
    if isinstance(e, ir.AffineDimExpr):
        return dims[e.position]
    if isinstance(e, ir.AffineSymbolExpr):
        return syms[e.position]
    a, b = eval_expr(e.lhs, dims, syms), eval_expr(e.rhs, dims, syms)
    if isinstance(e, ir.AffineAddExpr):
        return a + b
    if isinstance(e, ir.AffineMulExpr):
        return a * b
    if isinstance(e, ir.AffineFloorDivExpr):
        return a // b
    if isinstance(e, ir.AffineCeilDivExpr):
        return -(-a // b)
    if isinstance(e, ir.AffineModExpr):
        return a % b
    raise ValueError(f"unknown affine expression {e}")


class NotStatic(Exception):
    """The trace depends on run-time values."""


def _compile_expr(e: ir.AffineExpr):
    """A Python closure evaluating `e` on (dims, syms)."""
    if isinstance(e, ir.AffineConstantExpr):
        c = e.value
        return lambda d, s: c
    if isinstance(e, ir.AffineDimExpr):
        p = e.position
        return lambda d, s: d[p]
    if isinstance(e, ir.AffineSymbolExpr):
        p = e.position
        return lambda d, s: s[p]
    a, b = _compile_expr(e.lhs), _compile_expr(e.rhs)
    if isinstance(e, ir.AffineAddExpr):
        return lambda d, s: a(d, s) + b(d, s)
    if isinstance(e, ir.AffineMulExpr):
        return lambda d, s: a(d, s) * b(d, s)
    if isinstance(e, ir.AffineFloorDivExpr):
        return lambda d, s: a(d, s) // b(d, s)
    if isinstance(e, ir.AffineCeilDivExpr):
        return lambda d, s: -(-a(d, s) // b(d, s))
    if isinstance(e, ir.AffineModExpr):
        return lambda d, s: a(d, s) % b(d, s)
    raise ValueError(f"unknown affine expression {e}")


_COMPILED: dict[str, tuple] = {}


def compiled_map(m: ir.AffineMap):
    key = str(m)
    c = _COMPILED.get(key)
    if c is None:
        c = _COMPILED[key] = (m.n_dims, [_compile_expr(r) for r in m.results])
    return c


def value_of(v: ir.Value, env: dict) -> int:
    x = env.get(v)
    if x is not None:
        return x
    owner = v.owner
    if not isinstance(owner, ir.Block):
        op = owner.operation if hasattr(owner, "operation") else owner
        if op.name == "arith.constant":
            try:
                return ir.IntegerAttr(op.attributes["value"]).value
            except ValueError:
                pass
        if op.name == "affine.apply":
            m = ir.AffineMapAttr(op.attributes["map"]).value
            vals = [value_of(x, env) for x in op.operands]
            return eval_expr(m.results[0], vals[:m.n_dims], vals[m.n_dims:])
    raise NotStatic(f"value not known statically: {v}")


def eval_map(m: ir.AffineMap, operands, env: dict) -> list[int]:
    nd, fns = compiled_map(m)
    vals = [value_of(x, env) for x in operands]
    d, sy = vals[:nd], vals[nd:]
    return [f(d, sy) for f in fns]


def loop_range(loop: ir.Operation, env: dict) -> range:
    lbm = ir.AffineMapAttr(loop.attributes["lowerBoundMap"]).value
    ubm = ir.AffineMapAttr(loop.attributes["upperBoundMap"]).value
    ops = list(loop.operands)
    lb = max(eval_map(lbm, ops[:lbm.n_inputs], env))
    ub = min(eval_map(ubm, ops[lbm.n_inputs:lbm.n_inputs + ubm.n_inputs], env))
    step = ir.IntegerAttr(loop.attributes["step"]).value
    return range(lb, ub, step)


def _ancestors(root: ir.Operation, targets) -> set:
    out = set()
    for t in targets:
        p = t.parent
        while p is not None and p != root:
            out.add(p)
            p = p.parent
    return out


def enumerate_ops(block_owner: ir.Operation, wanted, visit, env=None, limit: int = 4_000_000) -> None:
    """Call visit(op, env) for every op with `wanted(op)` under `block_owner`, in execution
    order, iterating affine.for loops (only those that contain wanted ops)."""
    env = dict(env or {})
    targets = {o for o in _walk(block_owner) if wanted(o)}
    holders = _ancestors(block_owner, targets)
    count = [0]

    def run_block(block, env):
        for op in block.operations:
            op = op.operation
            if op in targets:
                count[0] += 1
                if count[0] > limit:
                    raise NotStatic("too many events to enumerate")
                visit(op, env)
            elif op in holders:
                if op.name != "affine.for":
                    raise NotStatic(f"'{op.name}' around a stream access is not static control flow")
                iv = op.regions[0].blocks[0].arguments[0]
                for i in loop_range(op, env):
                    env[iv] = i
                    run_block(op.regions[0].blocks[0], env)
                env.pop(iv, None)

    for region in block_owner.regions:
        for block in region.blocks:
            run_block(block, env)


def _merge(runs: list, more: list) -> None:
    for r in more:
        if runs and runs[-1][0] == r[0] and runs[-1][1] == r[1]:
            runs[-1][2] += r[2]
        else:
            runs.append(list(r))


def stream_trace(fn: ir.Operation) -> list[list]:
    """Run-length stream events of kernel `fn`: [[arg_index, 'r'|'w', count], ...].

    Loops whose inner bounds do not depend on their IV repeat one body trace (computed
    once), so the cost is the size of the loop structure, not the iteration count."""
    if not any(is_stream_type(a.type) for a in fn.regions[0].blocks[0].arguments):
        return []
    args = list(fn.regions[0].blocks[0].arguments)
    targets = {o for o in _walk(fn) if o.name in (WRITE, READ)}
    holders = _ancestors(fn, targets)

    def uses_iv(loop, iv) -> bool:
        for o in _walk(loop):
            if o.name == "affine.for" and o in holders and any(x == iv for x in o.operands):
                return True
        return False

    def block_trace(block, env) -> list:
        runs: list = []
        for op in block.operations:
            op = op.operation
            if op in targets:
                idx = next(k for k, a in enumerate(args) if a == op.operands[0])
                _merge(runs, [[idx, "w" if op.name == WRITE else "r", 1]])
            elif op in holders:
                if op.name != "affine.for":
                    raise NotStatic(f"'{op.name}' around a stream access is not static control flow")
                iv = op.regions[0].blocks[0].arguments[0]
                rng = loop_range(op, env)
                if not uses_iv(op, iv):
                    env[iv] = rng.start
                    body = block_trace(op.regions[0].blocks[0], env)
                    env.pop(iv, None)
                    n = len(rng)
                    if n and len(body) == 1:
                        _merge(runs, [[body[0][0], body[0][1], body[0][2] * n]])
                    elif n:
                        if len(body) * n > 4_000_000:
                            raise NotStatic("too many stream events to simulate")
                        for _ in range(n):
                            _merge(runs, body)
                else:
                    for i in rng:
                        env[iv] = i
                        _merge(runs, block_trace(op.regions[0].blocks[0], env))
                    env.pop(iv, None)
        return runs

    runs = []
    for region in fn.regions:
        for block in region.blocks:
            _merge(runs, block_trace(block, {}))
    return runs


# ------------------------------------------------------------------ Kahn check


def _funcs(module_op: ir.Operation) -> dict[str, ir.Operation]:
    out = {}
    for op in module_op.regions[0].blocks[0].operations:
        op = op.operation
        if op.name == "func.func":
            out[ir.StringAttr(op.attributes["sym_name"]).value] = op
    return out


def _callee(call: ir.Operation) -> str:
    return ir.FlatSymbolRefAttr(call.attributes["callee"]).value


def _arg_effects(fn: ir.Operation) -> list[tuple[bool, bool]]:
    """(reads, writes) per argument of a kernel (conservative for unknown users)."""
    args = list(fn.regions[0].blocks[0].arguments)
    out = []
    for a in args:
        r = w = False
        for u in a.uses:
            op = u.owner.operation if hasattr(u.owner, "operation") else u.owner
            n = op.name
            if n in ("affine.load", "memref.load", READ):
                r = True
            elif n in ("affine.store", "memref.store") and u.operand_number == 1:
                w = True
            elif n == WRITE:
                w = True
            elif n == "memref.copy":
                r = r or u.operand_number == 0
                w = w or u.operand_number == 1
            else:
                r = w = True
        out.append((r, w))
    return out


def check_dataflow(module, top: str | None = None, cache: dict | None = None,
                   versions: dict | None = None) -> dict:
    """Kahn-process simulation of every function that creates streams.

    Kernels called by the function are processes; a stream is a FIFO of its declared
    depth with blocking read and write; a plain buffer passed between kernels makes the
    reader wait until the writer has finished (ping-pong / PIPO semantics). Raises
    DeadlockError, or returns {function: {stream name: max occupancy}}.

    `cache` / `versions` (kernel name -> edit count) let a caller that tracks edits
    (the Schedule) reuse kernels' traces between checks.
    """
    mod_op = module.operation if hasattr(module, "operation") else module
    fs = _funcs(mod_op)
    report = {}
    for fname, fn in fs.items():
        if top is not None and fname != top:
            continue
        creates = [o for o in _walk(fn) if o.name == CREATE]
        if not creates:
            continue
        report[fname] = _simulate(fname, fn, fs, creates, cache, versions)
    return report


def _kernel_facts(kname, kfn, cache, versions):
    key = (kname, None if versions is None else versions.get(kname, 0))
    if cache is not None and versions is not None and cache.get(kname, (None,))[0] == key:
        return cache[kname][1], cache[kname][2]
    runs = stream_trace(kfn)
    eff = _arg_effects(kfn)
    if cache is not None and versions is not None:
        cache[kname] = (key, runs, eff)
    return runs, eff


def _simulate(fname, fn, fs, creates, cache=None, versions=None) -> dict:
    from collections import deque

    calls = [o for o in _walk(fn) if o.name == "func.call"]
    fifo_of = {}
    fifo_depth, fifo_name = [], []
    for c in creates:
        fifo_of[c.results[0]] = len(fifo_depth)
        fifo_depth.append(ir.IntegerAttr(c.attributes["depth"]).value)
        fifo_name.append(stream_name(c))
    nf = len(fifo_depth)
    writers = [[] for _ in range(nf)]
    readers = [[] for _ in range(nf)]
    procs = []
    waits: list[set] = []
    history: dict = {}  # buffer value -> [(process, reads, writes)]
    for k, call in enumerate(calls):
        kname = _callee(call)
        kfn = fs.get(kname)
        if kfn is None or not kfn.regions[0].blocks:
            raise ScheduleError(f"dataflow check of '{fname}': callee '{kname}' has no body")
        try:
            runs, eff = _kernel_facts(kname, kfn, cache, versions)
        except NotStatic as e:
            raise ScheduleError(f"dataflow check of '{fname}': kernel '{kname}' touches a stream outside "
                                f"static loops ({e})") from None
        ops = list(call.operands)
        pruns = []
        for arg, kind, n in runs:
            f = fifo_of.get(ops[arg])
            if f is None:
                raise ScheduleError(f"dataflow check of '{fname}': kernel '{kname}' argument {arg} is a stream "
                                    "not created in this function")
            (writers if kind == "w" else readers)[f].append(k)
            pruns.append([f, kind, n])
        procs.append((kname, pruns))
        w = set()
        for a, v in enumerate(ops):
            if v in fifo_of or not isinstance(v.type, ir.MemRefType):
                continue  # a stream, or a scalar (the layer index): no buffer dependence
            r, wr = eff[a] if a < len(eff) else (True, True)
            for j, r2, w2 in history.get(v, ()):
                if (w2 and (r or wr)) or (wr and r2):
                    w.add(j)
            history.setdefault(v, []).append((k, r, wr))
        waits.append(w)
    for f in range(nf):
        ws = sorted({procs[j][0] for j in writers[f]})
        rs = sorted({procs[j][0] for j in readers[f]})
        if len(ws) > 1 or len(rs) > 1:
            raise ScheduleError(f"stream '{fifo_name[f]}' in '{fname}' has producers {ws} and consumers {rs}: "
                                "a stream needs exactly one of each (Vitis rejects others)")
    writer_of = [writers[f][0] if writers[f] else None for f in range(nf)]
    reader_of = [readers[f][0] if readers[f] else None for f in range(nf)]
    waiters: list[list] = [[] for _ in procs]
    pending = [len(w) for w in waits]
    for k, w in enumerate(waits):
        for j in w:
            waiters[j].append(k)
    occ = [0] * nf
    peak = [0] * nf
    pos = [0] * len(procs)
    left = [r[0][2] if r else 0 for _, r in procs]
    done = [False] * len(procs)
    started = [False] * len(procs)
    queue = deque(k for k in range(len(procs)) if pending[k] == 0)
    queued = set(queue)

    def wake(k):
        if k is not None and k not in queued and started[k] and not done[k]:
            queue.append(k)
            queued.add(k)

    def step(k, n):
        left[k] -= n
        if left[k] == 0:
            pos[k] += 1
            if pos[k] < len(procs[k][1]):
                left[k] = procs[k][1][pos[k]][2]

    while queue:
        k = queue.popleft()
        queued.discard(k)
        if done[k]:
            continue
        started[k] = True
        runs = procs[k][1]
        while pos[k] < len(runs):
            f, kind, _ = runs[pos[k]]
            if kind == "w":
                n = min(left[k], fifo_depth[f] - occ[f])
                occ[f] += n
                peak[f] = max(peak[f], occ[f])
                other = reader_of[f]
            else:
                n = min(left[k], occ[f])
                occ[f] -= n
                other = writer_of[f]
            if n == 0 and other is not None and started[other] and not done[other] and pos[other] < len(procs[other][1]):
                of, okind, _ = procs[other][1][pos[other]]
                if of == f and okind != kind:
                    # both ends sit in runs on this FIFO: they run in lock step, each
                    # value passing through one slot of it
                    n = min(left[k], left[other])
                    peak[f] = max(peak[f], 1 if n else 0)
                    step(other, n)
            if n == 0:
                break
            step(k, n)
            wake(other)
        if pos[k] == len(runs):
            done[k] = True
            for f, kind, _ in runs:
                wake(reader_of[f] if kind == "w" else writer_of[f])
            for j in waiters[k]:
                pending[j] -= 1
                if pending[j] == 0:
                    queue.append(j)
                    queued.add(j)
    if not all(done):
        blocked, waiting = [], []
        for k, (kname, runs) in enumerate(procs):
            if done[k]:
                continue
            if not started[k]:
                deps = sorted({procs[j][0] for j in waits[k] if not done[j]})
                waiting.append(f"{kname} waits for {', '.join(deps)} to finish (buffer)")
                continue
            f, kind, _ = runs[pos[k]]
            if kind == "w":
                blocked.append(f"{kname} blocked writing FIFO '{fifo_name[f]}' (full, depth {fifo_depth[f]})")
            else:
                blocked.append(f"{kname} blocked reading FIFO '{fifo_name[f]}' (empty)")
        shown = blocked + waiting[:3]
        more = f"; {len(waiting) - 3} more kernels wait for buffers" if len(waiting) > 3 else ""
        raise DeadlockError(f"deadlock in dataflow function '{fname}': " + "; ".join(shown) + more
                            + ". Deepen the full FIFO(s) or reorder the producer's writes.")
    return {fifo_name[f]: peak[f] for f in range(nf)}


# ------------------------------------------------------------- CPU lowering


def lower_streams(module) -> int:
    """Check dataflow (Kahn) and rewrite streams into memref queues; returns how many."""
    mod_op = module.operation if hasattr(module, "operation") else module
    if not any(o.name in STREAM_OPS for o in _walk(mod_op)):
        return 0
    check_dataflow(module)
    fs = _funcs(mod_op)
    n = 0
    with mod_op.context, ir.Location.unknown():
        index = ir.IndexType.get()
        for fn in fs.values():
            if not fn.regions[0].blocks:
                continue
            block = fn.regions[0].blocks[0]
            args = list(block.arguments)
            ftype = ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)
            ins = list(ftype.inputs)
            changed = False
            first = block.operations[0]
            for k, a in enumerate(args):
                if not is_stream_type(a.type):
                    continue
                elem, size = stream_info(a.type)
                qt = ir.MemRefType.get([size], elem)
                a.set_type(qt)
                ins[k] = qt
                changed = True
                ip0 = ir.InsertionPoint(first)
                cnt = memref_d.alloca(ir.MemRefType.get([1], index), [], [], ip=ip0)
                zero = arith_d.constant(index, 0, ip=ip0)
                one = arith_d.constant(index, 1, ip=ip0)
                memref_d.store(zero, cnt, [zero], ip=ip0)
                for u in list(a.uses):
                    op = u.owner.operation if hasattr(u.owner, "operation") else u.owner
                    if op.name not in (READ, WRITE):
                        continue
                    ip = ir.InsertionPoint(op)
                    c = memref_d.load(cnt, [zero], ip=ip)
                    if op.name == WRITE:
                        memref_d.store(op.operands[1], a, [c], ip=ip)
                    else:
                        v = memref_d.load(a, [c], ip=ip)
                        op.results[0].replace_all_uses_with(v)
                    nxt = arith_d.addi(c, one, ip=ip)
                    memref_d.store(nxt, cnt, [zero], ip=ip)
                    op.erase()
            if changed:
                fn.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(ins, list(ftype.results)))
            for op in [o for o in _walk(fn) if o.name == CREATE]:
                elem, size = stream_info(op.results[0].type)
                q = memref_d.alloc(ir.MemRefType.get([size], elem), [], [], ip=ir.InsertionPoint(op))
                op.results[0].replace_all_uses_with(q)
                op.erase()
                n += 1
    return n
