"""The one effects analysis: which buffers an op, a function or a call reads and writes.

Views (`memref.subview`, `memref.cast`) and the results of conditionals alias the
buffers they come from; a call reads / writes what its callee reads / writes of each
argument (a fixpoint over the module, so calls through several levels are seen).
Streams (`mf.stream_read` / `mf.stream_write`) count as reads and writes when
`streams=True` (the dataflow checker), and not otherwise (the HLS emitter, for which
"written" means "not a const array").

Used by the HLS emitter (const-ness of arguments, buffer names), the resource model,
and the dataflow legality checker (`targets.versal.dataflow`).
"""

from __future__ import annotations

from typing import Iterable

from torch_mlir import ir

from .mlir import walk as _walk

ALIAS_OPS = ("memref.subview", "memref.cast")
STREAM_READ, STREAM_WRITE = "mf.stream_read", "mf.stream_write"


def _ops(block: ir.Block) -> list[ir.Operation]:
    return [op.operation for op in block.operations]


def callee(call: ir.Operation) -> str:
    return ir.FlatSymbolRefAttr(call.attributes["callee"]).value


class Effects:
    """`read[f]` / `written[f]`: the argument positions function `f` reads / writes."""

    def __init__(self, funcs: dict[str, ir.Operation], streams: bool = False):
        self.funcs = funcs
        self.streams = streams
        self.read: dict[str, set[int]] = {n: set() for n in funcs}
        self.written: dict[str, set[int]] = {n: set() for n in funcs}
        changed = True
        while changed:
            changed = False
            for name, fn in funcs.items():
                if not fn.regions[0].blocks:  # a declaration: assume it reads every argument
                    r, w = set(range(len(ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value).inputs))), set()
                else:
                    args = list(fn.regions[0].blocks[0].arguments)
                    rv, wv = self.touched([fn], {a: {a} for a in args}, inside=True)
                    r = {i for i, a in enumerate(args) if a in rv}
                    w = {i for i, a in enumerate(args) if a in wv}
                if r != self.read[name] or w != self.written[name]:
                    self.read[name], self.written[name] = r, w
                    changed = True

    def touched(self, ops: Iterable[ir.Operation], roots: dict | None = None, inside: bool = False):
        """(values read, values written) by `ops` and everything nested in them, as the
        buffers the accesses reach through views: values defined outside `ops` (their
        roots when `roots` maps a view to them). `inside`: walk only what is nested in
        `ops` (a function's body), not the ops themselves."""
        roots = dict(roots or {})
        read: set = set()
        written: set = set()

        def root(v: ir.Value) -> set:
            return roots.get(v, {v})

        def visit(op: ir.Operation) -> None:
            n = op.name
            if n in ALIAS_OPS:
                roots[op.results[0]] = set(root(op.operands[0]))
            elif n in ("scf.if", "affine.if"):
                for i, res in enumerate(op.results):
                    acc: set = set()
                    for region in op.regions:
                        for block in region.blocks:
                            term = list(_ops(block))[-1]
                            if i < len(term.operands):
                                acc |= root(term.operands[i])
                    roots[res] = acc
            elif n in ("affine.load", "memref.load"):
                read.update(root(op.operands[0]))
            elif n in ("affine.store", "memref.store"):
                written.update(root(op.operands[1]))
            elif n == "memref.copy":
                read.update(root(op.operands[0]))
                written.update(root(op.operands[1]))
            elif n == "func.call":
                c = callee(op)
                for i, a in enumerate(op.operands):
                    if c in self.funcs:
                        if i in self.read[c]:
                            read.update(root(a))
                        if i in self.written[c]:
                            written.update(root(a))
                    else:
                        read.update(root(a))
                        written.update(root(a))
            elif self.streams and n == STREAM_READ:
                read.update(root(op.operands[0]))
            elif self.streams and n == STREAM_WRITE:
                written.update(root(op.operands[0]))

        for top in ops:
            if not inside:
                visit(top)
            for op in _walk(top):
                visit(op)
        local = {r for op in ops for r in _defined_in(op, inside)}
        return read - local, written - local


def _defined_in(op: ir.Operation, inside: bool) -> set:
    """Values defined by `op` (unless `inside`) and by the ops nested in it."""
    out = set() if inside else set(op.results)
    for o in _walk(op):
        out.update(o.results)
    return out


def bindings(funcs: dict[str, ir.Operation], top: str) -> dict[str, dict[int, set[int]]]:
    """function -> argument -> the positions of the top's arguments it receives (a view
    of), through every call on the way down: which kernel arguments are top-level ports
    (m_axi interfaces off chip)."""
    out: dict[str, dict[int, set[int]]] = {n: {} for n in funcs}
    out[top] = {i: {i} for i in range(len(funcs[top].regions[0].blocks[0].arguments))}
    changed = True
    while changed:
        changed = False
        for name, fn in funcs.items():
            if not out[name] or not fn.regions[0].blocks:
                continue
            args = list(fn.regions[0].blocks[0].arguments)
            roots = {a: out[name].get(i, set()) for i, a in enumerate(args)}
            for op in _walk(fn):
                if op.name in ALIAS_OPS and op.operands[0] in roots:
                    roots[op.results[0]] = roots[op.operands[0]]
                elif op.name == "func.call" and callee(op) in funcs:
                    c = callee(op)
                    for j, v in enumerate(op.operands):
                        got = roots.get(v, set())
                        if got - out[c].get(j, set()):
                            out[c].setdefault(j, set()).update(got)
                            changed = True
    return out
