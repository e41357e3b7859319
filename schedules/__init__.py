"""mambaflow.schedules: the schedule language (Allo's primitives as MLIR rewrites).

    s = mambaflow.customize(design)
    s.split / reorder / fuse / unroll / pipeline / parallel / partition / storage /
      buffer_at / reuse_at / compute_at / to / dataflow / inline / compose / vectorize
    s.log, str(s), s.save(path), replay(design, path)

Modules: `schedule` (the Schedule: addressing, transactions, log), `rewrite` (loop
rewrites), `deps` (dependence test), `buffers` (buffer_at / reuse_at), `streams` (to),
`cpu` (vectorize's exp expansion), `recipes` (Mamba accelerator and CPU recipes),
`registry` (the recipes by name: `mambaflow build --schedule NAME`),
`testing` (kernel-level checks against PyTorch).
"""

from .schedule import (BufferHandle, LoopHandle, Schedule, Split, customize, load_log,
                       register_primitive, replay)

__all__ = ["BufferHandle", "LoopHandle", "Schedule", "Split", "customize", "load_log",
           "register_primitive", "replay"]
