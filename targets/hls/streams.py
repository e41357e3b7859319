"""The HLS emitter's hook for the project's stream ops (FIFOs between kernels).

Streams are ops and types of the project's `mf` dialect (`mambaflow.dialects.stream`).
Everything the emitter needs to know about them goes through the four functions below,
so the emitter core never changes when the stream dialect grows:

* `stream_type(t)`   -> the C++ element type of a stream type (`hls::stream<T>`), or None
* `is_stream_op(op)` -> whether `op` belongs to the stream dialect
* `effects(op)`      -> (buffers read, buffers written) by the op, for const-ness
* `emit(fe, op)`     -> write the op's C++ through the function emitter `fe`
"""

from __future__ import annotations

from torch_mlir import ir

from .cxx import HlsEmitError

STREAM_PREFIX = "mf."


def stream_type(t: ir.Type) -> str | None:
    return None


def is_stream_op(op: ir.Operation) -> bool:
    return op.name.startswith(STREAM_PREFIX)


def effects(op: ir.Operation) -> tuple[list[ir.Value], list[ir.Value]]:
    return [], []


def emit(fe, op: ir.Operation) -> None:
    raise HlsEmitError(
        f"function '{fe.fname}': stream op '{op.name}' is not supported by the HLS emitter yet"
    )
