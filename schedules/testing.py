"""Helpers to check scheduled kernels against PyTorch (used by the tests and recipes).

`kernel_module(module, name)` copies one kernel into a module of its own, so a test can
JIT just that kernel (a fraction of a second) instead of the whole design;
`kernel_case(design, name, seed)` makes random inputs for a kernel and computes its
PyTorch reference with the very function the flow captured (`flow.kernels`);
`run_kernel` JITs and runs a kernel on those inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_mlir import ir
from torch_mlir.dialects import arith, func

from ..errors import MambaflowError
from ..flow import kernels as K
from ..flow.identity import LAYER_ARG, arg_names, kernel_kind, stacked_args
from ..flow.mlir import funcs


def copy_design(design):
    """A deep copy of a Design (same context), e.g. to schedule one capture many times."""
    from dataclasses import replace

    with design.module.context:
        mod = ir.Module.parse(str(design.module))
    return replace(design, module=mod)


def kernel_module(module: ir.Module, name: str, layer: int = 0) -> ir.Module:
    """A new module (same context) holding only kernel `name`. A layer kernel takes its
    layer index as an argument; the module then has an entry `<name>_at` that calls it
    for `layer`, taking the other arguments as they are (so it can be JIT-called)."""
    fn = funcs(module).get(name)
    if fn is None:
        raise MambaflowError(f"no kernel '{name}' in the module")
    with module.context, ir.Location.unknown():
        out = ir.Module.create()
        kern = fn.clone(ir.InsertionPoint(out.body))
        names = arg_names(kern) or []
        if LAYER_ARG not in names:
            return out
        types = list(ir.FunctionType(ir.TypeAttr(kern.attributes["function_type"]).value).inputs)
        at = names.index(LAYER_ARG)
        entry = func.FuncOp(f"{name}_at", ir.FunctionType.get(types[:at] + types[at + 1:], []),
                            ip=ir.InsertionPoint(out.body))
        block = entry.add_entry_block()
        with ir.InsertionPoint(block):
            args = list(block.arguments)
            args.insert(at, arith.constant(ir.IndexType.get(), layer))
            func.CallOp([], ir.FlatSymbolRefAttr.get(name), args)
            func.ReturnOp([])
    return out


def _entry(module: ir.Module, name: str) -> str:
    return f"{name}_at" if f"{name}_at" in funcs(module) else name


def _kernel_def(design, name: str) -> K.Kernel:
    kind = kernel_kind(funcs(design.module)[name])
    ks = list(K.layer_kernels(design.cfg, design.T)) + list(K.model_kernels(design.cfg, design.T))
    for k in ks:
        if k.kind == kind:
            return k
    raise MambaflowError(f"no kernel definition for '{name}' (kind {kind!r})")


def kernel_case(design, name: str, seed: int = 0, layer: int | None = None):
    """(inputs, expected outputs) as numpy arrays for one kernel of a decode design.

    A layer kernel's stacked arguments get every layer's data; the reference is the
    kernel at `layer` (default: the last), so a wrong layer index shows. Stacked outputs
    are expected to be zero outside that layer (`run_kernel` starts from zeros)."""
    if design.phase != "decode":
        raise MambaflowError("kernel_case supports decode designs (T = 1)")
    kern = _kernel_def(design, name)
    stacked = stacked_args(funcs(design.module)[name])
    L = design.cfg.n_layer
    at = L - 1 if layer is None else layer
    g = torch.Generator().manual_seed(seed)
    ins, ref_ins = [], []
    for p, st in zip(kern.inputs, stacked):
        shape = (L, *p.shape) if st else p.shape
        if p.dtype == torch.int64:
            if p.name == "windows":
                t = torch.arange(design.cfg.d_conv, dtype=torch.int64)[None].expand(shape).contiguous()
            else:
                t = torch.randint(0, design.cfg.vocab_size, shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * 0.5
        ins.append(t)
        ref_ins.append(t[at] if st else t)
    with torch.no_grad():
        out = kern.fn(*ref_ins)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(outs) != len(kern.outputs):
        raise MambaflowError(f"kernel '{name}': {len(outs)} outputs, expected {len(kern.outputs)}")
    exp = []
    for o, p, st in zip(outs, kern.outputs, stacked[len(kern.inputs):]):
        o = o.reshape(p.shape).to(torch.float32)
        if st:
            full = torch.zeros((L, *p.shape))
            full[at] = o
            o = full
        exp.append(o)
    return [t.numpy().copy() for t in ins], [o.numpy().copy() for o in exp]


def run_kernel(module: ir.Module, name: str, inputs, out_shapes, opt_level: int = 0, layer: int | None = None):
    """JIT kernel `name` of `module` alone and run it (a layer kernel at `layer`, by
    default the last one of its stacked inputs); returns the outputs."""
    if layer is None:
        n = [a.shape[0] for a, s in zip(inputs, stacked_args(funcs(module)[name])) if s]
        layer = n[0] - 1 if n else 0
    from ..targets.llvm.jit import JitFunction

    mod = kernel_module(module, name, layer)
    fn = JitFunction(mod, _entry(mod, name), opt_level=opt_level)
    outs = [np.zeros(s, np.float32) for s in out_shapes]
    fn(*[np.ascontiguousarray(a) for a in inputs], *outs)
    return outs


def check_kernel(module: ir.Module, design, name: str, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5):
    """Run kernel `name` of `module` and compare it with PyTorch; returns the max error."""
    ins, exp = kernel_case(design, name, seed)
    got = run_kernel(module, name, ins, [e.shape for e in exp])
    worst = 0.0
    for g, e in zip(got, exp):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
        worst = max(worst, float(np.abs(g - e).max()))
    return worst
