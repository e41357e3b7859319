"""The HLS emitter's own resource count: DSPs and on-chip memory per kernel.

A static count over the same IR the emitter prints, used to reject a design that cannot
fit a board before any vendor tool runs. It is an estimate with stated assumptions, not
a synthesis result (compare with the csynth report, `targets.versal.reports`):

* every arithmetic op in a function is its own operator instance (Vitis may share
  operators between sequential loops, so DSPs are an upper bound in that respect);
  an op inside unrolled loops counts once per unrolled copy; loops nested inside a
  pipelined loop are fully unrolled (as Vitis does);
* DSP58 per operator (Versal, DSPFP32 mode for f32): `DSP_COST` below;
* a local buffer (memref.alloc / memref.global) occupies, per partition bank, the
  fewest BRAM18K blocks over the block RAM aspect ratios (16Kx1 ... 512x36), or
  UltraRAMs (4Kx72) when bound to URAM; buffers bound to LUTRAM, banks of at most
  `LUTRAM_MAX_BITS` bits without a binding, and completely partitioned buffers take
  no block RAM (LUTRAM / registers, reported as bits);
* each m_axi bundle of the top costs `MAXI_BRAM18_PER_BUNDLE` BRAM18K of burst buffers;
* top-level arrays live off chip (DDR / HBM) and cost no on-chip memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch_mlir import ir

from ...dialects import directives as D
from .cxx import element_bits

#: DSP58 per operator instance, by (op, element bits); 0 = built from LUTs.
DSP_COST = {
    ("arith.mulf", 32): 1, ("arith.addf", 32): 1, ("arith.subf", 32): 1, ("arith.divf", 32): 0,
    ("arith.mulf", 64): 8, ("arith.addf", 64): 3, ("arith.subf", 64): 3, ("arith.divf", 64): 0,
    ("math.exp", 32): 7, ("math.exp2", 32): 7, ("math.expm1", 32): 7, ("math.log", 32): 8,
    ("math.log1p", 32): 8, ("math.log2", 32): 8, ("math.rsqrt", 32): 2, ("math.sqrt", 32): 0,
    ("math.tanh", 32): 8, ("math.powf", 32): 14, ("math.fpowi", 32): 1, ("math.fma", 32): 1,
}
#: integer multipliers with two variable operands, by width
INT_MUL_DSP = ((18, 1), (27, 1), (36, 2), (48, 3), (64, 4))
BRAM18_CONFIGS = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
URAM_DEPTH, URAM_WIDTH = 4096, 72
LUTRAM_MAX_BITS = 1024
MAXI_BRAM18_PER_BUNDLE = 2


@dataclass
class BufferUse:
    name: str
    shape: tuple[int, ...]
    bits: int
    banks: int
    storage: str          # 'bram' | 'uram' | 'lutram' | 'registers'
    bram18k: int = 0
    uram: int = 0


@dataclass
class KernelResources:
    name: str
    dsp: int = 0
    bram18k: int = 0
    uram: int = 0
    lutram_bits: int = 0
    register_bits: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    buffers: list[BufferUse] = field(default_factory=list)


@dataclass
class ResourceEstimate:
    kernels: list[KernelResources]
    maxi_bundles: int = 0

    @property
    def dsp(self) -> int:
        return sum(k.dsp for k in self.kernels)

    @property
    def bram18k(self) -> int:
        return sum(k.bram18k for k in self.kernels) + MAXI_BRAM18_PER_BUNDLE * self.maxi_bundles

    @property
    def uram(self) -> int:
        return sum(k.uram for k in self.kernels)

    @property
    def lutram_bits(self) -> int:
        return sum(k.lutram_bits for k in self.kernels)

    @property
    def register_bits(self) -> int:
        return sum(k.register_bits for k in self.kernels)

    def to_dict(self) -> dict:
        return {
            "dsp": self.dsp, "bram18k": self.bram18k, "uram": self.uram,
            "lutram_bits": self.lutram_bits, "register_bits": self.register_bits,
            "maxi_bundles": self.maxi_bundles,
            "kernels": [asdict(k) for k in self.kernels],
        }

    def table(self, top_n: int | None = None) -> str:
        rows = sorted(self.kernels, key=lambda k: (-(k.dsp + k.bram18k + k.uram), k.name))
        if top_n is not None:
            rows = rows[:top_n]
        w = max([len("kernel")] + [len(k.name) for k in rows])
        out = [f"{'kernel':<{w}}  {'DSP':>6}  {'BRAM18K':>8}  {'URAM':>5}  {'LUTRAM bits':>11}"]
        for k in rows:
            out.append(f"{k.name:<{w}}  {k.dsp:>6}  {k.bram18k:>8}  {k.uram:>5}  {k.lutram_bits:>11}")
        out.append(f"{'total':<{w}}  {self.dsp:>6}  {self.bram18k:>8}  {self.uram:>5}  {self.lutram_bits:>11}"
                   + (f"   (incl. {MAXI_BRAM18_PER_BUNDLE * self.maxi_bundles} BRAM18K for {self.maxi_bundles} m_axi bundles)"
                      if self.maxi_bundles else ""))
        return "\n".join(out)


def _ops(block):
    for op in block.operations:
        yield op.operation


def _trip(op) -> int | None:
    from .emitter import _loop_trip

    return _loop_trip(op)


def _bram18(words: int, width: int) -> int:
    return min(math.ceil(words / d) * math.ceil(width / w) for d, w in BRAM18_CONFIGS)


def buffer_use(name: str, t: ir.MemRefType, parts: list, storage: str | None) -> BufferUse:
    shape = tuple(t.shape) or (1,)
    n = math.prod(shape)
    w = element_bits(t.element_type)
    banks = 1
    for p in parts:
        dims = range(len(shape)) if p.dim == 0 else [p.dim - 1]
        for d in dims:
            if d >= len(shape):
                continue
            banks *= shape[d] if p.kind == "complete" else min(max(p.factor, 1), shape[d])
    banks = min(banks, n)
    words = math.ceil(n / banks)
    use = BufferUse(name, tuple(t.shape), n * w, banks, storage or "bram")
    if banks == n and parts:
        use.storage = "registers"
    elif storage == "uram":
        use.uram = banks * math.ceil(words / URAM_DEPTH) * math.ceil(w / URAM_WIDTH)
    elif storage == "lutram" or (storage is None and words * w <= LUTRAM_MAX_BITS):
        use.storage = "lutram"
    else:
        use.bram18k = banks * _bram18(words, w)
    return use


def _kernel(name: str, fn: ir.Operation, is_top: bool) -> KernelResources:
    k = KernelResources(name)
    nbuf = 0

    def visit(block, mult: int, in_pipe: bool):
        nonlocal nbuf
        for op in _ops(block):
            n = op.name
            if n == "affine.for":
                trip = _trip(op) or 1
                m, pipe = mult, in_pipe
                if in_pipe:
                    m *= trip
                else:
                    u = D.get_unroll(op)
                    if u is not None:
                        m *= trip if (u == 0 or u >= trip) else max(u, 1)
                if D.get_pipeline(op) is not None:
                    pipe = True
                visit(op.regions[0].blocks[0], m, pipe)
                continue
            for region in op.regions:
                for b in region.blocks:
                    visit(b, mult, in_pipe)
            if n in ("memref.alloc", "memref.alloca"):
                t = op.results[0].type
                ref = D.BufferRef(fn, alloc_op=op)
                use = buffer_use(f"buf{nbuf}", t, D.partitions_of(ref), D.storage_of(ref))
                nbuf += 1
                k.buffers.append(use)
                continue
            if n == "mf.stream_create":
                from ...dialects import stream as sd

                elem, _ = sd.stream_info(op.results[0].type)
                depth = ir.IntegerAttr(op.attributes["depth"]).value if "depth" in op.attributes else 2
                w = element_bits(elem)
                use = BufferUse(f"fifo {sd.stream_name(op)}", (depth,), depth * w, 1,
                                "lutram" if depth * w <= LUTRAM_MAX_BITS else "bram")
                if use.storage == "bram":
                    use.bram18k = _bram18(depth, w)
                k.buffers.append(use)
                continue
            if not op.results:
                continue
            t = op.results[0].type
            try:
                bits = element_bits(t)
            except Exception:
                continue
            cost = DSP_COST.get((n, bits))
            if cost is None and n == "arith.muli":
                if any(_is_const(v) for v in op.operands):
                    cost = 0
                else:
                    cost = next((c for wmax, c in INT_MUL_DSP if bits <= wmax), 6)
            if cost is None:
                continue
            k.ops[n] = k.ops.get(n, 0) + mult
            k.dsp += cost * mult

    visit(fn.regions[0].blocks[0], 1, False)
    for b in k.buffers:
        k.bram18k += b.bram18k
        k.uram += b.uram
        if b.storage == "lutram":
            k.lutram_bits += b.bits
        elif b.storage == "registers":
            k.register_bits += b.bits
    return k


def _is_const(v: ir.Value) -> bool:
    owner = v.owner
    if isinstance(owner, ir.Block):
        return False
    owner = owner.operation if hasattr(owner, "operation") else owner
    return owner.name == "arith.constant"


def estimate_resources(module: ir.Module, funcs: dict, top: str, effects=None) -> ResourceEstimate:
    kernels = [_kernel(name, fn, name == top) for name, fn in funcs.items()]
    for op in _ops(module.body):
        if op.name == "memref.global":
            t = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
            sym = ir.StringAttr(op.attributes["sym_name"]).value
            use = buffer_use(sym, t, [], None)
            kr = KernelResources(f"global {sym}", bram18k=use.bram18k, uram=use.uram,
                                 lutram_bits=use.bits if use.storage == "lutram" else 0, buffers=[use])
            kernels.append(kr)
    ft = ir.FunctionType(ir.TypeAttr(funcs[top].attributes["function_type"]).value)
    return ResourceEstimate(kernels, 0)
