"""The estimate next to Vitis' csynth report, kernel by kernel, with the error of each.

When csynth has run (its XML reports parsed by `targets.versal.reports`), `build` prints,
for each kernel that both have, the estimator's figure beside Vitis' and the error
(estimate - csynth) / csynth in percent:

- latency: cycles of one call of the kernel (csynth: the worst-case latency of the
  function's report; the estimate: `KernelEstimate.cycles`), for the top the cycles of
  one decode token (`Estimate.cycles_per_token`);
- II: the largest achieved II of the kernel's pipelined loops (csynth: the largest
  `PipelineII` among the function's loops, nested ones included; the estimate: the
  largest `LoopEstimate.ii` among loops with a requested II);
- DSP, LUT, BRAM18K: the function's resources. Vitis reports a module with the
  instances it holds, so a kernel that calls others (a dataflow region such as
  `layer_step`) is given the estimate of itself plus every function it calls, each once
  (the resource model's "one hardware instance per function"); the top is the whole design.

A figure one side lacks (Vitis writes `undef` for a data-dependent latency, a kernel with
no pipelined loop has no II) is shown as `?` with no error. Functions only Vitis has
(its own sub-modules) or only the estimate has are listed by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...flow.effects import callee
from ...flow.mlir import funcs, walk
from .reports import KernelReport, LoopReport, SynthReport

METRICS = ("latency", "II", "DSP", "LUT", "BRAM18K")
_SYNTH_RES = {"DSP": "DSP", "LUT": "LUT", "BRAM18K": "BRAM_18K"}


@dataclass
class Row:
    kernel: str
    metric: str
    estimate: float | None
    csynth: float | None

    @property
    def error_pct(self) -> float | None:
        if self.estimate is None or self.csynth is None:
            return None
        if self.csynth == 0:
            return 0.0 if self.estimate == 0 else None
        return 100.0 * (self.estimate - self.csynth) / self.csynth


@dataclass
class SideBySide:
    rows: list[Row]
    only_csynth: list[str] = field(default_factory=list)
    only_estimate: list[str] = field(default_factory=list)

    def row(self, kernel: str, metric: str) -> Row:
        return next(r for r in self.rows if r.kernel == kernel and r.metric == metric)

    def table(self) -> str:
        w = max([len("kernel")] + [len(r.kernel) for r in self.rows])
        L = ["estimate vs csynth (error = (estimate - csynth) / csynth):",
             f"  {'kernel':<{w}}  {'metric':<8} {'estimate':>12} {'csynth':>12} {'error':>8}"]
        last = None
        for r in self.rows:
            name = r.kernel if r.kernel != last else ""
            last = r.kernel
            e = r.error_pct
            L.append(f"  {name:<{w}}  {r.metric:<8} {_fmt(r.estimate):>12} {_fmt(r.csynth):>12} "
                     f"{'?' if e is None else f'{e:+.1f}%':>8}")
        if self.only_csynth:
            L.append(f"  csynth only (Vitis' own sub-modules): {', '.join(self.only_csynth)}")
        if self.only_estimate:
            L.append(f"  not in the csynth report: {', '.join(self.only_estimate)}")
        return "\n".join(L)

    def to_dict(self) -> dict:
        return {"rows": [asdict(r) | {"error_pct": r.error_pct} for r in self.rows],
                "only_csynth": self.only_csynth, "only_estimate": self.only_estimate}


def _fmt(v) -> str:
    if v is None:
        return "?"
    return f"{v:,.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:.3g}"


def _loops(loops: list[LoopReport]):
    for lp in loops:
        yield lp
        yield from _loops(lp.loops)


def synth_ii(k: KernelReport) -> int | None:
    iis = [lp.pipeline_ii for lp in _loops(k.loops) if lp.pipeline_ii is not None]
    return max(iis) if iis else None


def estimate_ii(k) -> int | None:
    iis = [lp.ii for lp in k.loops if lp.ii_req is not None and lp.ii is not None]
    return max(iis) if iis else None


def call_graph(module) -> dict[str, set[str]]:
    """function -> the functions it calls, directly or through others."""
    fs = funcs(module)
    direct = {n: {callee(o) for o in walk(f) if o.name == "func.call" and callee(o) in fs} for n, f in fs.items()}
    out = {}
    for n in fs:
        seen, todo = set(), list(direct[n])
        while todo:
            c = todo.pop()
            if c not in seen:
                seen.add(c)
                todo += direct[c]
        out[n] = seen
    return out


def side_by_side(est, synth: SynthReport, calls: dict[str, set[str]] | None = None) -> SideBySide:
    """Match the estimate's kernels (`Estimate.kernels`) with the report's functions by
    name; `calls` (`call_graph` of the design) adds callees to a kernel's resources."""
    by_name = {k.name: k for k in synth.kernels}
    mine_by = {k.name: k for k in est.kernels}

    def total(k, attr: str) -> int:
        return getattr(k, attr) + sum(getattr(mine_by[c], attr) for c in (calls or {}).get(k.name, ()) if c in mine_by)

    rows: list[Row] = []
    top = by_name.get(synth.top)
    if top is not None:
        res = est.resources
        rows += [Row(synth.top, "latency", est.cycles_per_token, top.latency_worst),
                 Row(synth.top, "II", None, synth_ii(top))]
        rows += [Row(synth.top, m, res[m.lower()], top.resources.get(_SYNTH_RES[m])) for m in ("DSP", "LUT", "BRAM18K")]
    mine = []
    for k in est.kernels:
        s = by_name.get(k.name)
        if s is None or k.name == synth.top:
            continue
        mine.append(k.name)
        rows += [Row(k.name, "latency", k.cycles, s.latency_worst), Row(k.name, "II", estimate_ii(k), synth_ii(s)),
                 Row(k.name, "DSP", total(k, "dsp"), s.resources.get("DSP")),
                 Row(k.name, "LUT", total(k, "lut"), s.resources.get("LUT")),
                 Row(k.name, "BRAM18K", total(k, "bram18k"), s.resources.get("BRAM_18K"))]
    names = {k.name for k in est.kernels} | {synth.top}
    return SideBySide(rows, only_csynth=sorted(set(by_name) - names),
                      only_estimate=sorted({k.name for k in est.kernels} - set(by_name) - {synth.top}))
