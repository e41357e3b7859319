"""The llvm target: compile a design's top function to native code for the CPU.

Numpy in, numpy out. Buffers allocated inside kernels are freed by MLIR's ownership-based
deallocation; the caller owns every argument. MLIR's ExecutionEngine compiles the
module; its object code is linked into a shared library in the disk cache
(`mambaflow.cache`, kind "llvm") keyed by a hash of the IR and the options, so the next
process with the same design skips lowering and LLVM code generation and just loads the
library, after checking its checksum (a damaged library is rebuilt, never loaded).
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from torch_mlir import ir
from torch_mlir.execution_engine import ExecutionEngine

from ... import cache as disk_cache
from ...errors import MambaflowError
from ...flow.mlir import funcs, run_pipeline, walk

# Reassociation and contraction only: they let LLVM vectorize reductions and form FMAs
# without assuming away NaN/Inf (softplus thresholds and masks compare against them).
SAFE_FASTMATH = "reassoc,contract"
_FLOAT_OPS = {"arith.addf", "arith.subf", "arith.mulf", "arith.divf", "arith.negf",
              "arith.maximumf", "arith.minimumf"}

LOWER_TO_LLVM = (
    "func.func(refback-munge-memref-copy,convert-linalg-to-affine-loops),"
    "buffer-deallocation-pipeline,"
    "lower-affine,convert-scf-to-cf,expand-strided-metadata,lower-affine,"
    "finalize-memref-to-llvm,convert-math-to-llvm,convert-math-to-libm,"
    "convert-arith-to-llvm,convert-index-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,"
    "reconcile-unrealized-casts"
)
_CACHE_FORMAT = "3"  # bump when the lowering changes what a cached library contains


cache_dir = disk_cache.cache_dir


def set_fastmath(module: ir.Module, flags: str = SAFE_FASTMATH) -> None:
    """Mark floating-point arith ops with fast-math flags (an attribute each op has)."""
    with module.context:
        attr = ir.Attribute.parse(f"#arith.fastmath<{flags}>")
        for op in walk(module.operation):
            if op.name in _FLOAT_OPS:
                op.attributes["fastmath"] = attr


def _prefer_wide_vectors(module: ir.Module, bits: int = 512) -> None:
    """Let LLVM vectorize with the host's widest registers: its x86 default stops at 256
    bits even where AVX-512 exists (a clock-throttling guard for mixed server loads). Our
    kernels are long, hot vector loops (the SSM's exp per state element), where 512 bits
    pay; hosts without AVX-512 ignore the attribute."""
    with module.context:
        attr = ir.Attribute.parse(f'[["prefer-vector-width", "{bits}"]]')
        for op in walk(module.operation):
            if op.name == "llvm.func" and len(op.regions[0].blocks):
                op.attributes["passthrough"] = attr


def _strip_directives(module: ir.Module) -> None:
    """Remove schedule directives that only annotate (the CPU ignores them)."""
    try:
        from ...dialects.directives import strip_directives
    except ImportError:  # the schedule layer is optional for plain lowering
        return
    strip_directives(module)


def descriptors(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Ranked memref descriptors of many C-contiguous arrays in one int64 block.

    Each descriptor is MLIR's struct on 64-bit hosts: allocated and aligned pointers,
    offset, sizes, strides in elements (the bytes `get_ranked_memref_descriptor` builds,
    without defining a ctypes class per argument, which dominated small calls). Returns
    the block (keep it and the arrays alive until the call returns) and each
    descriptor's address, as `bind` takes them."""
    words: list[int] = []
    offsets = []
    for a in arrays:
        if not (isinstance(a, np.ndarray) and a.flags["C_CONTIGUOUS"]):
            raise MambaflowError("llvm target: arguments must be C-contiguous numpy arrays")
        offsets.append(len(words))
        p = a.__array_interface__["data"][0]
        words += (p, p, 0, *a.shape, *(s // a.itemsize for s in a.strides))
    block = np.array(words, dtype=np.int64)
    base = block.__array_interface__["data"][0]
    return block, [base + 8 * o for o in offsets]


class JitFunction:
    """A compiled top function; call it with numpy arrays in the design's port order."""

    def __init__(self, module: ir.Module, name: str, opt_level: int = 3, fastmath: bool = True,
                 cache: bool = True, progress: bool = False):
        text = str(module)
        fn = funcs(module).get(name)
        if fn is None:
            raise MambaflowError(f"llvm target: the module has no function '{name}'")
        self.name = name
        self.nargs = len(ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value).inputs)
        # the key's inputs, stored with the entry and compared before it is used
        self._inputs = {"format": _CACHE_FORMAT, "ir_sha256": hashlib.sha256(text.encode()).hexdigest(),
                        "function": name, "opt_level": opt_level, "fastmath": fastmath}
        self.key = disk_cache.key_of(self._inputs)
        self.cached = False
        self._packed = None
        entry = disk_cache.lookup("llvm", self._inputs, ("lib.so",)) if cache else None
        if entry is not None:
            try:
                self._lib = ctypes.CDLL(str(entry.file("lib.so")))
                # the packed wrapper of the C interface, as the engine's lookup returns it
                self._set_entry(ctypes.cast(getattr(self._lib, f"_mlir__mlir_ciface_{name}"), ctypes.c_void_p).value)
                self.cached = True
                return
            except (OSError, AttributeError) as e:  # whole, but not a library of this design
                disk_cache.discard(entry.path, f"lib.so does not load ({type(e).__name__})")
        self._engine = self._compile(module, text, name, opt_level, fastmath, progress)
        # call through the packed wrapper the engine generates: void(void** args)
        self._packed = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._engine.lookup(name))
        if cache:
            self._store()

    @staticmethod
    def _compile(module, text, name, opt_level, fastmath, progress=False) -> ExecutionEngine:
        from tqdm import tqdm

        bar = tqdm(total=2, desc=f"compile {name}", unit="step", disable=not progress, leave=False)
        # Lower a private copy: the caller's design stays as it is for other targets.
        with module.context:
            lowered = ir.Module.parse(text)
            funcs(lowered)[name].attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
        _strip_directives(lowered)
        if fastmath:
            set_fastmath(lowered)
        bar.set_postfix_str("lowering to the LLVM dialect")
        run_pipeline(lowered, LOWER_TO_LLVM, f"llvm lowering of '{name}'")
        _prefer_wide_vectors(lowered)
        bar.update(1)
        bar.set_postfix_str(f"LLVM code generation (-O{opt_level})")
        engine = ExecutionEngine(lowered, opt_level=opt_level, shared_libs=[])
        engine.initialize()  # run static initializers before code is called directly
        bar.update(1)
        bar.close()
        return engine

    def _set_entry(self, address: int) -> None:
        self._packed = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(address)

    def _store(self) -> None:
        """Link the engine's object code into a library in the cache; a failure only costs speed."""
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return
        try:
            with tempfile.TemporaryDirectory() as tmp:
                obj, so = Path(tmp) / "k.o", Path(tmp) / "k.so"
                self._engine.dump_to_object_file(str(obj))
                # JIT code is not position independent: allow text relocations quietly
                subprocess.run([cc, "-shared", "-Wl,-z,notext", "-o", str(so), str(obj), "-lm"],
                               check=True, capture_output=True)
                disk_cache.store("llvm", self._inputs, {"lib.so": so})
        except (OSError, subprocess.CalledProcessError):
            pass

    def bind(self, addrs: Sequence[int]):
        """A call with fixed descriptor addresses (see `descriptors`): returns a function of
        no arguments that runs the design. Rewriting the descriptors' pointer words between
        calls is how a caller passes new buffers without building anything per call; the
        caller keeps the descriptors alive while the function is used."""
        if len(addrs) != self.nargs:
            raise MambaflowError(f"llvm target: '{self.name}' takes {self.nargs} arguments, got {len(addrs)}")
        # the packed wrapper takes void** args: args[i] points at a pointer to descriptor i
        ptrs = (ctypes.c_void_p * len(addrs))(*addrs)
        step = ctypes.sizeof(ctypes.c_void_p)
        slots = (ctypes.c_void_p * len(addrs))(*[ctypes.addressof(ptrs) + step * i for i in range(len(addrs))])
        packed, arg = self._packed, ctypes.addressof(slots)

        def run(_keep=(ptrs, slots, self)) -> None:  # self: the engine owns the code
            packed(arg)

        return run

    def __call__(self, *arrays: np.ndarray) -> None:
        """Run with every argument (inputs, then outputs written in place) as numpy arrays."""
        block, addrs = descriptors(arrays)  # noqa: F841  (the block must outlive the call)
        self.bind(addrs)()
