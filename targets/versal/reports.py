"""Vitis HLS csynth XML reports as a per-kernel table.

`vitis_hls` writes `<project>/<solution>/syn/report/csynth.xml` for the top and
`<module>_csynth.xml` for every synthesized function. `parse_csynth(path)` reads a
report directory (or one XML file) into a `SynthReport`: per kernel the latency
(best / average / worst, cycles), the interval, the loops (trip count, latency, II) and
the resources (DSP, LUT, FF, BRAM18K, URAM), plus the part's available resources.
Values Vitis reports as `undef` (data-dependent loops) become None.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...errors import MambaflowError

RESOURCES = ("DSP", "LUT", "FF", "BRAM_18K", "URAM")


class ReportError(MambaflowError):
    """A csynth report is missing or malformed."""


@dataclass
class LoopReport:
    name: str
    trip_count: int | None = None
    latency: int | None = None
    iteration_latency: int | None = None
    pipeline_ii: int | None = None
    pipeline_depth: int | None = None
    loops: list["LoopReport"] = field(default_factory=list)


@dataclass
class KernelReport:
    name: str
    latency_best: int | None = None
    latency_avg: int | None = None
    latency_worst: int | None = None
    interval_min: int | None = None
    interval_max: int | None = None
    estimated_clock_ns: float | None = None
    target_clock_ns: float | None = None
    pipeline_type: str | None = None
    resources: dict[str, int | None] = field(default_factory=dict)
    loops: list[LoopReport] = field(default_factory=list)

    @property
    def ii(self) -> int | None:
        return self.interval_min


@dataclass
class SynthReport:
    top: str
    part: str | None
    version: str | None
    kernels: list[KernelReport]
    available: dict[str, int | None]
    source: str = ""

    def kernel(self, name: str) -> KernelReport:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(name)

    def table(self) -> str:
        cols = ("kernel", "latency", "interval", "DSP", "LUT", "FF", "BRAM18K", "URAM")
        rows = []
        for k in self.kernels:
            r = k.resources
            rows.append((k.name, _fmt(k.latency_worst), _fmt(k.interval_max), _fmt(r.get("DSP")), _fmt(r.get("LUT")),
                         _fmt(r.get("FF")), _fmt(r.get("BRAM_18K")), _fmt(r.get("URAM"))))
        if self.available:
            a = self.available
            rows.append(("available", "", "", _fmt(a.get("DSP")), _fmt(a.get("LUT")), _fmt(a.get("FF")),
                         _fmt(a.get("BRAM_18K")), _fmt(a.get("URAM"))))
        w = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
        out = ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cols))]
        for r in rows:
            out.append("  ".join(v.ljust(w[0]) if i == 0 else v.rjust(w[i]) for i, v in enumerate(r)))
        return "\n".join(out)

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(v) -> str:
    return "?" if v is None else f"{v:,}"


def _num(text: str | None, kind=int):
    if text is None:
        return None
    t = text.strip()
    if not t or t.lower() in ("undef", "-", "n/a", "?"):
        return None
    try:
        return kind(t) if kind is not int else int(float(t))
    except ValueError:
        return None


def _text(node, path: str) -> str | None:
    el = node.find(path)
    return None if el is None or el.text is None else el.text


def _loops(node) -> list[LoopReport]:
    out = []
    for child in list(node):
        if child.tag in ("unit",) or len(child) == 0:
            continue
        name = _text(child, "Name") or child.tag
        lr = LoopReport(
            name=name,
            trip_count=_num(_text(child, "TripCount") or _text(child, "TripCount/range/max")),
            latency=_num(_text(child, "Latency") or _text(child, "Latency/range/max")),
            iteration_latency=_num(_text(child, "IterationLatency") or _text(child, "IterationLatency/range/max")),
            pipeline_ii=_num(_text(child, "PipelineII")),
            pipeline_depth=_num(_text(child, "PipelineDepth")),
        )
        lr.loops = [l for l in _loops(child) if l.name not in ("Name",)]
        out.append(lr)
    return out


def parse_csynth_xml(path: str | Path) -> tuple[KernelReport, dict]:
    """One `*csynth.xml` file -> (KernelReport, metadata incl. available resources)."""
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as e:
        raise ReportError(f"cannot read csynth report {p}: {e}") from None
    if root.tag != "profile":
        raise ReportError(f"{p} is not a Vitis HLS csynth report (root <{root.tag}>, expected <profile>)")
    ua = root.find("UserAssignments")
    pe = root.find("PerformanceEstimates")
    name = (_text(ua, "TopModelName") if ua is not None else None) or p.name.removesuffix("_csynth.xml").removesuffix(".xml")
    k = KernelReport(name=name)
    if ua is not None:
        k.target_clock_ns = _num(_text(ua, "TargetClockPeriod"), float)
    if pe is not None:
        k.pipeline_type = _text(pe, "PipelineType")
        k.estimated_clock_ns = _num(_text(pe, "SummaryOfTimingAnalysis/EstimatedClockPeriod"), float)
        if k.target_clock_ns is None:
            k.target_clock_ns = _num(_text(pe, "SummaryOfTimingAnalysis/TargetClockPeriod"), float)
        lat = pe.find("SummaryOfOverallLatency")
        if lat is not None:
            k.latency_best = _num(_text(lat, "Best-caseLatency"))
            k.latency_avg = _num(_text(lat, "Average-caseLatency"))
            k.latency_worst = _num(_text(lat, "Worst-caseLatency"))
            k.interval_min = _num(_text(lat, "Interval-min"))
            k.interval_max = _num(_text(lat, "Interval-max"))
        loops = pe.find("SummaryOfLoopLatency")
        if loops is not None:
            k.loops = _loops(loops)
    area = root.find("AreaEstimates")
    avail: dict[str, int | None] = {}
    if area is not None:
        res = area.find("Resources")
        if res is not None:
            k.resources = {r: _num(_text(res, r)) for r in RESOURCES}
        av = area.find("AvailableResources")
        if av is not None:
            avail = {r: _num(_text(av, r)) for r in RESOURCES}
    meta = {
        "part": _text(ua, "Part") if ua is not None else None,
        "version": _text(root, "ReportVersion/Version"),
        "available": avail,
    }
    return k, meta


def find_report_dir(project: str | Path) -> Path | None:
    """The `syn/report` directory holding `csynth.xml` under a Vitis HLS project."""
    base = Path(project)
    if (base / "csynth.xml").exists():
        return base
    hits = sorted(base.glob("**/syn/report/csynth.xml"))
    return hits[0].parent if hits else None


def parse_csynth(path: str | Path, top: str | None = None) -> SynthReport:
    """A csynth report directory (or project, or one XML file) -> SynthReport.

    The top kernel comes first, then the other functions in name order.
    """
    p = Path(path)
    if p.is_file():
        files = [p]
        report_dir = p.parent
    else:
        report_dir = find_report_dir(p)
        if report_dir is None:
            raise ReportError(f"no csynth.xml under {p}: run csynth first (make csynth)")
        files = [report_dir / "csynth.xml"] + sorted(f for f in report_dir.glob("*_csynth.xml"))
    kernels: list[KernelReport] = []
    meta0 = None
    for f in files:
        k, meta = parse_csynth_xml(f)
        meta0 = meta0 or meta
        if f.name != "csynth.xml":
            # per-function reports are <module>_csynth.xml; the top's duplicates csynth.xml
            k.name = f.name[: -len("_csynth.xml")] if f.name.endswith("_csynth.xml") else k.name
            if any(x.name == k.name for x in kernels):
                continue
        kernels.append(k)
    top_name = top or kernels[0].name
    kernels.sort(key=lambda k: (k.name != top_name, k.name))
    return SynthReport(top=top_name, part=meta0["part"], version=meta0["version"], kernels=kernels,
                       available=meta0["available"], source=str(report_dir))
