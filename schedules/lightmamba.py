"""LightMamba's accelerator as a mambaflow schedule: the calibration point of the estimate.

LightMamba (Mamba2-2.7B W4A4 on the VCK190 at 400 MHz, 7.21 tokens/s measured; 228 DSP,
107k LUT, 456 BRAM) streams its 4-bit weights through a 256-bit m_axi port into an
array of 8 x 8 4-bit MACs per cycle at II=1, built in LUTs, and updates the SSM state
with 8 DSP multipliers per cycle (REFERENCE.md, "Quantization in the seeds"; DESIGN.md
"Hardware facts"). The recipe builds that structure from the schedule primitives:

* every integer matvec band (rows i, blocks j of `quant.integer_ref.DOT` MACs written
  out; a third loop over sub-blocks when a block is wider) runs `macs` MACs per cycle:
  the block loop is split so that `macs` consecutive weights of one row, one 256-bit
  beat of 4-bit weights, are multiplied in one pipelined iteration at II=1 (the same
  MAC count and weight bandwidth as LightMamba's 8 x 8 array, which takes its beat as
  an 8 x 8 weight tile); the weights are read straight from the m_axi port (no on-chip
  copy), the accumulator is a register, and the activations and group scales read in
  that iteration are partitioned to feed the MACs;
* the rows and their MAC steps are one pipeline (`fuse` of the imperfect nest: the
  register's set-up and drain run under guards), so no pipeline fills per row;
* the SSM's passes over the state (update, state out) are fused into one
  (`fuse_bands`), and the conv and the SSM are serial pipelines of `ssm_lanes` lanes
  whose register reductions are flattened with their rows the same way;
* each layer is a dataflow region (layer_pipeline); large buffers in URAM;
* one m_axi bundle per weight port (`weight_bundles`, the `bundle` primitive), so the
  weights and their group scales stream in parallel (each bundle still serves one
  process); the build and the estimate read the bundles from the IR.

Its parameters are the architecture's: `macs=64`, `ssm_lanes=8`; the build emits
packed ports with `beat_bits=256` and the estimate runs at 400 MHz (`LIGHTMAMBA`).
"""

from __future__ import annotations

from torch_mlir import ir

from ..errors import ScheduleError
from ..dialects import directives as D
from ..flow.mlir import funcs, str_attr, walk
from . import deps as dp
from . import rewrite as rw
from .recipes import (LINEAR_KINDS, _divisor_at_most, _matvec_bands, accumulators, feed_pipelines, fuse_bands,
                      large_buffers_to_uram,
                      layer_pipeline_schedule, linear_parallel_schedule, pipeline_rest, ssm_serial_schedule,
                      widen_copies)
from .schedule import Schedule, customize

#: the published design point the recipe mirrors (the calibration of the estimate)
LIGHTMAMBA = {"model": "mamba2-2.7b", "quant": "w4a4", "board": "vck190", "clock_mhz": 400.0, "beat_bits": 256,
              "tokens_per_s": 7.21, "dsp": 228, "lut": 107_000, "bram": 456}


def _gemm_bands(s: Schedule, kernel: str):
    """(band, row loop, group loop, element loop, accumulator) of each 3-deep integer
    matvec band: rows i, weight groups j, elements k of a group, reducing into acc[i]."""
    out = []
    for buf, loop in accumulators(s, kernel):
        band, ln = loop.split(":", 1)[1].split(".", 1)
        names = list(s.get_loops(kernel)[band])
        if len(names) == 3 and names[1] == ln:
            out.append((band, names[0], names[1], names[2], buf))
    return out


def _macs(loop) -> int:
    """Integer multiplies one iteration of `loop` holds (the gemm writes a sub-block's
    products out one by one, quant.integer_ref.DOT)."""
    return max(1, sum(1 for o in walk(loop) if o.name == "arith.muli" and not isinstance(o.results[0].type, ir.IndexType)))


def _integer(s: Schedule, kernel: str) -> bool:
    """Whether the kernel's arithmetic is integer (a quantized design)."""
    fn = funcs(s.module)[kernel]
    return not any(o.name in ("arith.mulf", "arith.addf") for o in walk(fn))


def _mac_pipeline(s: Schedule, k: str, band: str, i: str, jo, acc: str) -> None:
    """The accumulator of row i a register, and the rows and their `macs`-wide steps jo
    one pipeline (a guarded flatten): no pipeline fill per row."""
    s.buffer_at(f"{k}:{acc}", f"{k}:{band}.{i}")
    s.pipeline(s.fuse(f"{k}:{band}.{i}", jo), ii=1)


def _flatten_rows(s: Schedule, k: str) -> None:
    """Each pipelined loop whose parent loop only sets up and drains registers around it
    (a reduction's accumulator, no loop of its own) is flattened with that parent under
    guards (`fuse`): one pipeline for the rows, not a fill per row."""
    while (pair := _row_pair(s, k)) is not None:  # a fuse renames loops: look again
        s.fuse(*pair)


def _row_pair(s: Schedule, k: str) -> tuple[str, str] | None:
    for band, loops in s.get_loops(k).items():
        for name in loops:
            L = s.loop(f"{k}:{band}.{name}").op
            P = L.parent
            if D.get_pipeline(L) is None or P is None or P.name != "affine.for" or D.get_pipeline(P) is not None:
                continue
            parts = rw.guarded_parts(P, L)
            if parts and (parts[0] or parts[1]) and not any(o.name == "affine.for" for o in parts[0] + parts[1]):
                return f"{k}:{band}.{str_attr(P, 'loop_name')}", f"{k}:{band}.{name}"
    return None


def lightmamba_schedule(design, macs: int = 64, ssm_lanes: int = 8, depth: int = 2) -> Schedule:
    """See the module docstring."""
    s = customize(design)
    for k in s.kernels():  # one pass over the state: update, y = h . C and the state out fused
        if s.kind(k) == "ssm":
            fuse_bands(s, k)
    float_linear = False
    for k in s.kernels():
        if s.kind(k) not in LINEAR_KINDS:
            continue
        bands = _gemm_bands(s, k)
        if not bands:
            if not _matvec_bands(s, k):
                continue
            if not _integer(s, k):
                float_linear = True
                continue
            for band, i, j, acc, weight in _matvec_bands(s, k):  # rows i, blocks j of DOT MACs each
                if weight is None:
                    continue  # a reduction of the quantizer (a group's max): pipeline_rest's
                jl = s.loop(f"{k}:{band}.{j}").op
                t = _divisor_at_most(dp.trip_count(jl) or 1, max(1, macs // _macs(jl)))
                jo = f"{k}:{band}.{j}"
                if t > 1:
                    jo, ji = s.split(jo, t)
                    s.unroll(ji, 0)
                _mac_pipeline(s, k, band, i, jo, acc)
            continue
        for band, i, j, e, acc in bands:  # rows i, blocks j, sub-blocks e of DOT MACs each
            el = s.loop(f"{k}:{band}.{e}").op
            group = (dp.trip_count(el) or 1) * _macs(el)
            groups = dp.trip_count(s.loop(f"{k}:{band}.{j}").op) or 1
            per = _divisor_at_most(groups, max(1, macs // group))
            jo = f"{k}:{band}.{j}"
            if per > 1:
                jo, _ = s.split(jo, per)
            _mac_pipeline(s, k, band, i, jo, acc)
    if float_linear:  # a float design: the MAC arrays of linear_parallel, `macs` wide
        linear_parallel_schedule(s, tile=macs)
    for k in s.kernels():  # the SSM's reductions (y = h . C) accumulate in registers
        if s.kind(k) in ("ssm", "conv"):
            for acc, loop in accumulators(s, k):
                try:
                    s.buffer_at(f"{k}:{acc}", loop)
                except ScheduleError:
                    continue  # not an affine tile: left in its buffer
    ssm_serial_schedule(s, lanes=ssm_lanes)
    for k in s.kernels():
        if s.kind(k) in ("ssm", "conv"):
            _flatten_rows(s, k)
    widen_copies(s)
    pipeline_rest(s, lanes=ssm_lanes)
    layer_pipeline_schedule(s, depth=depth)
    feed_pipelines(s, cap=macs)
    large_buffers_to_uram(s)
    weight_bundles(s)
    return s


def weight_bundles(design) -> Schedule:
    """One m_axi bundle per weight port (`gmem_<process>_<port>`, `Schedule.bundle`):
    parallel AXI masters for a weight and its group scales; a bundle still serves one
    process (HLS 200-1013)."""
    from ..flow.identity import arg_names, arg_roles
    from ..targets.versal.dataflow import default_bundles

    s = customize(design)
    now = default_bundles(s.module)
    top = funcs(s.module)[s.top]
    for name, role in zip(arg_names(top) or [], arg_roles(top)):
        if role == "weight" and now.get(name, "gmem_io") != "gmem_io":
            s.bundle(name, f"{now[name]}_{name.replace('.', '_')}")
    return s
