"""What a memref in a kernel is on the board: an m_axi port, on-chip RAM banks, registers
or a stream FIFO, with the facts the timing model needs (ports, banks, widths).

One lookup per value: follow views (flow.effects.ALIAS_OPS) to the root; a function
argument is an m_axi port when it is bound to a top-level argument
(flow.effects.bindings), else a buffer the caller passed; an alloc / global is on chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch_mlir import ir

from ...dialects import directives as D
from ...dialects.stream import is_stream_type
from ...flow.effects import ALIAS_OPS
from ...flow.identity import arg_names
from ..hls import packing as PK
from ..hls.cxx import element_bits
from ..hls.resources import buffer_use
from .latency import PORTS

#: element widths Vitis widens automatically on m_axi ports (standard C types; UG1399
#: "Automatic Port Width Resizing", up to `max_widen_bitwidth` = 512 in the Vitis flow)
WIDENED_BITS = 512
NATIVE_BITS = (8, 16, 32, 64)


@dataclass(frozen=True)
class Mem:
    kind: str                 # 'maxi' | 'bram' | 'uram' | 'lutram' | 'reg' | 'rom' | 'stream'
    key: object               # identity (the root value, or the top port index)
    name: str
    shape: tuple[int, ...] = ()
    bits: int = 32
    parts: tuple = ()         # directives.Partition of the buffer
    port_bits: int = 0        # m_axi: bits per AXI beat
    bundle: str | None = None
    top_index: int | None = None

    @property
    def ports(self) -> int:
        return PORTS.get(self.kind, 2)

    @property
    def unlimited(self) -> bool:
        return self.kind == "reg"


def root_value(v: ir.Value) -> ir.Value:
    while True:
        o = v.owner
        if isinstance(o, ir.Block):
            return v
        op = o.operation if hasattr(o, "operation") else o
        if op.name not in ALIAS_OPS:
            return v
        v = op.operands[0]


def _owner_op(v: ir.Value):
    o = v.owner
    if isinstance(o, ir.Block):
        return None
    return o.operation if hasattr(o, "operation") else o


def _storage_kind(t: ir.MemRefType, parts, storage: str | None) -> str:
    """'reg' | 'bram' | 'uram' | 'lutram', as the shared resource count places the buffer
    (targets.hls.resources.buffer_use); a one-element buffer is a register."""
    use = buffer_use("", t, list(parts), storage)
    if use.storage == "registers" or math.prod(t.shape or [1]) <= 1:
        return "reg"
    return use.storage


class MemoryMap:
    """Mem of every memref a kernel touches, for one design."""

    def __init__(self, funcs: dict, bind: dict, top_ports: dict[int, tuple[str, int, str | None]],
                 beat_bits: int = PK.BEAT_BITS):
        self.funcs = funcs
        self.bind = bind
        self.top_ports = top_ports      # top arg index -> (name, element bits, bundle)
        self.beat_bits = beat_bits
        self._cache: dict = {}

    def port(self, index: int) -> Mem:
        name, bits, bundle = self.top_ports[index]
        width = self.beat_bits if PK.needs_packing(bits) else WIDENED_BITS
        return Mem("maxi", ("top", index), name, bits=bits, port_bits=width, bundle=bundle, top_index=index)

    def of(self, fn_name: str, v: ir.Value) -> Mem | None:
        v = root_value(v)
        key = (fn_name, v)
        if key in self._cache:
            return self._cache[key]
        m = self._classify(fn_name, v)
        self._cache[key] = m
        return m

    def _classify(self, fn_name: str, v: ir.Value) -> Mem | None:
        fn = self.funcs[fn_name]
        t = v.type
        if is_stream_type(t):
            return Mem("stream", v, _name(v), bits=32)
        if not isinstance(t, ir.MemRefType):
            return None
        t = ir.MemRefType(t)
        bits = element_bits(t.element_type)
        owner = _owner_op(v)
        if owner is None:  # a block argument: of the function's entry block?
            args = list(fn.regions[0].blocks[0].arguments)
            k = next((i for i, a in enumerate(args) if a == v), None)
            if k is None:
                return Mem("reg", v, "?", tuple(t.shape), bits)
            tops = self.bind.get(fn_name, {}).get(k)
            if tops:
                return self.port(min(tops))
            ref = D.BufferRef(fn, arg=k)
            parts = tuple(D.partitions_of(ref))
            return Mem(_storage_kind(t, parts, D.storage_of(ref)), (fn_name, k), _arg_name(fn, k), tuple(t.shape),
                       bits, parts)
        if owner.name in ("memref.alloc", "memref.alloca"):
            ref = D.BufferRef(fn, alloc_op=owner)
            parts = tuple(D.partitions_of(ref))
            name = ir.StringAttr(owner.attributes["buffer_name"]).value if "buffer_name" in owner.attributes else "alloc"
            return Mem(_storage_kind(t, parts, D.storage_of(ref)), v, name, tuple(t.shape), bits, parts)
        if owner.name == "memref.get_global":
            kind = "reg" if math.prod(t.shape or [1]) <= 1 else "rom"
            return Mem(kind, ir.FlatSymbolRefAttr(owner.attributes["name"]).value, "global", tuple(t.shape), bits)
        return Mem("bram", v, "?", tuple(t.shape), bits)


def _arg_name(fn, k: int) -> str:
    names = arg_names(fn)
    return names[k] if names and k < len(names) else f"arg{k}"


def _name(v: ir.Value) -> str:
    op = _owner_op(v)
    if op is not None and "name" in op.attributes:
        return ir.StringAttr(op.attributes["name"]).value
    return "stream"
