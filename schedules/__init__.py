"""mambaflow.schedules: the schedule language (Allo's primitives as MLIR rewrites).

`customize(design)` returns a `Schedule`; see `schedules.schedule` for the primitives,
addressing, transactions and the replayable log.
"""

from .schedule import (BufferHandle, LoopHandle, Schedule, Split, customize, load_log,
                       register_primitive, replay)

__all__ = ["BufferHandle", "LoopHandle", "Schedule", "Split", "customize", "load_log",
           "register_primitive", "replay"]
