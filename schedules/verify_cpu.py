"""A CPU schedule for speculative decoding on llvm: tree verification batched over nodes.

Tree verification pays off only if scoring T nodes in one pass costs less than T decode
steps. On an FPGA that comes from streaming each weight once per pass; on the CPU the
captured verify design computes every node's linear layers as an independent
dot-product chain, so a node costs as much as a decode step. This recipe makes the
node loop of every linear layer (in_proj, x_proj, dt_proj, out_proj, lm_head; bands
`S_i_j_k` with i the node, j the output row, k the reduction) an unroll-and-jam:

    split(i, U); reorder(i.outer, j, k, i.inner); unroll(i.inner, materialize=True);
    buffer_at(accumulator, j)

so each weight element is loaded once for U nodes and the k loop carries U independent
accumulators in registers, which LLVM vectorizes. U is the largest divisor of T that is
at most `max_jam` (pad trees to a multiple of 4 or 8 to get one). Everything else, and
every decode / prefill design, gets the project's CPU recipe (`schedules.recipes.cpu`:
rows unroll-and-jam, register accumulators, vectorized exp), so plain decoding, the
baseline, is scheduled as well as the verify pass is.

On the mamba1-target shape (d 192, 4 layers), one thread, AVX-512 host: a verify pass of
12 nodes takes 0.79-0.88 ms at best (0.85-1.25 ms median on the shared machine) against
0.23-0.3 ms for a scheduled decode step. By kernel (perf): SSM 38%, in_proj 24%,
out_proj 12%, conv 10%, x_proj 8%. The SSM costs about what a decode step's does per
node (one exp per state element); the jammed in_proj runs as fast as torch's own GEMM
at this shape (0.05-0.06 ms), so a transposed weight layout would gain little here.
The llvm run equals PyTorch (tests/test_speculative_llvm.py).
"""

from __future__ import annotations

from ..errors import ScheduleError
from .recipes import LINEAR_KINDS, accumulators, cpu_schedule
from .schedule import Schedule, customize


def jam_factor(T: int, max_jam: int = 8) -> int:
    """The largest divisor of T that is at most max_jam (1: no jam)."""
    return max(d for d in range(1, min(T, max_jam) + 1) if T % d == 0)


def verify_cpu_schedule(design, max_jam: int = 8) -> Schedule:
    """Token unroll-and-jam of the verify linear layers, then the CPU recipe (see the
    module doc). Any phase is accepted: only verify designs get the jam."""
    s = customize(design)
    d = s.design
    U = jam_factor(d.T, max_jam) if getattr(d, "phase", None) == "verify" else 1
    if U > 1:
        for k in s.kernels():
            if s.kind(k) not in LINEAR_KINDS:
                continue
            for buf, loop in accumulators(s, k):
                band, row = loop.split(":", 1)[1].split(".", 1)
                if row != "j" or list(s.get_loops(k)[band]) != ["i", "j", "k"]:
                    continue
                p = f"{k}:{band}"
                io, ii = s.split(f"{p}.i", U)
                s.reorder(io, f"{p}.j", f"{p}.k", ii)
                s.unroll(ii, 0, materialize=True)
                s.buffer_at(f"{k}:{buf}", f"{p}.j")
    cpu_schedule(s)  # one log: what the jam did, then the CPU recipe
    return s


def verify_cpu(design, max_jam: int = 8):
    """`verify_cpu_schedule`, returning the design (LLVMBackend's `schedule=`)."""
    try:
        verify_cpu_schedule(design, max_jam)
    except ScheduleError as e:
        raise ScheduleError(f"verify_cpu on the {design.phase} design (T={design.T}): {e}") from None
    return design
