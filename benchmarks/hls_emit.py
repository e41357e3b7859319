"""Time HLS emission and C simulation for mamba-130m-shaped decode designs.

Two designs, with random (seeded) weights: one layer of mamba-130m (d_model 768,
d_inner 1536, N 16, vocab 50280) and the full 24-layer model. For each: capture time
(from the flow's disk cache when warm, reported separately), emission time (IR -> C++,
median of 3), lines of C++, the emitter's resource count and the VCK190 fit, the
reference data (PyTorch decode), the csim compile time (g++ -O2, two translation
units in parallel) and the csim run time for `STEPS` decode steps, and the largest
csim-vs-PyTorch error. Prints a table and writes benchmarks/results/hls_emit.json.

    python benchmarks/hls_emit.py [--layers-only] [--steps N]

Benchmarks never assert a time; tests assert the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mambaflow.flow.capture import capture
from mambaflow.models import build_model, get_config
from mambaflow.targets.hls.csim import compile_csim, compiler, run_program, parse_compare_lines
from mambaflow.targets.hls.design import default_bundles, emit_design
from mambaflow.targets.hls.reference import reference_data
from mambaflow.targets.hls.testbench import write_data, write_testbench
from mambaflow.targets.versal import check_fit, get_board

RESULTS = Path(__file__).resolve().parent / "results" / "hls_emit.json"


def bench(name: str, cfg, steps: int, workdir: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    t0 = time.perf_counter()
    design = capture(model, "decode", progress=False)
    capture_s = time.perf_counter() - t0
    board = get_board("vck190")
    bundles = default_bundles(design, board.default_weight_bundles)
    emit_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        code = emit_design(design, bundles=bundles)
        emit_times.append(time.perf_counter() - t0)
    again = emit_design(design, bundles=bundles)
    fit = check_fit(code.resources, board, ports=code.ports)
    d = workdir / name
    code.write(d)
    t0 = time.perf_counter()
    inputs, golden, spec = reference_data(model, design, steps=steps, rtol=1e-4, atol=1e-4)
    write_testbench(code, d, spec)
    write_data(code, d / "data", inputs, golden, spec)
    data_s = time.perf_counter() - t0
    data_mb = sum(f.stat().st_size for f in (d / "data").iterdir()) / 2**20
    del inputs
    exe, compile_s, _ = compile_csim(d)
    p, run_s = run_program(exe, d / "data")
    compares = parse_compare_lines(p.stdout)
    return {
        "design": name, "n_layer": cfg.n_layer, "d_model": cfg.d_model, "vocab": cfg.vocab_size,
        "kernels": len(design.kernels), "capture_s": round(capture_s, 3),
        "emit_s": round(statistics.median(emit_times), 4), "emit_s_all": [round(t, 4) for t in emit_times],
        "byte_identical": again.source == code.source,
        "cpp_lines": len(code.source.splitlines()), "cpp_kib": round(len(code.source) / 1024, 1),
        "ports": len(code.ports),
        "resources": {"dsp": code.resources.dsp, "bram18k": code.resources.bram18k, "uram": code.resources.uram},
        "fits_vck190": fit.fits,
        "reference_and_data_s": round(data_s, 2), "data_mib": round(data_mb, 1),
        "csim_compile_s": round(compile_s, 2), "csim_run_s": round(run_s, 3), "csim_steps": steps,
        "csim_pass": p.returncode == 0,
        "csim_max_abs_err": max((c.max_abs_err for c in compares), default=None),
        "csim_worst_err_over_tol": max((c.worst_ratio for c in compares), default=None),
        "tolerance": {"rtol": 1e-4, "atol": 1e-4},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers-only", action="store_true", help="only the one-layer design")
    ap.add_argument("--steps", type=int, default=2, help="decode steps in the csim (default 2)")
    ap.add_argument("--keep", help="keep the generated sources here instead of a temp dir")
    args = ap.parse_args()
    base = get_config("mamba-130m")
    cases = [("mamba-130m-1layer", dataclasses.replace(base, n_layer=1))]
    if not args.layers_only:
        cases.append(("mamba-130m", base))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        for name, cfg in cases:
            print(f"... {name}", file=sys.stderr, flush=True)
            rows.append(bench(name, cfg, args.steps, work))
    cxx = subprocess.run([compiler(), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    meta = {"python": platform.python_version(), "cxx": cxx, "cpus": os.cpu_count(), "machine": platform.machine(),
            "note": "capture_s is from the flow's disk cache when warm; csim compile uses 2 parallel g++ -O2 jobs"}
    hdr = f"{'design':<20}{'emit s':>8}{'lines':>8}{'DSP':>7}{'BRAM18K':>9}{'fit':>5}{'compile s':>11}{'run s':>8}{'max|err|':>10}{'pass':>6}"
    print(hdr)
    for r in rows:
        print(f"{r['design']:<20}{r['emit_s']:>8.3f}{r['cpp_lines']:>8}{r['resources']['dsp']:>7}{r['resources']['bram18k']:>9}"
              f"{'yes' if r['fits_vck190'] else 'no':>5}{r['csim_compile_s']:>11.1f}{r['csim_run_s']:>8.2f}"
              f"{r['csim_max_abs_err']:>10.2g}{'yes' if r['csim_pass'] else 'NO':>6}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
