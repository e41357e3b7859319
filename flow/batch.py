"""Batched decode: B independent decode steps in one compiled call.

Drafting a token tree level by level advances every frontier node at once: B tokens,
each with its own state, give B logits and B next states. `build_decode_batch` strings
B calls of a decode design's top function together in one function `decode_batch`
(as `flow.chain` strings the steps of a greedy chain):

    node b: decode(tokens[b], state[b]) -> logits[b], state_out[b]

The decode function is called, not copied, so its schedule stays as it is, and the
weights are bound once for the B calls. Every node has its own state and output
arguments (a state is a contiguous (L, 1, ...) buffer, which a subview of a stacked
one would not be), so the caller passes the frontier's states where they already lie
and gets the next level's states in buffers it can stack (address arithmetic).
"""

from __future__ import annotations

import dataclasses

from torch_mlir import ir
from torch_mlir.dialects import func

from ..errors import MambaflowError
from .capture import Design, TopPort
from .mlir import funcs

TOP = "decode_batch"


def build_decode_batch(design: Design, batch: int) -> Design:
    """A design whose top `decode_batch` runs `design` (a decode design, scheduled or not)
    on `batch` independent (token, state) pairs. Its ports: per node b the decode inputs
    `node{b}.tokens`, `node{b}.conv_state`, ...; the weights once; per node the decode
    outputs `node{b}.logits`, `node{b}.conv_state_out`, ..."""
    if design.phase != "decode" or design.T != 1:
        raise MambaflowError(f"a batched decode is built from a decode design (T=1), not '{design.phase}' T={design.T}")
    if not isinstance(batch, int) or batch < 1:
        raise MambaflowError(f"a batched decode needs batch >= 1, got {batch!r}")
    ports = design.ports
    per_node = [k for k, p in enumerate(ports) if p.role in ("input", "state")]
    weights = [k for k, p in enumerate(ports) if p.role == "weight"]
    outs = [k for k, p in enumerate(ports) if p.role == "output"]
    if per_node + weights + outs != list(range(len(ports))):
        raise MambaflowError("internal: the decode design's ports are not ordered inputs, weights, outputs")
    with design.module.context, ir.Location.unknown():
        module = ir.Module.parse(str(design.module))
        if TOP in funcs(module):
            raise MambaflowError(f"the decode design already has a function named '{TOP}'")
        types = list(ir.FunctionType(ir.TypeAttr(funcs(module)[design.top].attributes["function_type"]).value).inputs)
        top_types = ([types[k] for k in per_node] * batch + [types[k] for k in weights]
                     + [types[k] for k in outs] * batch)
        with ir.InsertionPoint(module.body):
            top = func.FuncOp(TOP, (top_types, []))
        block = top.add_entry_block()
        args = list(block.arguments)
        n_in, n_w, n_out = len(per_node), len(weights), len(outs)
        w_args = args[n_in * batch: n_in * batch + n_w]
        o_base = n_in * batch + n_w
        with ir.InsertionPoint(block):
            for b in range(batch):
                ins = args[b * n_in: (b + 1) * n_in]
                node_outs = args[o_base + b * n_out: o_base + (b + 1) * n_out]
                func.CallOp([], ir.FlatSymbolRefAttr.get(design.top), ins + w_args + node_outs)
            func.return_([])
    new_ports = [_renamed(ports[k], b) for b in range(batch) for k in per_node]
    new_ports += [ports[k] for k in weights]
    new_ports += [_renamed(ports[k], b) for b in range(batch) for k in outs]
    return dataclasses.replace(design, module=module, phase=TOP, T=batch, ports=new_ports)


def _renamed(port: TopPort, node: int) -> TopPort:
    return dataclasses.replace(port, name=f"node{node}.{port.name}")
