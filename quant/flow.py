"""The integer decode step through the flow: capture, llvm, HLS.

`capture_quantized(qm, scope)` captures the integer kernels of `integer_ref` (the very
functions the reference runs) with the flow's `capture_function` - torch-mlir, linalg,
bufferization, named affine loop nests - once per kernel kind, made layer-generic like
the float kernels (parameters and states stacked by layer, the layer index an
argument), and builds a top that loops over the layers: the same `Design` as
`flow.capture`'s, marked `quant`. Ports keep their integer widths (i8 weights,
activations and states, i16 nonlinearity inputs, i32 residual stream and tables, i64
where the arithmetic needs it); `narrow_ports` then gives 4-bit weight ports (and other
ports whose values provably fit) their exact width in the IR (`TopPort.bits`; `i4`
becomes `ap_int<4>` in the HLS C++), and `narrow_arith` runs MLIR's integer range
analysis to narrow the arithmetic inside the kernels.

scope: "model" (tokens -> logits, all layers) or "layer" (one layer: resid, states ->
resid_out, states).

`run_llvm(design, values)` compiles the top with the llvm target and runs it on numpy
arrays; `run_csim(design, values, reference)` runs one step in C simulation through the
flow's own testbench and csim driver (`targets.hls`), exact against the reference.
"""

from __future__ import annotations

import dataclasses
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch_mlir import ir
from torch_mlir.dialects import affine, func, memref

from mambaflow.errors import MambaflowError
from mambaflow.flow.capture import Design, TopPort

from .integer_ref import QKernel, run_kernel
from .ptq import QState, QuantizedMamba

_EL_BITS = {torch.int8: 8, torch.uint8: 8, torch.int16: 16, torch.int32: 32, torch.int64: 64, torch.bool: 1}
_STATES = ("conv_state", "ssm_state", "conv_state_out", "ssm_state_out")


def run_llvm(design: Design, values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Run an integer design's top on the CPU (llvm JIT): `values` maps every non-output
    port name to a tensor; returns every output port as a numpy array."""
    from mambaflow.targets.llvm.jit import JitFunction

    jit = JitFunction(design.module, design.top)
    args = [np.ascontiguousarray(_np(values[p.name], p)) for p in design.inputs]
    outs = [np.zeros(p.shape, dtype=p.np_dtype) for p in design.outputs]
    jit(*args, *outs)
    return {p.name: o for p, o in zip(design.outputs, outs)}


def run_csim(design: Design, values: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
             workdir: str | Path | None = None):
    """One step of an integer design in C simulation: the HLS C++ (`targets.hls.emit_design`)
    with the flow's testbench and csim driver (`targets.hls.csim.run_csim`), every output
    compared bit for bit with `reference`; returns the `CsimResult` (its `outputs` are
    the ports as the C++ wrote them)."""
    from mambaflow.targets.hls import emit_design
    from mambaflow.targets.hls.csim import run_csim as csim
    from mambaflow.targets.hls.testbench import TestbenchSpec

    by_name = {p.name: p for p in design.ports}
    inputs = {n: _np(values[n], by_name[n]) for n in (p.name for p in design.inputs)}
    golden = {n: _np(t, by_name[n]) for n, t in reference.items()}
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    try:
        return csim(emit_design(design), Path(workdir or tmp.name), inputs, golden, TestbenchSpec(rtol=0.0, atol=0.0))
    finally:
        if tmp is not None:
            tmp.cleanup()


def _np(t, p: TopPort) -> np.ndarray:
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if tuple(a.shape) != p.shape:
        raise MambaflowError(f"port '{p.name}': got shape {tuple(a.shape)}, the design expects {p.shape}")
    return a.astype(p.np_dtype)


def _mlir_type(shape, dtype) -> ir.MemRefType:
    return ir.MemRefType.get(list(shape), ir.IntegerType.get_signless(_EL_BITS[dtype]))


def _is_stacked(qm: QuantizedMamba, name: str, layer: int) -> bool:
    """A layer kernel's argument is stacked by layer: its states and per-layer params."""
    if name.startswith("p:"):
        return f"layers.{layer}.{name[2:]}" in qm.params
    return name in _STATES


def _capture_kernel(k: QKernel, args: list[torch.Tensor], ctx, stack: list[bool] | None, n_layer: int):
    """One integer kernel as a named affine func; a layer kernel (`stack` given: which
    arguments are stacked) made layer-generic like the float ones (`identity`)."""
    from mambaflow.flow.capture import finish_kernel
    from mambaflow.flow.lowering import capture_function
    from mambaflow.flow.mlir import funcs
    from mambaflow.flow.naming import name_loops

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = capture_function(k.fn, args, k.kind, ctx)
    names = [n[2:] if n.startswith("p:") else n for n in k.inputs] + list(k.outputs)
    roles = ["weight" if n.startswith("p:") else "state" if n in _STATES else "activation"
             for n in (*k.inputs, *k.outputs)]
    finish_kernel(mod, k.kind, list(zip(names, roles, stack or [False] * len(names))),
                  n_layer if stack is not None else None)
    fn = funcs(mod)[k.kind]
    with ctx:
        name_loops(fn)
        _prefix_globals(mod, fn, k.kind)
    return mod, fn


def _prefix_globals(mod, fn, kind: str) -> None:
    """Constant globals (thresholds, Hadamard signs) get the kernel's name as a prefix so
    the globals of different kernels cannot collide once cloned into one module."""
    from mambaflow.flow.mlir import walk

    renames = {}
    for op in mod.body.operations:
        op = op.operation
        if op.name == "memref.global":
            old = ir.StringAttr(op.attributes["sym_name"]).value
            new = f"{kind}_{old.lstrip('_')}"
            op.attributes["sym_name"] = ir.StringAttr.get(new)
            renames[old] = new
    for op in walk(fn):
        if op.name == "memref.get_global":
            old = ir.FlatSymbolRefAttr(op.attributes["name"]).value
            if old in renames:
                op.attributes["name"] = ir.FlatSymbolRefAttr.get(renames[old])


def _globals(mod):
    return [op.operation for op in mod.body.operations if op.operation.name == "memref.global"]


def example_env(qm: QuantizedMamba, batch: int = 1, seed: int = 0):
    """(token (batch,), state): a non-trivial state, three decode steps in from zero, and
    the next token; the capture's examples and the tests' inputs."""
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, qm.config.vocab_size, (4, batch), generator=g)
    st = qm.init_state(batch)
    for t in range(3):
        _, st = qm.decode(toks[t], st)
    return toks[3], st


def capture_quantized(qm: QuantizedMamba, scope: str = "model", layer: int = 0, batch: int = 1,
                      narrow: bool = True) -> Design:
    """Capture the integer decode step of `qm` as a `Design` (see the module docstring):
    one function per kernel kind, the top looping over the layers with the integer
    parameters and states stacked by layer, as `flow.capture` does for the float design.

    scope "model": top `decode(tokens, conv_state, ssm_state, params..., logits,
    conv_state_out, ssm_state_out)` over every layer; scope "layer": top
    `decode_layer(resid, ..., resid_out, ...)` of layer `layer` alone (its stacked ports
    hold that one layer). `narrow` narrows weight ports and arithmetic."""
    from mambaflow.flow.mlir import new_context

    if scope not in ("layer", "model"):
        raise MambaflowError(f"capture_quantized: scope must be 'layer' or 'model', got {scope!r}")
    if not isinstance(qm, QuantizedMamba):
        raise MambaflowError("capture_quantized takes a QuantizedMamba (see mambaflow.quant.quantize)")
    cfg = qm.config
    if scope == "layer" and not 0 <= layer < cfg.n_layer:
        raise MambaflowError(f"capture_quantized: layer {layer} out of range: the model has layers 0..{cfg.n_layer - 1}")
    tok, st = example_env(qm, batch)
    layers, (emb, norm_f, head) = qm.kernels()
    held = tuple(range(cfg.n_layer)) if scope == "model" else (layer,)
    first = held[0]
    # one reference step, recording every kernel's arguments (the capture's examples)
    examples: dict[str, list] = {}
    env = {"tokens": tok.to(torch.int64)}
    run_kernel(emb, env, qm.params, "")
    for i in range(cfg.n_layer):
        env["conv_state"], env["ssm_state"] = st.conv[i], st.ssm[i]
        for k in layers[i]:
            if i == first and k.kind not in examples:
                examples[k.kind] = [_arg(n, env, qm.params, f"layers.{i}.") for n in k.inputs]
            run_kernel(k, env, qm.params, f"layers.{i}.")
        env["resid"] = env["resid_out"]
    ctx = new_context()
    order = [(k, [_is_stacked(qm, n, first) for n in (*k.inputs, *k.outputs)]) for k in layers[first]]
    if scope == "model":
        examples["embed"] = [tok.to(torch.int64), qm.params["embed"]]
        examples["norm_f"] = [env["resid"], *[qm.params[n[2:]] for n in norm_f.inputs[1:]]]
        run_kernel(norm_f, env, qm.params, "")
        examples["lm_head"] = [env["xn"], *[qm.params[n[2:]] for n in head.inputs[1:]]]
        order = [(emb, None), *order, (norm_f, None), (head, None)]
    templates, keep = {}, []
    for k, stack in order:
        mod, fn = _capture_kernel(k, examples[k.kind], ctx, stack, len(held))
        keep.append(mod)
        templates[k.kind] = fn
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        for mod in keep:
            for g in _globals(mod):
                g.clone(ir.InsertionPoint(module.body))
        names = [k.kind for k, _ in order]
        for name in names:
            templates[name].clone(ir.InsertionPoint(module.body))
        top = "decode" if scope == "model" else "decode_layer"
        ports = _build_top(module, qm, top, scope, held, layers[first], (emb, norm_f, head), batch, st)
        module.operation.verify()
    design = Design(module=module, cfg=cfg, phase="decode", T=batch, ports=ports, kernels=names,
                    quant=qm.qconfig.name, top_name=top, layers=held)
    if narrow:
        narrow_ports(design, qm)
        narrow_arith(design)
    return design


# Upstream integer range analysis: ops whose operands and results provably fit a
# narrower type are rewritten to it (with exact sign/zero extensions around them).
NARROW_ARITH = ("func.func(int-range-optimizations,"
                "arith-int-range-narrowing{int-bitwidths-supported=8,16,32},canonicalize,cse)")


def narrow_arith(design: Design) -> None:
    """Narrow the integer arithmetic inside the kernels (i64 -> i32/i16/i8 where the value
    ranges allow it: MLIR's `arith-int-range-narrowing`, sound by construction)."""
    from mambaflow.flow.mlir import run_pipeline

    run_pipeline(design.module, NARROW_ARITH, f"integer narrowing of '{design.top}'")


def _arg(n, env, params, prefix):
    if n.startswith("p:"):
        key = n[2:]
        return params[prefix + key] if prefix + key in params else params[key]
    return env[n]


def _build_top(module, qm, top, scope, held, layer, outer, batch, st) -> list[TopPort]:
    """The top: embed, the `layer` loop over the layer kernels (stacked parameters and
    states indexed by the loop), final norm and head; activations in buffers allocated
    once; the residual copied back for the next layer."""
    from mambaflow.flow.capture import copy_nest
    from mambaflow.flow.identity import TOP_ATTR, set_identity
    from mambaflow.flow.mlir import funcs
    from mambaflow.flow.naming import BAND_ATTR, LOOP_ATTR

    emb, norm_f, head = outer
    cfg = qm.config
    L = len(held)
    ports: list[TopPort] = []
    if scope == "model":
        ports.append(TopPort("tokens", (batch,), torch.int64, "input"))
    else:
        ports.append(TopPort("resid", (batch, cfg.d_model), torch.int32, "input"))
    cs, ss = tuple(st.conv.shape[1:]), tuple(st.ssm.shape[1:])
    ports += [TopPort("conv_state", (L, *cs), st.conv.dtype, "state", True),
              TopPort("ssm_state", (L, *ss), st.ssm.dtype, "state", True)]
    kernels = ([emb] if scope == "model" else []) + list(layer) + ([norm_f, head] if scope == "model" else [])
    seen = set()
    for k in kernels:
        for n in k.inputs:
            if not n.startswith("p:") or n[2:] in seen:
                continue
            key = n[2:]
            seen.add(key)
            if k in layer and _is_stacked(qm, n, held[0]):
                t = qm.params[f"layers.{held[0]}.{key}"]
                ports.append(TopPort(key, (L, *t.shape), t.dtype, "weight", True, "layers.{i}." + key))
            else:
                t = qm.params[key]
                ports.append(TopPort(key, tuple(t.shape), t.dtype, "weight", False, key))
    if scope == "model":
        ports.append(TopPort("logits", (batch, cfg.vocab_size), torch.int32, "output"))
    else:
        ports.append(TopPort("resid_out", (batch, cfg.d_model), torch.int32, "output"))
    ports += [TopPort("conv_state_out", (L, *cs), st.conv.dtype, "output", True),
              TopPort("ssm_state_out", (L, *ss), st.ssm.dtype, "output", True)]

    types = [_mlir_type(p.shape, p.dtype) for p in ports]
    fn = func.FuncOp(top, ir.FunctionType.get(types, []), ip=ir.InsertionPoint(module.body))
    fn.attributes[TOP_ATTR] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    set_identity(fn.operation, None, [p.name for p in ports], [p.role for p in ports], [p.stacked for p in ports])
    arg = {p.name: v for p, v in zip(ports, entry.arguments)}
    fs = funcs(module)
    with ir.InsertionPoint(entry):
        # the ports the kernels read or write directly; every other activation gets a
        # buffer once, before the layer loop (types from the callees)
        if scope == "model":
            env: dict[str, ir.Value] = {"tokens": arg["tokens"], "logits": arg["logits"]}
        else:
            env = {"resid": arg["resid"], "resid_out": arg["resid_out"]}
        for k in kernels:
            ftype = ir.FunctionType(ir.TypeAttr(fs[k.kind].attributes["function_type"]).value)
            for j, n in enumerate(k.outputs):
                if n not in _STATES and n not in env:
                    env[n] = memref.alloc(ir.MemRefType(ftype.inputs[len(k.inputs) + j]), [], [])

        def call(k: QKernel, li=None):
            args = [arg[n[2:]] if n.startswith("p:") else arg[n] if n in _STATES else env[n] for n in k.inputs]
            args += [arg[n] if n in _STATES else env[n] for n in k.outputs]
            func.CallOp([], ir.FlatSymbolRefAttr.get(k.kind), args + ([li] if li is not None else []))

        if scope == "model":
            call(emb)
        loop = affine.AffineForOp(0, L, 1)
        loop.operation.attributes[LOOP_ATTR] = ir.StringAttr.get("layer")
        loop.operation.attributes[BAND_ATTR] = ir.StringAttr.get("layer")
        with ir.InsertionPoint(loop.body):
            for k in layer:
                call(k, loop.induction_variable)
            if scope == "model":
                copy_nest(env["resid_out"], env["resid"], None, "resid")  # the next layer's input
            affine.AffineYieldOp([])
        if scope == "model":
            call(norm_f)
            call(head)
        func.ReturnOp([])
    return ports


# ----------------------------------------------------------------- narrowing


def narrow_ports(design: Design, qm: QuantizedMamba) -> None:
    """Give weight ports the narrowest signed width their values need (e.g. 4-bit weights
    stored as int8 become i4 in the IR), where every use is a load whose value is only
    sign-extended: the top's argument type, the callee's argument type and the load
    types change, the extensions now start from the narrow type."""
    from mambaflow.flow.mlir import funcs, walk

    fs = funcs(design.module)
    top = fs[design.top]
    new_ports = []
    changed = {}
    values = dict(zip(design.weight_names, design.weights(qm)))  # a stacked port: every layer's
    for idx, p in enumerate(design.ports):
        if p.role != "weight" or p.dtype not in (torch.int8, torch.int16, torch.int32):
            new_ports.append(p)
            continue
        t = torch.from_numpy(values[p.name]).to(torch.int64)
        m = int(t.abs().max()) if t.numel() else 0
        lo, hi = int(t.min()), int(t.max())
        w = max(2, max(lo.bit_length() if lo < 0 else 0, (-lo - 1).bit_length() if lo < 0 else 0,
                       hi.bit_length()) + 1)
        w = max(w, (m).bit_length() + 1)
        if w >= _EL_BITS[p.dtype]:
            new_ports.append(p)
            continue
        changed[idx] = w
        new_ports.append(dataclasses.replace(p, bits=w))
    if not changed:
        return
    # which callee args each top arg feeds
    with design.module.context, ir.Location.unknown():
        entry = top.regions[0].blocks[0]
        targets: dict[int, list[tuple[ir.Operation, int]]] = {i: [] for i in changed}
        ok = {i: True for i in changed}
        for op in walk(top):
            if op.name != "func.call":
                continue
            callee = fs[ir.FlatSymbolRefAttr(op.attributes["callee"]).value]
            for j, v in enumerate(op.operands):
                for i in changed:
                    if v == entry.arguments[i]:
                        targets[i].append((callee, j))
        for i, uses in targets.items():
            for callee, j in uses:
                arg = callee.regions[0].blocks[0].arguments[j]
                if not _only_sext_loads(arg):
                    ok[i] = False
        for i, w in changed.items():
            if not ok[i]:
                new_ports[i] = design.ports[i]
                continue
            narrow = ir.IntegerType.get_signless(w)
            old_t = ir.MemRefType(entry.arguments[i].type)
            nt = ir.MemRefType.get(old_t.shape, narrow)
            entry.arguments[i].set_type(nt)
            for callee, j in targets[i]:
                arg = callee.regions[0].blocks[0].arguments[j]
                arg.set_type(nt)
                _retype_loads(arg, narrow)
                _set_func_input(callee, j, nt)
        _set_func_types(top, [a.type for a in entry.arguments])
    design.ports = new_ports


def _uses(v):
    u = v.uses
    return [x.owner for x in u]


def _only_sext_loads(arg) -> bool:
    for user in _uses(arg):
        user = user.operation if hasattr(user, "operation") else user
        if user.name not in ("affine.load", "memref.load"):
            return False
        for u2 in _uses(user.results[0]):
            u2 = u2.operation if hasattr(u2, "operation") else u2
            if u2.name != "arith.extsi":
                return False
    return True


def _retype_loads(arg, narrow):
    for user in _uses(arg):
        user = user.operation if hasattr(user, "operation") else user
        user.results[0].set_type(narrow)


def _set_func_input(fn, j, t):
    ft = ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)
    ins = list(ft.inputs)
    ins[j] = t
    fn.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(ins, list(ft.results)))


def _set_func_types(fn, ins):
    ft = ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)
    fn.attributes["function_type"] = ir.TypeAttr.get(ir.FunctionType.get(list(ins), list(ft.results)))


# ----------------------------------------------------------------- values & csim


def layer_values(qm: QuantizedMamba, design: Design, tok, st: QState,
                 resid: torch.Tensor | None = None) -> tuple[dict, dict]:
    """(inputs, reference outputs) of a design for one step, from the integer reference:
    the stacked ports hold the design's layers (`Design.stacked_layers`)."""
    held = list(design.stacked_layers)
    vals: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    vals["conv_state"], vals["ssm_state"] = st.conv[held], st.ssm[held]
    if design.top == "decode":
        vals["tokens"] = tok.to(torch.int64)
        logits, st2 = qm.decode(tok, st)
        ref["logits"] = logits
        ref["conv_state_out"], ref["ssm_state_out"] = st2.conv, st2.ssm
    else:
        (layer,) = held
        env = {"tokens": tok.to(torch.int64)}
        layers, (emb, _, _) = qm.kernels()
        run_kernel(emb, env, qm.params, "")
        for i in range(layer):
            env["conv_state"], env["ssm_state"] = st.conv[i], st.ssm[i]
            for k in layers[i]:
                run_kernel(k, env, qm.params, f"layers.{i}.")
            env["resid"] = env["resid_out"]
        if resid is not None:
            env["resid"] = resid
        vals["resid"] = env["resid"]
        env["conv_state"], env["ssm_state"] = st.conv[layer], st.ssm[layer]
        for k in layers[layer]:
            run_kernel(k, env, qm.params, f"layers.{layer}.")
        ref["resid_out"] = env["resid_out"]
        ref["conv_state_out"], ref["ssm_state_out"] = env["conv_state_out"][None], env["ssm_state_out"][None]
    vals.update((n, torch.from_numpy(w)) for n, w in zip(design.weight_names, design.weights(qm)))
    return vals, ref
