"""The CPU schedule recipe against the unscheduled llvm build and PyTorch eager (decode).

One process per model; the unscheduled and the scheduled design come from one capture
and are timed paired and interleaved (`--rounds` x `--steps` tokens, each token timed on
every backend in turn; speedups are medians of the per-token ratios, with the ratio of
the best times beside them), which keeps the comparison fair on a shared, noisy machine. Writes benchmarks/results/schedule_cpu.json. Never asserts a
time.

    python benchmarks/schedule_cpu.py [--models mamba-130m mamba2-130m] [--rounds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "schedule_cpu.json"


def _step_ms(backend, state, steps: int) -> float:
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        backend.decode(5, state)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def measure(name: str, threads: int, rounds: int, steps: int, queue) -> None:
    import torch

    from mambaflow.flow.capture import capture
    from mambaflow.models import build_model
    from mambaflow.models.config import get_config
    from mambaflow.runtime.backends import LLVMBackend, TorchBackend
    from mambaflow.schedules import recipes
    from mambaflow.schedules.testing import copy_design
    from mambaflow.targets.llvm.jit import JitFunction

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    base = capture(model, "decode", progress=False)
    sched = copy_design(base)
    t0 = time.perf_counter()
    s = recipes.cpu_schedule(sched)
    t1 = time.perf_counter()
    backends = {"torch": TorchBackend(model)}
    for key, d in (("llvm", base), ("llvm+cpu", sched)):
        fn = JitFunction(d.module, d.top, cache=False)
        backends[key] = LLVMBackend.from_compiled(model, {("decode", 1): (d, fn)})
    state = backends["torch"].zero_state()
    ref, _ = backends["torch"].decode(5, state)
    errs = {k: float((b.decode(5, state)[0] - ref).abs().max()) for k, b in backends.items() if k != "torch"}
    for b in backends.values():
        for _ in range(2):
            b.decode(5, state)
    # paired, interleaved: each round times one token on every backend in turn, so a
    # slow phase of the (shared) machine hits all of them alike
    per = {k: [] for k in backends}
    for _ in range(rounds * steps):
        for k, b in backends.items():
            per[k].append(_step_ms(b, state, 1))
    ms = {k: float(np.median(v)) for k, v in per.items()}
    best = {k: float(np.min(v)) for k, v in per.items()}
    ratio = lambda a, b: float(np.median(np.array(per[a]) / np.array(per[b])))  # noqa: E731
    queue.put(dict(model=name, schedule_s=t1 - t0, primitives=len(s.log), ms=ms, min_ms=best,
                   max_logit_err=errs,
                   speedup_vs_eager={"llvm": ratio("torch", "llvm"), "llvm+cpu": ratio("torch", "llvm+cpu")},
                   recipe_speedup=ratio("llvm", "llvm+cpu"),
                   recipe_speedup_min=best["llvm"] / best["llvm+cpu"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mamba-130m", "mamba2-130m"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    rows = []
    ctx = mp.get_context("spawn")
    for name in args.models:
        q = ctx.Queue()
        p = ctx.Process(target=measure, args=(name, args.threads, args.rounds, args.steps, q))
        p.start()
        rows.append(q.get())
        p.join()
    print(f"decode, batch 1, torch threads {args.threads}, {args.rounds} rounds x {args.steps} steps (median)")
    print(f"{'model':14} {'torch ms':>9} {'llvm ms':>8} {'+cpu ms':>8} {'eager/llvm':>10} {'eager/+cpu':>10} "
          f"{'recipe':>7} {'(best)':>7} {'err llvm':>9} {'err +cpu':>9}")
    for r in rows:
        m, sp, e = r["ms"], r["speedup_vs_eager"], r["max_logit_err"]
        print(f"{r['model']:14} {m['torch']:9.1f} {m['llvm']:8.1f} {m['llvm+cpu']:8.1f} {sp['llvm']:10.2f} "
              f"{sp['llvm+cpu']:10.2f} {r['recipe_speedup']:7.2f} {r['recipe_speedup_min']:7.2f} "
              f"{e['llvm']:9.1e} {e['llvm+cpu']:9.1e}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(dict(threads=args.threads, rounds=args.rounds, steps=args.steps, models=rows),
                                  indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
