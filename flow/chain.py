"""Greedy draft chains: k decode steps in one call, each fed the argmax of the last.

Speculative decoding's draft proposes a chain by decoding its own greedy tokens one
after another. Driven from Python that is a call per token, and for a small draft the
call costs as much as its compute. `build_draft_chain` strings k calls of a decode
design's top function together (SpecMamba's draft runs on the device the same way):

    step s: decode(token, state[s-1]) -> logits[s], state[s];  token <- argmax(logits[s][:vocab_limit])

The decode function is called, not copied, so its schedule stays as it is. The steps
are unrolled (k is small) and every step has its own output arguments, so a step's
state is read by the next one where it was written: no copies, and the caller gets
every step's state for backtracking.
"""

from __future__ import annotations

import dataclasses

import torch
from torch_mlir import ir
from torch_mlir.dialects import arith, func, memref, scf

from ..errors import MambaflowError
from .capture import Design, TopPort
from .mlir import funcs

TOP = "draft"


def build_draft_chain(design: Design, steps: int, vocab_limit: int | None = None) -> Design:
    """A design whose top function `draft` runs `steps` greedy decode steps of `design`
    (a decode design, scheduled or not) from one token and state. Its outputs are
    `tokens_out` (steps,), the argmax after each step, then each step's decode outputs
    (`step{s}.logits`, `step{s}.conv_state_out`, ...)."""
    if design.phase != "decode" or design.T != 1:
        raise MambaflowError(f"a draft chain is built from a decode design (T=1), not '{design.phase}' T={design.T}")
    if not isinstance(steps, int) or steps < 1:
        raise MambaflowError(f"a draft chain needs steps >= 1, got {steps!r}")
    V = design.cfg.vocab_size
    limit = V if vocab_limit is None else int(vocab_limit)
    if not 1 <= limit <= V:
        raise MambaflowError(f"vocab_limit {vocab_limit} is outside 1..{V} (the model's logits)")
    ports = design.ports
    outs = [p for p in ports if p.role == "output"]
    out_names = [p.name for p in outs]
    # each state input is fed by the decode output of the same name + "_out"
    feed = {}
    for k, p in enumerate(ports):
        if p.role == "state":
            if p.name + "_out" not in out_names:
                raise MambaflowError(f"internal: decode design has no output '{p.name}_out' for state '{p.name}'")
            feed[k] = out_names.index(p.name + "_out")
    logits_at = out_names.index("logits")
    n_in = len(ports) - len(outs)

    with design.module.context, ir.Location.unknown():
        module = ir.Module.parse(str(design.module))
        if TOP in funcs(module):
            raise MambaflowError(f"the decode design already has a function named '{TOP}'")
        types = list(ir.FunctionType(ir.TypeAttr(funcs(module)[design.top].attributes["function_type"]).value).inputs)
        i64, index = ir.IntegerType.get_signless(64), ir.IndexType.get()
        top_types = types[:n_in] + [ir.MemRefType.get([steps], i64)] + types[n_in:] * steps
        with ir.InsertionPoint(module.body):
            top = func.FuncOp(TOP, (top_types, []))
        block = top.add_entry_block()
        args = list(block.arguments)
        tokens_out = args[n_in]
        with ir.InsertionPoint(block):
            c0 = arith.constant(index, 0)
            c1 = arith.constant(index, 1)
            token = memref.alloca(ir.MemRefType(types[0]), [], [])
            ins = args[:n_in]
            for s in range(steps):
                step_outs = args[n_in + 1 + s * len(outs): n_in + 1 + (s + 1) * len(outs)]
                func.CallOp([], ir.FlatSymbolRefAttr.get(design.top), ins + step_outs)
                best = arith.index_cast(i64, _argmax(step_outs[logits_at], limit, c0, c1, index))
                memref.store(best, token, [c0])
                memref.store(best, tokens_out, [arith.constant(index, s)])
                ins = [token] + [step_outs[feed[k]] if k in feed else ins[k] for k in range(1, n_in)]
            func.return_([])
    new_ports = [p for p in ports if p.role != "output"] + [TopPort("tokens_out", (steps,), torch.int64, "output")]
    new_ports += [TopPort(f"step{s}.{p.name}", p.shape, p.dtype, "output") for s in range(steps) for p in outs]
    return dataclasses.replace(design, module=module, phase=TOP, T=steps, ports=new_ports)


def _argmax(logits: ir.Value, limit: int, c0, c1, index) -> ir.Value:
    """The index of the first maximum of logits[0, :limit] (torch.argmax's tie rule)."""
    first = memref.load(logits, [c0, c0])
    loop = scf.ForOp(c1, arith.constant(index, limit), c1, [first, c0])
    with ir.InsertionPoint(loop.body):
        v = loop.induction_variable
        best, at = loop.inner_iter_args
        x = memref.load(logits, [c0, v])
        gt = arith.cmpf(arith.CmpFPredicate.OGT, x, best)
        scf.yield_([arith.select(gt, x, best), arith.select(gt, v, at)])
    return loop.results[1]
