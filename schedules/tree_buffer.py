"""The FIFO tree buffer of speculative tree verification, as a schedule on the states.

A verify design captured with `fifo_depth=S` (`flow.capture(model, "verify", T,
fifo_depth=S)`) computes each layer's tree scan `ssm` (and `ssm_replay`) node by node in
breadth-first order and keeps the live SSM states in a ring `state_fifo` of S slots:
node t writes slot t mod S and reads its parent's slot (S is bounded by two levels of
the tree, not by its size; `runtime.trees`). This recipe maps that ring onto on-chip
memory the way SpecMamba's verifier does:

- `storage`: the ring is one on-chip RAM (ram_2p: a parent read and a child write per
  cycle), URAM when it is large, BRAM otherwise;
- `partition`: cyclic along the state's last dimension (N) by `lanes`, so `lanes`
  state elements are read, updated and written per cycle;
- `pipeline`: the state-element loops inside the node loop at II `ii`; the node loop
  `t` itself stays sequential (a node needs its parent's state).

Only public primitives are used, so the log replays on a fresh capture. Directives
annotate; the llvm target strips them, so the scheduled design computes exactly what
the unscheduled one does (tests/test_speculative_llvm.py), and the HLS target turns
them into pragmas. Designs of other phases, or without a FIFO, are returned untouched
by `tree_buffer` (so it can be any backend's `schedule=`), and rejected with a
ScheduleError by `tree_buffer_schedule`.
"""

from __future__ import annotations


from ..errors import ScheduleError
from ..flow.mlir import funcs, str_attr, walk
from ..flow.naming import loops_of
from .schedule import Schedule, customize

FIFO_NAME = "state_fifo"
URAM_BYTES = 64 * 1024  # rings at least this large go to URAM


def _innermost(loop) -> bool:
    return not any(o.name == "affine.for" for o in walk(loop))


def tree_buffer_schedule(design, lanes: int = 16, ii: int = 1, impl: str = "auto") -> Schedule:
    """Schedule the FIFO tree buffers of a verify design (see the module doc)."""
    if not _has_fifo(design):
        raise ScheduleError("tree_buffer: needs a verify design captured with fifo_depth "
                            "(flow.capture(model, 'verify', T, fifo_depth=S))")
    s = customize(design)
    for k in [k for k in s.kernels() if s.kind(k) == "ssm"]:  # `ssm` and `ssm_replay`
        fn = funcs(s.module)[k]
        ring = next((o for o in walk(fn) if o.name == "memref.alloc" and str_attr(o, "buffer_name") == FIFO_NAME),
                    None)
        if ring is None:
            raise ScheduleError(f"tree_buffer: kernel {k} has no '{FIFO_NAME}' buffer")
        shape = list(ring.results[0].type.shape)
        nbytes = 4
        for d in shape:
            nbytes *= d
        kind = impl if impl != "auto" else ("uram" if nbytes >= URAM_BYTES else "bram")
        s.storage(f"{k}:{FIFO_NAME}", kind)
        factor = min(lanes, shape[-1])
        if factor > 1:
            s.partition(f"{k}:{FIFO_NAME}", "cyclic", dim=len(shape), factor=factor)
        for band, loops in loops_of(fn).items():
            if "t" not in loops:
                continue
            for name, L in loops.items():
                if name != "t" and _innermost(L):
                    s.pipeline(f"{k}:{band}.{name}", ii)
    return s


def tree_buffer(design, **kw):
    """`tree_buffer_schedule` for verify designs with a FIFO; other designs pass through.
    Returns the design (the `schedule=` contract of LLVMBackend and the recipes)."""
    if _has_fifo(design):
        tree_buffer_schedule(design, **kw)
    return design


def _has_fifo(design) -> bool:
    """Whether a Design (or a Schedule's) is a verify design with a FIFO tree buffer."""
    d = design.design if isinstance(design, Schedule) else design
    return getattr(d, "phase", None) == "verify" and getattr(d, "fifo_depth", None) is not None
