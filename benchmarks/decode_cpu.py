"""One decode step on the CPU: the llvm build of the flow against PyTorch eager.

For the mamba-130m and mamba2-130m shapes with random weights, measured in one run:
capture / lower+JIT seconds and peak RSS (each model in its own process, so the RSS is
its own), ms/token for torch eager, the unscheduled llvm build and the llvm build with
the CPU schedule recipe (timed paired and interleaved, at the same thread count), and
the fraction of the memory roofline (weight bytes per token / time, over a copy
bandwidth measured in the same run). Writes benchmarks/results/decode_cpu.json with
"speedup_vs_eager" (unscheduled) and "speedup_vs_eager_cpu_recipe" per model.

    python benchmarks/decode_cpu.py [--models mamba-130m mamba2-130m] [--threads 1] [--steps 30]
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


def _step_ms(backend, state) -> float:
    t = time.perf_counter()
    backend.decode(5, state)
    return (time.perf_counter() - t) * 1e3


def measure(name: str, threads: int, steps: int, queue) -> None:
    import torch

    from mambaflow.flow.capture import capture
    from mambaflow.models import build_model
    from mambaflow.models.config import get_config, num_params
    from mambaflow.runtime.backends import LLVMBackend, TorchBackend
    from mambaflow.schedules.registry import apply_recipe
    from mambaflow.schedules.testing import copy_design
    from mambaflow.targets.llvm.jit import JitFunction

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    t0 = time.perf_counter()
    base = capture(model, "decode", progress=False, cache=False)
    t1 = time.perf_counter()
    fn = JitFunction(base.module, base.top, cache=False)
    t2 = time.perf_counter()
    sched = copy_design(base)
    apply_recipe("cpu", sched)
    t3 = time.perf_counter()
    backends = {
        "torch": TorchBackend(model),
        "llvm": LLVMBackend.from_compiled(model, {("decode", 1): (base, fn)}),
        "llvm+cpu": LLVMBackend.from_compiled(
            model, {("decode", 1): (sched, JitFunction(sched.module, sched.top, cache=False))}),
    }
    state = backends["torch"].zero_state()
    ref, _ = backends["torch"].decode(5, state)
    errs = {k: float((b.decode(5, state)[0] - ref).abs().max()) for k, b in backends.items() if k != "torch"}
    for b in backends.values():
        for _ in range(2):
            b.decode(5, state)
    # paired and interleaved: each round times one token on every build in turn, so a
    # slow phase of a shared machine hits all of them alike; ratios are medians of pairs
    per = {k: [] for k in backends}
    for _ in range(steps):
        for k, b in backends.items():
            per[k].append(_step_ms(b, state))
    ratio = lambda a, b: float(np.median(np.array(per[a]) / np.array(per[b])))  # noqa: E731
    weight_bytes = 4 * num_params(get_config(name))
    ms = {k: float(np.median(v)) for k, v in per.items()}
    queue.put(dict(
        model=name, capture_s=t1 - t0, lower_jit_s=t2 - t1, cpu_schedule_s=t3 - t2,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        ms=ms, max_logit_err=errs, weight_mb=weight_bytes / 2**20,
        gbs={k: weight_bytes / (v / 1e3) / 1e9 for k, v in ms.items()},
        speedup_vs_eager=ratio("torch", "llvm"), speedup_vs_eager_cpu=ratio("torch", "llvm+cpu"),
    ))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mamba-130m", "mamba2-130m"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads; the llvm build runs on one")
    ap.add_argument("--steps", type=int, default=30, help="paired rounds (one token per build each)")
    args = ap.parse_args()
    bw = copy_bandwidth_gbs()
    rows = []
    ctx = mp.get_context("spawn")
    for name in args.models:
        q = ctx.Queue()
        p = ctx.Process(target=measure, args=(name, args.threads, args.steps, q))
        p.start()
        rows.append(q.get())
        p.join()
    print(f"copy bandwidth {bw:.1f} GB/s, torch threads {args.threads}, {args.steps} paired rounds (medians)")
    print(f"{'model':12} {'capture s':>9} {'jit s':>6} {'RSS MB':>7} {'torch ms':>8} {'llvm ms':>8} {'+cpu ms':>8} "
          f"{'eager/llvm':>10} {'eager/+cpu':>10} {'roof llvm':>9} {'roof +cpu':>9} {'max err':>8}")
    for r in rows:
        m = r["ms"]
        print(f"{r['model']:12} {r['capture_s']:9.1f} {r['lower_jit_s']:6.1f} {r['peak_rss_mb']:7.0f} "
              f"{m['torch']:8.1f} {m['llvm']:8.1f} {m['llvm+cpu']:8.1f} {r['speedup_vs_eager']:10.2f} "
              f"{r['speedup_vs_eager_cpu']:10.2f} {r['gbs']['llvm'] / bw:9.0%} {r['gbs']['llvm+cpu'] / bw:9.0%} "
              f"{max(r['max_logit_err'].values()):8.1e}")
    out = dict(
        copy_bandwidth_gbs=bw, threads=args.threads, steps=args.steps,
        speedup_vs_eager={r["model"]: r["speedup_vs_eager"] for r in rows},
        speedup_vs_eager_cpu_recipe={r["model"]: r["speedup_vs_eager_cpu"] for r in rows},
        roofline={r["model"]: {k: v / bw for k, v in r["gbs"].items()} for r in rows},
        models=rows,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
