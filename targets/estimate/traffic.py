"""Off-chip bytes per token: every access to an m_axi port, times how often it runs.

An access inside loops runs (product of the trip counts) times per invocation of its
function, and a function runs as often as its callers call it (the layer loop of the
top calls the layer kernels once per layer). Packed ports (sub-byte integers) move
their exact bits; other ports their element width.
"""

from __future__ import annotations

from collections import defaultdict

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
    """bundle -> {'read': bytes, 'write': bytes} per execution of the top (one token)."""
    calls = invocations(timer)
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"read": 0.0, "write": 0.0})
    for name, n in calls.items():
        saved, timer._fn = timer._fn, name
        for op, mult in _ops_with_trips(timer, timer.funcs[name].regions[0].blocks[0], 1):
            if op.name not in ACCESS_OPS:
                continue
            write = op.name.endswith("store")
            mem = timer.mems.of(name, op.operands[1] if write else op.operands[0])
            if mem is None or mem.kind != "maxi":
                continue
            out[mem.bundle or mem.name]["write" if write else "read"] += n * mult * mem.bits / 8
        timer._fn = saved
    return {k: dict(v) for k, v in out.items()}


def _ops_with_trips(timer, block, mult):
    for op in block.operations:
        op = op.operation
        yield op, mult
        m = mult * timer.trip(op) if op.name == "affine.for" else mult
        for r in op.regions:
            for b in r.blocks:
                yield from _ops_with_trips(timer, b, m)
