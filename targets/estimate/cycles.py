"""Cycles of a scheduled design: loops, pipelines, calls and dataflow regions.

The model reads the directives the schedule left in the IR (`pipeline_ii`, `unroll`,
partitions, storage, stream depths, `dataflow`) and prices them as Vitis HLS builds
them (UG1399):

* a sequential block runs its statements one after another; straight-line ops take
  their critical path (registered cores in cycles, combinational logic chained within
  the clock budget, `latency.py`);
* a loop that is not pipelined runs `trip / unroll` iterations of its body plus
  `LOOP_OVERHEAD`; the copies of an unrolled body run in parallel unless the loop
  carries a dependence (then they chain: floats in order, integers as a balanced tree,
  UG1399 "expression_balance");
* a pipelined loop (the `pipeline_ii` directive, or Vitis' automatic pipelining of an
  innermost loop of more than `AUTO_PIPELINE_TRIP` iterations) fully unrolls the loops
  inside it and takes `(trip - 1) * II + depth` cycles. The achieved II is the largest
  of the requested II and three limits, each reported as the reason when it binds:
  - **recurrence**: a loop-carried memory dependence (schedules.deps), II >= the
    latency of the chain from its load to its store;
  - **ports**: on-chip accesses per iteration over the ports of the banks they can
    reach, given the partitioning (two ports per BRAM / URAM bank, UG1399 "Arrays");
    a stream moves one element per cycle;
  - **m_axi**: AXI beats per iteration on one bundle (reads and writes separately: AXI
    has a read and a write channel), where contiguous elements share a beat;
* an m_axi burst pays `MAXI_LATENCY` once per burst region: each top-level loop of a
  function (Vitis infers bursts per region, UG1399 "Optimizing Burst Transfers");
* a call costs its callee plus `CALL_OVERHEAD`;
* a dataflow region (`regions.dataflow_latency`) runs its processes together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch_mlir import ir

from ...dialects import directives as D
from ...flow.effects import STREAM_READ, STREAM_WRITE, callee
from ...flow.mlir import str_attr
from ...dialects.stream import NotStatic, eval_map, loop_range
from ...schedules.deps import Space, _iv_loops, carried_dependences, spread_lin, trip_count
from ..hls.cxx import element_bits, int_width
from ..hls.resources import NARROW_MUL_BITS, significant_bits
from . import latency as LT
from .memories import Mem, MemoryMap

ACCESS_OPS = ("affine.load", "affine.store", "memref.load", "memref.store")
FREE_PREFIXES = ("arith.constant", "arith.index_cast", "affine.apply", "arith.extsi", "arith.extui", "arith.trunci",
                 "arith.bitcast", "memref.subview", "memref.cast", "memref.alloc", "memref.alloca",
                 "memref.get_global", "mf.stream_create", "affine.yield", "scf.yield", "func.return")


@dataclass
class LoopEstimate:
    """One loop of a kernel: its trip count, requested and achieved II (pipelined loops),
    pipeline depth, cycles per invocation and invocations per token."""

    kernel: str
    path: str
    trip: int
    ii_req: int | None
    ii: int | None
    depth: int
    cycles: int
    calls: int = 1
    reason: str | None = None    # why ii > ii_req: 'recurrence' | 'ports' | 'm_axi' | 'stream'
    detail: str = ""
    auto: bool = False           # pipelined by Vitis itself (trip > AUTO_PIPELINE_TRIP)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("kernel", "path", "trip", "ii_req", "ii", "depth", "cycles", "calls",
                                              "reason", "detail", "auto")}


@dataclass
class Profile:
    """When one statement sequence touches a stream argument: first and last access
    (cycles from the function's start) and the number of accesses."""

    first: float
    last: float
    count: int


@dataclass
class FuncTiming:
    name: str
    cycles: int
    loops: list[LoopEstimate] = field(default_factory=list)
    streams: dict[int, Profile] = field(default_factory=dict)   # arg index -> profile
    region: object | None = None                                 # regions.RegionEstimate


@dataclass
class _Body:
    """One iteration of a pipelined body (inner loops unrolled)."""

    depth: float = 0.0
    mem: dict = field(default_factory=dict)     # mem key -> [Mem, accesses per bank per iteration]
    beats: dict = field(default_factory=dict)   # (bundle, 'r'|'w') -> beats per iteration
    # affine accesses counted with the iteration's others: (key, Mem, op, unrolled loops,
    # the per-access count used when their indices are not static)
    maxi: list = field(default_factory=list)    # m_axi: key (bundle, 'r'|'w'), count in beats
    banked: list = field(default_factory=list)  # partitioned buffers: key mem.key, count per bank
    stream: dict = field(default_factory=dict)  # stream key -> accesses per iteration


class Timer:
    """The cycle model over one design (see the module docstring)."""

    def __init__(self, funcs: dict, top: str, mems: MemoryMap, clock_mhz: float, trips: dict | None = None):
        self.funcs = funcs
        self.top = top
        self.mems = mems
        self.clock = clock_mhz
        self.budget = LT.budget_ns(clock_mhz)
        self.trip_override = trips or {}   # loop op -> trip (the layer loop of a 1-layer capture)
        self._memo: dict[str, FuncTiming] = {}
        self._fn: str = top

    # ------------------------------------------------------------ functions

    def func(self, name: str) -> FuncTiming:
        if name in self._memo:
            return self._memo[name]
        from .regions import dataflow_latency

        fn = self.funcs[name]
        saved = self._fn
        self._fn = name
        if D.is_dataflow(fn):
            t = dataflow_latency(self, name)
        else:
            t = FuncTiming(name, 0)
            t.cycles, t.streams = self.seq(fn.regions[0].blocks[0], t.loops, top_level=True)
        self._fn = saved
        self._memo[name] = t
        return t

    def trip(self, loop) -> int:
        if loop in self.trip_override:
            return self.trip_override[loop]
        n = trip_count(loop, bound=True)
        return 1 if n is None else n

    # ------------------------------------------------------------ sequential blocks

    def seq(self, block, loops: list, top_level: bool = False) -> tuple[int, dict[int, Profile]]:
        """Cycles of a block run statement after statement, and when each stream
        argument of the function is first / last touched."""
        t = 0.0
        ready: dict = {}
        straight = 0.0
        streams: dict[int, Profile] = {}
        args = list(self.funcs[self._fn].regions[0].blocks[0].arguments)

        def note(sargs: dict[int, int], start: float, dur: float):
            for k, n in sargs.items():
                p = streams.get(k)
                first, last = start + min(1.0, dur), start + dur
                streams[k] = Profile(first, last, n) if p is None else Profile(p.first, last, p.count + n)

        for op in block.operations:
            op = op.operation
            n = op.name
            if n in ("affine.for", "scf.for"):
                t += math.ceil(straight)
                straight, ready = 0.0, {}
                c = self.loop(op, loops, burst=top_level)
                note(self._stream_args(op, args), t, c)
                t += c
            elif n == "func.call" and callee(op) in self.funcs:
                t += math.ceil(straight)
                straight, ready = 0.0, {}
                ft = self.func(callee(op))
                c = ft.cycles + LT.CALL_OVERHEAD
                for j, v in enumerate(op.operands):
                    if v in args and j in ft.streams:
                        k = args.index(v)
                        p = ft.streams[j]
                        streams[k] = Profile(t + p.first, t + p.last, p.count)
                t += c
            elif n in ("scf.if", "affine.if"):
                t += math.ceil(straight)
                straight, ready = 0.0, {}
                c = max((self.seq(r.blocks[0], loops)[0] for r in op.regions if r.blocks), default=0)
                t += c
            else:
                a = self._arrive(op, ready, self._fn)
                straight = max(straight, a)
                sargs = self._stream_args(op, args)
                if sargs:
                    note(sargs, t + a, 0.0)
        t += math.ceil(straight)
        return int(math.ceil(t)), streams

    def _stream_args(self, op, args) -> dict[int, int]:
        """Stream arguments of the current function `op` reads or writes, with how many
        times per execution of `op`."""
        out: dict[int, int] = {}

        def visit(o, mult):
            if o.name in (STREAM_READ, STREAM_WRITE):
                v = o.operands[0]
                if v in args:
                    k = args.index(v)
                    out[k] = out.get(k, 0) + mult
                return
            if o.name == "affine.for":
                mult = mult * self.trip(o)
            for r in o.regions:
                for b in r.blocks:
                    for c in b.operations:
                        visit(c.operation, mult)

        visit(op, 1)
        return out

    # ------------------------------------------------------------ loops

    def loop(self, loop, loops: list, burst: bool = False) -> int:
        trip = self.trip(loop)
        body = loop.regions[0].blocks[0]
        ii_req = D.get_pipeline(loop)
        auto = False
        if ii_req is None and D.get_unroll(loop) is None and not _has_loops(body) and trip > LT.AUTO_PIPELINE_TRIP:
            ii_req, auto = 1, True
        path = _path(loop)
        if ii_req is not None:
            return self._pipelined(loop, trip, ii_req, loops, path, auto, burst)
        flat = self._flattened(loop)
        if flat is not None:  # a perfect nest over a pipelined loop: one pipeline
            inner, n = flat
            return self._pipelined(inner, n, D.get_pipeline(inner) or 1, loops, path + " (flattened)", False, burst)
        u = D.get_unroll(loop)
        if u is not None:
            u = trip if u == 0 or u >= trip else u
            b = self._iteration(body, u, loop)
            per = max(math.ceil(b.depth), self._port_bound(b), 1)
            iters = math.ceil(trip / u)
            cycles = iters * (per + (0 if iters == 1 else LT.LOOP_OVERHEAD))
            loops.append(LoopEstimate(self._fn, path, trip, None, None, per, cycles))
            return cycles
        inner: list = []
        c, _ = self.seq(body, inner)
        cycles = trip * (c + LT.LOOP_OVERHEAD) + LT.LOOP_OVERHEAD
        loops.append(LoopEstimate(self._fn, path, trip, None, None, c, cycles))
        for x in inner:
            x.calls *= trip
        loops.extend(inner)
        return cycles

    def _flattened(self, loop):
        """(pipelined innermost loop, total trip) when `loop` heads a perfect nest over a
        pipelined loop: Vitis flattens perfect nests of constant bounds into the inner
        pipeline (UG1399 "Loop Flattening", on by default), so the pipeline fills once."""
        n, L = 1, loop
        while True:
            body = [o.operation for o in L.regions[0].blocks[0].operations if o.operation.name != "affine.yield"]
            if D.get_unroll(L) is not None or len(body) != 1 or body[0].name != "affine.for":
                return None
            if trip_count(L) is None:
                return None
            n *= self.trip(L)
            L = body[0]
            if D.get_pipeline(L) is not None:
                return (L, n * self.trip(L)) if trip_count(L) is not None else None

    def _pipelined(self, loop, trip, ii_req, loops, path, auto, burst) -> int:
        b = self._iteration(loop.regions[0].blocks[0], 1, None, loop)
        depth = max(1, math.ceil(b.depth))
        limits = {"requested": ii_req}
        rec, rec_what = self._recurrence(loop)
        limits["recurrence"] = rec
        limits["ports"] = self._port_bound(b)
        limits["stream"] = max(b.stream.values(), default=0)
        limits["m_axi"] = max((math.ceil(v) for v in b.beats.values()), default=0)
        ii = max(limits.values())
        reason = None
        if ii > ii_req:
            reason = max((k for k in limits if k != "requested"), key=lambda k: limits[k])
        detail = {"recurrence": rec_what, "ports": self._port_detail(b), "m_axi": self._beat_detail(b),
                  "stream": "a stream moves one element per cycle"}.get(reason, "")
        if b.beats:
            depth += LT.MAXI_LATENCY if burst else 0
        cycles = (trip - 1) * ii + depth + LT.LOOP_OVERHEAD
        loops.append(LoopEstimate(self._fn, path, trip, ii_req, ii, depth, cycles, 1, reason, detail, auto))
        return cycles

    def _recurrence(self, loop) -> tuple[int, str]:
        """II bound of the loop-carried memory dependences of `loop` (1 if none)."""
        deps = carried_dependences(loop)
        best, what = 1, ""
        seen = set()
        for src, dst in deps:
            m = src.memref if src.memref is not None else dst.memref
            if m is None or m in seen:
                continue
            seen.add(m)
            mem = self.mems.of(self._fn, m)
            if mem is None or mem.kind in ("stream", "maxi"):
                continue
            chain = self._chain(loop.regions[0].blocks[0], mem.key)
            lat = max(1, math.ceil(chain))
            if lat > best:
                best, what = lat, f"{mem.name}: load -> store chain of {lat} cycles carried across iterations"
        return best, what

    # ------------------------------------------------------------ one iteration

    def _iteration(self, block, copies: int, unrolled_loop, pipelined=None) -> _Body:
        """One iteration of a pipelined (or unrolled) body, `copies` copies of it."""
        b = _Body()
        unrolled = [(unrolled_loop, copies)] if unrolled_loop is not None else []
        b.depth = self._depth(block, {}, unrolled, b, copies)
        if unrolled_loop is not None and copies > 1:
            b.depth += (self._chain_factor(block, copies) - 1) * self._carried_chain(unrolled_loop)
        if b.maxi or b.banked:
            envs = self._envs(pipelined if pipelined is not None else unrolled_loop, pipelined is not None)
            for key, n in _together(b.maxi, envs, _beat_keys, mean=True).items():
                b.beats[key] = b.beats.get(key, 0) + n
            mems = {mem.key: mem for _, mem, _, _, _ in b.banked}
            for key, n in _together(b.banked, envs, _bank_keys, mean=False).items():
                b.mem.setdefault(key, [mems[key], 0.0])[1] += n
        return b

    def _envs(self, loop, sampled: bool) -> list[dict]:
        """Iv bindings for evaluating one iteration of `loop`'s body: the loops around it
        at their first iteration, index arguments (the layer) 0, and `loop`'s own iv at
        each of its first `BEAT_SAMPLES` iterations (`sampled`) or left to the unrolled
        copies (an unrolled loop is one of them)."""
        env = {a: 0 for a in self.funcs[self._fn].regions[0].blocks[0].arguments if isinstance(a.type, ir.IndexType)}
        try:
            for L in _iv_loops(loop):
                env[_iv(L)] = loop_range(L, env).start
            if not sampled:
                return [env]
            return [{**env, _iv(loop): v} for v in loop_range(loop, env)[:BEAT_SAMPLES]] or [env]
        except (NotStatic, ValueError):
            return [env]

    def _carried_chain(self, loop) -> float:
        """Cycles of the path through the memory `loop` carries from one iteration to the
        next (the accumulation of a reduction), 0 if it carries none: what the unrolled
        copies of `loop` chain on."""
        worst = 0.0
        for src, dst in carried_dependences(loop):
            m = src.memref if src.memref is not None else dst.memref
            mem = self.mems.of(self._fn, m) if m is not None else None
            if mem is not None and mem.kind not in ("stream", "maxi"):
                worst = max(worst, self._chain(loop.regions[0].blocks[0], mem.key))
        return worst

    def _chain_factor(self, block, copies: int) -> float:
        floats = any(o.name.endswith("f") and o.name.startswith("arith.") for o in _ops_in(block))
        return copies if floats else max(1, math.ceil(math.log2(max(copies, 2))))

    def _depth(self, block, ready: dict, unrolled: list, b: _Body, mult: int) -> float:
        """Critical path of `block` (inner loops unrolled), recording accesses into `b`."""
        end = 0.0
        for op in block.operations:
            op = op.operation
            if op.name in ("affine.for", "scf.for"):
                trip = self.trip(op)
                inner = self._depth(op.regions[0].blocks[0], dict(ready), unrolled + [(op, trip)], b, mult * trip)
                if trip > 1:  # the unrolled copies chain on what the loop carries
                    inner += (self._chain_factor(op.regions[0].blocks[0], trip) - 1) * self._carried_chain(op)
                end = max(end, inner)
                continue
            if op.name in ("scf.if", "affine.if"):
                for r in op.regions:
                    if r.blocks:
                        end = max(end, self._depth(r.blocks[0], ready, unrolled, b, mult))
                continue
            self._record(op, unrolled, b, mult)
            end = max(end, self._arrive(op, ready, self._fn))
        return end

    def _record(self, op, unrolled: list, b: _Body, mult: int) -> None:
        n = op.name
        if n in (STREAM_READ, STREAM_WRITE):
            k = ("stream", op.operands[0])
            b.stream[k] = b.stream.get(k, 0) + mult
            return
        if n not in ACCESS_OPS:
            return
        write = n.endswith("store")
        memv = op.operands[1] if write else op.operands[0]
        mem = self.mems.of(self._fn, memv)
        if mem is None:
            return
        idx = list(op.operands)[2:] if write else list(op.operands)[1:]
        names = {_iv(L): f"o{i}" for i, L in enumerate(_iv_loops(op))}
        names.update({a: f"a{i}" for i, a in enumerate(self.funcs[self._fn].regions[0].blocks[0].arguments)
                      if isinstance(a.type, ir.IndexType)})
        names.update({_iv(L): f"u{i}" for i, (L, _) in enumerate(unrolled)})
        space = Space("est", names, fixed={v for v in names.values() if not v.startswith("u")})
        if n.startswith("affine."):
            lins = space.lin_map(ir.AffineMapAttr(op.attributes["map"]).value, idx)
        else:
            lins = [spread_lin(v, space) for v in idx]
        trips = {f"u{i}": t for i, (_, t) in enumerate(unrolled)}
        mult = min(mult, _distinct(lins, trips, mult))  # copies at one address are one access
        if mem.kind == "maxi":
            key = (mem.bundle or mem.name, "w" if write else "r")
            beats = _beats(mem, lins, trips, mult)
            if n.startswith("affine."):  # counted with the iteration's other accesses (`_together`)
                b.maxi.append((key, mem, op, list(unrolled), beats))
            else:
                b.beats[key] = b.beats.get(key, 0) + beats
            return
        if mem.unlimited:
            return
        per_bank = mult / _banks_hit(mem, lins, trips)
        if mem.parts and n.startswith("affine."):  # banks counted over the whole iteration (`_together`)
            b.banked.append((mem.key, mem, op, list(unrolled), per_bank))
            return
        entry = b.mem.setdefault(mem.key, [mem, 0.0])
        entry[1] += per_bank

    def _port_bound(self, b: _Body) -> int:
        return max((math.ceil(n / m.ports) for m, n in b.mem.values()), default=0)

    def _port_detail(self, b: _Body) -> str:
        if not b.mem:
            return ""
        m, n = max(b.mem.values(), key=lambda e: e[1] / e[0].ports)
        return f"{m.name}: {n:g} accesses per bank per iteration on {m.ports} ports ({m.kind}); partition it"

    def _beat_detail(self, b: _Body) -> str:
        if not b.beats:
            return ""
        (bundle, rw), n = max(b.beats.items(), key=lambda e: e[1])
        return f"{bundle}: {n:g} AXI {'read' if rw == 'r' else 'write'} beats per iteration, one per cycle"

    # ------------------------------------------------------------ op timing

    def _arrive(self, op, ready: dict, fn_name: str) -> float:
        """Arrival time of op's results (cycles, fractional for combinational logic)."""
        start = 0.0
        for v in op.operands:
            start = max(start, ready.get(v, 0.0))
        lat, comb = self._latency(op, fn_name)
        if comb:
            end = start + lat
            if math.floor(start) != math.floor(end - 1e-9) and lat < 1:
                end = math.ceil(start) + lat  # does not fit in what is left of the cycle
        else:
            end = math.ceil(start - 1e-9) + lat
        for r in op.results:
            ready[r] = end
        if op.name.endswith("store"):
            ready[op.operands[1]] = end
        return end

    def _chain(self, block, mem_key) -> float:
        """Length of the longest load -> store path through one iteration of `block`
        (of memory `mem_key`, or of any memory when None)."""
        ready: dict = {}
        worst = 0.0
        for op in _ops_in(block):
            n = op.name
            if n in ("affine.load", "memref.load"):
                m = self.mems.of(self._fn, op.operands[0])
                if mem_key is None or (m is not None and m.key == mem_key):
                    lat, _ = self._latency(op, self._fn)
                    ready[op.results[0]] = lat
                continue
            if not op.results and not n.endswith("store"):
                continue
            start = max((ready[v] for v in op.operands if v in ready), default=None)
            if start is None:
                continue
            lat, comb = self._latency(op, self._fn)
            end = start + lat if comb else math.ceil(start - 1e-9) + lat
            for r in op.results:
                ready[r] = end
            if n.endswith("store"):
                m = self.mems.of(self._fn, op.operands[1])
                if mem_key is None or (m is not None and m.key == mem_key):
                    worst = max(worst, end)
        return worst

    def _latency(self, op, fn_name: str) -> tuple[float, bool]:
        """(latency, combinational?) of one op: cycles, or a fraction of the clock budget."""
        n = op.name
        if n.startswith(FREE_PREFIXES) or not (op.results or n.endswith("store")):
            return 0.0, True
        if n in ("affine.load", "memref.load"):
            m = self.mems.of(fn_name, op.operands[0])
            return (0.0, True) if m is not None and m.unlimited else (float(LT.LOAD_LATENCY), False)
        if n in ("affine.store", "memref.store"):
            m = self.mems.of(fn_name, op.operands[1])
            return (0.0, True) if m is not None and m.unlimited else (1.0, False)
        if n in (STREAM_READ, STREAM_WRITE):
            return 1.0, False
        if n in LT.FP_LATENCY and _is_float(op):
            return float(LT.FP_LATENCY[n]), False
        if isinstance(op.results[0].type, ir.IndexType):
            return 0.0, True
        w = int_width(op.results[0].type)
        if w is None:
            return 0.0, True
        if n == "arith.muli":
            a, bb = (significant_bits(x) for x in op.operands)
            if min(a, bb) <= NARROW_MUL_BITS:
                return LT.int_delay_ns(n, w, (a, bb)) / self.budget, True
            return float(LT.DSP_MUL_LATENCY), False
        if n in ("arith.divsi", "arith.divui", "arith.remsi", "arith.remui", "arith.floordivsi", "arith.ceildivsi"):
            return float(w * LT.DIV_LATENCY_PER_BIT), False
        return LT.int_delay_ns(n, w) / self.budget, True


# ------------------------------------------------------------------ helpers


def _is_float(op) -> bool:
    t = op.operands[0].type if op.operands else op.results[0].type
    return isinstance(t, (ir.F32Type, ir.F64Type, ir.F16Type, ir.BF16Type))


def _iv(loop) -> ir.Value:
    return loop.regions[0].blocks[0].arguments[0]


def _ops_in(block):
    for op in block.operations:
        op = op.operation
        yield op
        for r in op.regions:
            for b in r.blocks:
                yield from _ops_in(b)


def _has_loops(block) -> bool:
    return any(o.name in ("affine.for", "scf.for") for o in _ops_in(block))


def _path(loop) -> str:
    names = []
    p = loop
    while p is not None and p.name != "func.func":
        if p.name == "affine.for":
            names.append(str_attr(p, "loop_name") or "?")
            band = str_attr(p, "op_name")
            if band:
                names.append(f"{band}:")
        p = p.parent
    out = ""
    for n in reversed(names):
        out += n if n.endswith(":") or not out or out.endswith(":") else "." + n
    return out


def _distinct(lins, trips: dict, copies: int) -> int:
    """How many different addresses the unrolled copies of one access touch."""
    if lins is None or any(l is None for l in lins):
        return copies
    n = 1
    for var in {v for l in lins for v, c in l.items() if v is not None and c}:
        n *= trips.get(var, 1)
    return n


def _banks_hit(mem: Mem, lins, trips: dict) -> int:
    """How many banks of `mem` the unrolled copies of one access spread over."""
    if not mem.parts or lins is None:
        return 1
    hit = 1
    for p in mem.parts:
        dims = range(len(mem.shape)) if p.dim == 0 else [p.dim - 1]
        for d in dims:
            if d >= len(mem.shape) or d >= len(lins) or lins[d] is None:
                continue
            distinct = 1
            for var, coeff in lins[d].items():
                if var is not None and coeff:
                    distinct *= trips.get(var, 1)
            distinct = min(distinct, mem.shape[d])
            if p.kind == "complete":
                hit *= distinct
            elif p.kind == "cyclic":
                hit *= min(max(p.factor, 1), distinct)
            else:  # block: consecutive indices share a block
                f = max(p.factor, 1)
                hit *= min(f, max(1, math.ceil(distinct * f / mem.shape[d])))
    return max(1, hit)


#: pipelined iterations over which one iteration's beats and banks are evaluated
BEAT_SAMPLES = 4
#: most unrolled copies of one access enumerated for its addresses
MAX_COPIES = 4096


def _together(accesses: list, envs: list[dict], keys, mean: bool) -> dict:
    """key -> count per iteration of `accesses` (see `_Body`) taken together: each
    access's elements over its unrolled copies (`_elements`) map to the slots they
    occupy (`keys`: AXI beats, or RAM banks), and the count is the number of beats, or
    the busiest bank's accesses, averaged (`mean`) or worst over the sampled iterations
    `envs`. An access whose elements are not static adds its per-access count. This is
    how a dot product written out reads: 8 loads at neighbouring offsets share a beat and
    spread over banks, which each access alone cannot tell."""
    out: dict = {}
    for env in envs:
        slots: dict = {}
        extra: dict = {}
        for key, mem, op, unrolled, alone in accesses:
            at = _elements(op, unrolled, env)
            if at is None:
                extra[key] = extra.get(key, 0) + alone
                continue
            for slot, item in keys(mem, op, at):
                slots.setdefault(key, {}).setdefault(slot, set()).add(item)
        for key in set(slots) | set(extra):
            per = slots.get(key, {})
            n = (len(per) if mean else max((len(v) for v in per.values()), default=0)) + extra.get(key, 0)
            out[key] = out.get(key, 0) + n / len(envs) if mean else max(out.get(key, 0), n)
    return out


def _beat_keys(mem: Mem, op, at: set):
    """(beat, address) of each element: row-major addresses in beats of the port's width."""
    shape = ir.MemRefType(_memref(op).type).shape
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    per_beat = max(1, mem.port_bits // max(mem.bits, 1))
    for e in at:
        a = sum(i * st for i, st in zip(e, strides))
        yield (mem.key, a // per_beat), a


def _bank_keys(mem: Mem, op, at: set):
    """(bank, (element, write)) of each element, the bank by the partitioning (cyclic:
    index mod factor; block: index over the block size; complete: the index)."""
    w = op.name.endswith("store")
    for e in at:
        bank = []
        for p in mem.parts:
            for d in (range(len(mem.shape)) if p.dim == 0 else [p.dim - 1]):
                if d >= len(e) or d >= len(mem.shape):
                    continue
                f = max(p.factor, 1)
                bank.append(e[d] if p.kind == "complete" else e[d] % f if p.kind == "cyclic"
                            else e[d] // max(1, -(-mem.shape[d] // f)))
        yield tuple(bank), (e, w)


def _memref(op) -> ir.Value:
    return op.operands[1] if op.name.endswith("store") else op.operands[0]


def _elements(op, unrolled: list, env: dict) -> set | None:
    """Index tuples of affine access `op` over every combination of its unrolled loops'
    ivs (`env` binds the others), or None when they are not static."""
    if math.prod(t for _, t in unrolled) > MAX_COPIES:
        return None
    idx = list(op.operands)[2:] if op.name.endswith("store") else list(op.operands)[1:]
    m = ir.AffineMapAttr(op.attributes["map"]).value
    out: set = set()

    def visit(k: int, env: dict) -> None:
        if k == len(unrolled):
            out.add(tuple(eval_map(m, idx, env)))
            return
        L = unrolled[k][0]
        for v in loop_range(L, env):
            visit(k + 1, {**env, _iv(L): v})

    try:
        visit(0, env)
    except (NotStatic, ValueError, ZeroDivisionError):
        return None
    return out


def _beats(mem: Mem, lins, trips: dict, copies: int) -> float:
    """AXI beats the `copies` copies of one m_axi access take per iteration: the copies
    along the last dimension at unit stride are contiguous and share beats."""
    run = 1
    if lins is not None and lins and lins[-1] is not None:
        # unrolled loops nest into one run when each steps by the run below it
        steps = {abs(c): trips[v] for v, c in lins[-1].items()
                 if v in trips and c and all(v not in (l or {}) for l in lins[:-1])}
        while run in steps:
            run *= steps.pop(run)
    run = min(run, copies)
    per_beat = max(1, mem.port_bits // mem.bits)
    return (copies / run) * math.ceil(run / per_beat)
