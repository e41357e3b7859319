"""The HLS emitter's support for the project's stream ops (FIFOs between kernels).

Streams are ops and types of the project's `mf` dialect (`mambaflow.dialects.stream`).
Everything the emitter needs to know about them goes through the functions below, so
the emitter core does not change when the stream dialect grows:

* `stream_type(t)`   -> the C++ element type of a stream type (`hls::stream<T>`), or None
* `is_stream_op(op)` -> whether `op` belongs to the stream dialect
* `effects(op)`      -> (buffers read, buffers written) by the op, for const-ness
* `emit(fe, op)`     -> write the op's C++ through the function emitter `fe`

C++ (Vitis HLS, UG1399):
    %s = "mf.stream_create"() {depth = D, name = "x"}   hls::stream<T> x("x");
                                                       #pragma HLS stream variable=x depth=D
    "mf.stream_write"(%s, %v)                          x.write(v);
    %v = "mf.stream_read"(%s)                          T v = x.read();
    a stream argument of a kernel                      hls::stream<T> &x
    a stream argument of the top                       the same, `interface mode=axis`

The pragma is invisible to g++. Outside dataflow regions, under the project's own
hls_stream.h (which checks FIFO depths in csim: a write beyond the depth aborts) the
declaration also calls its `set_depth(D)`, guarded by that header's include guard so
Vitis' own hls_stream.h never sees it. Inside dataflow regions the depth is checked at
emission by the Kahn-process simulation of `dialects.stream.check_dataflow` (see `_in_dataflow`).
"""

from __future__ import annotations

from torch_mlir import ir

from .cxx import HlsEmitError, c_ident, scalar_type

STREAM_PREFIX = "mf."
CREATE, WRITE, READ = "mf.stream_create", "mf.stream_write", "mf.stream_read"
SHIM_GUARD = "MAMBAFLOW_HLS_STREAM_SHIM_H"


def _dialect():
    try:
        from ...dialects import stream
    except ImportError:
        return None
    return stream


def stream_type(t: ir.Type) -> str | None:
    """`T` of `hls::stream<T>` when `t` is an `!mf.stream<T, N>`, else None."""
    sd = _dialect()
    if sd is None or isinstance(t, (ir.MemRefType, ir.IntegerType, ir.FloatType, ir.IndexType)):
        return None
    if not sd.is_stream_type(t):
        return None
    elem, _ = sd.stream_info(t)
    return scalar_type(elem, "stream element")


def _in_dataflow(op: ir.Operation) -> bool:
    """Whether `op` sits in a dataflow region (a dataflow function or loop).

    There the processes run concurrently in hardware, and csim (sequential, as in
    Vitis) cannot honour the depth: a depth-2 FIFO between a producer and a consumer
    of 16 elements is fine in hardware and would overflow in a sequential run. Such
    depths are checked by `dialects.stream.check_dataflow` (a Kahn-process simulation)
    when the design is emitted instead.
    """
    from ...dialects.directives import is_dataflow

    p = op.parent
    while p is not None:
        if p.name in ("func.func", "affine.for") and is_dataflow(p):
            return True
        p = p.parent
    return False


def is_stream_op(op: ir.Operation) -> bool:
    return op.name.startswith(STREAM_PREFIX)


def effects(op: ir.Operation) -> tuple[list[ir.Value], list[ir.Value]]:
    return [], []  # streams are not buffers: they never make an array argument non-const


def emit(fe, op: ir.Operation) -> None:
    sd = _dialect()
    n = op.name
    if n == CREATE:
        elem_t = stream_type(op.results[0].type)
        depth = ir.IntegerAttr(op.attributes["depth"]).value if "depth" in op.attributes else None
        raw = sd.stream_name(op) if sd is not None else "stream"
        name = fe._fresh(raw if raw != "?" else "stream")
        fe.names[op.results[0]] = name
        fe.emit(f'hls::stream<{elem_t}> {name}("{c_ident(raw)}");')
        if depth is not None:
            if depth < 1:
                raise HlsEmitError(f"{fe._where(op)}: stream '{name}' has depth {depth}; a FIFO needs depth >= 1")
            fe.pragma(f"stream variable={name} depth={depth}")
            if not _in_dataflow(op):
                # sequential code: the depth bounds what may be in flight, check it in csim
                fe.lines.append(f"#ifdef {SHIM_GUARD}")
                fe.emit(f"{name}.set_depth({depth});  // csim shim: check the declared depth")
                fe.lines.append("#endif")
        return
    if n == WRITE:
        s, v = op.operands
        fe.emit(f"{fe.e(s)}.write({fe.e(v)});")
        return
    if n == READ:
        fe.assign(op, f"{fe.e(op.operands[0])}.read()")
        if op.results[0] not in fe.names:  # unused read: still consume the element
            fe.emit(f"(void){fe.e(op.operands[0])}.read();")
        return
    raise HlsEmitError(f"{fe._where(op)}: '{n}' of the mf dialect is not supported by the HLS emitter "
                       f"(supported: {CREATE}, {WRITE}, {READ})")
