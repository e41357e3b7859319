"""The llvm target: JIT-compile a design's top function with MLIR's ExecutionEngine.

Numpy in, numpy out. Buffers the JIT allocates inside kernels are freed by MLIR's
ownership-based deallocation; the caller owns every argument. Compiled objects are
cached on disk, keyed by a hash of the IR and the options.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from torch_mlir import ir
from torch_mlir.execution_engine import ExecutionEngine
from torch_mlir.runtime import get_ranked_memref_descriptor

from ...errors import MambaflowError
from ...flow.mlir import funcs, run_pipeline, walk

# Reassociation and contraction only: they let LLVM vectorize reductions and form FMAs
# without assuming away NaN/Inf (softplus thresholds and masks compare against them).
SAFE_FASTMATH = "reassoc,contract"
_FLOAT_OPS = {"arith.addf", "arith.subf", "arith.mulf", "arith.divf", "arith.negf", "arith.maximumf", "arith.minimumf"}

LOWER_TO_LLVM = (
    "func.func(refback-munge-memref-copy,convert-linalg-to-affine-loops),"
    "buffer-deallocation-pipeline,"
    "lower-affine,convert-scf-to-cf,expand-strided-metadata,lower-affine,"
    "finalize-memref-to-llvm,convert-math-to-llvm,convert-math-to-libm,"
    "convert-arith-to-llvm,convert-index-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,"
    "reconcile-unrealized-casts"
)


def cache_dir() -> Path:
    return Path(os.environ.get("MAMBAFLOW_CACHE", Path.home() / ".cache" / "mambaflow"))


def set_fastmath(module: ir.Module, flags: str = SAFE_FASTMATH) -> None:
    """Mark floating-point arith ops with fast-math flags (an attribute each op has)."""
    with module.context:
        attr = ir.Attribute.parse(f"#arith.fastmath<{flags}>")
        for op in walk(module.operation):
            if op.name in _FLOAT_OPS:
                op.attributes["fastmath"] = attr


class JitFunction:
    """A compiled top function; call it with numpy arrays in the design's port order."""

    def __init__(self, module: ir.Module, name: str, opt_level: int = 3, fastmath: bool = True):
        text = str(module)
        key = hashlib.sha256(f"{text}|{name}|O{opt_level}|fm={fastmath}".encode()).hexdigest()[:24]
        self.key = key
        # Work on a private copy: the caller's design stays untouched for other targets.
        with module.context:
            lowered = ir.Module.parse(text)
        fn = funcs(lowered).get(name)
        if fn is None:
            raise MambaflowError(f"llvm target: the module has no function '{name}'")
        with lowered.context:
            fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        if fastmath:
            set_fastmath(lowered)
        run_pipeline(lowered, LOWER_TO_LLVM, f"llvm lowering of '{name}'")
        obj = cache_dir() / f"{key}.o"
        self._engine = ExecutionEngine(lowered, opt_level=opt_level, shared_libs=[])
        self.cached = obj.exists()
        try:
            obj.parent.mkdir(parents=True, exist_ok=True)
            if not self.cached:
                self._engine.dump_to_object_file(str(obj))
        except OSError:
            pass  # the cache is an optimisation; a read-only home must not break runs
        self.name = name
        self._pinned: dict[int, object] = {}

    def __call__(self, *arrays: np.ndarray) -> None:
        """Run with every argument (inputs and outputs) as a C-contiguous numpy array.

        Outputs are written in place. Arrays must stay alive for the call.
        """
        descs = []
        for a in arrays:
            if not a.flags["C_CONTIGUOUS"]:
                raise MambaflowError("llvm target: arguments must be C-contiguous numpy arrays")
            descs.append(ctypes.pointer(ctypes.pointer(get_ranked_memref_descriptor(a))))
        self._engine.invoke(self.name, *descs)

    def prepare(self, arrays: Sequence[np.ndarray]) -> list:
        """Descriptors for arguments that do not change between calls (weights)."""
        return [ctypes.pointer(ctypes.pointer(get_ranked_memref_descriptor(a))) for a in arrays]

    def invoke_prepared(self, descs: list) -> None:
        self._engine.invoke(self.name, *descs)
