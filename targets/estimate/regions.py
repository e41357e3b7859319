"""Latency of a dataflow region: its processes run at once, linked by FIFOs.

Every process of a region starts with the region (UG1399 "Dataflow": the processes
are started together and block on empty / full channels). For each FIFO from a
producer P to a consumer C of N elements and depth D:

* C's first read waits for P's first write: C is delayed until
  start(P) + first_write(P) - first_read(C) if that is later than its start;
* C cannot finish before P's last write plus what C does after its last read;
* P stalls when it runs more than D elements ahead: its last write is no earlier than
  C's read of element N - D, at C's read rate; a stall delays the rest of P.

A buffer (not a stream) between two processes is a ping-pong channel: C starts when P
is done. The region ends when its last process does; the slowest process sets the
rate, and the rest is fill / drain and stalls (Stream-HLS's analytical model in this
form; FINN sizes FIFOs by simulation instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...dialects import directives as D
from ...dialects.stream import is_stream_type, stream_info
from ...flow.effects import Effects, callee
from ...schedules.regions import process_name, processes
from .cycles import FuncTiming, Profile


@dataclass
class Stall:
    stream: str
    producer: str
    consumer: str
    depth: int
    elements: int
    cycles: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RegionEstimate:
    name: str
    latency: int
    processes: dict[str, int] = field(default_factory=dict)   # process -> its own cycles
    finish: dict[str, int] = field(default_factory=dict)      # process -> when it ends in the region
    slowest: str = ""
    stalls: list[Stall] = field(default_factory=list)

    @property
    def fill(self) -> int:
        """Cycles beyond the slowest process: fill, drain and stalls."""
        return self.latency - max(self.processes.values(), default=0)

    def to_dict(self) -> dict:
        return {"name": self.name, "latency": self.latency, "processes": self.processes, "finish": self.finish,
                "slowest": self.slowest, "fill": self.fill, "stalls": [s.to_dict() for s in self.stalls]}


def dataflow_latency(timer, name: str) -> FuncTiming:
    fn = timer.funcs[name]
    block = fn.regions[0].blocks[0]
    procs = [p for p in processes(block) if p.name == "func.call" and callee(p) in timer.funcs]
    timing = {p: timer.func(callee(p)) for p in procs}
    names = {p: process_name(p) for p in procs}
    depths = {}
    for op in block.operations:
        op = op.operation
        if op.name == "mf.stream_create":
            depths[op.results[0]] = D.stream_depth(op) or 2
    # channels: value -> (producer, its arg), (consumer, its arg)
    eff = Effects(timer.funcs, streams=True)
    chans = []
    for v in list(depths) + [op.operation.results[0] for op in block.operations
                             if op.operation.name in ("memref.alloc", "memref.alloca")]:
        prod = cons = None
        for p in procs:
            c = callee(p)
            for j, x in enumerate(p.operands):
                if x != v:
                    continue
                if is_stream_type(v.type):
                    if j in eff.written.get(c, set()):
                        prod = (p, j)
                    else:
                        cons = (p, j)
                elif j in eff.written.get(c, set()):
                    prod = (p, j)
                elif j in eff.read.get(c, set()):
                    cons = (p, j)
        if prod and cons:
            chans.append((v, prod, cons))

    own = {p: timing[p].cycles + 2 for p in procs}
    start = {p: 0.0 for p in procs}
    delay = {p: 0.0 for p in procs}   # stall time inside p
    finish = dict(own)
    stalls: dict = {}
    for _ in range(2 * len(procs) + 2):
        changed = False
        for p in procs:
            s = 0.0
            for v, (P, j), (C, k) in chans:
                if C is not p:
                    continue
                if is_stream_type(v.type):
                    pw, cr = _prof(timing[P], j, own[P]), _prof(timing[C], k, own[C])
                    s = max(s, start[P] + pw.first - cr.first)
                else:
                    s = max(s, finish[P])
            f = s + own[p] + delay[p]
            for v, (P, j), (C, k) in chans:
                if C is not p or not is_stream_type(v.type):
                    continue
                pw, cr = _prof(timing[P], j, own[P]), _prof(timing[C], k, own[C])
                f = max(f, start[P] + pw.last + delay[P] + (own[C] - cr.last))
            if s != start[p] or f != finish[p]:
                start[p], finish[p] = s, f
                changed = True
        for v, (P, j), (C, k) in chans:
            if not is_stream_type(v.type):
                continue
            n = stream_info(v.type)[1]
            d = depths.get(v, 2)
            if n <= d:
                continue
            pw, cr = _prof(timing[P], j, own[P]), _prof(timing[C], k, own[C])
            rate = (cr.last - cr.first) / max(1, cr.count - 1)
            need = start[C] + cr.first + (n - d) * rate
            have = start[P] + pw.first + (pw.last - pw.first) * (n - d) / max(1, n - 1)
            st = max(0.0, need - have)
            if st > stalls.get(v, 0.0) + 0.5:
                stalls[v] = st
                delay[P] = max(delay[P], st)
                changed = True
        if not changed:
            break
    latency = int(math.ceil(max(finish.values(), default=0)))
    reg = RegionEstimate(name, latency, {names[p]: timing[p].cycles for p in procs},
                         {names[p]: int(math.ceil(finish[p])) for p in procs})
    if procs:
        reg.slowest = names[max(procs, key=lambda p: timing[p].cycles)]
    for v, (P, _), (C, _) in chans:
        if v in stalls and stalls[v] >= 1:
            reg.stalls.append(Stall(_stream_name(v), names[P], names[C], depths.get(v, 2), stream_info(v.type)[1],
                                    int(math.ceil(stalls[v]))))
    t = FuncTiming(name, latency)
    for p in procs:
        t.loops.extend(timing[p].loops)
    t.region = reg
    return t


def _prof(t: FuncTiming, j: int, cycles: int) -> Profile:
    return t.streams.get(j) or Profile(0.0, float(cycles), 1)


def _stream_name(v) -> str:
    from ...dialects.stream import stream_name

    o = v.owner
    op = o.operation if hasattr(o, "operation") else o
    return stream_name(op)
