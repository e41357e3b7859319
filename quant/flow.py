"""The integer decode step through the flow: capture, llvm, HLS.

`capture_quantized(qm, scope)` captures the integer kernels of `integer_ref` (the very
functions the reference runs) with the flow's `capture_function` - torch-mlir, linalg,
bufferization, named affine loop nests - once per kernel kind, clones them per layer and
builds a top function that calls them in order, like `flow.capture` does for the float
design. Ports keep their integer widths (i8 weights, activations and states, i16
nonlinearity inputs, i32 residual stream and tables, i64 where the arithmetic needs it);
`narrow_ports` then gives 4-bit weight ports (and other ports whose values provably fit)
their exact width in the IR (`i4` becomes `ap_int<4>` in the HLS C++), and
`narrow_arith` runs MLIR's integer range analysis to narrow the arithmetic inside the
kernels (a third of the i64 ops become i8/i16/i32 on the tiny designs).

scope: "layer" (one layer: resid, states -> resid_out, states; the layer's parameters
are ports) or "model" (tokens -> logits, all layers).

`QDesign.run_llvm(...)` compiles the top with the llvm target and runs it on numpy
arrays; `QDesign.emit_hls()` emits Vitis HLS C++ (the HLS emitter of
`mambaflow.targets.hls`), `QDesign.run_csim(...)` compiles that C++ with g++ and the
project's header shims and runs it on the same arrays.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch_mlir import ir
from torch_mlir.dialects import func, memref

from mambaflow.errors import MambaflowError

from .integer_ref import QKernel, layer_kernels, model_kernels, run_kernel
from .ptq import QState, QuantizedMamba

_EL_BITS = {torch.int8: 8, torch.uint8: 8, torch.int16: 16, torch.int32: 32, torch.int64: 64, torch.bool: 1}
_NP = {torch.int8: np.int8, torch.uint8: np.uint8, torch.int16: np.int16, torch.int32: np.int32,
       torch.int64: np.int64}


@dataclass(frozen=True)
class QPort:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    role: str          # input | state | weight | output
    bits: int          # width in the IR (after narrowing)

    @property
    def np_dtype(self):
        """The numpy storage of one element as the compiled code lays it out (LLVM stores
        an iN in the next power-of-two number of bytes)."""
        if self.dtype == torch.uint8:
            return np.uint8
        return {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[_store_bytes(self.bits)]


def _store_bytes(bits: int) -> int:
    b = 1
    while b * 8 < bits:
        b *= 2
    return b


@dataclass
class QDesign:
    module: ir.Module
    top: str
    ports: list[QPort]
    kernels: list[str] = field(default_factory=list)
    _jit: object = None

    def __str__(self):
        return str(self.module)

    @property
    def inputs(self) -> list[QPort]:
        return [p for p in self.ports if p.role != "output"]

    @property
    def outputs(self) -> list[QPort]:
        return [p for p in self.ports if p.role == "output"]

    def run_llvm(self, values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Run the top on the CPU: `values` maps every non-output port name to a tensor."""
        from mambaflow.targets.llvm.jit import JitFunction

        if self._jit is None:
            self._jit = JitFunction(self.module, self.top)
        args = [np.ascontiguousarray(_np(values[p.name], p)) for p in self.inputs]
        outs = [np.zeros(p.shape, dtype=p.np_dtype) for p in self.outputs]
        self._jit(*args, *outs)
        return {p.name: o for p, o in zip(self.outputs, outs)}

    def emit_hls(self):
        from mambaflow.targets.hls.emitter import emit_module

        return emit_module(self.module, self.top, port_info=[(p.name, p.role) for p in self.ports],
                           title=f"integer {self.top}")

    def run_csim(self, values: dict[str, torch.Tensor], workdir: str | Path | None = None) -> dict[str, np.ndarray]:
        """Emit HLS C++, compile it with g++ and the project's ap_int/ap_fixed shims plus a
        generated testbench that reads every input port from a binary file and writes every
        output port, run it, and return the outputs."""
        code = self.emit_hls()
        return csim(code, self, values, workdir)


def _np(t, p: QPort) -> np.ndarray:
    a = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if tuple(a.shape) != p.shape:
        raise MambaflowError(f"port '{p.name}': got shape {tuple(a.shape)}, the design expects {p.shape}")
    return a.astype(p.np_dtype)


def _mlir_type(shape, dtype, bits=None) -> ir.MemRefType:
    w = bits or _EL_BITS[dtype]
    return ir.MemRefType.get(list(shape), ir.IntegerType.get_signless(w))


def _capture_kernel(k: QKernel, args: list[torch.Tensor], ctx) -> ir.Operation:
    from mambaflow.flow.capture import _finish
    from mambaflow.flow.lowering import capture_function
    from mambaflow.flow.mlir import funcs
    from mambaflow.flow.naming import name_loops

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = capture_function(k.fn, args, k.kind, ctx)
    _finish(mod, k.kind)
    fn = funcs(mod)[k.kind]
    with ctx:
        name_loops(fn)
        _prefix_globals(mod, fn, k.kind)
        # readable argument names for the HLS C++ (the emitter reads `mf.name`)
        names = [n[2:] if n.startswith("p:") else n for n in k.inputs] + list(k.outputs)
        n_args = len(ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value).inputs)
        if len(names) == n_args:
            fn.attributes["arg_attrs"] = ir.ArrayAttr.get(
                [ir.DictAttr.get({"mf.name": ir.StringAttr.get(n)}) for n in names])
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


def capture_quantized(qm: QuantizedMamba, scope: str = "layer", layer: int = 0, batch: int = 1,
                      narrow: bool = True) -> QDesign:
    """Capture the integer decode step of `qm` as a `QDesign` (see the module docstring).

    scope "layer": top `decode_layer(resid, layer<i>.conv_state, layer<i>.ssm_state,
    params..., resid_out, layer<i>.conv_state_out, layer<i>.ssm_state_out)`; scope "model":
    top `decode(tokens, states..., params..., logits, states_out...)`. Kernels are named
    `layer<i>_<kind>` (norm, in_proj, conv, x_proj | gated_norm, ssm, out_proj; embed,
    norm_f, lm_head) with named loops, so `mambaflow.schedules.customize(design.module)`
    addresses them like the float design. `narrow` narrows weight ports and arithmetic."""
    from mambaflow.flow.mlir import new_context

    if scope not in ("layer", "model"):
        raise MambaflowError(f"capture_quantized: scope must be 'layer' or 'model', got {scope!r}")
    if not isinstance(qm, QuantizedMamba):
        raise MambaflowError("capture_quantized takes a QuantizedMamba (see mambaflow.quant.quantize)")
    tok, st = example_env(qm, batch)
    layers, (emb, norm_f, head) = qm.kernels()
    # one reference step, recording every kernel's arguments (the capture's examples)
    examples: dict[str, list] = {}
    env = {"tokens": tok.to(torch.int64)}
    run_kernel(emb, env, qm.params, "")
    n_layers = range(qm.config.n_layer) if scope == "model" else [layer]
    for i in range(qm.config.n_layer):
        env["conv_state"], env["ssm_state"] = st.conv[i], st.ssm[i]
        for k in layers[i]:
            if i == n_layers[0] and k.kind not in examples:
                examples[k.kind] = [_arg(n, env, qm.params, f"layers.{i}.") for n in k.inputs]
            run_kernel(k, env, qm.params, f"layers.{i}.")
        env["resid"] = env["resid_out"]
    ctx = new_context()
    order = list(layers[0])
    if scope == "model":
        examples["embed"] = [tok.to(torch.int64), qm.params["embed"]]
        examples["norm_f"] = [env["resid"], *[qm.params[n[2:]] for n in norm_f.inputs[1:]]]
        run_kernel(norm_f, env, qm.params, "")
        examples["lm_head"] = [env["xn"], *[qm.params[n[2:]] for n in head.inputs[1:]]]
        order = [emb, *order, norm_f, head]
    templates, keep = {}, []
    for k in order:
        mod, fn = _capture_kernel(k, examples[k.kind], ctx)
        keep.append(mod)
        templates[k.kind] = fn
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        names: list[str] = []
        for mod in keep:
            for g in _globals(mod):
                g.clone(ir.InsertionPoint(module.body))

        def place(kind, name):
            fn = templates[kind].clone(ir.InsertionPoint(module.body))
            fn.attributes["sym_name"] = ir.StringAttr.get(name)
            names.append(name)

        if scope == "model":
            place("embed", "embed")
        for i in n_layers:
            for k in layers[i]:
                place(k.kind, f"layer{i}_{k.kind}")
        if scope == "model":
            place("norm_f", "norm_f")
            place("lm_head", "lm_head")
        top = "decode" if scope == "model" else "decode_layer"
        ports = _build_top(module, qm, top, scope, list(n_layers), layers, (emb, norm_f, head), batch, st)
        module.operation.verify()
    design = QDesign(module, top, ports, names)
    if narrow:
        narrow_ports(design, qm)
        narrow_arith(design)
    return design


# Upstream integer range analysis: ops whose operands and results provably fit a
# narrower type are rewritten to it (with exact sign/zero extensions around them).
NARROW_ARITH = ("func.func(int-range-optimizations,"
                "arith-int-range-narrowing{int-bitwidths-supported=8,16,32},canonicalize,cse)")


def narrow_arith(design: QDesign) -> None:
    """Narrow the integer arithmetic inside the kernels (i64 -> i32/i16/i8 where the value
    ranges allow it: MLIR's `arith-int-range-narrowing`, sound by construction)."""
    from mambaflow.flow.mlir import run_pipeline

    run_pipeline(design.module, NARROW_ARITH, f"integer narrowing of '{design.top}'")


def _arg(n, env, params, prefix):
    if n.startswith("p:"):
        key = n[2:]
        return params[prefix + key] if prefix + key in params else params[key]
    return env[n]


def _param_key(qm, n: str, i: int | None) -> str:
    key = n[2:]
    if i is not None and f"layers.{i}.{key}" in qm.params:
        return f"layers.{i}.{key}"
    return key


def _build_top(module, qm, top, scope, n_layers, layers, outer, batch, st) -> list[QPort]:
    emb, norm_f, head = outer
    cfg = qm.config
    ports: list[QPort] = []
    if scope == "model":
        ports.append(QPort("tokens", (batch,), torch.int64, "input", 64))
    else:
        ports.append(QPort("resid", (batch, cfg.d_model), torch.int32, "input", 32))
    cs, ss = tuple(st.conv.shape[1:]), tuple(st.ssm.shape[1:])
    cd, sd = st.conv.dtype, st.ssm.dtype
    for i in n_layers:
        ports.append(QPort(f"layer{i}.conv_state", cs, cd, "state", _EL_BITS[cd]))
        ports.append(QPort(f"layer{i}.ssm_state", ss, sd, "state", _EL_BITS[sd]))
    plan = ([(emb, None)] if scope == "model" else []) + [(k, i) for i in n_layers for k in layers[i]]
    if scope == "model":
        plan += [(norm_f, None), (head, None)]
    seen = set()
    for k, i in plan:
        for n in k.inputs:
            if n.startswith("p:"):
                key = _param_key(qm, n, i)
                if key not in seen:
                    seen.add(key)
                    t = qm.params[key]
                    ports.append(QPort(key, tuple(t.shape), t.dtype, "weight", _EL_BITS[t.dtype]))
    if scope == "model":
        ports.append(QPort("logits", (batch, cfg.vocab_size), torch.int32, "output", 32))
    else:
        ports.append(QPort("resid_out", (batch, cfg.d_model), torch.int32, "output", 32))
    for i in n_layers:
        ports.append(QPort(f"layer{i}.conv_state_out", cs, cd, "output", _EL_BITS[cd]))
        ports.append(QPort(f"layer{i}.ssm_state_out", ss, sd, "output", _EL_BITS[sd]))

    types = [_mlir_type(p.shape, p.dtype) for p in ports]
    fn = func.FuncOp(top, ir.FunctionType.get(types, []), ip=ir.InsertionPoint(module.body))
    fn.attributes["mf.top"] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    by_name = {p.name: v for p, v in zip(ports, entry.arguments)}
    callee_types = {}
    with ir.InsertionPoint(entry):
        env: dict[str, ir.Value] = {}
        if scope == "model":
            env["tokens"] = by_name["tokens"]
        else:
            env["resid"] = by_name["resid"]

        def call(k: QKernel, name: str, i, outs: dict):
            from mambaflow.flow.mlir import funcs
            callee = funcs(module)[name]
            ftype = ir.FunctionType(ir.TypeAttr(callee.attributes["function_type"]).value)
            args = []
            for n in k.inputs:
                if n.startswith("p:"):
                    args.append(by_name[_param_key(qm, n, i)])
                elif n in ("conv_state", "ssm_state"):
                    args.append(by_name[f"layer{i}.{n}"])
                else:
                    args.append(env[n])
            res = []
            for j, n in enumerate(k.outputs):
                if n in outs:
                    v = outs[n]
                else:
                    v = memref.alloc(ir.MemRefType(ftype.inputs[len(k.inputs) + j]), [], [])
                res.append(v)
                env[n] = v
            func.CallOp([], ir.FlatSymbolRefAttr.get(name), args + res)

        if scope == "model":
            call(emb, "embed", None, {})
        for i in n_layers:
            outs = {"conv_state_out": by_name[f"layer{i}.conv_state_out"],
                    "ssm_state_out": by_name[f"layer{i}.ssm_state_out"]}
            if scope == "layer":
                outs["resid_out"] = by_name["resid_out"]
            for k in layers[i]:
                call(k, f"layer{i}_{k.kind}", i, outs)
            env["resid"] = env["resid_out"]
        if scope == "model":
            call(norm_f, "norm_f", None, {})
            call(head, "lm_head", None, {"logits": by_name["logits"]})
        func.ReturnOp([])
    return ports


# ----------------------------------------------------------------- narrowing


def narrow_ports(design: QDesign, qm: QuantizedMamba) -> None:
    """Give weight ports the narrowest signed width their values need (e.g. 4-bit weights
    stored as int8 become i4 in the IR), where every use is a load whose value is only
    sign-extended: the top's argument type, the callee's argument type and the load
    types change, the extensions now start from the narrow type."""
    from mambaflow.flow.mlir import funcs, walk

    fs = funcs(design.module)
    top = fs[design.top]
    new_ports = []
    changed = {}
    for idx, p in enumerate(design.ports):
        if p.role != "weight" or p.dtype not in (torch.int8, torch.int16, torch.int32):
            new_ports.append(p)
            continue
        t = qm.params[p.name]
        m = int(t.abs().max()) if t.numel() else 0
        lo, hi = int(t.min()), int(t.max())
        w = max(2, max(lo.bit_length() if lo < 0 else 0, (-lo - 1).bit_length() if lo < 0 else 0,
                       hi.bit_length()) + 1)
        w = max(w, (m).bit_length() + 1)
        if w >= _EL_BITS[p.dtype]:
            new_ports.append(p)
            continue
        changed[idx] = w
        new_ports.append(QPort(p.name, p.shape, p.dtype, p.role, w))
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


def layer_values(qm: QuantizedMamba, design: QDesign, tok, st: QState, layer: int = 0,
                 resid: torch.Tensor | None = None) -> tuple[dict, dict]:
    """(inputs, reference outputs) of a design for one step: runs the integer reference."""
    vals: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    if design.top == "decode":
        vals["tokens"] = tok.to(torch.int64)
        logits, st2 = qm.decode(tok, st)
        ref["logits"] = logits
        for i in range(qm.config.n_layer):
            vals[f"layer{i}.conv_state"], vals[f"layer{i}.ssm_state"] = st.conv[i], st.ssm[i]
            ref[f"layer{i}.conv_state_out"], ref[f"layer{i}.ssm_state_out"] = st2.conv[i], st2.ssm[i]
    else:
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
        vals[f"layer{layer}.conv_state"], vals[f"layer{layer}.ssm_state"] = st.conv[layer], st.ssm[layer]
        for k in layers[layer]:
            run_kernel(k, env, qm.params, f"layers.{layer}.")
        ref["resid_out"] = env["resid_out"]
        ref[f"layer{layer}.conv_state_out"] = env["conv_state_out"]
        ref[f"layer{layer}.ssm_state_out"] = env["ssm_state_out"]
    for p in design.ports:
        if p.role == "weight":
            vals[p.name] = qm.params[p.name]
    return vals, ref


_TB = """// mambaflow: generated csim testbench - reads inputs, calls the top, writes outputs
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include "{header}"
{decls}
template <typename T, typename S> static void rd(const char* f, T* dst, long n) {{
  FILE* fp = std::fopen(f, "rb"); if (!fp) {{ std::perror(f); std::exit(2); }}
  for (long i = 0; i < n; ++i) {{ S v; if (std::fread(&v, sizeof(S), 1, fp) != 1) {{ std::perror(f); std::exit(2); }} dst[i] = v; }}
  std::fclose(fp);
}}
template <typename T, typename S> static void wr(const char* f, const T* src, long n) {{
  FILE* fp = std::fopen(f, "wb"); if (!fp) {{ std::perror(f); std::exit(2); }}
  for (long i = 0; i < n; ++i) {{ S v = (S)(long long)src[i]; std::fwrite(&v, sizeof(S), 1, fp); }}
  std::fclose(fp);
}}
int main() {{
{reads}
  {top}({args});
{writes}
  return 0;
}}
"""


def csim(code, design: QDesign, values: dict, workdir=None) -> dict[str, np.ndarray]:
    """Write the emitted C++ and a testbench, build them with the HLS target's csim
    compiler step (g++ -Wall -Werror with the project's ap_int / ap_fixed shims, or the
    Vitis headers when installed), run, and return the output ports.

    The HLS target's own testbench (`targets.hls.testbench`) reads raw arrays straight
    into the port type, which does not work for `ap_int<W>` ports (e.g. 4-bit weights):
    this one reads each port in its storage type and converts element by element."""
    from mambaflow.targets.hls.csim import compile_csim, run_program

    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    d = Path(workdir or tmp.name)
    d.mkdir(parents=True, exist_ok=True)
    code.write(d, "kernels")
    byname = {p.name: p for p in design.ports}
    decls, reads, writes, args = [], [], [], []
    for hp in code.ports:
        dp = byname[hp.source]
        n = int(np.prod(dp.shape))
        dims = "".join(f"[{s}]" for s in hp.shape)
        var = f"buf_{hp.name}"
        decls.append(f"static {hp.elem} {var}{dims};")
        flat = f"(({hp.elem}*){var})"
        st = {np.int8: "int8_t", np.uint8: "uint8_t", np.int16: "int16_t", np.int32: "int32_t",
              np.int64: "int64_t"}[dp.np_dtype]
        if dp.role != "output":
            f = d / f"in_{hp.name}.bin"
            _np(values[dp.name], dp).tofile(f)
            reads.append(f'  rd<{hp.elem}, {st}>("{f}", {flat}, {n});')
        else:
            writes.append(f'  wr<{hp.elem}, {st}>("{d / ("out_" + hp.name + ".bin")}", {flat}, {n});')
        args.append(var)
    tb = _TB.format(header="kernels.h", decls="\n".join(decls), reads="\n".join(reads),
                    writes="\n".join(writes), top=code.top, args=", ".join(args))
    (d / "tb.cpp").write_text(tb)
    try:
        exe, _, _ = compile_csim(d)
    except MambaflowError as e:
        raise MambaflowError(f"csim: the emitted integer design does not compile:\n{str(e)[-4000:]}") from None
    r, _ = run_program(exe, d)
    if r.returncode:
        raise MambaflowError(f"csim: the testbench failed ({r.returncode}):\n{r.stderr[-2000:]}")
    out = {}
    for hp in code.ports:
        dp = byname[hp.source]
        if dp.role == "output":
            out[dp.name] = np.fromfile(d / f"out_{hp.name}.bin", dtype=dp.np_dtype).reshape(dp.shape)
    if tmp is not None:
        tmp.cleanup()
    return out
