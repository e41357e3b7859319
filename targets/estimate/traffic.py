"""Off-chip bytes per token: every access to an m_axi port, times how often it runs.

An access inside loops runs (product of the trip counts) times per invocation of its
function, and a function runs as often as its callers call it (the layer loop of the
top calls the layer kernels once per layer). Packed ports (sub-byte integers) move
their exact bits; other ports their element width.
"""

from __future__ import annotations

from collections import defaultdict

from torch_mlir import ir

from ...dialects import directives as D
from ...flow.effects import callee
from .cycles import ACCESS_OPS


def invocations(timer) -> dict[str, int]:
    """function -> times it runs per execution of the top."""
    counts: dict[str, int] = defaultdict(int)
    counts[timer.top] = 1
    order = [timer.top]
    seen = {timer.top}
    i = 0
    while i < len(order):
        name = order[i]
        i += 1
        for op, mult in _ops_with_trips(timer, timer.funcs[name].regions[0].blocks[0], 1):
            if op.name == "func.call" and callee(op) in timer.funcs:
                c = callee(op)
                counts[c] += counts[name] * mult
                if c not in seen:
                    seen.add(c)
                    order.append(c)
    return dict(counts)


def bytes_per_bundle(timer) -> dict[str, dict[str, float]]:
    """bundle -> {'read': bytes, 'write': bytes} per execution of the top (one token).

    The copies of an unrolled loop (inside a pipelined loop, or unrolled) that read one
    address are one access; every iteration of a sequential or pipelined loop is its own."""
    calls = invocations(timer)
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"read": 0.0, "write": 0.0})
    for name, n in calls.items():
        saved, timer._fn = timer._fn, name
        for op, loops in _accesses_in(timer.funcs[name].regions[0].blocks[0], [], False):
            write = op.name.endswith("store")
            mem = timer.mems.of(name, op.operands[1] if write else op.operands[0])
            if mem is None or mem.kind != "maxi":
                continue
            used = _index_ivs(op)
            mult = 1
            for L, unrolled in loops:
                if not unrolled or L.regions[0].blocks[0].arguments[0] in used:
                    mult *= timer.trip(L)
            out[mem.bundle or mem.name]["write" if write else "read"] += n * mult * mem.bits / 8
        timer._fn = saved
    return {k: dict(v) for k, v in out.items()}


def _accesses_in(block, loops, in_pipe):
    """(access op, [(enclosing loop, unrolled?)]) under `block`."""
    for op in block.operations:
        op = op.operation
        if op.name in ACCESS_OPS:
            yield op, loops
        if op.name == "affine.for":
            unrolled = in_pipe or D.get_unroll(op) is not None
            inner = loops + [(op, unrolled)]
            pipe = in_pipe or D.get_pipeline(op) is not None
            yield from _accesses_in(op.regions[0].blocks[0], inner, pipe)
            continue
        for r in op.regions:
            for b in r.blocks:
                yield from _accesses_in(b, loops, in_pipe)


def _index_ivs(op) -> set:
    """The values the indices of an access are computed from (through affine.apply)."""
    write = op.name.endswith("store")
    todo = list(op.operands)[2:] if write else list(op.operands)[1:]
    seen = set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        o = v.owner
        if not isinstance(o, ir.Block):
            o = o.operation if hasattr(o, "operation") else o
            todo += list(o.operands)
    return seen


def _ops_with_trips(timer, block, mult):
    for op in block.operations:
        op = op.operation
        yield op, mult
        m = mult * timer.trip(op) if op.name == "affine.for" else mult
        for r in op.regions:
            for b in r.blocks:
                yield from _ops_with_trips(timer, b, m)
