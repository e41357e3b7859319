"""The timing facts of the estimate: operator latencies and delays, memory ports, AXI.

Every figure is either a documented fact (source beside it) or a stated assumption of
the model; nothing is fitted to a design. The calibration test (LightMamba's published
design, tests/test_estimate.py) checks the whole model against a measured board.

Operators are of two kinds:
* **registered cores** (floating point, DSP multipliers, transcendental cores): a
  latency in clock cycles;
* **combinational logic** (integer add / compare / select, LUT multipliers, logic):
  a delay in ns; chains of them share a cycle until the clock period is used up, as
  Vitis HLS chains operations within its clock budget (UG1399 "Scheduling", the
  clock uncertainty margin is 27% of the period by default).
"""

from __future__ import annotations

import math

#: Vitis HLS' default clock uncertainty: 27% of the period is kept for routing
#: (UG1399 "Specifying the Clock Frequency"); chaining uses the rest.
CLOCK_UNCERTAINTY = 0.27

#: Floating-point cores in cycles at 300-400 MHz (-2 speed grade). Model assumption,
#: the order of magnitude of Vitis HLS csynth reports on Versal (DSPFP32 add / multiply,
#: AMD AM004 "DSPFP32"; fabric divide / sqrt; the exp / log cores of hls_math). Vitis
#: picks fewer stages at lower clocks: these are the 300-400 MHz figures.
FP_LATENCY = {
    "arith.addf": 4, "arith.subf": 4, "arith.mulf": 3, "math.fma": 5,
    "arith.divf": 12, "math.sqrt": 12, "math.rsqrt": 10, "math.fpowi": 6,
    "math.exp": 10, "math.exp2": 10, "math.expm1": 12, "math.log": 12, "math.log1p": 14,
    "math.log2": 12, "math.tanh": 20, "math.powf": 24,
    "arith.cmpf": 1, "arith.maximumf": 1, "arith.minimumf": 1, "arith.maxnumf": 1, "arith.minnumf": 1,
    "arith.sitofp": 4, "arith.uitofp": 4, "arith.fptosi": 3, "arith.fptoui": 3,
    "arith.extf": 1, "arith.truncf": 1,
}
#: an integer multiplier on DSP58s: the 27x24 multiplier with its input, multiplier
#: and output registers (AM004 "DSP58 Architecture"), one more per cascaded DSP
DSP_MUL_LATENCY = 3
#: integer divide (a fabric core, one quotient bit per stage; model assumption)
DIV_LATENCY_PER_BIT = 1

#: combinational delays in ns (model assumptions for Versal -2: a LUT level ~0.35 ns,
#: a carry chain ~0.02 ns per bit after its entry; UG1273 "Programmable Logic")
LUT_LEVEL_NS = 0.35
CARRY_NS_PER_BIT = 0.02
ADD_NS = LUT_LEVEL_NS  # plus CARRY_NS_PER_BIT * width

#: one memory read: the BRAM / URAM output is registered, so a load costs a cycle
#: before its value can be used (UG1399 "Arrays": BRAM read latency 1; URAM 1 with the
#: default ram_2p binding)
LOAD_LATENCY = 1
#: the ports of one bank of on-chip storage per cycle (true dual-port BRAM / URAM;
#: UG1399 "bind_storage": ram_2p, ram_t2p); LUTRAM one write + one read port
PORTS = {"bram": 2, "uram": 2, "lutram": 2, "rom": 2}
#: an hls::stream FIFO moves one element per cycle in each direction (UG1399 "HLS Stream Library")
STREAM_PER_CYCLE = 1

#: cycles from an m_axi read request to its first data: the `latency` option of
#: `#pragma HLS interface m_axi`, default 64 (UG1399 "pragma HLS interface"), paid once
#: per burst (a pipelined loop over consecutive addresses is one burst)
MAXI_LATENCY = 64

#: Vitis HLS pipelines every innermost loop whose trip count is above this limit by
#: itself, at II=1 (`syn.compile.pipeline_loops`, default 64; UG1399 2023.2+
#: "Automatic Loop Pipelining")
AUTO_PIPELINE_TRIP = 64
#: cycles a loop spends entering and leaving (its FSM states; UG1399 "Loop Latency")
LOOP_OVERHEAD = 1
#: a function call's handshake (ap_start / ap_done; UG1399 "Block-Level Control Protocols")
CALL_OVERHEAD = 2


def period_ns(clock_mhz: float) -> float:
    return 1000.0 / clock_mhz


def budget_ns(clock_mhz: float) -> float:
    """The part of a clock period that combinational chains may use."""
    return period_ns(clock_mhz) * (1.0 - CLOCK_UNCERTAINTY)


def int_delay_ns(name: str, width: int, narrow_bits: tuple[int, int] | None = None) -> float:
    """Delay of one combinational integer op of `width` bits (a LUT multiplier when
    `narrow_bits` gives its operand widths: an adder tree of min(a, b) partial products)."""
    if narrow_bits is not None:
        a, b = narrow_bits
        levels = max(1, math.ceil(math.log2(max(min(a, b), 2))))
        return LUT_LEVEL_NS + levels * (ADD_NS + CARRY_NS_PER_BIT * (a + b))
    if name in ("arith.andi", "arith.ori", "arith.xori", "arith.select"):
        return LUT_LEVEL_NS
    if name in ("arith.shli", "arith.shrsi", "arith.shrui"):
        return LUT_LEVEL_NS * max(1, math.ceil(math.log2(max(width, 2))) / 2)
    return ADD_NS + CARRY_NS_PER_BIT * width  # add, sub, compare, min / max
