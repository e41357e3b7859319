"""From a PyTorch function to a named affine kernel: torch-mlir capture and lowering.

`capture_function` is the one entry for any PyTorch code: FX export, torch-mlir import,
linalg-on-tensors, elementwise fusion, bufferization into destination-passing style
(results become out-parameters, as HLS ports are), and affine loop nests.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch
from torch_mlir import fx, ir
from torch_mlir.extras.fx_decomp_util import get_decomposition_table
from torch_mlir.extras.fx_importer import FxImporter

from ..errors import UnsupportedOpError
from . import mlir
from .mlir import run_pipeline

# Elementwise fusion first, so a linear layer written as broadcast-multiply-reduce becomes
# one matvec nest and activation functions fuse into their producers.
TENSOR_CLEANUP = (
    "func.func(linalg-generalize-named-ops,linalg-fuse-elementwise-ops,canonicalize,cse)"
)


def _bufferize(layout: str) -> str:
    return (
        "one-shot-bufferize{bufferize-function-boundaries "
        f"function-boundary-type-conversion={layout}}},"
        "buffer-results-to-out-params{modify-public-functions hoist-static-allocs},"
        "canonicalize,"
        "func.func(convert-linalg-to-affine-loops,canonicalize,cse)"
    )


class _Wrap(torch.nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _module_paths(prog: torch.export.ExportedProgram) -> dict[str, list[str]]:
    """aten op name (e.g. 'aten.fft_fft') -> module paths of the FX nodes that call it."""
    out: dict[str, list[str]] = {}
    for node in prog.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target).split(".")
        op = ".".join(name[:2])  # aten.fft_fft.default -> aten.fft_fft
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        # innermost module: its dotted path in the user's model, and its class
        path, cls = stack[-1] if stack else ("", "")
        cls = getattr(cls, "__name__", str(cls).rsplit(".", 1)[-1])
        out.setdefault(op, []).append(f"{path or '<top>'} ({cls})" if cls else path or "<top>")
    return out


def _torch_ops(module: ir.Module) -> set[str]:
    skip = ("torch.constant.", "torch.prim.ListConstruct", "torch.vtensor.literal")
    return {
        op.name
        for op in mlir.walk(module.operation)
        if op.name.startswith("torch.") and not op.name.startswith(skip)
    }


def capture_function(
    fn: Callable | torch.nn.Module,
    example_args: Sequence[torch.Tensor],
    name: str,
    ctx: ir.Context,
    dynamic_layout: bool = False,
) -> ir.Module:
    """Capture `fn(*example_args)` as one affine `func.func @name` in destination style.

    With `dynamic_layout`, memref arguments take any strided layout, so the function can
    be called on subviews (the SSM step inside a scan) and inlined there.
    """
    module = fn if isinstance(fn, torch.nn.Module) else _Wrap(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.export.export(module, tuple(example_args), strict=False)
        prog = prog.run_decompositions(get_decomposition_table())
        imported = fx.export_and_import(
            prog, output_type="torch", fx_importer=FxImporter(context=ctx), func_name=name
        )
    try:
        run_pipeline(imported, "torch-backend-to-linalg-on-tensors-backend-pipeline", name)
    except Exception:
        left = _torch_ops(imported)
        if not left:
            raise
        paths = _module_paths(prog)
        where = []
        for op in sorted(left):
            aten = op.removeprefix("torch.")
            where.append(f"'{aten}' at {', '.join(sorted(set(paths.get(aten, ['<unknown>']))))}")
        raise UnsupportedOpError(
            f"kernel '{name}': torch-mlir cannot lower {'; '.join(where)} to linalg. "
            "Rewrite that code with supported tensor ops (elementwise math, matmul, "
            "reductions, indexing) or add a decomposition for it."
        ) from None
    layout = "fully-dynamic-layout-map" if dynamic_layout else "identity-layout-map"
    run_pipeline(imported, TENSOR_CLEANUP + "," + _bufferize(layout), name)
    return imported
