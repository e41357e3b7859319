"""Small helpers over the upstream MLIR Python bindings bundled in torch-mlir.

One home for: the project's Context, running pass pipelines with a project error, and
walking ops. Nothing here knows about Mamba.
"""

from __future__ import annotations

from typing import Iterator

from torch_mlir import ir, passmanager
from torch_mlir.dialects import torch as torch_d

from ..errors import LoweringError


def new_context() -> ir.Context:
    ctx = ir.Context()
    torch_d.register_dialect(ctx)
    return ctx


def run_pipeline(module: ir.Module, pipeline: str, what: str) -> None:
    """Run a textual pass pipeline on `module`; failures raise LoweringError naming `what`."""
    with module.context:
        try:
            passmanager.PassManager.parse(f"builtin.module({pipeline})").run(module.operation)
        except ir.MLIRError as e:
            diags = "\n".join(f"  {d.location}: {d.message}" for d in e.error_diagnostics)
            raise LoweringError(
                f"{what} failed in pass pipeline '{pipeline}':\n{diags}\n"
                "This is a bug in mambaflow's lowering or an unsupported construct; "
                "please report it with the model config and phase."
            ) from None


def walk(op: ir.Operation) -> Iterator[ir.Operation]:
    """Pre-order walk over every op nested in `op` (not `op` itself)."""
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                child = child.operation
                yield child
                yield from walk(child)


def funcs(module: ir.Module) -> dict[str, ir.Operation]:
    """The module's `func.func` ops by symbol name."""
    out = {}
    for op in module.body.operations:
        op = op.operation
        if op.name == "func.func":
            out[ir.StringAttr(op.attributes["sym_name"]).value] = op
    return out


def dense_row_type(t: ir.MemRefType) -> ir.MemRefType:
    """t's shape with row-major strides and a dynamic offset: the type of one row (one
    token's state, one layer's slice) of a dense buffer with t's shape inside it."""
    strides, n = [], 1
    for d in reversed(t.shape):
        strides.append(n)
        n *= d
    layout = ir.StridedLayoutAttr.get(ir.ShapedType.get_dynamic_stride_or_offset(), strides[::-1])
    return ir.MemRefType.get(t.shape, t.element_type, layout)


def str_attr(op: ir.Operation, name: str) -> str | None:
    if name not in op.attributes:
        return None
    return ir.StringAttr(op.attributes[name]).value


def affine_accesses_to_memref(op: ir.Operation) -> None:
    """Rewrite every affine.load/store under `op` as memref.load/store on affine.apply.

    Upstream `fold-memref-alias-ops` folds views (subview, expand/collapse_shape) only
    into memref.load/store, and `affine-raise-from-memref` turns those back into affine
    accesses; this is the missing first step of that round trip.
    """
    from torch_mlir.dialects import affine as affine_d, memref as memref_d

    todo = [o for o in walk(op) if o.name in ("affine.load", "affine.store")]
    with op.context, ir.Location.unknown():
        for acc in todo:
            amap = ir.AffineMapAttr(acc.attributes["map"]).value
            is_load = acc.name == "affine.load"
            operands = list(acc.operands)
            value, mem, idx = (None, operands[0], operands[1:]) if is_load else (operands[0], operands[1], operands[2:])
            with ir.InsertionPoint(acc):
                indices = [
                    affine_d.AffineApplyOp(
                        ir.AffineMap.get(amap.n_dims, amap.n_symbols, [e]), idx
                    ).result
                    for e in amap.results
                ]
                if is_load:
                    new = memref_d.load(mem, indices)
                    acc.results[0].replace_all_uses_with(new)
                else:
                    memref_d.store(value, mem, indices)
            acc.erase()
