"""Does a design fit a board? The emitter's own count against the board's resources.

Run before any tool: a design that needs more DSPs, block RAM or UltraRAM than the
part has is reported with the kernels that use the most, so the user can schedule
(share, stream, bind to URAM) before spending hours in synthesis.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .boards import Board


@dataclass
class FitItem:
    resource: str
    used: int
    available: int

    @property
    def utilization(self) -> float:
        return self.used / self.available if self.available else float("inf")

    @property
    def fits(self) -> bool:
        return self.used <= self.available


@dataclass
class FitReport:
    board: str
    items: list[FitItem]
    max_util: float = 1.0
    notes: list[str] = field(default_factory=list)
    top_users: str = ""

    @property
    def fits(self) -> bool:
        return all(i.used <= i.available * self.max_util for i in self.items)

    def table(self) -> str:
        lines = [f"resource fit on {self.board} (the emitter's count, before synthesis):",
                 f"  {'resource':<11} {'used':>9} {'available':>10} {'util':>7}"]
        for i in self.items:
            mark = "" if i.used <= i.available * self.max_util else "  <-- over"
            lines.append(f"  {i.resource:<11} {i.used:>9,} {i.available:>10,} {100 * i.utilization:>6.1f}%{mark}")
        lines += [f"  note: {n}" for n in self.notes]
        if not self.fits and self.top_users:
            lines += ["  largest users:"] + ["    " + l for l in self.top_users.splitlines()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"board": self.board, "fits": self.fits, "max_util": self.max_util, "notes": self.notes,
                "items": [asdict(i) | {"utilization": i.utilization} for i in self.items]}


def check_fit(resources, board: Board, max_util: float = 1.0, ports=None) -> FitReport:
    """Compare a `targets.hls.resources.ResourceEstimate` with the board; with `ports`
    (the emitted top's ports) also the bytes each off-chip memory has to hold."""
    items = [
        FitItem("DSP", resources.dsp, board.dsp),
        FitItem("BRAM18K", resources.bram18k, board.bram18k),
        FitItem("URAM", resources.uram, board.uram),
    ]
    if ports:
        per_mem: dict[str, int] = {}
        for p in ports:
            if p.interface == "m_axi":
                m = board.memory_of_bundle(p.bundle or "gmem0")
                per_mem[m] = per_mem.get(m, 0) + p.nbytes
        sizes = {m.name: m.size_gib for m in board.memories}
        for m, used in per_mem.items():
            if m in sizes:
                items.append(FitItem(f"{m} MiB", -(-used // 2**20), int(sizes[m] * 1024)))
    notes = ["LUT and FF are not estimated before synthesis (see the csynth report)",
             f"LUTRAM / register arrays: {resources.lutram_bits:,} / {resources.register_bits:,} bits"]
    if not board.resources_verified:
        notes.append(f"{board.name}'s resource figures are unverified (see targets/versal/boards.py); "
                     "the csynth report gives the part's real numbers")
    return FitReport(board.name, items, max_util, notes, resources.table(top_n=8))
