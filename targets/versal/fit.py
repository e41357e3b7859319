"""Does a design fit a board? The emitter's own count against the board's resources.

Run before any tool: the count (`targets.hls.resources`) of DSP, LUT, FF, BRAM18K and
URAM is compared with the part's, each as a share of the board. A resource that does
not fit is reported with the kernel that takes most of it and the schedule knob that
would shrink it (fewer unrolled copies, a smaller partition, another memory binding,
streaming instead of buffering), so the user can reschedule before spending hours in
synthesis.
"""

from __future__ import annotations

import re
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
    advice: list[str] = field(default_factory=list)   # one line per resource over the limit

    @property
    def fits(self) -> bool:
        return all(i.used <= i.available * self.max_util for i in self.items)

    def item(self, resource: str) -> FitItem:
        return next(i for i in self.items if i.resource == resource)

    def table(self) -> str:
        lines = [f"resource fit on {self.board} (the emitter's count, before synthesis):",
                 f"  {'resource':<11} {'used':>10} {'available':>10} {'util':>7}"]
        for i in self.items:
            mark = "" if i.used <= i.available * self.max_util else "  <-- over"
            lines.append(f"  {i.resource:<11} {i.used:>10,} {i.available:>10,} {100 * i.utilization:>6.1f}%{mark}")
        lines += [f"  note: {n}" for n in self.notes]
        if not self.fits:
            lines += ["  does not fit:"] + [f"    {a}" for a in self.advice]
            if self.top_users:
                lines += ["  largest users:"] + ["    " + l for l in self.top_users.splitlines()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"board": self.board, "fits": self.fits, "max_util": self.max_util, "notes": self.notes,
                "advice": self.advice,
                "items": [asdict(i) | {"utilization": i.utilization} for i in self.items]}


def _port_bytes(p) -> int:
    """Off-chip bytes of a top port; `ap_int<W>` ports (which `Port.nbytes` does not
    size) count W bits per element, packed."""
    m = re.fullmatch(r"ap_u?(?:int|fixed)<(\d+)(?:,\s*\d+)?>", p.elem)
    if m:
        return -(-p.size * int(m.group(1)) // 8)
    return p.nbytes


def _largest(buffers, key):
    cands = [b for b in buffers if key(b) > 0]
    return max(cands, key=lambda b: (key(b), b.name)) if cands else None


def knob(resource: str, k) -> str:
    """The schedule knob that would shrink `resource` in kernel `k` (a KernelResources)."""
    from ..hls.resources import INTERFACE

    if k.name == INTERFACE:
        return "use fewer m_axi bundles (the `weight_bundles` of emit_design) or put more ports in one bundle"
    if k.name.startswith("global "):
        return f"stream weights instead of buffering: make `{k.name[7:]}` an off-chip port, not an on-chip constant"
    unroll = (f"reduce unroll/partition factors of {k.name} (up to {k.max_copies:,} copies of one operator; "
              "e.g. a smaller `tile`/`lanes` in the recipe)")
    if resource in ("BRAM18K", "URAM"):
        b = _largest(k.buffers, lambda b: b.bram18k if resource == "BRAM18K" else b.uram)
        if b is None:
            return unroll
        where = f"{k.name}:{b.name}"
        if b.name.startswith("fifo "):
            return f"reduce the depth of stream {b.name[5:]} in {k.name} ({b.shape[0]:,} slots; a smaller `depth` in the recipe)"
        if b.banks > 1:
            return f"reduce the partition factor of buffer {where} ({b.banks:,} banks), or stream it instead of buffering"
        other = "uram" if resource == "BRAM18K" else "bram"
        return f"bind buffer {where} to {other.upper()} (s.storage('{where}', '{other}')), or stream it instead of buffering"
    parts = k.lut_by if resource == "LUT" else k.ff_by
    top = max(parts, key=lambda p: (parts[p], p)) if parts else "operators"
    if top == "lutram":
        b = _largest(k.buffers, lambda b: b.lut)
        return f"bind buffer {k.name}:{b.name} to BRAM (s.storage('{k.name}:{b.name}', 'bram'))"
    if top == "registers":
        b = _largest(k.buffers, lambda b: b.ff)
        return f"partition buffer {k.name}:{b.name} less (completely partitioned it is {b.bits:,} bits of registers)"
    if k.max_copies > 1:
        return unroll
    if resource == "DSP":
        return f"{k.name} is not unrolled: quantize it (multipliers of <= 4-bit operands go to LUTs) or share operators"
    return f"{k.name} is not unrolled: pipeline or fuse its loops to share operators and control"


def check_fit(resources, board: Board, max_util: float = 1.0, ports=None) -> FitReport:
    """Compare a `targets.hls.resources.ResourceEstimate` with the board; with `ports`
    (the emitted top's ports) also the bytes each off-chip memory has to hold."""
    items = [
        FitItem("DSP", resources.dsp, board.dsp),
        FitItem("LUT", resources.lut, board.lut),
        FitItem("FF", resources.ff, board.ff),
        FitItem("BRAM18K", resources.bram18k, board.bram18k),
        FitItem("URAM", resources.uram, board.uram),
    ]
    advice = []
    for i in items:
        if i.used > i.available * max_util:
            k = resources.largest_user(i.resource)
            share = k.get(i.resource) / i.used if i.used else 0.0
            advice.append(f"{i.resource}: {i.used:,} of {i.available:,} ({100 * i.utilization:.0f}%); "
                          f"{k.name} takes {k.get(i.resource):,} ({100 * share:.0f}% of it): {knob(i.resource, k)}")
    if ports:
        per_mem: dict[str, int] = {}
        maxi = [p for p in ports if p.interface == "m_axi"]
        mem_of = board.bundle_memories(p.bundle for p in maxi)  # the project's sp= assignment
        for p in maxi:
            m = mem_of[p.bundle]
            per_mem[m] = per_mem.get(m, 0) + _port_bytes(p)
        sizes = {m.name: m.size_gib for m in board.memories}
        for m, used in per_mem.items():
            if m in sizes:
                item = FitItem(f"{m} MiB", -(-used // 2**20), int(sizes[m] * 1024))
                items.append(item)
                if item.used > item.available * max_util:
                    advice.append(f"{item.resource}: {item.used:,} of {item.available:,}: spread the weights over more "
                                  "memories (more `weight_bundles`) or quantize them")
    notes = ["LUT / FF are the emitter's model (targets/hls/resources.py), not synthesis",
             f"LUTRAM / register arrays: {resources.lutram_bits:,} / {resources.register_bits:,} bits"]
    if not board.resources_verified:
        notes.append(f"{board.name}'s resource figures are unverified (see targets/versal/boards.py); "
                     "the csynth report gives the part's real numbers")
    return FitReport(board.name, items, max_util, notes, resources.table(top_n=8), advice)
