"""How fast a scheduled design runs on the board: an analytic estimate from the IR.

    from mambaflow.targets.estimate import estimate, estimate_model
    est = estimate(design, "vck190")                     # a scheduled Design
    est = estimate_model("mamba2-2.7b", board="vck190", quant="w4a4", schedule="accelerator")
    print(est.table()); est.tokens_per_s, est.bound

The estimate reads the same IR every target consumes. It gives cycles per kernel, per
layer and per token (`cycles.py`, `regions.py`), the achieved II of every pipelined loop
with the reason when it is above the requested one, the off-chip bytes per token of
every m_axi bundle against the board's memories (`traffic.py`), and

    tokens/s = min(compute bound, memory bound)

where the compute bound is the clock over the cycles per token and the memory bound is
the slowest memory's bytes over its bandwidth times `BURST_EFFICIENCY`. Resources are
the shared count (`targets.hls.resources`), checked against the board (`targets.versal.fit`).
"""

from __future__ import annotations

from .estimate import BURST_EFFICIENCY, Estimate, KernelEstimate, estimate, speculative_tokens_per_s
from .cycles import LoopEstimate
from .model import estimate_model
from .regions import RegionEstimate, Stall

__all__ = ["BURST_EFFICIENCY", "Estimate", "KernelEstimate", "LoopEstimate", "RegionEstimate", "Stall", "estimate",
           "estimate_model", "speculative_tokens_per_s"]
