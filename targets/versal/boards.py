"""Board descriptors: the Versal boards mambaflow builds for.

Each board gives its part, the Vitis platform, the programmable-logic resources the
fit check uses, the default kernel clock and the memories kernels can reach (with the
names v++ connectivity uses for them).

Sources. VCK190 / XCVC1902: DSP58 count from AMD AM004 (Table 1, VC1902: 1,968);
LUT 899,840, FF 1,799,680, BRAM36 967 (= 1,934 BRAM18K), URAM 463 from AMD DS950
(Versal AI Core Series product table, VC1902). FF = 2 x LUT on every Versal part: a
CLB has 32 LUTs and 64 flip-flops (AMD UG1273, "Programmable Logic"), which checks the
FF figures of both boards.
VHK158 / XCVH1582: the part number and the HBM2e (32 GB, 819 GB/s, 32 pseudo-channels
of 25.6 GB/s) are from AMD UG1611 / DS950; its PL resource figures (DS957, Versal HBM
Series product table) could NOT be checked from this environment (the document
search has the HBM series' AC/DC sheet DS960 and UG1611, not the product table), so
they are marked `resources_verified=False`: the fit check says so, and after a csynth
run the report's AvailableResources (from Vitis' own part database) are printed next
to them.
Memory names (`DDR`, `LPDDR`, `HBM[k]`) and platform names follow AMD's base platforms
of the 2023.2 release; `make platforminfo` in a generated project lists what the
installed platform really offers, and `PLATFORM=...` overrides the platform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import MambaflowError


@dataclass(frozen=True)
class Memory:
    """One memory the kernels reach: its v++ connectivity name, kind and bandwidth."""

    name: str              # as in `sp=<cu>.<port>:<name>`
    kind: str              # 'DDR4', 'LPDDR4', 'HBM2e'
    size_gib: float
    bandwidth_gbs: float   # peak, GB/s


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    platform: str
    dsp: int               # DSP58
    lut: int
    ff: int
    bram36: int            # 36 Kb block RAMs (each = 2 BRAM18K)
    uram: int              # 288 Kb UltraRAMs
    clock_mhz: float       # default kernel clock
    io_memory: str         # where activations / states / logits live
    weight_memories: tuple[str, ...]  # weight bundles go round-robin over these
    memories: tuple[Memory, ...] = field(default_factory=tuple)
    resources_verified: bool = True
    host_arch: str = "aarch64"         # the Versal APU (Cortex-A72) runs the XRT host
    notes: str = ""

    @property
    def bram18k(self) -> int:
        return 2 * self.bram36

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def default_weight_bundles(self) -> int:
        return len(self.weight_memories)

    def memory_of_bundle(self, bundle: str) -> str:
        """The memory a top-level m_axi bundle is connected to."""
        if bundle.startswith("gmem_w") and bundle[6:].isdigit():
            return self.weight_memories[int(bundle[6:]) % len(self.weight_memories)]
        return self.io_memory

    def describe(self) -> str:
        mems = ", ".join(f"{m.name} ({m.kind}, {m.bandwidth_gbs:g} GB/s)" for m in self.memories)
        flag = "" if self.resources_verified else "  [PL resource figures unverified]"
        return (f"{self.name}: {self.part}, platform {self.platform}, {self.dsp} DSP58, {self.lut:,} LUT, "
                f"{self.ff:,} FF, {self.bram36} BRAM36, {self.uram} URAM, {self.clock_mhz:g} MHz; memories: {mems}{flag}")


_HBM_PCS = 32

BOARDS: dict[str, Board] = {
    "vck190": Board(
        name="vck190",
        part="xcvc1902-vsva2197-2MP-e-S",
        platform="xilinx_vck190_base_202320_1",
        # AM004 Table 1 (DSP58); DS950 VC1902 (LUT, BRAM36, URAM); FF = 2 x LUT (UG1273)
        dsp=1968, lut=899_840, ff=1_799_680, bram36=967, uram=463,
        clock_mhz=300.0,
        io_memory="DDR",
        weight_memories=("LPDDR", "DDR"),
        memories=(
            Memory("DDR", "DDR4", 8.0, 25.6),
            Memory("LPDDR", "LPDDR4", 8.0, 34.1),
        ),
        notes="Versal AI Core; kernels reach DDR4 and LPDDR4 through the NoC",
    ),
    "vhk158": Board(
        name="vhk158",
        part="xcvh1582-vsva3697-2MP-e-S",
        platform="xilinx_vhk158_base_202320_1",
        # DS957 (Versal HBM product table, VH1582): NOT verified here, see the module docstring
        dsp=7_392, lut=1_139_040, ff=2_278_080, bram36=2_541, uram=1_301,
        clock_mhz=300.0,
        io_memory="HBM[0]",
        weight_memories=tuple(f"HBM[{k}]" for k in range(1, 9)),
        memories=tuple(Memory(f"HBM[{k}]", "HBM2e", 32.0 / _HBM_PCS, 819.2 / _HBM_PCS) for k in range(_HBM_PCS))
        + (Memory("DDR", "DDR4", 32.0, 25.6),),
        resources_verified=False,
        notes="Versal HBM: 32 GB HBM2e in 32 pseudo-channels (819 GB/s); weights spread over 8 of them",
    ),
}


def get_board(name: str | Board) -> Board:
    if isinstance(name, Board):
        return name
    key = str(name).lower()
    if key not in BOARDS:
        raise MambaflowError(f"unknown board '{name}': choose one of {', '.join(BOARDS)}")
    return BOARDS[key]
