"""Directive attributes: the one definition of how a schedule annotates the IR.

Schedules write these attributes; every target reads them with the helpers below (the
HLS emitter turns them into pragmas, the llvm target strips them with
`strip_directives` because they only annotate). Rewrites (split, reorder, fuse, ...)
are not directives: they change the loops themselves and every target executes them
as written.

Conventions (discardable attributes; names are the module constants):

on `affine.for`
    ``pipeline_ii`` : i64 IntegerAttr         -> ``#pragma HLS pipeline II=<n>``
    ``rewind``      : UnitAttr                -> ``... rewind`` (only with pipeline_ii)
    ``unroll``      : i64 IntegerAttr, 0=full -> ``#pragma HLS unroll [factor=<n>]``
    ``dataflow``    : UnitAttr                -> ``#pragma HLS dataflow`` in the loop body

on `func.func`
    ``dataflow``    : UnitAttr                -> ``#pragma HLS dataflow``
    ``inline``      : UnitAttr                -> ``#pragma HLS inline``

on a buffer: the `memref.alloc` op of a local buffer (keys ``partition`` / ``storage``),
or, for a function argument, that argument's dictionary in the func's ``arg_attrs``
under ``mf.partition`` / ``mf.storage`` (same values; MLIR's func verifier rejects
argument attributes without a dialect prefix, so the bare key cannot be used there)
    ``partition``   : ArrayAttr of DictionaryAttr
                      {kind: "complete"|"block"|"cyclic" (StringAttr),
                       dim: i64 (1-based; 0 = all dims), factor: i64}
                      -> ``#pragma HLS array_partition variable=v <kind> [factor=f] dim=d``
    ``storage``     : StringAttr "bram"|"uram"|"lutram"
                      -> ``#pragma HLS bind_storage variable=v type=ram_2p impl=<s>``

Streams (FIFOs between kernels) are ops of the project's ``mf`` dialect, documented in
`mambaflow.dialects.stream`; their FIFO depth is the ``depth`` attribute
(`STREAM_DEPTH`), read with `stream_depth`.

A buffer is addressed by a `BufferRef`: ``BufferRef(func_op, arg_index)`` for an
argument, or ``BufferRef(func_op, alloc_op=op)`` for a local ``memref.alloc``. Helpers
that take a buffer accept either a BufferRef or a ``memref.alloc`` operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from torch_mlir import ir

from ..errors import ScheduleError

PIPELINE_II = "pipeline_ii"
REWIND = "rewind"
UNROLL = "unroll"
DATAFLOW = "dataflow"
INLINE = "inline"
PARTITION = "partition"
STORAGE = "storage"
STREAM_DEPTH = "depth"

PARTITION_KINDS = ("complete", "block", "cyclic")
STORAGE_KINDS = ("bram", "uram", "lutram")

#: attributes that only annotate: removed before lowering to the CPU
LOOP_DIRECTIVES = (PIPELINE_II, REWIND, UNROLL, DATAFLOW)
FUNC_DIRECTIVES = (DATAFLOW, INLINE)
BUFFER_DIRECTIVES = (PARTITION, STORAGE)
ARG_ATTRS = "arg_attrs"
#: keys used inside a func's ``arg_attrs``: MLIR's verifier only allows dialect-prefixed
#: (dotted) attributes on function arguments, so the argument form carries the ``mf.``
#: prefix of the project dialect. The helpers below hide the difference.
ARG_PARTITION = "mf.partition"
ARG_STORAGE = "mf.storage"
_ARG_KEY = {PARTITION: ARG_PARTITION, STORAGE: ARG_STORAGE}


class DirectiveError(ScheduleError):
    """A directive helper was given the wrong kind of op or an illegal value."""


def _op(x) -> ir.Operation:
    return x.operation if hasattr(x, "operation") else x


def _i64(v: int) -> ir.IntegerAttr:
    return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), int(v))


def _expect(op: ir.Operation, names: tuple[str, ...], what: str) -> None:
    if op.name not in names:
        raise DirectiveError(f"{what} applies to {' / '.join(names)}, not to '{op.name}'")


def _context(op: ir.Operation):
    return op.context


# ----------------------------------------------------------------------- loops


def set_pipeline(loop, ii: int = 1, rewind: bool = False) -> None:
    """Mark an `affine.for` to be pipelined with initiation interval `ii` (>= 1)."""
    loop = _op(loop)
    _expect(loop, ("affine.for",), "pipeline")
    if int(ii) < 1:
        raise DirectiveError(f"pipeline II must be >= 1, got {ii}")
    with _context(loop):
        loop.attributes[PIPELINE_II] = _i64(ii)
        if rewind:
            loop.attributes[REWIND] = ir.UnitAttr.get()
        elif REWIND in loop.attributes:
            del loop.attributes[REWIND]


def get_pipeline(loop) -> int | None:
    """The loop's pipeline II, or None when it is not pipelined."""
    loop = _op(loop)
    if PIPELINE_II not in loop.attributes:
        return None
    return ir.IntegerAttr(loop.attributes[PIPELINE_II]).value


def is_rewind(loop) -> bool:
    return REWIND in _op(loop).attributes


def set_unroll(loop, factor: int = 0) -> None:
    """Mark an `affine.for` to be unrolled by `factor` (0 = fully)."""
    loop = _op(loop)
    _expect(loop, ("affine.for",), "unroll")
    if int(factor) < 0:
        raise DirectiveError(f"unroll factor must be >= 0 (0 = full), got {factor}")
    with _context(loop):
        loop.attributes[UNROLL] = _i64(factor)


def get_unroll(loop) -> int | None:
    """The loop's unroll factor (0 = full), or None when it is not unrolled."""
    loop = _op(loop)
    if UNROLL not in loop.attributes:
        return None
    return ir.IntegerAttr(loop.attributes[UNROLL]).value


def set_dataflow(op) -> None:
    """Mark a `func.func` or an `affine.for` as a dataflow region."""
    op = _op(op)
    _expect(op, ("func.func", "affine.for"), "dataflow")
    with _context(op):
        op.attributes[DATAFLOW] = ir.UnitAttr.get()


def is_dataflow(op) -> bool:
    return DATAFLOW in _op(op).attributes


def set_inline(fn) -> None:
    """Mark a `func.func` to be inlined into its callers."""
    fn = _op(fn)
    _expect(fn, ("func.func",), "inline")
    with _context(fn):
        fn.attributes[INLINE] = ir.UnitAttr.get()


def is_inline(fn) -> bool:
    return INLINE in _op(fn).attributes


# --------------------------------------------------------------------- buffers


@dataclass(frozen=True)
class Partition:
    """One array_partition directive; `dim` is 1-based, 0 = every dimension."""

    kind: str
    dim: int = 0
    factor: int = 0

    def to_attr(self) -> ir.DictAttr:
        return ir.DictAttr.get({
            "kind": ir.StringAttr.get(self.kind),
            "dim": _i64(self.dim),
            "factor": _i64(self.factor),
        })

    @staticmethod
    def from_attr(a: ir.Attribute) -> "Partition":
        d = ir.DictAttr(a)
        return Partition(ir.StringAttr(d["kind"]).value, ir.IntegerAttr(d["dim"]).value,
                         ir.IntegerAttr(d["factor"]).value)


@dataclass(frozen=True)
class BufferRef:
    """A buffer of a kernel: a function argument (`arg`) or a local alloc (`alloc_op`)."""

    func: ir.Operation
    arg: int | None = None
    alloc_op: ir.Operation | None = None

    def __post_init__(self):
        if (self.arg is None) == (self.alloc_op is None):
            raise DirectiveError("a BufferRef names either a function argument or an alloc op")

    @property
    def type(self) -> ir.MemRefType:
        if self.arg is not None:
            return ir.MemRefType(ir.FunctionType(ir.TypeAttr(self.func.attributes["function_type"]).value).inputs[self.arg])
        return ir.MemRefType(self.alloc_op.results[0].type)

    @property
    def value(self) -> ir.Value:
        if self.arg is not None:
            return self.func.regions[0].blocks[0].arguments[self.arg]
        return self.alloc_op.results[0]


BufferLike = Union[BufferRef, ir.Operation]


def _as_ref(buf) -> BufferRef:
    if isinstance(buf, BufferRef):
        return buf
    op = _op(buf)
    if op.name not in ("memref.alloc", "memref.alloca"):
        raise DirectiveError(f"a buffer directive applies to memref.alloc or a function argument, not '{op.name}'")
    fn = op.parent
    while fn is not None and fn.name != "func.func":
        fn = fn.parent
    return BufferRef(fn, alloc_op=op)


def _arg_dicts(fn: ir.Operation) -> list[dict[str, ir.Attribute]]:
    n = len(ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value).inputs)
    if ARG_ATTRS not in fn.attributes:
        return [{} for _ in range(n)]
    arr = ir.ArrayAttr(fn.attributes[ARG_ATTRS])
    out = []
    for a in arr:
        d = ir.DictAttr(a)
        out.append({d[i].name: d[i].attr for i in range(len(d))})
    return out


def _get_buffer_attr(buf, key: str) -> ir.Attribute | None:
    ref = _as_ref(buf)
    if ref.alloc_op is not None:
        return ref.alloc_op.attributes[key] if key in ref.alloc_op.attributes else None
    return _arg_dicts(ref.func)[ref.arg].get(_ARG_KEY[key])


def _set_buffer_attr(buf, key: str, value: ir.Attribute | None) -> None:
    ref = _as_ref(buf)
    with _context(ref.func):
        if ref.alloc_op is not None:
            if value is None:
                if key in ref.alloc_op.attributes:
                    del ref.alloc_op.attributes[key]
            else:
                ref.alloc_op.attributes[key] = value
            return
        dicts = _arg_dicts(ref.func)
        if value is None:
            dicts[ref.arg].pop(_ARG_KEY[key], None)
        else:
            dicts[ref.arg][_ARG_KEY[key]] = value
        if all(not d for d in dicts):
            if ARG_ATTRS in ref.func.attributes:
                del ref.func.attributes[ARG_ATTRS]
        else:
            ref.func.attributes[ARG_ATTRS] = ir.ArrayAttr.get([ir.DictAttr.get(d) for d in dicts])


def set_partition(buf: BufferLike, kind: str, dim: int = 0, factor: int = 0) -> None:
    """Add an array_partition directive to a buffer (appended to earlier ones; a new
    directive on the same dim replaces the old one; dim 0 replaces all)."""
    ref = _as_ref(buf)
    if kind not in PARTITION_KINDS:
        raise DirectiveError(f"partition kind must be one of {PARTITION_KINDS}, got '{kind}'")
    rank = ref.type.rank
    if not 0 <= int(dim) <= rank:
        raise DirectiveError(f"partition dim {dim} is out of range for a rank-{rank} buffer (1..{rank}, 0 = all)")
    if kind == "complete":
        factor = 0
    elif int(factor) < 1:
        raise DirectiveError(f"{kind} partition needs a factor >= 1, got {factor}")
    old = partitions_of(ref)
    keep = [p for p in old if dim != 0 and p.dim not in (dim, 0)]
    new = keep + [Partition(kind, int(dim), int(factor))]
    with _context(ref.func):
        _set_buffer_attr(ref, PARTITION, ir.ArrayAttr.get([p.to_attr() for p in new]))


def partitions_of(buf: BufferLike) -> list[Partition]:
    """The buffer's array_partition directives, in the order they were given."""
    a = _get_buffer_attr(buf, PARTITION)
    if a is None:
        return []
    return [Partition.from_attr(x) for x in ir.ArrayAttr(a)]


def set_storage(buf: BufferLike, impl: str) -> None:
    """Bind a buffer to a memory kind: 'bram', 'uram' or 'lutram'."""
    if impl not in STORAGE_KINDS:
        raise DirectiveError(f"storage must be one of {STORAGE_KINDS}, got '{impl}'")
    ref = _as_ref(buf)
    with _context(ref.func):
        _set_buffer_attr(ref, STORAGE, ir.StringAttr.get(impl))


def storage_of(buf: BufferLike) -> str | None:
    a = _get_buffer_attr(buf, STORAGE)
    return None if a is None else ir.StringAttr(a).value


# ---------------------------------------------------------------------- bundles

#: a top-level port's m_axi bundle (`#pragma HLS interface m_axi ... bundle=`), chosen by
#: the schedule (`Schedule.bundle`); ports without one get `default_bundles`'
ARG_BUNDLE = "mf.bundle"


def set_bundle(fn: ir.Operation, arg: int, bundle: str) -> None:
    """Bind argument `arg` of the top function `fn` to the m_axi bundle `bundle`."""
    dicts = _arg_dicts(fn)
    with _context(fn):
        dicts[arg][ARG_BUNDLE] = ir.StringAttr.get(bundle)
        fn.attributes[ARG_ATTRS] = ir.ArrayAttr.get([ir.DictAttr.get(d) for d in dicts])


def bundle_of(fn: ir.Operation, arg: int) -> str | None:
    a = _arg_dicts(fn)[arg].get(ARG_BUNDLE)
    return None if a is None else ir.StringAttr(a).value


# ---------------------------------------------------------------------- streams


def stream_depth(op) -> int | None:
    """The FIFO depth of an `mf` stream op (see `mambaflow.dialects.stream`)."""
    op = _op(op)
    if STREAM_DEPTH not in op.attributes:
        return None
    return ir.IntegerAttr(op.attributes[STREAM_DEPTH]).value


# ------------------------------------------------------------------- stripping


def _walk(op: ir.Operation) -> Iterable[ir.Operation]:
    for region in op.regions:
        for block in region.blocks:
            for child in block.operations:
                child = child.operation
                yield child
                yield from _walk(child)


def strip_directives(module) -> int:
    """Make a scheduled module executable on the CPU, in place; returns how many changes.

    Removes every annotation-only directive (loop rewrites stay, pragmas go) and, if the
    module has `mf` streams, runs the Kahn-process deadlock check (`DeadlockError`) and
    lowers the streams to in-memory FIFO queues (`dialects.stream.lower_streams`). The
    llvm target calls this on its private copy before lowering.
    """
    root = module.operation if hasattr(module, "operation") else module
    from .stream import lower_streams

    n = lower_streams(root)
    with root.context:
        for op in _walk(root):
            keys: tuple[str, ...] = ()
            if op.name == "affine.for":
                keys = LOOP_DIRECTIVES
            elif op.name == "func.func":
                keys = FUNC_DIRECTIVES
                if ARG_ATTRS in op.attributes:
                    dicts = _arg_dicts(op)
                    arg_keys = (ARG_PARTITION, ARG_STORAGE)
                    if any(k in d for d in dicts for k in arg_keys):
                        for d in dicts:
                            for k in arg_keys:
                                if d.pop(k, None) is not None:
                                    n += 1
                        if all(not d for d in dicts):
                            del op.attributes[ARG_ATTRS]
                        else:
                            op.attributes[ARG_ATTRS] = ir.ArrayAttr.get([ir.DictAttr.get(d) for d in dicts])
            elif op.name in ("memref.alloc", "memref.alloca"):
                keys = BUFFER_DIRECTIVES
            for k in keys:
                if k in op.attributes:
                    del op.attributes[k]
                    n += 1
    return n


__all__ = [
    "PIPELINE_II", "REWIND", "UNROLL", "DATAFLOW", "INLINE", "PARTITION", "STORAGE", "STREAM_DEPTH",
    "ARG_PARTITION", "ARG_STORAGE", "PARTITION_KINDS", "STORAGE_KINDS", "DirectiveError", "Partition", "BufferRef",
    "set_pipeline", "get_pipeline", "is_rewind", "set_unroll", "get_unroll", "set_dataflow",
    "is_dataflow", "set_inline", "is_inline", "set_partition", "partitions_of", "set_storage",
    "storage_of", "stream_depth", "strip_directives",
]
