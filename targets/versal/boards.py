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
Memory names (`DDR`, `LPDDR`) are those of AMD's VCK190 base platform
(Xilinx/Vitis_Accel_Examples 2023.1, common/platform/vck190/platform.json); `HBM[k]` is
the usual name of HBM pseudo-channels and is only a guess for a VHK158 platform, which
the user supplies. `make platforminfo` in a generated project lists what the platform
really offers.

Platforms: only names AMD publishes are defaults, one per Vitis release (sources in
docs/VITIS_REFERENCE.md). AMD publishes no VHK158 platform (`xilinx_vhk158_base_*` is
not one), so that board has no default and the user passes `--platform`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from ...errors import MambaflowError


@dataclass(frozen=True)
class Memory:
    """One memory the kernels reach: its v++ connectivity name, kind and bandwidth."""

    name: str              # as in `sp=<cu>.<port>:<name>`
    kind: str              # 'DDR4', 'LPDDR4', 'HBM2e'
    size_gib: float
    bandwidth_gbs: float   # peak, GB/s


# bundles of ports used outside the dataflow processes (activations, outputs): io memory
IO_BUNDLES = ("gmem_io", "gmem_out")


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    platform: str | None   # the default platform when the Vitis release is unknown; None: none published
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
    # (Vitis release, platform name) AMD publishes for this board, oldest first
    published_platforms: tuple[tuple[str, str], ...] = ()
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

    def default_platform(self, release: str | None) -> str | None:
        """The published platform for a Vitis release; `platform` when the release is
        unknown; None when AMD publishes none for that release (or for this board)."""
        if release is None:
            return self.platform
        return dict(self.published_platforms).get(release)

    def bundle_memories(self, bundles: Iterable[str | None]) -> dict[str | None, str]:
        """Bundle -> memory for one kernel, `bundles` in port order (repeats allowed).

        `gmem_io` / `gmem_out` (and a port without a bundle) go to `io_memory`; every other
        bundle, whatever its name (`gmem_in_proj`, `gmem_ssm`, `gmem_w`, `gmem_w0`, ...),
        takes the next of `weight_memories`, round-robin in the order bundles first appear,
        so the assignment is deterministic and parallel AXI masters reach different memories.
        All ports of a bundle share one AXI master, hence one memory (v++ `sp=`)."""
        out: dict[str | None, str] = {}
        k = 0
        for b in bundles:
            if b in out:
                continue
            if b is None or b in IO_BUNDLES:
                out[b] = self.io_memory
            else:
                out[b] = self.weight_memories[k % len(self.weight_memories)]
                k += 1
        return out

    def memory_of_bundle(self, bundle: str | None, bundles: Iterable[str | None] = ()) -> str:
        """The memory of `bundle` among the kernel's `bundles` (port order); see `bundle_memories`."""
        return self.bundle_memories([*bundles, bundle])[bundle]

    def describe(self) -> str:
        mems = ", ".join(f"{m.name} ({m.kind}, {m.bandwidth_gbs:g} GB/s)" for m in self.memories)
        flag = "" if self.resources_verified else "  [PL resource figures unverified]"
        return (f"{self.name}: {self.part}, {self.dsp} DSP58, {self.lut:,} LUT, "
                f"{self.ff:,} FF, {self.bram36} BRAM36, {self.uram} URAM, {self.clock_mhz:g} MHz; memories: {mems}{flag}")


_HBM_PCS = 32

BOARDS: dict[str, Board] = {
    "vck190": Board(
        name="vck190",
        part="xcvc1902-vsva2197-2MP-e-S",
        platform="xilinx_vck190_base_202420_1",
        # AMD's VCK190 base platforms by release (docs/VITIS_REFERENCE.md, "Platforms")
        published_platforms=(("2023.1", "xilinx_vck190_base_202310_1"), ("2023.2", "xilinx_vck190_base_202320_1"),
                             ("2024.1", "xilinx_vck190_base_202410_1"), ("2024.2", "xilinx_vck190_base_202420_1"),
                             ("2025.1", "xilinx_vck190_base_202510_1"), ("2025.2", "xilinx_vck190_base_202520_1")),
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
        platform=None,  # AMD publishes no VHK158 platform: the user passes --platform
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
