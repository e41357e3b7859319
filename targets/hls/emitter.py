"""Vitis HLS C++ from the scheduled affine/memref/arith IR.

`emit_module(module, top)` walks the IR with the MLIR Python bindings (ops, attributes,
types; never the printed text) and returns an `HlsCode`: the kernel source, a header
with the top function's prototype, the top's ports (for testbenches, host code and v++
connectivity), the loop labels and the emitter's own resource count.

What the C++ looks like
-----------------------
* one C++ function per `func.func`; the top (attribute `mf.top`, or `top=`) is
  `extern "C"` with `#pragma HLS interface mode=m_axi ... bundle=...` on every array
  port and `mode=s_axilite port=return`; memref arguments are C arrays
  (`float x[1][64]`), read-only ones `const`;
* every SSA value is one statement (`float v3 = v1 * v2;`), constants are inlined as
  exactly round-tripping literals, loop induction variables take the loop's name;
* loop labels: a loop named `j` in the band `S_i_j` of kernel `in_proj` (schedule
  address `"in_proj:S_i_j.j"`) is labelled `S_i_j_j:` - band name, `_`, loop
  name, with non-identifier characters (e.g. the `.` of `i.outer`) replaced by `_`.
  `HlsCode.labels[kernel][address] == label` records the mapping;
* directives (see `mambaflow.dialects.directives`) become pragmas at the places Vitis
  HLS 2023.1+ expects them: `pipeline II=` first in the loop body, then `unroll`, then
  `dataflow`; `dataflow` / `inline` first in a function body (after the interface
  pragmas of the top); `array_partition` and `bind_storage` right after the array's
  declaration (locals) or at the start of the body (arguments of non-top functions);
* math goes through `hls::` (hls_math.h); integer types of non-standard width are
  `ap_int<W>`/`ap_uint<W>`;
* an m_axi port of such integers (i4 weights, i17 tables) is packed into `ap_uint<512>`
  beats (`beat_bits=`; UG1448 214-233: interface types must be a power of two bits) and
  read / written element by element with `mf_unpack` / `mf_pack`; kernels that receive
  (a slice of) it take the beats and an element offset. Layout: `packing.py`.

The output depends only on the IR: the same module gives byte-identical C++.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from torch_mlir import ir

from ...dialects import directives as D
from ...flow.effects import ALIAS_OPS as _ALIAS_OPS
from ...flow.effects import Effects
from ...flow.identity import TOP_ATTR, buffer_label
from ...flow.identity import arg_names as ir_arg_names
from ...flow.naming import BAND_ATTR, LOOP_ATTR
from .cxx import (HELPERS, AffinePrinter, HlsEmitError, array_dims, attr_literal, c_ident,
                  dense_values, float_literal, int_literal, int_width, is_index, memref_shape,
                  pointer_declarator, scalar_type, unsigned_type, uses_ap_types)
from . import packing as PK
from . import streams as S


# math dialect op -> hls:: function
def _written_under_guard(buf: ir.Value) -> bool:
    """Whether some store to `buf` sits inside an `scf.if` (see `alloc`)."""
    for u in buf.uses:
        op = u.owner.operation if hasattr(u.owner, "operation") else u.owner
        if op.name not in ("affine.store", "memref.store"):
            continue
        p = op.parent
        while p is not None and p.name != "func.func":
            if p.name == "scf.if":
                return True
            p = p.parent
    return False


_MATH_UNARY = {
    "math.exp": "exp", "math.exp2": "exp2", "math.expm1": "expm1", "math.log": "log",
    "math.log2": "log2", "math.log10": "log10", "math.log1p": "log1p", "math.sqrt": "sqrt",
    "math.rsqrt": "rsqrt", "math.tanh": "tanh", "math.sin": "sin", "math.cos": "cos",
    "math.tan": "tan", "math.atan": "atan", "math.erf": "erf", "math.floor": "floor",
    "math.ceil": "ceil", "math.trunc": "trunc", "math.round": "round", "math.absf": "fabs",
}
_FBIN = {"arith.addf": "+", "arith.subf": "-", "arith.mulf": "*", "arith.divf": "/"}
_IBIN = {"arith.addi": "+", "arith.subi": "-", "arith.muli": "*", "arith.andi": "&",
         "arith.ori": "|", "arith.xori": "^", "arith.divsi": "/", "arith.remsi": "%",
         "arith.shli": "<<", "arith.shrsi": ">>"}
_IUBIN = {"arith.divui": "/", "arith.remui": "%", "arith.shrui": ">>"}
# arith.cmpf predicates (enum order) -> C++ template; {a} {b}
_CMPF = {
    0: "false", 1: "{a} == {b}", 2: "{a} > {b}", 3: "{a} >= {b}", 4: "{a} < {b}", 5: "{a} <= {b}",
    6: "({a} < {b} || {a} > {b})", 7: "({a} == {a} && {b} == {b})", 8: "!({a} < {b} || {a} > {b})",
    9: "!({a} <= {b})", 10: "!({a} < {b})", 11: "!({a} >= {b})", 12: "!({a} > {b})",
    13: "{a} != {b}", 14: "({a} != {a} || {b} != {b})", 15: "true",
}
_CMPI = {0: "==", 1: "!=", 2: "<", 3: "<=", 4: ">", 5: ">=", 6: "<", 7: "<=", 8: ">", 9: ">="}
_PURE_SKIP = {"memref.dealloc"}


@dataclass(frozen=True)
class Port:
    """One argument of the emitted top function."""

    name: str                 # C identifier in the emitted code
    source: str               # the design's port name (e.g. 'conv_state')
    elem: str                 # C element type ('float', 'int64_t', ...)
    shape: tuple[int, ...]    # () for a scalar argument
    role: str                 # 'input' | 'state' | 'weight' | 'output' (design roles)
    read: bool
    written: bool
    interface: str            # 'm_axi' | 's_axilite' | 'axis'
    bundle: str | None = None
    # A packed m_axi port (elements of a width not in 1/8/16/32/64 bits): the top's
    # argument is `ap_uint<beat_bits> name[beats]`, element k of the row-major `shape`
    # is bits [(k % E) * elem_bits, ...) of beat k / E, E = elems_per_beat; see
    # mambaflow.targets.hls.packing (pack / unpack). 0 when not packed.
    elem_bits: int = 0
    beat_bits: int = 0
    elems_per_beat: int = 0
    beats: int = 0

    @property
    def packed(self) -> bool:
        return self.beats > 0

    @property
    def arg_type(self) -> str:
        """The C element type of the top's argument (`elem`, or the beat type)."""
        return f"ap_uint<{self.beat_bits}>" if self.packed else self.elem

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def numpy_dtype(self) -> str:
        return {"float": "float32", "double": "float64", "int64_t": "int64", "int32_t": "int32",
                "int16_t": "int16", "int8_t": "int8", "bool": "bool", "int": "int32"}.get(self.elem, "")

    @property
    def nbytes(self) -> int:
        """Off-chip bytes of the argument (of its beats, when packed)."""
        import numpy as np

        if self.packed:
            return self.beats * self.beat_bits // 8
        return self.size * np.dtype(self.numpy_dtype).itemsize


@dataclass
class HlsCode:
    """The emitted design: sources, the top's ports and what the emitter counted."""

    top: str
    source: str                       # kernels.cpp
    header: str                       # kernels.h
    ports: list[Port]
    functions: list[str]
    labels: dict[str, dict[str, str]]  # function -> "band.loop" -> C label
    pragmas: dict[str, list[str]]      # function -> pragma lines in order of appearance
    resources: object = None          # resources.ResourceEstimate
    uses_streams: bool = False
    warnings: list[str] = field(default_factory=list)
    fifo_peaks: dict = field(default_factory=dict)  # dataflow function -> FIFO -> peak occupancy

    def write(self, directory: str | Path, stem: str = "kernels") -> list[Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = []
        for name, text in ((f"{stem}.cpp", self.source), (f"{stem}.h", self.header)):
            p = d / name
            p.write_text(text)
            out.append(p)
        return out


# ------------------------------------------------------------------ IR helpers


def _ops(block: ir.Block) -> Iterable[ir.Operation]:
    for op in block.operations:
        yield op.operation


def _walk(op: ir.Operation) -> Iterable[ir.Operation]:
    for region in op.regions:
        for block in region.blocks:
            for child in _ops(block):
                yield child
                yield from _walk(child)


def _sym(op: ir.Operation) -> str:
    return ir.StringAttr(op.attributes["sym_name"]).value


def _str_attr(op: ir.Operation, name: str) -> str | None:
    if name not in op.attributes:
        return None
    return ir.StringAttr(op.attributes[name]).value


def _callee(op: ir.Operation) -> str:
    return ir.FlatSymbolRefAttr(op.attributes["callee"]).value


def _func_type(fn: ir.Operation) -> ir.FunctionType:
    return ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)


def _seg_sizes(op: ir.Operation) -> list[int]:
    return list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))


def _const_int(v: ir.Value) -> int | None:
    owner = v.owner
    if isinstance(owner, ir.Block):
        return None
    owner = owner.operation if hasattr(owner, "operation") else owner
    if owner.name == "arith.constant":
        a = owner.attributes["value"]
        if isinstance(a, ir.IntegerAttr):
            return a.value
    return None


def _has_const_bounds(op: ir.Operation) -> bool:
    lb = ir.AffineMapAttr(op.attributes["lowerBoundMap"]).value
    ub = ir.AffineMapAttr(op.attributes["upperBoundMap"]).value
    return (len(lb.results) == 1 and len(ub.results) == 1 and isinstance(lb.results[0], ir.AffineConstantExpr)
            and isinstance(ub.results[0], ir.AffineConstantExpr))


def _loop_trip(op: ir.Operation) -> int | None:
    """Constant trip count of an affine.for, or None: constant bounds, or bounds over the
    same operands whose difference is constant (the inner loop of a split)."""
    lb = ir.AffineMapAttr(op.attributes["lowerBoundMap"]).value
    ub = ir.AffineMapAttr(op.attributes["upperBoundMap"]).value
    if len(lb.results) != 1 or len(ub.results) != 1:
        return None
    step = ir.IntegerAttr(op.attributes["step"]).value
    l, u = lb.results[0], ub.results[0]
    if isinstance(l, ir.AffineConstantExpr) and isinstance(u, ir.AffineConstantExpr):
        return max(0, -(-(u.value - l.value) // step))
    nlb, nub, _ = _seg_sizes(op)
    ops = list(op.operands)
    if (nlb != nub or lb.n_dims != ub.n_dims or lb.n_symbols != ub.n_symbols
            or any(a != b for a, b in zip(ops[:nlb], ops[nlb:nlb + nub]))):
        return None
    diff = ir.AffineExpr.simplify_affine_expr(u - l, lb.n_dims, lb.n_symbols)
    try:
        span = ir.AffineConstantExpr(diff).value
    except (ValueError, TypeError):
        return None
    return max(0, -(-span // step))


# ------------------------------------------------------------------ emitters


@dataclass
class _Ctx:
    """Module-wide emission state."""

    funcs: dict[str, ir.Operation]
    effects: Effects
    globals: dict[str, str]            # memref.global symbol -> C name
    arg_names: dict[str, list[str]] = field(default_factory=dict)
    bound: dict[str, dict[int, str]] = field(default_factory=dict)  # kernel arg -> top port
    packed: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)  # fn -> arg -> (w, beat bits)
    warnings: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    needs_ap: bool = False
    needs_math: bool = False
    needs_stream: bool = False
    needs_limits: bool = False
    needs_cstring: bool = False


class _FuncEmitter:
    def __init__(self, ctx: _Ctx, fn: ir.Operation, is_top: bool, arg_names: list[str],
                 ports: list[Port] | None):
        self.ctx = ctx
        self.fn = fn
        self.fname = _sym(fn)
        self.is_top = is_top
        self.ports = ports
        self.lines: list[str] = []
        self.pragmas: list[str] = []
        self.labels: dict[str, str] = {}
        self.used_labels: set[str] = set()
        self.names: dict[ir.Value, str] = {}
        self.literals: dict[ir.Value, str] = {}
        # memrefs that are (views of) packed ports: value -> (w, beat bits, beats array, element offset)
        self.views: dict[ir.Value, tuple[int, int, str, str]] = {}
        self.nonneg: set[ir.Value] = set()
        self.taken: set[str] = set(ctx.funcs) | set(ctx.globals.values()) | set(HELPERS)
        self.scopes: list[set[str]] = [set()]
        self.counter = 0
        self.buf_counter = 0
        self.indent = 1
        self.arg_names = arg_names
        self.band: list[str | None] = []
        self.written_views = self._written_values()

    def _written_values(self) -> set[ir.Value]:
        """Memref values written through (directly, by a callee, or via a view of them)."""
        sources: dict[ir.Value, list[ir.Value]] = {}
        direct: list[ir.Value] = []
        for op in _walk(self.fn):
            n = op.name
            if n in _ALIAS_OPS:
                sources[op.results[0]] = [op.operands[0]]
            elif n in ("scf.if", "affine.if"):
                for i, res in enumerate(op.results):
                    srcs = []
                    for region in op.regions:
                        for block in region.blocks:
                            term = list(_ops(block))[-1]
                            if i < len(term.operands):
                                srcs.append(term.operands[i])
                    sources[res] = srcs
            elif n in ("affine.store", "memref.store"):
                direct.append(op.operands[1])
            elif n == "memref.copy":
                direct.append(op.operands[1])
            elif n == "func.call":
                w = self.ctx.effects.written.get(_callee(op), set())
                direct += [v for i, v in enumerate(op.operands) if i in w]
        out: set[ir.Value] = set()
        todo = list(direct)
        while todo:
            v = todo.pop()
            if v in out:
                continue
            out.add(v)
            todo += sources.get(v, [])
        return out

    # ---------------------------------------------------------------- naming
    def _where(self, op: ir.Operation | None = None) -> str:
        loops = [b for b in self.band if b]
        s = f"function '{self.fname}'"
        if loops:
            s += f", loop {loops[-1]}"
        if op is not None:
            s += f", op '{op.name}'"
        return s

    def _fresh(self, base: str) -> str:
        base = c_ident(base)
        name, k = base, 1
        while name in self.taken or any(name in s for s in self.scopes):
            name = f"{base}_{k}"
            k += 1
        self.scopes[-1].add(name)
        return name

    def _value_name(self) -> str:
        while True:
            name = f"v{self.counter}"
            self.counter += 1
            if name not in self.taken and not any(name in s for s in self.scopes):
                self.scopes[-1].add(name)
                return name

    def e(self, v: ir.Value) -> str:
        """The C expression of an SSA value."""
        if v in self.literals:
            return self.literals[v]
        if v in self.names:
            return self.names[v]
        raise HlsEmitError(f"{self._where()}: internal: value {v} used before it was emitted")

    def emit(self, line: str) -> None:
        self.lines.append("  " * self.indent + line)

    def pragma(self, text: str) -> None:
        self.pragmas.append(text)
        self.lines.append("#pragma HLS " + text)

    # ------------------------------------------------------------ signature
    def signature(self) -> str:
        ft = _func_type(self.fn)
        entry = self.fn.regions[0].blocks[0]
        params = []
        written = self.ctx.effects.written[self.fname]
        packed = self.ctx.packed.get(self.fname, {})
        for i, (arg, t) in enumerate(zip(entry.arguments, ft.inputs)):
            name = self._fresh(self.arg_names[i])
            self.names[arg] = name
            if i in packed:
                params += self._packed_param(arg, name, packed[i], i in written, i)
            else:
                params.append(self._param_decl(name, t, i in written, i))
        if len(ft.results) > 1:
            raise HlsEmitError(f"function '{self.fname}' returns {len(ft.results)} values; the HLS emitter supports at most one scalar result")
        ret = "void" if not ft.results else scalar_type(ft.results[0], self._where())
        prefix = 'extern "C" ' if self.is_top else ""
        if not params:
            return f"{prefix}{ret} {self.fname}()"
        return f"{prefix}{ret} {self.fname}(\n" + ",\n".join("    " + p for p in params) + ")"

    def _param_decl(self, name: str, t: ir.Type, written: bool, index: int) -> str:
        st = S.stream_type(t)
        if st is not None:
            self.ctx.needs_stream = True
            return f"hls::stream<{st}> &{name}"
        if isinstance(t, ir.MemRefType):
            shape = memref_shape(t, self._where())
            elem = self._elem(t.element_type)
            return f"{'' if written else 'const '}{elem} {name}{array_dims(shape)}"
        return f"{scalar_type(t, self._where())} {name}"

    def _packed_param(self, arg: ir.Value, name: str, pk: tuple[int, int], written: bool, index: int) -> list[str]:
        """A packed port: the top takes its beats; a kernel takes a pointer into them and
        the element offset of its view (a layer's slice of a stacked weight, say)."""
        w, bb = pk
        self.ctx.needs_ap = True
        c = "" if written else "const "
        if self.is_top:
            self.views[arg] = (w, bb, name, "")
            return [f"{c}ap_uint<{bb}> {name}[{self.ports[index].beats}]"]
        at = self._fresh(f"{name}_at")
        self.views[arg] = (w, bb, name, at)
        return [f"{c}ap_uint<{bb}> *{name}", f"int {at}"]

    def _elem(self, t: ir.Type) -> str:
        if uses_ap_types(t):
            self.ctx.needs_ap = True
        return scalar_type(t, self._where())

    # ----------------------------------------------------------------- body
    def body(self) -> list[str]:
        entry = self.fn.regions[0].blocks[0]
        if self.is_top:
            self._interface_pragmas()
        if D.is_dataflow(self.fn):
            self.pragma("dataflow")
        if D.is_inline(self.fn):
            if self.is_top:
                raise HlsEmitError(f"function '{self.fname}' is the top function and cannot be inlined")
            self.pragma("inline")
        for i, arg in enumerate(entry.arguments):
            if isinstance(arg.type, ir.MemRefType):
                self._buffer_pragmas(self.names[arg], D.BufferRef(self.fn, arg=i), arg.type, is_arg=True,
                                     packed=arg in self.views)
        self.block(entry)
        return self.lines

    def _interface_pragmas(self) -> None:
        assert self.ports is not None
        for p in self.ports:
            if p.interface == "m_axi":
                depth = p.beats if p.packed else p.size
                self.pragma(f"interface mode=m_axi port={p.name} offset=slave bundle={p.bundle} depth={depth}")
            elif p.interface == "axis":
                self.pragma(f"interface mode=axis port={p.name}")
            else:
                self.pragma(f"interface mode=s_axilite port={p.name}")
        self.pragma("interface mode=s_axilite port=return")

    def _buffer_pragmas(self, name: str, ref, t: ir.MemRefType, is_arg: bool, packed: bool = False) -> None:
        parts = D.partitions_of(ref)
        store = D.storage_of(ref)
        what = f"argument '{name}'" if is_arg else f"buffer '{name}'"
        if packed and not self.is_top:
            if parts or store:
                self.ctx.warnings.append(
                    f"{self._where()}: {what} is a packed m_axi port (AXI beats, off chip); its "
                    "array_partition / bind_storage directives are dropped. Copy it into a local buffer "
                    "(buffer_at) and partition that instead.")
            return
        if self.is_top and is_arg and (parts or store):
            raise HlsEmitError(
                f"{self._where()}: {what} is a top-level port (an m_axi interface in DDR/HBM); "
                "Vitis cannot partition or bind it on chip. Partition a local copy instead "
                "(buffer_at / a local buffer in the kernel that reads it)."
            )
        port = self.ctx.bound.get(self.fname, {}).get(ref.arg) if is_arg else None
        if port is not None and (parts or store):
            self.ctx.warnings.append(
                f"{self._where()}: {what} is the top-level port '{port}' (m_axi, off chip); Vitis HLS "
                "rejects array_partition / bind_storage on m_axi arrays. Copy it into a local buffer "
                "(buffer_at) and partition that instead."
            )
        rank = t.rank
        for p in parts:
            if p.kind not in D.PARTITION_KINDS:
                raise HlsEmitError(f"{self._where()}: {what}: unknown partition kind '{p.kind}'")
            if not 0 <= p.dim <= max(rank, 1):
                raise HlsEmitError(f"{self._where()}: {what}: partition dim {p.dim} out of range for rank {rank}")
            if p.kind == "complete":
                self.pragma(f"array_partition variable={name} type=complete dim={p.dim}")
            else:
                if p.factor < 1:
                    raise HlsEmitError(f"{self._where()}: {what}: {p.kind} partition needs a factor >= 1")
                self.pragma(f"array_partition variable={name} type={p.kind} factor={p.factor} dim={p.dim}")
        if store is not None:
            if store not in D.STORAGE_KINDS:
                raise HlsEmitError(f"{self._where()}: {what}: unknown storage '{store}' (use {', '.join(D.STORAGE_KINDS)})")
            self.pragma(f"bind_storage variable={name} type=ram_2p impl={store}")

    def block(self, block: ir.Block) -> None:
        for op in _ops(block):
            self.op(op)

    # -------------------------------------------------------------- op dispatch
    def op(self, op: ir.Operation) -> None:
        n = op.name
        h = _HANDLERS.get(n)
        if h is not None:
            h(self, op)
            return
        if S.is_stream_op(op):
            self.ctx.needs_stream = True
            S.emit(self, op)
            return
        if n in _PURE_SKIP:
            return
        if n in _FBIN:
            return self.assign(op, f"{self.e(op.operands[0])} {_FBIN[n]} {self.e(op.operands[1])}")
        if n in _IBIN:
            return self._int_binary(op, _IBIN[n], unsigned=False)
        if n in _IUBIN:
            return self._int_binary(op, _IUBIN[n], unsigned=True)
        if n in _MATH_UNARY:
            self.ctx.needs_math = True
            return self.assign(op, f"hls::{_MATH_UNARY[n]}({self.e(op.operands[0])})")
        raise HlsEmitError(
            f"{self._where(op)}: the HLS emitter does not support '{n}'. Supported: affine "
            "(for, if, load, store, apply, min, max), scf (for, if), memref (alloc, load, "
            "store, get_global, subview of leading indices, cast, copy), arith, math, "
            "func.call and the project's stream ops. Lower or rewrite the op before emission."
        )

    def assign(self, op: ir.Operation, expr: str, ctype: str | None = None) -> None:
        """Emit `T v = expr;` for a one-result op (skipped when the result is unused)."""
        res = op.results[0]
        if not _has_uses(res):
            return
        ctype = ctype or self._elem(res.type)
        name = self._value_name()
        self.names[res] = name
        self.emit(f"{ctype} {name} = {expr};")

    def _int_binary(self, op: ir.Operation, sym: str, unsigned: bool) -> None:
        a, b = self.e(op.operands[0]), self.e(op.operands[1])
        t = op.results[0].type
        if unsigned:
            ut = unsigned_type(t, self._where(op))
            st = self._elem(t)
            return self.assign(op, f"{st}({ut}({a}) {sym} {ut}({b}))")
        if int_width(t) == 1:
            return self.assign(op, f"{a} {sym} {b}" if sym in "&|^" else f"bool(({a} {sym} {b}) & 1)")
        expr = f"{a} {sym} {b}"
        if not is_index(t) and int_width(t) in (8, 16):
            expr = f"{self._elem(t)}({expr})"  # C promotes to int: wrap back
        self.assign(op, expr)
        if is_index(t) and sym in ("+", "*") and all(self._nonneg(x) for x in op.operands):
            self.nonneg.add(op.results[0])
        if is_index(t) and sym in ("/", "%") and all(self._nonneg(x) for x in op.operands):
            self.nonneg.add(op.results[0])

    def _nonneg(self, v: ir.Value) -> bool:
        if v in self.nonneg:
            return True
        c = _const_int(v)
        return c is not None and c >= 0

    # ----------------------------------------------------------- affine maps
    def _printer(self, amap: ir.AffineMap, operands: list[ir.Value]) -> AffinePrinter:
        nd = amap.n_dims
        dims = [self.e(v) for v in operands[:nd]]
        syms = [self.e(v) for v in operands[nd:]]
        return AffinePrinter(dims, syms, [self._nonneg(v) for v in operands[:nd]],
                             [self._nonneg(v) for v in operands[nd:]], self.ctx.helpers)

    def _indices(self, amap: ir.AffineMap | None, operands: list[ir.Value]) -> list[str]:
        if amap is None:
            return [self.e(v) for v in operands]
        pr = self._printer(amap, operands)
        return [pr(r) for r in amap.results]

    def _index(self, mem: ir.Value, idx: list[str]) -> str:
        """`mem[i][j]` for an array; for a packed view, the element number in its beats."""
        if mem in self.views:
            return self._linear(self.views[mem][3], memref_shape(mem.type, self._where()), idx)
        return self.e(mem) + ("".join(f"[{i}]" for i in idx) if idx else "[0]")

    @staticmethod
    def _linear(offset: str, shape: tuple[int, ...], idx: list[str]) -> str:
        """offset + the row-major element number of `idx` in `shape`."""
        terms = [offset] if offset else []
        stride = 1
        idx = list(idx) + ["0"] * (len(shape) - len(idx))
        for d, i in reversed(list(zip(shape, idx))):
            if i != "0":
                if stride != 1:
                    i = f"{i if i.isidentifier() or i.isdigit() else f'({i})'} * {stride}"
                terms.append(i)
            stride *= d
        return " + ".join(reversed(terms)) or "0"

    def _read(self, mem: ir.Value, idx: list[str]) -> str:
        if mem in self.views:
            w, bb, base, _ = self.views[mem]
            self.ctx.helpers.add("mf_unpack")
            return f"mf_unpack<{w}, {bb}>({base}, {self._index(mem, idx)})"
        return self._index(mem, idx)

    def _write(self, mem: ir.Value, idx: list[str], value: str) -> None:
        if mem in self.views:
            w, bb, base, _ = self.views[mem]
            self.ctx.helpers.add("mf_pack")
            self.emit(f"mf_pack<{w}, {bb}>({base}, {self._index(mem, idx)}, {value});")
        else:
            self.emit(f"{self._index(mem, idx)} = {value};")

    def _load(self, op: ir.Operation, expr: str) -> None:
        """A load. An `ap_int<W>` value whose every use sign-extends it is held in the
        next C integer type: the same value, and no ap_int copy, whose construction trips
        -Werror=uninitialized inside AMD's ap_private.h (g++ 12, -O2)."""
        t = op.results[0].type
        w = int_width(t)
        uses = _uses(op.results[0])
        if uses_ap_types(t) and uses and all(_owner(u).name == "arith.extsi" for u in uses):
            return self.assign(op, expr, next(f"int{b}_t" for b in (8, 16, 32, 64) if w <= b))
        self.assign(op, expr)

    def _bound(self, amap: ir.AffineMap, operands: list[ir.Value], combine: str) -> str:
        pr = self._printer(amap, operands)
        vals = [pr(r) for r in amap.results]
        if len(vals) == 1:
            return vals[0]
        self.ctx.helpers.add(combine)
        out = vals[-1]
        for v in reversed(vals[:-1]):
            out = f"{combine}({v}, {out})"
        return out

    def _bound_nonneg(self, amap: ir.AffineMap, operands: list[ir.Value]) -> bool:
        pr = self._printer(amap, operands)
        return all(pr.nonneg(r) for r in amap.results)

    # --------------------------------------------------------------- loops
    def _label(self, loop_op: ir.Operation, kind: str) -> str | None:
        lname = _str_attr(loop_op, LOOP_ATTR)
        bname = _str_attr(loop_op, BAND_ATTR)
        if bname is not None:
            self.band.append(bname)
        else:
            self.band.append(None)
        band = next((b for b in reversed(self.band) if b), None)
        if lname is None:
            return None
        addr = f"{band}.{lname}" if band else lname
        base = c_ident(f"{band}_{lname}" if band else lname)
        label, k = base, 1
        while label in self.used_labels:
            label = f"{base}_{k}"
            k += 1
        self.used_labels.add(label)
        self.labels[addr] = label
        return label

    def _loop_pragmas(self, op: ir.Operation, trip: int | None) -> None:
        ii = D.get_pipeline(op)
        if ii is not None:
            if ii < 1:
                raise HlsEmitError(f"{self._where(op)}: pipeline II must be >= 1, got {ii}")
            self.pragma(f"pipeline II={ii}" + (" rewind" if D.is_rewind(op) else ""))
        elif D.is_rewind(op):
            raise HlsEmitError(f"{self._where(op)}: 'rewind' needs a pipelined loop (pipeline_ii)")
        u = D.get_unroll(op)
        if u is not None:
            if u < 0:
                raise HlsEmitError(f"{self._where(op)}: unroll factor must be >= 0 (0 = full), got {u}")
            if u == 0 or (trip is not None and u >= trip):
                if trip is None:
                    raise HlsEmitError(f"{self._where(op)}: full unroll needs a constant trip count")
                self.pragma("unroll")
            elif u > 1:
                self.pragma(f"unroll factor={u}")
        if D.is_dataflow(op):
            self.pragma("dataflow")
        if trip is not None and op.name == "affine.for" and not _has_const_bounds(op):
            self.pragma(f"loop_tripcount min={trip} max={trip} avg={trip}")

    def affine_for(self, op: ir.Operation) -> None:
        nlb, nub, nit = _seg_sizes(op)
        operands = list(op.operands)
        lb_map = ir.AffineMapAttr(op.attributes["lowerBoundMap"]).value
        ub_map = ir.AffineMapAttr(op.attributes["upperBoundMap"]).value
        lb = self._bound(lb_map, operands[:nlb], "mf_max")
        ub = self._bound(ub_map, operands[nlb:nlb + nub], "mf_min")
        step = ir.IntegerAttr(op.attributes["step"]).value
        inits = operands[nlb + nub:]
        self._for(op, lb, ub, step, inits, self._bound_nonneg(lb_map, operands[:nlb]), _loop_trip(op))

    def scf_for(self, op: ir.Operation) -> None:
        lb, ub, st, *inits = list(op.operands)
        step = _const_int(st)
        stepx = str(step) if step is not None else self.e(st)
        self._for(op, self.e(lb), self.e(ub), stepx if step is None else step, inits, self._nonneg(lb), None)

    def _for(self, op, lb: str, ub: str, step, inits: list[ir.Value], lb_nonneg: bool, trip: int | None) -> None:
        body = op.regions[0].blocks[0]
        label = self._label(op, "for")
        # loop-carried values live in variables declared before the loop
        carried = []
        for init, res in zip(inits, op.results):
            name = self._value_name()
            self.emit(f"{self._elem(res.type)} {name} = {self.e(init)};")
            self.names[res] = name
            carried.append(name)
        self.scopes.append(set())
        iv = body.arguments[0]
        lname = _str_attr(op, LOOP_ATTR)
        ivname = self._fresh(lname if lname else "i")
        self.names[iv] = ivname
        if lb_nonneg:
            self.nonneg.add(iv)
        for arg, name in zip(list(body.arguments)[1:], carried):
            self.names[arg] = name
        inc = f"++{ivname}" if step == 1 else f"{ivname} += {step}"
        head = f"for (int {ivname} = {lb}; {ivname} < {ub}; {inc}) {{"
        self.emit(f"{label}: {head}" if label else head)
        self.indent += 1
        self._loop_pragmas(op, trip)
        for inner in _ops(body):
            if inner.name in ("affine.yield", "scf.yield"):
                self._yield_into(inner, carried)
            else:
                self.op(inner)
        self.indent -= 1
        self.emit("}")
        self.scopes.pop()
        self.band.pop()

    def _yield_into(self, y: ir.Operation, targets: list[str]) -> None:
        srcs = [self.e(v) for v in y.operands]
        for t, s in zip(targets, srcs):
            if t != s:
                self.emit(f"{t} = {s};")

    # ------------------------------------------------------------ conditionals
    def _if(self, op: ir.Operation, cond: str) -> None:
        targets = []
        for res in op.results:
            name = self._value_name()
            self.names[res] = name
            targets.append(name)
            if isinstance(res.type, ir.MemRefType):
                if any(v in self.views for r in op.regions for b in r.blocks for v in list(_ops(b))[-1].operands):
                    raise HlsEmitError(f"{self._where(op)}: a conditional choosing between packed m_axi ports "
                                       "is not supported; branch around the accesses instead")
                shape = memref_shape(res.type, self._where(op))
                const = res not in self.written_views
                self.emit(pointer_declarator(self._elem(res.type.element_type), name, shape, const) + " = nullptr;")
            else:
                self.emit(f"{self._elem(res.type)} {name} = {{}};")
        self.emit(f"if ({cond}) {{")
        for k, region in enumerate(op.regions):
            if not region.blocks:
                continue
            block = region.blocks[0]
            stmts = list(_ops(block))
            if k == 1:
                if len(stmts) <= 1 and not stmts[0].operands:
                    continue  # empty else
                self.emit("} else {")
            self.indent += 1
            self.scopes.append(set())
            for inner in stmts:
                if inner.name in ("scf.yield", "affine.yield"):
                    self._yield_into(inner, targets)
                else:
                    self.op(inner)
            self.scopes.pop()
            self.indent -= 1
        self.emit("}")

    def scf_if(self, op: ir.Operation) -> None:
        self._if(op, self.e(op.operands[0]))

    def affine_if(self, op: ir.Operation) -> None:
        iset = ir.IntegerSetAttr(op.attributes["condition"]).value
        operands = list(op.operands)
        nd = iset.n_dims
        pr = AffinePrinter([self.e(v) for v in operands[:nd]], [self.e(v) for v in operands[nd:]],
                           [self._nonneg(v) for v in operands[:nd]], [self._nonneg(v) for v in operands[nd:]],
                           self.ctx.helpers)
        conds = [f"{pr(c.expr)} {'==' if c.is_eq else '>='} 0" for c in iset.constraints]
        self._if(op, " && ".join(conds) if conds else "true")

    # ----------------------------------------------------------------- memory
    def affine_load(self, op: ir.Operation) -> None:
        amap = ir.AffineMapAttr(op.attributes["map"]).value
        ops = list(op.operands)
        self._load(op, self._read(ops[0], self._indices(amap, ops[1:])))

    def affine_store(self, op: ir.Operation) -> None:
        amap = ir.AffineMapAttr(op.attributes["map"]).value
        ops = list(op.operands)
        self._write(ops[1], self._indices(amap, ops[2:]), self.e(ops[0]))

    def memref_load(self, op: ir.Operation) -> None:
        ops = list(op.operands)
        self._load(op, self._read(ops[0], self._indices(None, ops[1:])))

    def memref_store(self, op: ir.Operation) -> None:
        ops = list(op.operands)
        self._write(ops[1], self._indices(None, ops[2:]), self.e(ops[0]))

    def affine_apply(self, op: ir.Operation) -> None:
        amap = ir.AffineMapAttr(op.attributes["map"]).value
        ops = list(op.operands)
        pr = self._printer(amap, ops)
        self.assign(op, pr(amap.results[0]), "int")
        if pr.nonneg(amap.results[0]):
            self.nonneg.add(op.results[0])

    def affine_minmax(self, op: ir.Operation) -> None:
        amap = ir.AffineMapAttr(op.attributes["map"]).value
        self.assign(op, self._bound(amap, list(op.operands), "mf_min" if op.name == "affine.min" else "mf_max"), "int")

    def alloc(self, op: ir.Operation) -> None:
        t = op.results[0].type
        shape = memref_shape(t, self._where(op))
        if list(op.operands):
            raise HlsEmitError(f"{self._where(op)}: dynamically sized alloc; HLS arrays need static sizes")
        elem = self._elem(t.element_type)
        label = _str_attr(op, "buffer_name") if not self.is_top else None
        if label is None and self.is_top:
            label = buffer_label(op.results[0], self.ctx.effects)
        if label is not None:
            name = self._fresh(c_ident(label))
        else:
            name = self._fresh(f"buf{self.buf_counter}")
            self.buf_counter += 1
        self.names[op.results[0]] = name
        # a local written under a guard (a flattened loop's register set-up) starts at zero:
        # g++ cannot follow the guard under -Werror; in hardware it is a reset value
        init = " = {}" if _written_under_guard(op.results[0]) else ""
        self.emit(f"{elem} {name}{array_dims(shape)}{init};")
        self._buffer_pragmas(name, D.BufferRef(self.fn, alloc_op=op), t, is_arg=False)

    def get_global(self, op: ir.Operation) -> None:
        sym = ir.FlatSymbolRefAttr(op.attributes["name"]).value
        self.names[op.results[0]] = self.ctx.globals[sym]

    def subview(self, op: ir.Operation) -> None:
        """A subview selecting leading indices of a contiguous array: a pointer into it."""
        src = op.operands[0]
        st = src.type
        rt = op.results[0].type
        offs = list(ir.DenseI64ArrayAttr(op.attributes["static_offsets"]))
        sizes = list(ir.DenseI64ArrayAttr(op.attributes["static_sizes"]))
        strides = list(ir.DenseI64ArrayAttr(op.attributes["static_strides"]))
        dyn = iter(list(op.operands)[1:])
        src_shape, res_shape = memref_shape(st, self._where(op)), memref_shape(rt, self._where(op))
        dropped = len(src_shape) - len(res_shape)
        bad = "" if all(s == 1 for s in strides) else "non-unit strides"
        idx = []
        for k, (o, s) in enumerate(zip(offs, sizes)):
            dynamic = o == ir.ShapedType.get_dynamic_stride_or_offset()
            ex = self.e(next(dyn)) if dynamic else str(o)
            if k < dropped:
                if s != 1:
                    bad = bad or f"dropped dim {k} has size {s}"
                idx.append(ex)
            elif k == dropped:
                if tuple(sizes[k + 1:]) != tuple(src_shape[k + 1:]):
                    bad = bad or "partial trailing dimensions"
                lead = ex
            elif o != 0:
                bad = bad or f"offset in dim {k}"
        if bad:
            raise HlsEmitError(
                f"{self._where(op)}: only subviews that fix leading indices of a contiguous "
                f"array are supported ({bad}); copy the window into a local buffer instead"
            )
        if src in self.views:  # a view into packed beats: only its element offset moves
            w, bb, beats, off = self.views[src]
            at = self._linear(off, src_shape, idx + [lead])
            if not at.isidentifier() and not at.isdigit():
                name = self._value_name()
                self.emit(f"int {name} = {at};")
                at = name
            self.views[op.results[0]] = (w, bb, beats, at)
            self.names[op.results[0]] = beats
            return
        base = self.e(src) + "".join(f"[{i}]" for i in idx)
        expr = base if lead == "0" else f"&{base}[{lead}]"
        name = self._value_name()
        self.names[op.results[0]] = name
        elem = self._elem(rt.element_type)
        const = op.results[0] not in self.written_views
        self.emit(pointer_declarator(elem, name, res_shape, const) + f" = {expr};")

    def cast(self, op: ir.Operation) -> None:
        self.names[op.results[0]] = self.e(op.operands[0])
        if op.operands[0] in self.views:
            self.views[op.results[0]] = self.views[op.operands[0]]

    def copy(self, op: ir.Operation) -> None:
        src, dst = op.operands
        shape = memref_shape(dst.type, self._where(op))
        ivs = []
        for d in shape:
            iv = self._fresh(f"c{len(ivs)}")
            self.emit(f"for (int {iv} = 0; {iv} < {d}; ++{iv}) {{")
            self.indent += 1
            ivs.append(iv)
        self._write(dst, ivs, self._read(src, ivs))
        for _ in shape:
            self.indent -= 1
            self.emit("}")

    # ------------------------------------------------------------ arithmetic
    def constant(self, op: ir.Operation) -> None:
        res = op.results[0]
        self.literals[res] = attr_literal(op.attributes["value"], res.type, self._where(op))
        if "numeric_limits" in self.literals[res]:
            self.ctx.needs_limits = True

    def negf(self, op: ir.Operation) -> None:
        self.assign(op, f"-{self.e(op.operands[0])}")

    def remf(self, op: ir.Operation) -> None:
        self.ctx.needs_math = True
        self.assign(op, f"hls::fmod({self.e(op.operands[0])}, {self.e(op.operands[1])})")

    def minmaxf(self, op: ir.Operation) -> None:
        a, b = self.e(op.operands[0]), self.e(op.operands[1])
        n = op.name
        if n in ("arith.maximumf", "arith.minimumf"):
            h = "mf_maximumf" if n == "arith.maximumf" else "mf_minimumf"
            self.ctx.helpers.add(h)
            return self.assign(op, f"{h}({a}, {b})")
        self.ctx.needs_math = True
        return self.assign(op, f"hls::{'fmax' if n == 'arith.maxnumf' else 'fmin'}({a}, {b})")

    def minmaxi(self, op: ir.Operation) -> None:
        a, b = self.e(op.operands[0]), self.e(op.operands[1])
        n = op.name
        if n in ("arith.maxui", "arith.minui"):
            ut = unsigned_type(op.results[0].type)
            a, b = f"{ut}({a})", f"{ut}({b})"
        h = "mf_max" if n in ("arith.maxsi", "arith.maxui") else "mf_min"
        self.ctx.helpers.add(h)
        self.assign(op, f"{self._elem(op.results[0].type)}({h}({a}, {b}))")

    def cmpf(self, op: ir.Operation) -> None:
        p = ir.IntegerAttr(op.attributes["predicate"]).value
        self.assign(op, _CMPF[p].format(a=self.e(op.operands[0]), b=self.e(op.operands[1])), "bool")

    def cmpi(self, op: ir.Operation) -> None:
        p = ir.IntegerAttr(op.attributes["predicate"]).value
        a, b = self.e(op.operands[0]), self.e(op.operands[1])
        if p >= 6:
            ut = unsigned_type(op.operands[0].type, self._where(op))
            a, b = f"{ut}({a})", f"{ut}({b})"
        self.assign(op, f"{a} {_CMPI[p]} {b}", "bool")

    def select(self, op: ir.Operation) -> None:
        c, a, b = (self.e(v) for v in op.operands)
        if isinstance(op.results[0].type, ir.MemRefType):
            raise HlsEmitError(f"{self._where(op)}: select between buffers is not supported")
        self.assign(op, f"{c} ? {a} : {b}")

    def cast_op(self, op: ir.Operation) -> None:
        n = op.name
        src = op.operands[0]
        rt = op.results[0].type
        x = self.e(src)
        to = self._elem(rt)
        if n in ("arith.extui", "arith.uitofp", "arith.index_castui"):
            if int_width(src.type) != 1:
                x = f"{unsigned_type(src.type, self._where(op))}({x})"
        if n == "arith.fptoui":
            x = f"{unsigned_type(rt, self._where(op))}({x})"
        if n == "arith.trunci" and int_width(rt) == 1:
            return self.assign(op, f"bool({x} & 1)")
        self.assign(op, f"{to}({x})")
        if n in ("arith.index_cast", "arith.index_castui") and self._nonneg(src):
            self.nonneg.add(op.results[0])

    def bitcast(self, op: ir.Operation) -> None:
        self.ctx.helpers.add("mf_bitcast")
        self.ctx.needs_cstring = True
        self.assign(op, f"mf_bitcast<{self._elem(op.results[0].type)}>({self.e(op.operands[0])})")

    def floordivsi(self, op: ir.Operation) -> None:
        a, b = op.operands
        if self._nonneg(a) and self._nonneg(b):
            self.assign(op, f"{self.e(a)} / {self.e(b)}")
            if is_index(op.results[0].type):
                self.nonneg.add(op.results[0])
            return
        name = "mf_floordivsi" if op.name == "arith.floordivsi" else "mf_ceildivsi"
        self.ctx.helpers.add(name)
        t = self._elem(op.results[0].type)
        self.assign(op, f"{name}<{t}>({self.e(a)}, {self.e(b)})")

    def remsi(self, op: ir.Operation) -> None:
        self._int_binary(op, "%", unsigned=False)

    def fpowi(self, op: ir.Operation) -> None:
        x, n = op.operands
        k = _const_int(n)
        if k is not None and 1 <= abs(k) <= 4:
            prod = " * ".join([self.e(x)] * abs(k))
            one = float_literal(1.0, x.type)
            return self.assign(op, prod if k > 0 else f"{one} / ({prod})")
        self.ctx.needs_math = True
        self.assign(op, f"hls::pow({self.e(x)}, {self._elem(x.type)}({self.e(n)}))")

    def powf(self, op: ir.Operation) -> None:
        self.ctx.needs_math = True
        self.assign(op, f"hls::pow({self.e(op.operands[0])}, {self.e(op.operands[1])})")

    def fma(self, op: ir.Operation) -> None:
        a, b, c = (self.e(v) for v in op.operands)
        self.assign(op, f"{a} * {b} + {c}")

    # ----------------------------------------------------------------- calls
    def call(self, op: ir.Operation) -> None:
        callee = _callee(op)
        if callee not in self.ctx.funcs:
            raise HlsEmitError(f"{self._where(op)}: call to '{callee}', which the module does not define")
        args = ", ".join(f"{self.e(v)}, {self.views[v][3] or 0}" if v in self.views else self.e(v)
                         for v in op.operands)
        if len(op.results) > 1:
            raise HlsEmitError(f"{self._where(op)}: calls with several results are not supported")
        if op.results and _has_uses(op.results[0]):
            self.assign(op, f"{callee}({args})")
        else:
            self.emit(f"{callee}({args});")

    def ret(self, op: ir.Operation) -> None:
        if list(op.operands):
            self.emit(f"return {self.e(op.operands[0])};")

    def ignore(self, op: ir.Operation) -> None:
        pass


def _uses(v: ir.Value):
    return list(v.uses)


def _owner(use) -> ir.Operation:
    o = use.owner
    return o.operation if hasattr(o, "operation") else o


def _has_uses(v: ir.Value) -> bool:
    for _ in v.uses:
        return True
    return False


_HANDLERS: dict[str, Callable[[_FuncEmitter, ir.Operation], None]] = {
    "affine.for": _FuncEmitter.affine_for,
    "scf.for": _FuncEmitter.scf_for,
    "scf.if": _FuncEmitter.scf_if,
    "affine.if": _FuncEmitter.affine_if,
    "affine.load": _FuncEmitter.affine_load,
    "affine.store": _FuncEmitter.affine_store,
    "memref.load": _FuncEmitter.memref_load,
    "memref.store": _FuncEmitter.memref_store,
    "affine.apply": _FuncEmitter.affine_apply,
    "affine.min": _FuncEmitter.affine_minmax,
    "affine.max": _FuncEmitter.affine_minmax,
    "memref.alloc": _FuncEmitter.alloc,
    "memref.alloca": _FuncEmitter.alloc,
    "memref.get_global": _FuncEmitter.get_global,
    "memref.subview": _FuncEmitter.subview,
    "memref.cast": _FuncEmitter.cast,
    "memref.copy": _FuncEmitter.copy,
    "arith.constant": _FuncEmitter.constant,
    "arith.negf": _FuncEmitter.negf,
    "arith.remf": _FuncEmitter.remf,
    "arith.maximumf": _FuncEmitter.minmaxf,
    "arith.minimumf": _FuncEmitter.minmaxf,
    "arith.maxnumf": _FuncEmitter.minmaxf,
    "arith.minnumf": _FuncEmitter.minmaxf,
    "arith.maxsi": _FuncEmitter.minmaxi,
    "arith.minsi": _FuncEmitter.minmaxi,
    "arith.maxui": _FuncEmitter.minmaxi,
    "arith.minui": _FuncEmitter.minmaxi,
    "arith.cmpf": _FuncEmitter.cmpf,
    "arith.cmpi": _FuncEmitter.cmpi,
    "arith.select": _FuncEmitter.select,
    "arith.extsi": _FuncEmitter.cast_op,
    "arith.extui": _FuncEmitter.cast_op,
    "arith.trunci": _FuncEmitter.cast_op,
    "arith.sitofp": _FuncEmitter.cast_op,
    "arith.uitofp": _FuncEmitter.cast_op,
    "arith.fptosi": _FuncEmitter.cast_op,
    "arith.fptoui": _FuncEmitter.cast_op,
    "arith.extf": _FuncEmitter.cast_op,
    "arith.truncf": _FuncEmitter.cast_op,
    "arith.index_cast": _FuncEmitter.cast_op,
    "arith.index_castui": _FuncEmitter.cast_op,
    "arith.bitcast": _FuncEmitter.bitcast,
    "arith.floordivsi": _FuncEmitter.floordivsi,
    "arith.ceildivsi": _FuncEmitter.floordivsi,
    "math.fpowi": _FuncEmitter.fpowi,
    "math.powf": _FuncEmitter.powf,
    "math.fma": _FuncEmitter.fma,
    "func.call": _FuncEmitter.call,
    "func.return": _FuncEmitter.ret,
}


# ------------------------------------------------------------------ module level


def _find_top(module: ir.Module, funcs: dict[str, ir.Operation], top: str | None) -> str:
    if top is not None:
        if top not in funcs:
            raise HlsEmitError(f"the module has no function '{top}' to use as the top (functions: {', '.join(funcs)})")
        return top
    marked = [n for n, f in funcs.items() if TOP_ATTR in f.attributes]
    if len(marked) != 1:
        raise HlsEmitError(
            f"cannot tell the top function: {len(marked)} functions carry '{TOP_ATTR}'; pass top='<name>'"
        )
    return marked[0]


def _global_decl(op: ir.Operation, cname: str, ctx: _Ctx) -> str:
    t = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
    shape = memref_shape(t, f"memref.global '{_sym(op)}'")
    elem_t = t.element_type
    elem = scalar_type(elem_t, f"memref.global '{_sym(op)}'")
    const = "constant" in op.attributes
    n = 1
    for d in shape:
        n *= d
    init = ""
    if "initial_value" in op.attributes and not isinstance(op.attributes["initial_value"], ir.UnitAttr):
        vals = dense_values(op.attributes["initial_value"], n)
        if isinstance(elem_t, (ir.F32Type, ir.F64Type)):
            lits = [float_literal(float(v), elem_t) for v in vals]
        else:
            lits = [int_literal(int(v), elem_t) for v in vals]
        init = " = " + _nested_init(lits, shape)
    return f"static {'const ' if const else ''}{elem} {cname}{array_dims(shape)}{init};"


def _nested_init(lits: list[str], shape: tuple[int, ...]) -> str:
    if not shape:
        return "{" + lits[0] + "}"
    if len(shape) == 1:
        return "{" + ", ".join(lits) + "}"
    step = len(lits) // shape[0]
    return "{" + ", ".join(_nested_init(lits[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])) + "}"


def emit_module(
    module: ir.Module,
    top: str | None = None,
    *,
    arg_names: dict[str, list[str]] | None = None,
    port_info: list[tuple[str, str]] | None = None,
    bundles: dict[str, str] | None = None,
    title: str = "",
    beat_bits: int = PK.BEAT_BITS,
    pack_ports: bool = True,
) -> HlsCode:
    """Emit Vitis HLS C++ for every function of `module`; `top` becomes the kernel.

    arg_names: function -> readable names of its arguments (else `mf.name` argument
        attributes, else `arg<i>`).
    port_info: for the top's arguments, in order, (design port name, role); the C name
        is derived from the design name.
    bundles: design port name -> m_axi bundle (default: one bundle `gmem0`).
    beat_bits: width of the AXI beats that m_axi ports of odd-width integers (i4, i17;
        anything but i1/i8/i16/i32/i64) are packed into; see `packing` for the layout.
        Kernels read such a port element by element from its beats (`mf_unpack`), so a
        layer's slice of a stacked weight streams from off chip like any other port.
    pack_ports: False keeps `ap_int<W>` arrays on m_axi (padded by Vitis, UG1448 214-233).
    """
    with module.context:
        return _emit_module(module, top, arg_names, port_info, bundles, title, beat_bits, pack_ports)


def _packed_args(funcs: dict[str, ir.Operation], top: str, top_packed: dict[int, tuple[int, int]]):
    """function -> argument -> (w, beat bits) for every argument that receives (a view
    of) a packed top port, through calls; each such argument must get one at every call."""
    packed: dict[str, dict[int, tuple[int, int]]] = {n: {} for n in funcs}
    packed[top] = dict(top_packed)

    def sites():
        for name, fn in funcs.items():
            root = {a: i for i, a in enumerate(fn.regions[0].blocks[0].arguments)}
            for op in _walk(fn):
                if op.name in _ALIAS_OPS and op.operands[0] in root:
                    root[op.results[0]] = root[op.operands[0]]
                elif op.name == "func.call" and _callee(op) in funcs:
                    for j, v in enumerate(op.operands):
                        yield name, _callee(op), j, packed[name].get(root.get(v, -1))

    changed = True
    while changed:
        changed = False
        for _, callee, j, pk in sites():
            if pk is not None and j not in packed[callee]:
                packed[callee][j] = pk
                changed = True
    for caller, callee, j, pk in sites():
        if (j in packed[callee]) != (pk is not None):
            raise HlsEmitError(
                f"function '{callee}', argument {j}: called with a packed m_axi port (odd-width integers "
                f"in AXI beats) in one place and with another array in '{caller}'; give the two uses "
                "separate functions or copy the port into a local buffer first")
    return packed


def _emit_module(module, top, arg_names, port_info, bundles, title, beat_bits=PK.BEAT_BITS,
                 pack_ports=True) -> HlsCode:
    from .resources import estimate_resources

    funcs: dict[str, ir.Operation] = {}
    globals_: dict[str, str] = {}
    global_ops: list[ir.Operation] = []
    for op in _ops(module.body):
        if op.name == "func.func":
            funcs[_sym(op)] = op
        elif op.name == "memref.global":
            global_ops.append(op)
        else:
            raise HlsEmitError(f"module-level op '{op.name}' is not supported by the HLS emitter")
    for f in funcs.values():
        if not f.regions[0].blocks:
            raise HlsEmitError(f"function '{_sym(f)}' is only declared; the HLS emitter needs every function's body")
    top = _find_top(module, funcs, top)
    fifo_peaks: dict = {}
    if any(S.is_stream_op(o) for f in funcs.values() for o in _walk(f)):
        from ...dialects import stream as sd

        fifo_peaks = sd.check_dataflow(module)  # DeadlockError before any tool runs
    used = set(funcs) | set(HELPERS)
    for g in global_ops:
        name = c_ident(_sym(g))
        while name in used:
            name += "_g"
        used.add(name)
        globals_[_sym(g)] = name

    names_by_func: dict[str, list[str]] = {}
    ctx = _Ctx(funcs=funcs, effects=Effects(funcs), globals=globals_, arg_names=names_by_func)
    for name, fn in funcs.items():
        n = len(_func_type(fn).inputs)
        given = (arg_names or {}).get(name)
        if given is not None and len(given) == n:
            names_by_func[name] = [c_ident(x) for x in given]
        else:
            names_by_func[name] = [c_ident(x) for x in (ir_arg_names(fn) or [f"arg{i}" for i in range(n)])]

    # the top's ports
    top_fn = funcs[top]
    ft = _func_type(top_fn)
    if port_info is not None and len(port_info) != len(ft.inputs):
        raise HlsEmitError(f"port_info names {len(port_info)} ports, the top '{top}' has {len(ft.inputs)} arguments")
    ports: list[Port] = []
    seen: set[str] = set()
    for i, t in enumerate(ft.inputs):
        src, role = port_info[i] if port_info else (names_by_func[top][i], "")
        cname = c_ident(port_cname(src))
        while cname in seen or cname in funcs or cname in globals_.values():
            cname += "_p"
        seen.add(cname)
        written = i in ctx.effects.written[top]
        read = i in ctx.effects.read[top]
        if not role:
            role = "output" if written and not read else ("input" if not written else "state")
        st = S.stream_type(t)
        if st is not None:
            ports.append(Port(cname, src, st, (), role, read, written, "axis"))
        elif isinstance(t, ir.MemRefType):
            shape = memref_shape(t, f"top function '{top}'")
            port = Port(cname, src, scalar_type(t.element_type), shape, role, read, written, "m_axi",
                        (bundles or {}).get(src, "gmem0"))
            w = int_width(t.element_type)
            if pack_ports and w is not None and PK.needs_packing(w):
                lay = PK.layout(w, port.size, beat_bits)
                port = replace(port, elem_bits=w, beat_bits=lay.beat_bits, elems_per_beat=lay.elems_per_beat,
                               beats=lay.beats)
            ports.append(port)
        else:
            ports.append(Port(cname, src, scalar_type(t), (), role, read, written, "s_axilite"))
    names_by_func[top] = [p.name for p in ports]
    ctx.packed = _packed_args(funcs, top, {i: (p.elem_bits, p.beat_bits) for i, p in enumerate(ports) if p.packed})
    top_args = list(top_fn.regions[0].blocks[0].arguments)
    for op in _walk(top_fn):
        if op.name == "func.call":
            for i, v in enumerate(op.operands):
                if v in top_args:
                    ctx.bound.setdefault(_callee(op), {})[i] = ports[top_args.index(v)].name

    bodies: list[str] = []
    labels: dict[str, dict[str, str]] = {}
    pragmas: dict[str, list[str]] = {}
    protos: list[str] = []
    order = [n for n in funcs if n != top] + [top]
    for name in order:
        fe = _FuncEmitter(ctx, funcs[name], name == top, names_by_func[name], ports if name == top else None)
        sig = fe.signature()
        lines = fe.body()
        if name != top:
            protos.append(sig + ";")
        bodies.append(sig + " {\n" + "\n".join(lines) + ("\n" if lines else "") + "}\n")
        labels[name] = fe.labels
        pragmas[name] = fe.pragmas

    # assemble
    labels_used = any(labels.values())
    head = [
        "// Generated by mambaflow: Vitis HLS C++" + (f" for {title}" if title else "") + ".",
        "// Do not edit; regenerate it from the design instead. A loop labelled <band>_<loop>",
        "// is the loop addressed \"<function>:<band>.<loop>\" by the schedule.",
        "#include <cstdint>",
    ]
    # Loop labels exist for the HLS reports; a C++ compiler sees them unused. g++ cannot
    # silence unknown pragmas from the source (GCC PR53431): compile with -Wno-unknown-pragmas.
    if labels_used:
        head[3:3] = ["#ifdef __GNUC__", '#pragma GCC diagnostic ignored "-Wunused-label"', "#endif"]
    if ctx.needs_cstring:
        head.append("#include <cstring>")
    if ctx.needs_limits:
        head.append("#include <limits>")
    if ctx.needs_math or "mf_maximumf" in ctx.helpers or "mf_minimumf" in ctx.helpers:
        head.append("#include <cmath>")
    if ctx.needs_ap:
        head.append('#include "ap_int.h"')
    if ctx.needs_math:
        head.append('#include "hls_math.h"')
    if ctx.needs_stream:
        head.append('#include "hls_stream.h"')
    parts = ["\n".join(head), ""]
    helpers = [HELPERS[h] for h in HELPERS if h in ctx.helpers]
    if helpers:
        parts += ["\n\n".join(helpers), ""]
    gdecls = [_global_decl(g, globals_[_sym(g)], ctx) for g in global_ops]
    if gdecls:
        parts += ["\n".join(gdecls), ""]
    if protos:
        parts += ["\n".join(protos), ""]
    parts.append("\n".join(bodies))
    source = "\n".join(parts)

    guard = "MAMBAFLOW_" + c_ident(top).upper() + "_KERNELS_H"
    hdr = [
        "// Generated by mambaflow: the top function of the HLS design" + (f" for {title}" if title else "") + ".",
        f"#ifndef {guard}",
        f"#define {guard}",
        "#include <cstdint>",
    ]
    if any(uses_ap_types(t) for t in ft.inputs if not isinstance(t, ir.MemRefType)) or ctx.needs_ap:
        hdr.append('#include "ap_int.h"')
    if any(p.interface == "axis" for p in ports):
        hdr.append('#include "hls_stream.h"')
    top_sig = bodies[-1].split(" {\n", 1)[0]
    hdr += [top_sig + ";", f"#endif  // {guard}", ""]
    code = HlsCode(top=top, source=source, header="\n".join(hdr), ports=ports, functions=order,
                   labels=labels, pragmas=pragmas, uses_streams=ctx.needs_stream, warnings=ctx.warnings,
                   fifo_peaks=fifo_peaks)
    code.resources = estimate_resources(module, funcs, top, ctx.effects)
    code.resources.maxi_bundles = len({p.bundle for p in ports if p.interface == "m_axi"})
    return code


def port_cname(name: str) -> str:
    """The C identifier of a design port (dots become underscores)."""
    return c_ident(name.replace(".", "_"))
