"""`estimate(design, board)`: the estimate of one scheduled design (see the package doc)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from torch_mlir import ir

from ...errors import MambaflowError
from ...flow.effects import bindings
from ...flow.mlir import funcs as module_funcs, str_attr, walk
from ..hls import packing as PK
from ..hls.cxx import element_bits
from ..hls.resources import estimate_resources
from ..versal.boards import Board, get_board
from ..versal.fit import check_fit
from .cycles import LoopEstimate, Timer
from .memories import MemoryMap, _arg_name
from .traffic import bytes_per_bundle, invocations

#: The one global efficiency factor (all Versal boards): DRAM / HBM bursts reach about
#: 70-90% of peak (REFERENCE.md "Off-chip bandwidth", measured efficiency); the middle.
BURST_EFFICIENCY = 0.8
RESOURCES = ("dsp", "lut", "ff", "bram18k", "uram")


@dataclass
class KernelEstimate:
    name: str
    cycles: int          # per invocation
    calls: int           # invocations per token
    dsp: int = 0
    lut: int = 0
    ff: int = 0
    bram18k: int = 0
    uram: int = 0
    loops: list[LoopEstimate] = field(default_factory=list)

    @property
    def cycles_per_token(self) -> int:
        return self.cycles * self.calls

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "cycles", "calls", *RESOURCES)}
        d["loops"] = [l.to_dict() for l in self.loops]
        return d


@dataclass
class Estimate:
    board: str
    clock_mhz: float
    phase: str
    cycles_per_token: float            # cycles of one top execution / tokens it yields
    compute_tokens_per_s: float
    memory_tokens_per_s: float
    roofline_tokens_per_s: float       # all the board's memories at peak, this design's bytes
    bytes_per_token: dict[str, dict]   # bundle -> {read, write, memory}
    memories: dict[str, dict]          # memory -> {bytes, bandwidth_gbs, seconds}
    resources: dict[str, int]
    fits: bool
    kernels: list[KernelEstimate]
    layers: int = 1
    layer_cycles: int = 0
    regions: list = field(default_factory=list)
    tokens_per_pass: float = 1.0       # verify: accepted tokens per pass; prefill: the chunk
    notes: list[str] = field(default_factory=list)
    design: object | None = field(default=None, repr=False)    # estimate_model: the scheduled Design
    schedule: object | None = field(default=None, repr=False)  # estimate_model: its Schedule (the log)

    @property
    def tokens_per_s(self) -> float:
        return min(self.compute_tokens_per_s, self.memory_tokens_per_s)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_tokens_per_s <= self.memory_tokens_per_s else "memory"

    @property
    def roofline_share(self) -> float:
        return self.tokens_per_s / self.roofline_tokens_per_s if self.roofline_tokens_per_s else 0.0

    @property
    def loops(self) -> list[LoopEstimate]:
        return [l for k in self.kernels for l in k.loops]

    def kernel(self, name: str) -> KernelEstimate:
        for k in self.kernels:
            if k.name == name:
                return k
        raise MambaflowError(f"no kernel '{name}' in the estimate; kernels: {', '.join(k.name for k in self.kernels)}")

    def to_dict(self) -> dict:
        return {
            "board": self.board, "clock_mhz": self.clock_mhz, "phase": self.phase,
            "tokens_per_s": self.tokens_per_s, "bound": self.bound,
            "compute_tokens_per_s": self.compute_tokens_per_s, "memory_tokens_per_s": self.memory_tokens_per_s,
            "roofline_tokens_per_s": self.roofline_tokens_per_s, "roofline_share": self.roofline_share,
            "cycles_per_token": self.cycles_per_token, "layers": self.layers, "layer_cycles": self.layer_cycles,
            "tokens_per_pass": self.tokens_per_pass, "burst_efficiency": BURST_EFFICIENCY,
            "bytes_per_token": self.bytes_per_token, "memories": self.memories, "resources": self.resources,
            "fits": self.fits, "kernels": [k.to_dict() for k in self.kernels],
            "regions": [r.to_dict() for r in self.regions], "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def table(self) -> str:
        L = [f"estimate: {self.phase} on {self.board} at {self.clock_mhz:g} MHz",
             f"  tokens/s {self.tokens_per_s:,.3g} ({self.bound} bound; compute {self.compute_tokens_per_s:,.3g}, "
             f"memory {self.memory_tokens_per_s:,.3g}; {100 * self.roofline_share:.0f}% of the memory roofline "
             f"{self.roofline_tokens_per_s:,.3g})",
             f"  cycles/token {self.cycles_per_token:,.0f}; {self.layers} layer(s) of {self.layer_cycles:,} cycles",
             "  resources " + ", ".join(f"{k.upper()} {v:,}" for k, v in self.resources.items())
             + ("" if self.fits else "  (does NOT fit)"),
             f"  {'kernel':<22}{'cycles':>12}{'calls':>7}{'cyc/token':>14}{'share':>7}"]
        total = self.cycles_per_token * self.tokens_per_pass or 1
        for k in sorted(self.kernels, key=lambda k: -k.cycles_per_token):
            L.append(f"  {k.name:<22}{k.cycles:>12,}{k.calls:>7}{k.cycles_per_token:>14,}"
                     f"{100 * k.cycles_per_token / total:>6.0f}%")
        slow = [l for l in self.loops if l.ii is not None and l.reason]
        if slow:
            L.append("  pipelined loops above their II:")
            for l in sorted(slow, key=lambda l: -l.cycles * l.calls)[:10]:
                L.append(f"    {l.kernel}:{l.path}  II {l.ii} (asked {l.ii_req}) {l.reason}: {l.detail}")
        for r in self.regions:
            L.append(f"  dataflow {r.name}: {r.latency:,} cycles, slowest {r.slowest} "
                     f"({r.processes.get(r.slowest, 0):,}), fill/drain/stalls {r.fill:,}")
            for s in r.stalls:
                L.append(f"    stall: {s.producer} -> {s.consumer} on {s.stream} (depth {s.depth} of "
                         f"{s.elements}): {s.cycles:,} cycles")
        L.append("  off-chip per token:")
        for m, d in sorted(self.memories.items()):
            L.append(f"    {m:<8} {d['bytes'] / 1e6:>10.3f} MB at {d['bandwidth_gbs']:g} GB/s x "
                     f"{BURST_EFFICIENCY:g} -> {1e3 * d['seconds']:.3f} ms")
        L += [f"  note: {n}" for n in self.notes]
        return "\n".join(L)


def _top_ports(top_fn, bundles: dict[str, str]) -> dict[int, tuple[str, int, str | None]]:
    ft = ir.FunctionType(ir.TypeAttr(top_fn.attributes["function_type"]).value)
    out = {}
    for i, t in enumerate(ft.inputs):
        if isinstance(t, ir.MemRefType):
            name = _arg_name(top_fn, i)
            out[i] = (name, element_bits(ir.MemRefType(t).element_type), bundles.get(name, "gmem_io"))
    return out


def _design_parts(design):
    """(module, top, phase, T) of a Design, or of an ir.Module of kernels whose top
    function carries `mf.top` (a decode step)."""
    if isinstance(design, ir.Module):
        tops = [n for n, f in module_funcs(design).items() if "mf.top" in f.attributes]
        if len(tops) != 1:
            raise MambaflowError(f"estimate: the module needs exactly one function marked mf.top, found {tops}")
        return design, tops[0], "decode", 1
    return design.module, design.top, design.phase, design.T


def _layer_loop(top_fn):
    for op in walk(top_fn):
        if op.name == "affine.for" and str_attr(op, "op_name") == "layer":
            return op
    return None


def estimate(design, board: str | Board = "vck190", *, clock_mhz: float | None = None, layers: int | None = None,
             beat_bits: int = PK.BEAT_BITS, bundles: dict[str, str] | None = None,
             tokens_per_pass: float | None = None) -> Estimate:
    """The estimate of a scheduled `design` (flow.capture.Design or a quantized one) on
    `board` at `clock_mhz` (default: the board's kernel clock).

    layers: the number of layers the top's `layer` loop runs (default: its trip count), so
    a capture with fewer layers stands for the whole model (the layer engine's IR does not
    depend on the depth, only this trip count and the stacked ports' leading dimension do).
    beat_bits: the AXI beat of packed (sub-byte) ports, as given to the emitter.
    tokens_per_pass: tokens one execution yields (verify: the accepted length; prefill:
    the chunk, the default for prefill; decode: 1)."""
    from ..hls.design import default_bundles

    from ..versal.dataflow import default_bundles

    b = get_board(board)
    clock = float(clock_mhz or b.clock_mhz)
    if clock <= 0:
        raise MambaflowError(f"estimate: the clock must be positive, got {clock_mhz} MHz")
    module, top, phase, T = _design_parts(design)
    fs = module_funcs(module)
    if top not in fs:
        raise MambaflowError(f"estimate: the design has no top function '{top}'")
    bundles = bundles if bundles is not None else default_bundles(module)
    with module.context:
        top_ports = _top_ports(fs[top], bundles)
        mems = MemoryMap(fs, bindings(fs, top), top_ports, beat_bits)
        trips = {}
        layer = _layer_loop(fs[top])
        n_layers = None
        if layer is not None:
            from ...schedules.deps import trip_count

            n_layers = trip_count(layer) or 1
            if layers is not None:
                if not (isinstance(layers, int) and layers >= 1):
                    raise MambaflowError(f"estimate: layers must be a positive number, got {layers!r}")
                trips[layer] = layers
                n_layers = layers
        timer = Timer(fs, top, mems, clock, trips)
        top_t = timer.func(top)
        calls = invocations(timer)
        traffic = bytes_per_bundle(timer)
        res = estimate_resources(module, fs, top)
    fit = check_fit(res, b)
    by_name = {k.name: k for k in res.all_kernels}
    kernels = []
    for name in fs:
        t = timer.func(name) if name in calls else None
        if t is None:
            continue
        kr = by_name.get(name)
        k = KernelEstimate(name, t.cycles, calls.get(name, 0), loops=[l for l in t.loops if l.kernel == name])
        if kr is not None:
            k.dsp, k.lut, k.ff, k.bram18k, k.uram = kr.dsp, kr.lut, kr.ff, kr.bram18k, kr.uram
        for l in k.loops:
            l.calls *= k.calls
        kernels.append(k)
    regions = [timer.func(n).region for n in fs if n in calls and timer.func(n).region is not None]
    # memory bound
    order = [bundles.get(p[0], "gmem_io") for p in top_ports.values()]
    mem_of = b.bundle_memories(order)
    bw = {m.name: m.bandwidth_gbs for m in b.memories}
    per_token = T if (tokens_per_pass is None and phase == "prefill") else (tokens_per_pass or 1.0)
    bytes_tok, mems_used = {}, {}
    for bundle, d in sorted(traffic.items()):
        m = mem_of.get(bundle, b.io_memory)
        bytes_tok[bundle] = {"read": d["read"], "write": d["write"], "memory": m}
        e = mems_used.setdefault(m, {"bytes": 0.0, "bandwidth_gbs": bw.get(m, 0.0)})
        e["bytes"] += d["read"] + d["write"]
    slowest = 0.0
    for m, e in mems_used.items():
        e["seconds"] = e["bytes"] / (e["bandwidth_gbs"] * 1e9 * BURST_EFFICIENCY) if e["bandwidth_gbs"] else 0.0
        slowest = max(slowest, e["seconds"])
    total_bytes = sum(e["bytes"] for e in mems_used.values())
    peak = sum(m.bandwidth_gbs for m in b.memories) * 1e9
    cycles = top_t.cycles
    layer_cycles = 0
    if layer is not None:
        for l in top_t.loops:
            if l.kernel == top and l.path.startswith("layer:"):
                layer_cycles = l.depth
                break
    notes = []
    if not b.resources_verified:
        notes.append(f"{b.name}'s resource figures are unverified (targets/versal/boards.py)")
    return Estimate(
        board=b.name, clock_mhz=clock, phase=phase, cycles_per_token=cycles / per_token,
        compute_tokens_per_s=clock * 1e6 / max(cycles, 1) * per_token,
        memory_tokens_per_s=(per_token / slowest) if slowest else float("inf"),
        roofline_tokens_per_s=(peak / total_bytes * per_token) if total_bytes else float("inf"),
        bytes_per_token=bytes_tok, memories=mems_used,
        resources={"dsp": res.dsp, "lut": res.lut, "ff": res.ff, "bram18k": res.bram18k, "uram": res.uram},
        fits=fit.fits, kernels=kernels, layers=n_layers or 1, layer_cycles=layer_cycles, regions=regions,
        tokens_per_pass=per_token, notes=notes)


def speculative_tokens_per_s(verify: Estimate, draft: Estimate, draft_steps: int, accepted: float) -> float:
    """Tokens/s of lossless speculative generation: per round the draft runs
    `draft_steps` decodes, the target one verify pass, and `accepted` tokens come out
    (the mean accepted length plus the target's bonus token)."""
    if accepted <= 0 or draft_steps < 0:
        raise MambaflowError(f"speculative estimate: accepted must be > 0 and draft_steps >= 0, got {accepted}, "
                             f"{draft_steps}")
    t_round = draft_steps / draft.tokens_per_s + verify.tokens_per_pass / verify.tokens_per_s
    return accepted / t_round
