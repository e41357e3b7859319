"""The HLS emitter's own resource count: DSP, LUT, FF and on-chip memory per kernel.

A static count over the same IR the emitter prints, used to reject a design that cannot
fit a board before any vendor tool runs. It is an estimate with stated assumptions, not
a synthesis result (compare with the csynth report, `targets.versal.reports`):

* every arithmetic op in a function is its own operator instance (Vitis may share
  operators between sequential loops, so the count is an upper bound in that respect);
  an op inside unrolled loops counts once per unrolled copy; loops nested inside a
  pipelined loop are fully unrolled (as Vitis does, UG1399 "pipeline");
* each function is one hardware instance, however often the top calls it;
* operator costs (DSP58, LUT, FF) are the `OP_COST` table for float and math ops and
  `int_op_cost` for integer ops, below. Float ops on Versal map to the DSP58 in
  DSPFP32 mode (one fp32 multiply and one fp32 add per DSP58, AMD AM004 "DSP58
  Architecture"), plus fabric glue (operand muxes, a result register) that is an
  assumption of this model, not a datasheet figure; fabric-only float cores (divide,
  sqrt) and the transcendental cores take the order of magnitude of a Vitis csynth
  report (UG1399 lists the cores, not their size);
* integer adders, subtractors, comparators, min/max and selects are carry-chain /
  mux logic at ~1 LUT per bit (a Versal CLB has 32 LUTs with carry logic, UG1273
  "Programmable Logic"); shifts by a constant are wiring; a multiplier with a
  constant operand is one shift-add adder; a multiplier with a narrow operand
  (<= `NARROW_MUL_BITS` significant bits, looking through sign/zero extensions) is
  built in LUTs at ~1 LUT per partial-product bit (a 4x4-bit multiply ~16 LUTs), as
  LightMamba's 8x8 array of 4-bit MACs is (the IR has no `bind_op impl=fabric`
  directive: narrowness decides); wider multipliers take DSP58s by `INT_MUL_DSP`
  (one 27x24 multiply per DSP58, AM004);
* every operator registers its result once (a pipeline register: FF = result bits);
  index arithmetic (addresses, loop bounds) is folded into the loop control below and
  costs nothing of its own;
* every loop that is not unrolled away has a control FSM: an iteration counter of
  `bit_length(trip)` bits with its increment and exit compare (`LOOP_LUT_PER_BIT` LUT
  and 1 FF per bit) plus `LOOP_FSM` LUT/FF of state logic; every function has the
  `FUNC_FSM` block-level handshake (ap_ctrl_hs);
* a local buffer (memref.alloc / memref.global) occupies, per partition bank, the
  fewest BRAM18K blocks over the block RAM aspect ratios (16Kx1 ... 512x36), or
  UltraRAMs (4Kx72) when bound to URAM; buffers bound to LUTRAM and banks of at most
  `LUTRAM_MAX_BITS` bits without a binding are LUTRAM at `LUTRAM_BITS_PER_LUT` bits
  per LUT (a dual-port RAM64X1D is two 64-bit LUTs, UG1273 / AM005); completely
  partitioned buffers are registers (FF = bits; the read muxes are not counted);
  an `mf` stream FIFO is LUTRAM or BRAM by the same rule plus `FIFO_CTRL` LUT/FF;
* the interface: each m_axi bundle of the top costs `MAXI_PER_BUNDLE` (burst buffers
  in BRAM18K plus the adapter's LUT/FF, typical csynth figures for a 32/64-bit
  read-write bundle); the s_axilite control block costs `AXILITE` plus
  `AXILITE_PER_ARG` per top argument (its address / value register);
* top-level arrays live off chip (DDR / HBM) and cost no on-chip memory.

Reality check (published, not a calibration): LightMamba's Mamba2-2.7B W4A4 design
on VCK190 uses 228 DSP, 107k LUT and 456 BRAM, with its linear engine (8x8 4-bit MACs
per cycle) on LUTs and 8 DSP multipliers for the SSM update.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch_mlir import ir

from ...dialects import directives as D
from .cxx import element_bits, int_width

#: (DSP58, LUT, FF) per operator instance, by (op, element bits). The fp32 add / sub /
#: mul / fma rows are one DSP58 in DSPFP32 mode (AM004) plus `FP_GLUE` fabric; divide
#: and sqrt are fabric-only cores; the rest are the order of magnitude of Vitis cores.
FP_GLUE = (32, 64)  # LUT, FF: operand muxes and a result register (model assumption)
OP_COST = {
    ("arith.addf", 32): (1, *FP_GLUE), ("arith.subf", 32): (1, *FP_GLUE),
    ("arith.mulf", 32): (1, *FP_GLUE), ("math.fma", 32): (1, *FP_GLUE),
    ("arith.divf", 32): (0, 800, 1400), ("math.sqrt", 32): (0, 500, 700),
    ("math.rsqrt", 32): (2, 500, 700), ("math.fpowi", 32): (1, 100, 150),
    ("math.exp", 32): (7, 900, 1000), ("math.exp2", 32): (7, 900, 1000), ("math.expm1", 32): (7, 900, 1000),
    ("math.log", 32): (8, 1000, 1200), ("math.log1p", 32): (8, 1000, 1200), ("math.log2", 32): (8, 1000, 1200),
    ("math.tanh", 32): (8, 1500, 1800), ("math.powf", 32): (14, 2500, 3000),
    ("arith.cmpf", 32): (0, 40, 1),
    ("arith.maximumf", 32): (0, 72, 32), ("arith.minimumf", 32): (0, 72, 32),
    ("arith.maxnumf", 32): (0, 72, 32), ("arith.minnumf", 32): (0, 72, 32),
    ("arith.negf", 32): (0, 1, 32), ("math.absf", 32): (0, 1, 32),
    ("arith.sitofp", 32): (0, 150, 200), ("arith.uitofp", 32): (0, 150, 200),
    ("arith.fptosi", 32): (0, 150, 200), ("arith.fptoui", 32): (0, 150, 200),
    ("arith.extf", 64): (0, 50, 64), ("arith.truncf", 32): (0, 50, 64),
    ("arith.addf", 64): (3, 700, 1000), ("arith.subf", 64): (3, 700, 1000),
    ("arith.mulf", 64): (8, 200, 400), ("arith.divf", 64): (0, 3000, 5000),
}
#: DSP58 per operator instance (the DSP column of OP_COST)
DSP_COST = {k: v[0] for k, v in OP_COST.items()}
#: integer multipliers with two variable operands wider than NARROW_MUL_BITS: DSP58s
#: by the wider operand's significant bits (27x24 per DSP58, AM004)
INT_MUL_DSP = ((18, 1), (27, 1), (36, 2), (48, 3), (64, 4))
NARROW_MUL_BITS = 4
#: integer ops at ~1 LUT per result (or, for compares, operand) bit
LUT_PER_BIT = {"arith.addi": 1, "arith.subi": 1, "arith.andi": 1, "arith.ori": 1, "arith.xori": 1,
               "arith.cmpi": 1, "arith.select": 1, "arith.maxsi": 2, "arith.minsi": 2,
               "arith.maxui": 2, "arith.minui": 2}
SHIFTS = ("arith.shli", "arith.shrsi", "arith.shrui")
DIVIDES = ("arith.divsi", "arith.divui", "arith.remsi", "arith.remui", "arith.floordivsi", "arith.ceildivsi",
           "arith.ceildivui")
LOOP_LUT_PER_BIT = 2          # counter increment + exit compare
LOOP_FSM = (8, 4)             # LUT, FF of a loop's state logic
FUNC_FSM = (20, 10)           # LUT, FF of a function's ap_ctrl_hs handshake
FIFO_CTRL = (20, 16)          # LUT, FF of a stream FIFO's pointers and flags
MAXI_PER_BUNDLE = (2, 1000, 1500)  # BRAM18K, LUT, FF of one m_axi adapter
MAXI_BRAM18_PER_BUNDLE = MAXI_PER_BUNDLE[0]
AXILITE = (100, 100)          # LUT, FF of the s_axilite control block
AXILITE_PER_ARG = (16, 64)    # LUT, FF per top argument (offset / value register)
BRAM18_CONFIGS = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
URAM_DEPTH, URAM_WIDTH = 4096, 72
LUTRAM_MAX_BITS = 1024
LUTRAM_BITS_PER_LUT = 32
#: the schedule's name attribute of a local buffer (schedules.schedule.BUFFER_NAME)
BUFFER_NAME = "buffer_name"
INTERFACE = "interface (m_axi, s_axilite)"


@dataclass
class BufferUse:
    name: str
    shape: tuple[int, ...]
    bits: int
    banks: int
    storage: str          # 'bram' | 'uram' | 'lutram' | 'registers'
    bram18k: int = 0
    uram: int = 0

    @property
    def lut(self) -> int:
        return math.ceil(self.bits / LUTRAM_BITS_PER_LUT) if self.storage == "lutram" else 0

    @property
    def ff(self) -> int:
        return self.bits if self.storage == "registers" else 0


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
    lut_by: dict[str, int] = field(default_factory=dict)   # 'operators' | 'loop control' | 'lutram' | ...
    ff_by: dict[str, int] = field(default_factory=dict)    # 'operators' | 'loop control' | 'registers' | ...
    max_copies: int = 1   # the most unrolled copies of one operator

    @property
    def lut(self) -> int:
        return sum(self.lut_by.values())

    @property
    def ff(self) -> int:
        return sum(self.ff_by.values())

    def add(self, part: str, dsp: int = 0, lut: int = 0, ff: int = 0) -> None:
        self.dsp += dsp
        if lut:
            self.lut_by[part] = self.lut_by.get(part, 0) + lut
        if ff:
            self.ff_by[part] = self.ff_by.get(part, 0) + ff

    def get(self, resource: str) -> int:
        """One resource by its fit-table name: DSP, LUT, FF, BRAM18K, URAM."""
        return {"DSP": self.dsp, "LUT": self.lut, "FF": self.ff, "BRAM18K": self.bram18k, "URAM": self.uram}[resource]


RESOURCES = ("DSP", "LUT", "FF", "BRAM18K", "URAM")


@dataclass
class ResourceEstimate:
    kernels: list[KernelResources]
    maxi_bundles: int = 0
    top_args: int = 0

    @property
    def interface(self) -> KernelResources:
        """The top's m_axi adapters and s_axilite control block, as one pseudo-kernel."""
        k = KernelResources(INTERFACE)
        b, lut, ff = MAXI_PER_BUNDLE
        k.bram18k = b * self.maxi_bundles
        k.add("m_axi", lut=lut * self.maxi_bundles, ff=ff * self.maxi_bundles)
        k.add("s_axilite", lut=AXILITE[0] + AXILITE_PER_ARG[0] * self.top_args,
              ff=AXILITE[1] + AXILITE_PER_ARG[1] * self.top_args)
        return k

    @property
    def all_kernels(self) -> list[KernelResources]:
        return [*self.kernels, self.interface]

    def total(self, resource: str) -> int:
        return sum(k.get(resource) for k in self.all_kernels)

    @property
    def dsp(self) -> int:
        return self.total("DSP")

    @property
    def lut(self) -> int:
        return self.total("LUT")

    @property
    def ff(self) -> int:
        return self.total("FF")

    @property
    def bram18k(self) -> int:
        return self.total("BRAM18K")

    @property
    def uram(self) -> int:
        return self.total("URAM")

    @property
    def lutram_bits(self) -> int:
        return sum(k.lutram_bits for k in self.kernels)

    @property
    def register_bits(self) -> int:
        return sum(k.register_bits for k in self.kernels)

    def largest_user(self, resource: str) -> KernelResources:
        return max(self.all_kernels, key=lambda k: k.get(resource))  # ties: the first kernel

    def to_dict(self) -> dict:
        return {
            "dsp": self.dsp, "lut": self.lut, "ff": self.ff, "bram18k": self.bram18k, "uram": self.uram,
            "lutram_bits": self.lutram_bits, "register_bits": self.register_bits,
            "maxi_bundles": self.maxi_bundles, "top_args": self.top_args,
            "kernels": [asdict(k) | {"lut": k.lut, "ff": k.ff} for k in self.all_kernels],
        }

    def table(self, top_n: int | None = None) -> str:
        rows = sorted(self.all_kernels, key=lambda k: (-(k.dsp + k.bram18k + k.uram + k.lut / 1000), k.name))
        if top_n is not None:
            rows = rows[:top_n]
        w = max([len("kernel")] + [len(k.name) for k in rows])
        out = [f"{'kernel':<{w}}  {'DSP':>6}  {'LUT':>9}  {'FF':>9}  {'BRAM18K':>8}  {'URAM':>5}"]
        for k in rows + [None]:
            name, vals = ("total", [self.total(r) for r in RESOURCES]) if k is None else (k.name, [k.get(r) for r in RESOURCES])
            d, l, f, b, u = vals
            out.append(f"{name:<{w}}  {d:>6,}  {l:>9,}  {f:>9,}  {b:>8,}  {u:>5,}")
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


# ------------------------------------------------------------------ operators


def _owner(v: ir.Value):
    o = v.owner
    if isinstance(o, ir.Block):
        return None
    return o.operation if hasattr(o, "operation") else o


def _is_const(v: ir.Value) -> bool:
    o = _owner(v)
    return o is not None and o.name == "arith.constant"


def significant_bits(v: ir.Value) -> int:
    """The width of `v`, looking through sign / zero extensions (an i4 weight extended
    to i32 is a 4-bit operand)."""
    o = _owner(v)
    while o is not None and o.name in ("arith.extsi", "arith.extui"):
        v = o.operands[0]
        o = _owner(v)
    return int_width(v.type) or element_bits(v.type)


def int_op_cost(name: str, op: ir.Operation) -> tuple[int, int, int] | None:
    """(DSP58, LUT, FF) of one integer operator instance (see the module docstring), or
    None for ops that cost nothing (extensions, truncations, casts, constants)."""
    if not op.results or isinstance(op.results[0].type, ir.IndexType):
        return None
    w = int_width(op.results[0].type)
    if w is None:
        if name != "arith.select":
            return None
        w = element_bits(op.results[0].type)
    if name == "arith.cmpi":
        if isinstance(op.operands[0].type, ir.IndexType):
            return None
        return 0, LUT_PER_BIT[name] * (int_width(op.operands[0].type) or 1), 1
    if name in LUT_PER_BIT:
        return 0, LUT_PER_BIT[name] * w, w
    if name in SHIFTS:
        if _is_const(op.operands[1]):
            return 0, 0, 0
        return 0, w * max(1, math.ceil(math.log2(w))) // 2, w
    if name == "arith.muli":
        if any(_is_const(x) for x in op.operands):
            return 0, w, w
        a, b = (significant_bits(x) for x in op.operands)
        if min(a, b) <= NARROW_MUL_BITS:
            return 0, a * b, a + b
        dsp = next((c for wmax, c in INT_MUL_DSP if max(a, b) <= wmax), 6)
        return dsp, 0, w
    if name in DIVIDES:
        if _is_const(op.operands[1]):
            return 0, w, w
        return 0, w * w, w * w
    return None


def op_cost(op: ir.Operation) -> tuple[int, int, int] | None:
    """(DSP58, LUT, FF) of one operator instance, or None when it is free / not an operator."""
    n = op.name
    if not op.results:
        return None
    try:
        bits = element_bits(op.results[0].type)
    except Exception:
        return None
    if n == "arith.cmpf":
        bits = element_bits(op.operands[0].type)
    cost = OP_COST.get((n, bits))
    if cost is not None:
        return cost
    if n.startswith("arith."):
        return int_op_cost(n, op)
    return None


def loop_control(trip: int) -> tuple[int, int]:
    """(LUT, FF) of one loop's control: a bit_length(trip)-bit counter and its FSM."""
    w = max(1, int(trip).bit_length())
    return LOOP_LUT_PER_BIT * w + LOOP_FSM[0], w + LOOP_FSM[1]


# -------------------------------------------------------------------- kernels


def _kernel(name: str, fn: ir.Operation) -> KernelResources:
    k = KernelResources(name)
    k.add("control", lut=FUNC_FSM[0], ff=FUNC_FSM[1])
    unnamed = 0

    def visit(block, mult: int, in_pipe: bool):
        nonlocal unnamed
        for op in _ops(block):
            n = op.name
            if n == "affine.for":
                trip = _trip(op) or 1
                m, pipe = mult, in_pipe
                if in_pipe:
                    m *= trip
                else:
                    u = D.get_unroll(op)
                    full = u is not None and (u == 0 or u >= trip)
                    if u is not None:
                        m *= trip if full else max(u, 1)
                    if not full:
                        lut, ff = loop_control(trip // max(u or 1, 1))
                        k.add("loop control", lut=lut * mult, ff=ff * mult)
                if D.get_pipeline(op) is not None:
                    pipe = True
                visit(op.regions[0].blocks[0], m, pipe)
                continue
            for region in op.regions:
                for b in region.blocks:
                    visit(b, mult, in_pipe)
            if n in ("memref.alloc", "memref.alloca"):
                if BUFFER_NAME in op.attributes:
                    bname = ir.StringAttr(op.attributes[BUFFER_NAME]).value
                else:
                    bname, unnamed = f"alloc{unnamed}", unnamed + 1
                ref = D.BufferRef(fn, alloc_op=op)
                k.buffers.append(buffer_use(bname, op.results[0].type, D.partitions_of(ref), D.storage_of(ref)))
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
                k.add("fifo control", lut=FIFO_CTRL[0], ff=FIFO_CTRL[1])
                continue
            cost = op_cost(op)
            if cost is None:
                continue
            dsp, lut, ff = cost
            k.ops[n] = k.ops.get(n, 0) + mult
            k.add("operators", dsp * mult, lut * mult, ff * mult)
            if mult > k.max_copies and (dsp or lut):
                k.max_copies = mult

    visit(fn.regions[0].blocks[0], 1, False)
    _add_buffers(k)
    return k


def _add_buffers(k: KernelResources) -> None:
    for b in k.buffers:
        k.bram18k += b.bram18k
        k.uram += b.uram
        if b.storage == "lutram":
            k.lutram_bits += b.bits
            k.add("lutram", lut=b.lut)
        elif b.storage == "registers":
            k.register_bits += b.bits
            k.add("registers", ff=b.ff)


def estimate_resources(module: ir.Module, funcs: dict, top: str, effects=None) -> ResourceEstimate:
    kernels = [_kernel(name, fn) for name, fn in funcs.items()]
    for op in _ops(module.body):
        if op.name == "memref.global":
            t = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
            sym = ir.StringAttr(op.attributes["sym_name"]).value
            kr = KernelResources(f"global {sym}", buffers=[buffer_use(sym, t, [], None)])
            _add_buffers(kr)
            kernels.append(kr)
    ft = ir.FunctionType(ir.TypeAttr(funcs[top].attributes["function_type"]).value)
    return ResourceEstimate(kernels, 0, top_args=len(ft.inputs))
