"""`mambaflow build`: a PyTorch Mamba to a Versal project in one call.

    result = build(model, board="vck190", schedule=None, mode="csim", out_dir="build/vck190")
    print(result.report()); sys.exit(result.exit_code)

Steps (each printed with its time when `progress`):
 1. capture the decode phase (flow.capture) and apply the schedule;
 2. emit Vitis HLS C++ (targets.hls) and count DSPs / on-chip memory;
 3. check that count against the board, before any tool runs;
 4. write the testbench and the PyTorch reference data, run the C simulation with g++
    and AMD's ap_types headers, and compare with PyTorch;
 5. write the Vitis project (tcl, v++ configs, XRT host, Makefile, README);
 6. run the vendor steps the mode asks for (vitis_hls csim / csynth / cosim, v++ for
    hw), parse the csynth reports. When vitis_hls or v++ is missing, everything above
    is still done and the result lists the missing tools and the exact commands left.

Exit codes (`BuildResult.exit_code`, mambaflow.errors): 0 everything the mode asks for
ran and passed; 1 a check failed (csim mismatch, design does not fit, a tool failed);
3 only the vendor tools were missing.

The steps are functions (emit_kernel, fit_kernel, csim_kernel, vendor_flow, finish_build)
that targets.versal.speculative_build runs for each of its two kernels. Before emission
every design is checked against the Vitis dataflow rules (targets.versal.dataflow) and for
accesses outside their buffers (targets.versal.bounds).

The output directory is claimed first (targets.versal.outdir): new, empty or made by an
earlier build (else refused unless `force`), emptied, and marked BUILD_INCOMPLETE until
build.json is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import EXIT_CHECK, EXIT_OK, EXIT_TOOLS, MambaflowError, ScheduleError
from ..hls.csim import CsimError, CsimResult, run_csim
from ..hls.design import default_bundles, emit_design
from .dataflow import enforce
from ..hls.reference import reference_data
from .boards import Board, get_board
from .bounds import out_of_bounds
from . import outdir
from .fit import FitReport, check_fit
from .project import KernelSpec, ProjectSpec, write_project
from .reports import SynthReport, parse_csynth
from .vs_csynth import SideBySide, call_graph, side_by_side
from .vitis import detect_vitis, hls_tools, resolve_platform

MODES = ("csim", "csynth", "cosim", "hw")

# mode -> (vendor tools needed, make targets that remain, in order); the HLS tools are
# those of the flow of the Vitis found (vitis.hls_tools), or of the Tcl flow when none is
_VENDOR = {
    "csim": ((), ("vitis_csim",)),
    "csynth": ((), ("csynth",)),
    "cosim": ((), ("csynth", "cosim")),
    "hw": (("v++",), ("csynth", "hw")),
}
_NEXT = {"csim": ("csynth", "hw"), "csynth": ("hw",), "cosim": ("hw",), "hw": ()}


@dataclass
class StepRecord:
    name: str
    seconds: float
    status: str  # 'ok' | 'failed' | 'skipped' | 'missing tools'
    detail: str = ""


@dataclass
class BuildResult:
    out_dir: Path
    board: str
    mode: str
    top: str
    quant: str | None = None  # the integer scheme of an integer design
    fit: FitReport | None = None
    csim: CsimResult | None = None
    synth: SynthReport | None = None
    estimate: object | None = None  # targets.estimate.Estimate of the scheduled design
    vs_csynth: SideBySide | None = None  # the estimate beside the csynth report, per kernel
    calls: dict | None = None            # the design's call graph (vs_csynth.call_graph)
    missing_tools: list[str] = field(default_factory=list)
    commands_left: list[str] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the Vitis found, the platform and how it was checked

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        if self.errors or self.failed_checks():
            return EXIT_CHECK
        if self.missing_tools:
            return EXIT_TOOLS
        return EXIT_OK

    def failed_checks(self) -> list[str]:
        """The checks that ran and failed, one phrase each."""
        bad = []
        if self.csim is not None and not self.csim.ok:
            bad.append("the C simulation failed")
        if self.fit is not None and not self.fit.fits:
            bad.append("the design does not fit the board")
        return bad

    def vendor_blockers(self) -> list[str]:
        """Why the vendor tools must not run: a failed check, or a C simulation that did
        not run to the end."""
        return self.failed_checks() + (["the C simulation did not run"] if self.csim is None else [])

    def check_lines(self) -> list[str]:
        """The report's lines on the checks (csim, fit)."""
        L = []
        if self.csim is not None:
            L.append(self.csim.summary())
            L.append("C simulation " + ("matches " if self.csim.ok else "DOES NOT match ") + self.oracle)
        if self.fit is not None and not self.fit.fits:
            L.append(f"the design does not fit {self.board}: see the resource table above; vendor tools were not run")
        return L

    def report(self) -> str:
        L = self.check_lines()
        if self.estimate is not None:
            L.append(self.estimate.table())
        if self.synth is not None:
            L.append("csynth report:\n" + self.synth.table())
        if self.vs_csynth is not None:
            L.append(self.vs_csynth.table())
        L += [f"error: {e}" for e in self.errors]
        L += self.notes
        L.append(f"project: {self.out_dir}")
        if self.missing_tools:
            L.append(f"not on PATH: {', '.join(self.missing_tools)} (install Vitis {_release()} or later and "
                     "source its settings64.sh); the commands left to run:")
            L += [f"  {c}" for c in self.commands_left]
        if self.next_commands:
            L.append("then, for the rest of the flow:")
            L += [f"  {c}" for c in self.next_commands]
        L.append({EXIT_OK: "build: done", EXIT_CHECK: "build: FAILED",
                  EXIT_TOOLS: "build: incomplete (vendor tools missing)"}[self.exit_code])
        return "\n".join(L)

    @property
    def oracle(self) -> str:
        """What the C simulation is checked against."""
        return "the integer reference (bit for bit)" if self.quant else "PyTorch"

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir), "board": self.board, "mode": self.mode, "top": self.top, "quant": self.quant,
            "exit_code": self.exit_code,
            "fit": self.fit.to_dict() if self.fit else None,
            "csim": self.csim.to_dict() if self.csim else None,
            "synth": self.synth.to_dict() if self.synth else None,
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "vs_csynth": self.vs_csynth.to_dict() if self.vs_csynth else None,
            "missing_tools": self.missing_tools, "commands_left": self.commands_left,
            "next_commands": self.next_commands,
            "steps": [s.__dict__ for s in self.steps], "warnings": self.warnings, "errors": self.errors,
            "notes": self.notes,
        }


def _release() -> str:
    from .project import VITIS_RELEASE

    return VITIS_RELEASE


class BuildSteps:
    """Progress lines ([k/N] what ...) and the StepRecords of one build."""

    def __init__(self, result: BuildResult, enabled: bool, total: int):
        self.result, self.enabled, self.total, self.k = result, enabled, total, 0

    def start(self, what: str) -> float:
        self.k += 1
        if self.enabled:
            print(f"[{self.k}/{self.total}] {what} ...", file=sys.stderr, flush=True)
        return time.perf_counter()

    def done(self, name: str, t0: float, status: str = "ok", detail: str = "") -> float:
        """Record step `name` started at `t0`; returns its seconds."""
        dt = time.perf_counter() - t0
        self.result.steps.append(StepRecord(name, dt, status, detail))
        self.note(f"      {name}: {status} ({dt:.1f} s){' - ' + detail if detail else ''}")
        return dt

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)

    def warn(self, warnings: list[str]) -> None:
        self.result.warnings += warnings
        for w in warnings:
            self.note(f"      warning: {w}")


# ---------------------------------------------------------------- resolution


def resolve_config(model):
    """The MambaConfig of a model, a MambaConfig or a preset name."""
    from ...models.config import MambaConfig, PRESETS

    cfg = getattr(model, "config", model)
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise MambaflowError(f"unknown model '{cfg}'; give a model, a MambaConfig or a preset "
                                 f"({', '.join(PRESETS)})")
        cfg = PRESETS[cfg]
    if not isinstance(cfg, MambaConfig):
        raise MambaflowError(f"cannot make a model from {type(model).__name__}")
    return cfg


def resolve_model(model, seed: int = 0):
    """An nn.Module from a model, a MambaConfig or a preset name (random weights, seeded)."""
    import torch

    from ...models import build_model

    if isinstance(model, torch.nn.Module):
        return model.eval()
    cfg = resolve_config(model)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def apply_schedule(design, schedule, out_dir: Path | None = None):
    """Apply `schedule` to `design` in place; returns the Schedule (or None).

    schedule: None; a callable taking a `Schedule` (from `schedules.customize`); a path
    to a `.py` file defining `schedule(s)`; a `.json` schedule log (replayed); or the
    name of a recipe in `mambaflow.schedules.registry` (see schedules.user).
    """
    from ...schedules.user import apply_user_schedule

    return apply_user_schedule(design, schedule)


def calibration_set(model, seed: int):
    """PTQ calibration tokens: corpus windows (the training split) when the model's
    vocabulary holds the byte tokenizer, else seeded random token ids (a test preset)."""
    import torch

    from ...quant.calibrate import calibration_tokens

    V = model.config.vocab_size
    tokens = calibration_tokens()
    if int(tokens.max()) < V:
        return tokens, "corpus windows"
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (8, 64), generator=g), f"random ids (vocabulary {V} cannot hold the corpus bytes)"


def _which(tool: str) -> str | None:
    return shutil.which(tool)


def _run_tool(cmd: list[str], cwd: Path, log: Path) -> int:
    with open(log, "w") as f:
        p = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    return p.returncode


# --------------------------------------------------------------------- build


# ------------------------------------------------------------- build steps
# One function per step, shared by `build` and the speculative build
# (targets.versal.speculative_build), which runs emit / fit / csim once per kernel.


def check_bounds(design, label: str = "the scheduled design") -> None:
    """Refuse a design that may index outside a buffer (targets.versal.bounds): undefined
    behaviour in C that csim can pass by luck and that reads another buffer on the device."""
    bad = out_of_bounds(design.module)
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise ScheduleError(f"build: {label} indexes outside a buffer: {'; '.join(bad[:3])}{more}. A schedule "
                            "made a tile or a loop larger than the buffer it reads: schedule that kernel "
                            "differently (another recipe, or a factor that divides the dimension)")


def emit_kernel(design, hls_dir: Path, steps: BuildSteps, label: str = "the scheduled design"):
    """Check the Vitis dataflow rules on the design's real m_axi bundles and the bounds of
    every access (before any tool runs), emit its HLS C++ and write kernels.cpp /
    kernels.h into `hls_dir`."""
    bundles = default_bundles(design)
    rule_warnings = [str(f) for f in enforce(design.module, bundles, where=f"build: {label}")]
    check_bounds(design, label)
    code = emit_design(design, bundles=bundles)
    code.write(hls_dir)
    steps.warn(rule_warnings + code.warnings)
    return code


def fit_kernel(resources, ports, board: Board, steps: BuildSteps) -> FitReport:
    """The resource fit of an emitted design (or of several sharing the chip), printed."""
    fit = check_fit(resources, board, ports=ports)
    steps.note(fit.table())
    return fit


def estimate_kernel(design, board: Board, clock_mhz: float | None, steps: BuildSteps):
    """The QoR estimate of the scheduled design (targets.estimate), before any tool runs."""
    from ..estimate import estimate

    t0 = steps.start(f"estimate cycles, II and tokens/s on {board.name}")
    est = estimate(design, board, clock_mhz=clock_mhz)
    steps.done("estimate", t0, detail=f"{est.tokens_per_s:,.3g} tokens/s ({est.bound} bound)")
    return est


def csim_kernel(code, hls_dir: Path, inputs, golden, spec, steps: BuildSteps) -> CsimResult | None:
    """The C simulation of `code` in `hls_dir` against the golden data; None (and the
    reason in the build's errors) when it could not be built or run."""
    try:
        return run_csim(code, hls_dir, inputs, golden, spec, progress=lambda line: steps.note(f"      {line}"))
    except CsimError as e:
        steps.result.errors.append(str(e))
        return None


def vendor_flow(out: Path, mode: str, steps: BuildSteps, vitis=None, run_vendor_tools: bool = True) -> None:
    """Step 6: the vendor tools the mode needs (those of the flow of the Vitis found,
    `vitis.detect_vitis`), when they are on PATH and every check passed; otherwise the
    commands left (and the missing tools) go into the result."""
    result = steps.result
    t0 = steps.start(f"vendor flow for mode '{mode}'")
    extra_tools, targets = _VENDOR[mode]
    flow = vitis.flow if vitis else "tcl"
    tools = tuple(dict.fromkeys(hls_tools(flow) + extra_tools))
    missing = [t for t in tools if _which(t) is None]
    # the Makefile would find the same; passing them keeps python and make on one flow
    make_vars = [f"VITIS_VERSION={(vitis.release or '') if vitis else ''}", f"HLS_FLOW={flow}"]
    make_cmds = [f"cd {out} && make {t}" for t in targets]
    result.next_commands = [f"cd {out} && make {t}" for t in _NEXT[mode]]
    blocked = result.vendor_blockers()
    if missing:
        result.missing_tools = missing
        result.commands_left = make_cmds
        steps.done("vendor", t0, "missing tools", ", ".join(missing))
    elif blocked or not run_vendor_tools:
        result.commands_left = make_cmds
        steps.done("vendor", t0, "skipped", "; ".join(blocked) or "run_vendor_tools=False")
        if not blocked:
            result.errors.append("vendor tools were not run (run_vendor_tools=False)")
    else:
        for t in targets:
            log = out / f"make_{t}.log"
            rc = _run_tool(["make", t, *make_vars], out, log)
            if rc != 0:
                result.errors.append(f"`make {t}` failed with status {rc}; see {log}")
                result.commands_left = make_cmds[targets.index(t):]
                break
        try:
            read_csynth(result, out / "hls")
            if result.synth.available:
                steps.note(f"      part resources from Vitis: {result.synth.available}")
        except Exception as e:  # noqa: BLE001 - no report is an error only when csynth ran
            if mode != "csim":
                result.errors.append(f"no csynth report: {e}")
        steps.done("vendor", t0, "failed" if result.errors else "ok")


def read_csynth(result: BuildResult, report_dir: Path) -> None:
    """The csynth reports under `report_dir` into `result.synth` and, when the build has
    the design's estimate, the two side by side (targets.versal.vs_csynth) into
    `result.vs_csynth`; raises ReportError when there is no report."""
    result.synth = parse_csynth(report_dir)
    if result.estimate is not None:
        result.vs_csynth = side_by_side(result.estimate, result.synth, result.calls)


def finish_build(out: Path, result: BuildResult) -> None:
    """build.json, then the directory stops looking unfinished (outdir.finish)."""
    (out / "build.json").write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str))
    outdir.finish(out)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise MambaflowError(f"unknown mode '{mode}': choose one of {', '.join(MODES)}")


def vitis_and_platform(board: Board, platform: str | None):
    """The Vitis found (or None) and the platform (an input: a missing one fails here,
    before anything is written); see targets.versal.vitis."""
    vitis = detect_vitis(which=_which)
    return vitis, resolve_platform(board, platform, vitis)


def platform_notes(vitis, plat) -> list[str]:
    return [vitis.describe() if vitis else "Vitis: not found on PATH", plat.note]


# --------------------------------------------------------------------- build


def build(model, board: str | Board = "vck190", schedule=None, mode: str = "csim", out_dir: str | Path = "build",
          progress: bool = True, *, steps: int = 2, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-4,
          clock_mhz: float | None = None, platform: str | None = None,
          run_vendor_tools: bool = True, force: bool = False, quant: str | None = None) -> BuildResult:
    """Take a Mamba model to a Versal project; see the module docstring for the steps.

    model: an nn.Module (mambaflow Mamba1/Mamba2 LM), a MambaConfig or a preset name.
    board: 'vck190' | 'vhk158' (or a Board). schedule: see `apply_schedule`.
    mode: 'csim' | 'csynth' | 'cosim' | 'hw' - how far the vendor flow should go.
    steps: decode steps in the reference data (csim, cosim and the host program).
    rtol / atol: the float tolerance of every comparison (|got - want| <= atol + rtol |want|).
    force: empty `out_dir` even when it is not empty and an earlier build did not make it.
    platform: the Vitis platform, a NAME (looked up in $PLATFORM_REPO_PATHS and the Vitis
    install when Vitis is here) or a PATH.xpfm; default: the board's published platform for
    the Vitis found (none for the VHK158: a PlatformError says to pass one).
    quant: 'w8a8' | 'w4a4' - build the integer (FastMamba / LightMamba) design of the
    model instead: post-training quantization (quant.ptq, calibrated on the corpus),
    the integer decode captured as the same layer engine, and csim bit for bit against
    the integer reference.
    """
    from ...flow.capture import capture

    check_mode(mode)
    if not (isinstance(steps, int) and steps >= 1):
        raise MambaflowError(f"steps must be a positive number of decode steps, got {steps!r}")
    b = get_board(board)
    vitis, plat = vitis_and_platform(b, platform)
    from ...schedules.user import check_user_schedule

    check_user_schedule(schedule)  # a bad schedule fails before the capture
    out = outdir.claim(Path(out_dir), force)
    result = BuildResult(out_dir=out, board=b.name, mode=mode, top="decode", quant=quant)
    result.notes += platform_notes(vitis, plat)
    st = BuildSteps(result, progress, 7)

    # 1. capture + schedule
    what = f"the {quant} integer decode" if quant else "decode of the model"
    t0 = st.start(f"capture {what} and apply the schedule ({schedule or 'none'})")
    model = resolve_model(model, seed)
    qm = None
    if quant:
        from ...quant.flow import capture_quantized
        from ...quant.ptq import quantize

        calib, source = calibration_set(model, seed)
        st.note(f"      calibration: {tuple(calib.shape)} {source}")
        qm = quantize(model, quant, calib)
        design = capture_quantized(qm, "model")
    else:
        design = capture(model, "decode", progress=progress)
    sched = apply_schedule(design, schedule, out)
    if sched is not None and hasattr(sched, "save"):
        sched.save(out / "schedule.json")
    st.done("capture", t0, detail=f"{len(design.kernels)} kernels")
    result.top = design.top

    # 2. emit
    t0 = st.start("emit Vitis HLS C++")
    hls_dir = out / "hls"
    code = emit_kernel(design, hls_dir, st)
    st.done("emit", t0, detail=f"{len(code.source.splitlines())} lines, {len(code.ports)} ports")

    # 3. fit, before any tool runs
    t0 = st.start(f"check resources against {b.name}")
    result.fit = fit_kernel(code.resources, code.ports, b, st)
    st.done("fit", t0, "ok" if result.fit.fits else "failed")
    result.estimate = estimate_kernel(design, b, clock_mhz, st)
    result.calls = call_graph(design.module)  # to set the estimate beside csynth's report

    # 4. reference data + csim
    t0 = st.start(f"C simulation of {steps} decode step(s) with g++ against {result.oracle}")
    inputs, golden, spec = reference_data(qm or model, design, steps=steps, seed=seed, rtol=rtol, atol=atol)
    result.csim = csim_kernel(code, hls_dir, inputs, golden, spec, st)
    if result.csim is not None:
        st.done("csim", t0, "ok" if result.csim.ok else "failed", f"max |err| {result.csim.max_abs_err:.3g}")
    else:
        st.done("csim", t0, "failed", "see errors")
    del inputs, golden

    # 5. project
    t0 = st.start("write the Vitis project")
    pspec = ProjectSpec(board=b, kernels=[KernelSpec(code.top, code.ports)], tb=spec, clock_mhz=clock_mhz,
                        platform=plat.value if plat.explicit else None,
                        title=f"{design.cfg.arch} {quant + ' ' if quant else ''}decode",
                        vitis_release=vitis.release if vitis else None, platform_note=plat.note)
    write_project(out, pspec)
    (out / "resources.json").write_text(json.dumps(code.resources.to_dict(), indent=1, sort_keys=True))
    st.done("project", t0)

    # 6. vendor tools
    vendor_flow(out, mode, st, vitis, run_vendor_tools)
    finish_build(out, result)
    return result


def build_main(model, board: str = "vck190", schedule=None, mode: str = "csim", out_dir: str | Path = "build",
               progress: bool = True, **kw) -> int:
    """`build` + print the report; returns the process exit code (for the CLI, which
    turns a MambaflowError into one line)."""
    r = build(model, board, schedule, mode, out_dir, progress, **kw)
    print(r.report())
    return r.exit_code
