"""C simulation of emitted HLS C++ with g++, without Vitis.

`run_csim(code, directory, inputs, golden, spec)` writes the kernels, the testbench and
its data, compiles them with `g++ -std=c++17 -O2 -Wall -Werror -Wno-unknown-pragmas`
against AMD's ap_types headers (`cxx.csim_include_dir`: the copy in the hls4ml wheel, or
$MAMBAFLOW_AP_TYPES_DIR) with the project's hls_stream.h / hls_math.h, runs the program
and returns a `CsimResult` with the per-port comparison.

The headers are included with `-isystem`: -Wall -Werror hold for the emitted code, not
for the vendor's (the uninitialized read inside AMD's ap_private.h that g++ still
reports through -isystem is let through, and only that: VENDOR_DEMOTED).
`-Wno-unknown-pragmas` is the one warning switched off: g++ does not know
`#pragma HLS`, which is the point of the file.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .cxx import CsimError, csim_include_dir
from .emitter import HlsCode
from .testbench import TestbenchSpec, write_data, write_testbench

CXXFLAGS = ["-std=c++17", "-O2", "-Wall", "-Werror", "-Wno-unknown-pragmas"]
HEADERS = "AMD ap_types"  # CsimResult.headers: what csim compiles against
# AMD's ap_private.h reads its own uninitialized word whenever an ap_int is built (the
# default constructor's clearUnusedBits), and g++ 12 reports that through -isystem once
# it is inlined into the emitted code. So those two are demoted to warnings, and held as
# errors again when they point anywhere but into the vendor's headers (compile_csim).
VENDOR_DEMOTED = ["-Wno-error=uninitialized", "-Wno-error=maybe-uninitialized"]
_WARNING = re.compile(r"^(.+?):\d+:\d+: warning: .*\[-W(?:maybe-)?uninitialized\]$", re.M)


@dataclass
class PortCompare:
    port: str
    step: int
    max_abs_err: float
    worst_ratio: float    # max |err| / (atol + rtol |want|); <= 1 passes
    mismatches: int
    n: int

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


@dataclass
class CsimResult:
    ok: bool
    directory: str
    headers: str                       # HEADERS
    compile_s: float
    run_s: float
    compares: list[PortCompare] = field(default_factory=list)
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    log: str = ""
    command: list[str] = field(default_factory=list)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.compares), default=0.0)

    def summary(self) -> str:
        lines = [f"csim {'PASS' if self.ok else 'FAIL'} ({self.headers}; compile {self.compile_s:.1f} s, run {self.run_s:.2f} s)"]
        worst: dict[str, PortCompare] = {}
        for c in self.compares:
            if c.port not in worst or c.worst_ratio > worst[c.port].worst_ratio:
                worst[c.port] = c
        for c in worst.values():
            lines.append(f"  {c.port:<28} max |err| {c.max_abs_err:.3g}  worst err/tol {c.worst_ratio:.3g}  "
                         f"mismatches {c.mismatches}/{c.n}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("outputs")
        return d


def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise CsimError(f"C simulation needs a C++17 compiler: '{cxx}' is not on PATH (install g++ or set CXX)")
    return cxx


def compile_csim(directory: str | Path, stem: str = "kernels", output: str = "csim") -> tuple[Path, float, list[str]]:
    """Compile <stem>.cpp and tb.cpp in `directory` into `directory/output`, against
    the headers copied to `directory/include`."""
    d = Path(directory)
    cxx = compiler()
    inc = csim_include_dir(d / "include")
    incs = ["-isystem", str(inc), "-I", str(d)]
    t0 = time.perf_counter()
    srcs = [d / f"{stem}.cpp", d / "tb.cpp"]
    objs = [d / f"{s.stem}.o" for s in srcs]

    def cc(pair):
        src, obj = pair
        cmd = [cxx, *CXXFLAGS, *VENDOR_DEMOTED, *incs, "-c", str(src), "-o", str(obj)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        return cmd, p

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(cc, zip(srcs, objs)))
    for cmd, p in results:
        own = [w for w in _WARNING.findall(p.stderr) if not Path(w).resolve().is_relative_to(inc.resolve())]
        if p.returncode != 0 or own:
            why = f" (-Werror: uninitialized values in {', '.join(sorted(set(own)))})" if own else ""
            raise CsimError(f"csim compile failed{why}: {' '.join(cmd)}\n{p.stderr.strip()[:8000]}")
    exe = d / output
    link = [cxx, *[str(o) for o in objs], "-o", str(exe)]
    p = subprocess.run(link, capture_output=True, text=True)
    if p.returncode != 0:
        raise CsimError(f"csim link failed: {' '.join(link)}\n{p.stderr.strip()[:8000]}")
    return exe, time.perf_counter() - t0, results[0][0]


def _big_stack():
    # local arrays of the kernels live on the stack, as in Vitis csim: give it room
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = resource.RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (want, hard))
    except (ValueError, OSError):
        pass


def parse_compare_lines(text: str) -> list[PortCompare]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] == "MF_COMPARE":
            out.append(PortCompare(parts[1], int(parts[2]), float(parts[3]), float(parts[4]), int(parts[5]), int(parts[6])))
    return out


def run_program(exe: Path, data_dir: Path, timeout: float | None = None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(exe), str(data_dir)], capture_output=True, text=True, preexec_fn=_big_stack,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CsimError(f"csim did not finish within {timeout} s: {exe}") from None
    return p, time.perf_counter() - t0


def run_csim(code: HlsCode, directory: str | Path, inputs: dict[str, np.ndarray], golden: dict[str, np.ndarray],
             spec: TestbenchSpec | None = None, timeout: float | None = None, progress=None) -> CsimResult:
    """Write, build and run the C simulation of `code`; compare with `golden`.
    `progress`: called with a line before the compile and before the run (None: quiet)."""
    spec = spec or TestbenchSpec()
    note = progress or (lambda line: None)
    d = Path(directory)
    code.write(d)
    write_testbench(code, d, spec)
    data = write_data(code, d / "data", inputs, golden, spec)
    note("compiling the C simulation with g++ ...")
    exe, compile_s, cmd = compile_csim(d)
    note(f"compiled in {compile_s:.1f} s; running it ...")
    p, run_s = run_program(exe, data, timeout)
    log = p.stdout + p.stderr
    (d / "csim.log").write_text(log)
    compares = parse_compare_lines(p.stdout)
    if p.returncode not in (0, 1) or (p.returncode == 0 and not compares):
        raise CsimError(f"csim program exited with status {p.returncode}:\n{log.strip()[-4000:]}")
    outputs = {}
    for port in code.ports:
        if port.written:
            f = data / f"{port.name}.csim.bin"
            if f.exists():
                outputs[port.source] = np.fromfile(f, dtype=port.numpy_dtype).reshape(port.shape)
    ok = p.returncode == 0 and all(c.ok for c in compares)
    return CsimResult(ok=ok, directory=str(d), headers=HEADERS,
                      compile_s=compile_s, run_s=run_s, compares=compares, outputs=outputs, log=log, command=cmd)
