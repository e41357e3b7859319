"""One decode step on the CPU: the llvm build of the flow against PyTorch eager.

For the mamba-130m and mamba2-130m shapes with random weights, measured in one run:
capture / lower+JIT seconds and peak RSS (each model in its own process, so the RSS is
its own), ms/token for llvm and for torch eager at the same thread count, and the
fraction of the memory roofline (weight bytes per token / time, over a copy bandwidth
measured in the same run). Writes benchmarks/results/decode_cpu.json.

    python benchmarks/decode_cpu.py [--models mamba-130m mamba2-130m] [--threads 1] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "decode_cpu.json"


def copy_bandwidth_gbs(mb: int = 512, reps: int = 5) -> float:
    """Best-of-n numpy copy bandwidth (bytes read + written) in GB/s."""
    src = np.ones(mb * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


def _time_decode(backend, state, steps: int) -> float:
    for _ in range(3):
        backend.decode(5, state)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        backend.decode(5, state)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3


def measure(name: str, threads: int, steps: int, schedule: str | None, queue) -> None:
    import torch

    from mambaflow.flow.capture import capture
    from mambaflow.models import build_model
    from mambaflow.models.config import get_config, num_params
    from mambaflow.runtime.backends import LLVMBackend, TorchBackend
    from mambaflow.targets.llvm.jit import JitFunction

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    t0 = time.perf_counter()
    design = capture(model, "decode", progress=False)
    t1 = time.perf_counter()
    if schedule:
        from mambaflow.schedules import recipes

        design = getattr(recipes, schedule)(design)
    t2 = time.perf_counter()
    fn = JitFunction(design.module, design.top, cache=False)
    t3 = time.perf_counter()
    llvm = LLVMBackend.from_compiled(model, {("decode", 1): (design, fn)})
    torch_backend = TorchBackend(model)
    state = torch_backend.zero_state()
    a, _ = llvm.decode(5, state)
    b, _ = torch_backend.decode(5, state)
    err = float((a - b).abs().max())
    llvm_ms = _time_decode(llvm, state, steps)
    torch_ms = _time_decode(torch_backend, state, steps)
    weight_bytes = 4 * num_params(get_config(name))
    queue.put(dict(
        model=name, capture_s=t1 - t0, schedule_s=t2 - t1, lower_jit_s=t3 - t2,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        llvm_ms=llvm_ms, torch_ms=torch_ms, max_logit_err=err,
        weight_mb=weight_bytes / 2**20, llvm_gbs=weight_bytes / (llvm_ms / 1e3) / 1e9,
        torch_gbs=weight_bytes / (torch_ms / 1e3) / 1e9,
    ))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mamba-130m", "mamba2-130m"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads; the llvm build runs on one")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--schedule", default=None, help="a recipe in mambaflow.schedules.recipes to apply first")
    args = ap.parse_args()
    bw = copy_bandwidth_gbs()
    rows = []
    ctx = mp.get_context("spawn")
    for name in args.models:
        q = ctx.Queue()
        p = ctx.Process(target=measure, args=(name, args.threads, args.steps, args.schedule, q))
        p.start()
        row = q.get()
        p.join()
        row["roofline_llvm"] = row["llvm_gbs"] / bw
        row["roofline_torch"] = row["torch_gbs"] / bw
        row["speedup_vs_eager"] = row["torch_ms"] / row["llvm_ms"]
        rows.append(row)
    hdr = f"{'model':14} {'capture s':>9} {'jit s':>6} {'RSS MB':>7} {'llvm ms':>8} {'torch ms':>8} {'speedup':>8} {'roof llvm':>9} {'roof torch':>10} {'max err':>8}"
    print(f"copy bandwidth {bw:.1f} GB/s, torch threads {args.threads}, schedule {args.schedule or 'none'}")
    print(hdr)
    for r in rows:
        print(f"{r['model']:14} {r['capture_s']:9.1f} {r['lower_jit_s']:6.1f} {r['peak_rss_mb']:7.0f} "
              f"{r['llvm_ms']:8.1f} {r['torch_ms']:8.1f} {r['speedup_vs_eager']:8.2f} "
              f"{r['roofline_llvm']:9.0%} {r['roofline_torch']:10.0%} {r['max_logit_err']:8.1e}")
    out = dict(
        copy_bandwidth_gbs=bw, threads=args.threads, schedule=args.schedule,
        speedup_vs_eager={r["model"]: r["speedup_vs_eager"] for r in rows},
        models=rows,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
