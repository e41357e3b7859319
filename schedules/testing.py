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

from ..errors import MambaflowError
from ..flow import kernels as K
from ..flow.mlir import funcs


def copy_design(design):
    """A deep copy of a Design (same context), e.g. to schedule one capture many times."""
    from dataclasses import replace

    with design.module.context:
        mod = ir.Module.parse(str(design.module))
    return replace(design, module=mod)


def kernel_module(module: ir.Module, name: str) -> ir.Module:
    """A new module (same context) holding only kernel `name` (and the globals it uses)."""
    fn = funcs(module).get(name)
    if fn is None:
        raise MambaflowError(f"no kernel '{name}' in the module")
    with module.context, ir.Location.unknown():
        out = ir.Module.create()
        fn.clone(ir.InsertionPoint(out.body))
    return out


def _kernel_def(design, name: str) -> K.Kernel:
    import re

    m = re.match(r"layer\d+_(.+)$", name)
    kind = m.group(1) if m else name
    ks = list(K.layer_kernels(design.cfg, design.T)) + list(K.model_kernels(design.cfg, design.T))
    for k in ks:
        if k.kind == kind:
            return k
    raise MambaflowError(f"no kernel definition for '{name}'")


def kernel_case(design, name: str, seed: int = 0):
    """(inputs, expected outputs) as numpy arrays for one kernel of a decode design."""
    if design.phase != "decode":
        raise MambaflowError("kernel_case supports decode designs (T = 1)")
    kern = _kernel_def(design, name)
    g = torch.Generator().manual_seed(seed)
    ins = []
    for p in kern.inputs:
        if p.dtype == torch.int64:
            if p.name == "windows":
                t = torch.arange(design.cfg.d_conv, dtype=torch.int64)[None].expand(p.shape).contiguous()
            else:
                t = torch.randint(0, design.cfg.vocab_size, p.shape, generator=g)
        else:
            t = torch.randn(p.shape, generator=g) * 0.5
        ins.append(t)
    with torch.no_grad():
        out = kern.fn(*ins)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if len(outs) != len(kern.outputs):
        raise MambaflowError(f"kernel '{name}': {len(outs)} outputs, expected {len(kern.outputs)}")
    outs = [o.reshape(p.shape).to(torch.float32) for o, p in zip(outs, kern.outputs)]
    return [t.numpy().copy() for t in ins], [o.numpy().copy() for o in outs]


def run_kernel(module: ir.Module, name: str, inputs, out_shapes, opt_level: int = 0):
    """JIT kernel `name` of `module` alone and run it; returns the outputs."""
    from ..targets.llvm.jit import JitFunction

    fn = JitFunction(kernel_module(module, name), name, opt_level=opt_level)
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
