"""The speculative build (SpecMamba's accelerator) of the shipped target/draft pairs.

One row per pair x tree x kernel (draft, verify): the schedule that was used, the
emitted C++ lines, the emitter's resource count from the fit check (DSP, LUT, FF,
BRAM18K, URAM, and the share of the board), the csim compile and run times, and for the
verify kernel the accepted draft tokens per verify pass on the real trees its csim ran
(the first passes of a PyTorch speculative run). Per build: the host loop's C
simulation over both kernels (tokens, verify passes, accepted per pass, tokens per pass,
whether its tokens equal PyTorch's) and the resources of both kernels on one chip.

    python benchmarks/spec_build.py [--pairs mamba1,mamba2] [--trees chain:7,2,2,1] [--board vck190]
                                    [--tokens 32] [--csim-trees 3] [--out DIR]

Prints the table and writes benchmarks/results/spec_build.json. Times are measured on
this machine and never asserted; tests/test_build_speculative.py asserts the behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "spec_build.json"
RESOURCES = ("DSP", "LUT", "FF", "BRAM18K", "URAM")
PROMPT = "The Python language"


def _fit(fit) -> dict:
    items = {i.resource: i for i in fit.items}
    return {r: {"used": items[r].used, "available": items[r].available, "pct": round(100 * items[r].utilization, 2)}
            for r in RESOURCES}


def run_one(pair: str, tree: str, board: str, tokens: int, csim_trees: int, out: Path) -> dict:
    import torch

    from mambaflow.models import zoo
    from mambaflow.models.tokenizer import text_codec
    from mambaflow.targets.versal.speculative_build import build_speculative

    torch.set_num_threads(1)
    tname, dname = f"{pair}-target", f"{pair}-draft"
    target, draft = zoo.load_shipped(tname), zoo.load_shipped(dname)
    codec = text_codec(None, target.config.vocab_size, shipped=True)
    t0 = time.perf_counter()
    r = build_speculative(target, draft, tree, board, out_dir=out, progress=False, prompt=codec.encode(PROMPT),
                          tokens=tokens, csim_trees=csim_trees, vocab_limit=codec.vocab_limit, names=(tname, dname),
                          force=True)
    wall = time.perf_counter() - t0
    kernels = {}
    for role, k in r.kernels.items():
        kernels[role] = {
            "top": k.top, "schedule": k.schedule, "schedule_notes": k.schedule_notes, "lines": k.lines,
            "ports": k.ports, "resources": _fit(k.fit) if k.fit else None, "fits": k.fit.fits if k.fit else None,
            "csim_ok": k.csim.ok if k.csim else None,
            "csim_compile_s": round(k.csim.compile_s, 3) if k.csim else None,
            "csim_run_s": round(k.csim.run_s, 3) if k.csim else None,
            "csim_max_abs_err": k.csim.max_abs_err if k.csim else None,
            "csim_calls": len([c for c in k.csim.compares if c.port == "logits"]) if k.csim else 0,
            "accepted_per_verify": [c["accepted"] for c in k.cases] if role == "verify" else None,
        }
    h = r.host
    return {
        "pair": pair, "tree": r.tree, "nodes": r.nodes, "fifo_depth": r.fifo_depth, "board": board,
        "exit_code": r.exit_code, "failed_checks": r.failed_checks(), "errors": r.errors, "build_s": round(wall, 2),
        "kernels": kernels, "together": _fit(r.fit) if r.fit else None, "together_fits": r.fit.fits if r.fit else None,
        "host": None if h is None else {
            "ok": h.ok, "tokens": len(h.tokens), "verify_passes": len(h.accepted), "accepted": h.accepted,
            "tokens_per_pass": round(h.tokens_per_pass, 3), "draft_calls": h.draft_calls,
            "same_as_pytorch": h.tokens == h.golden, "same_acceptance_as_pytorch": h.same_accepted,
            "compile_s": round(h.compile_s, 3), "run_s": round(h.run_s, 3)},
    }


def table(rows: list[dict]) -> str:
    head = (f"{'pair':7} {'tree':9} {'kernel':7} {'schedule':60} {'lines':>6} {'DSP':>6} {'LUT':>8} {'BRAM18K':>8} "
            f"{'URAM':>5} {'csim c/r s':>11}  accepted per verify")
    L = [head, "-" * len(head)]
    for r in rows:
        for role in ("draft", "verify"):
            k = r["kernels"].get(role)
            if k is None:
                continue
            res = k["resources"] or {}
            u = lambda n: res.get(n, {}).get("used", "")  # noqa: E731
            cs = f"{k['csim_compile_s']:.1f}/{k['csim_run_s']:.2f}" if k["csim_compile_s"] is not None else "-"
            acc = k["accepted_per_verify"] if role == "verify" else ""
            L.append(f"{r['pair']:7} {r['tree']:9} {role:7} {k['schedule'][:60]:60} {k['lines']:>6} {u('DSP'):>6} "
                     f"{u('LUT'):>8} {u('BRAM18K'):>8} {u('URAM'):>5} {cs:>11}  {acc}")
        h = r["host"]
        if h:
            L.append(f"{'':7} {'':9} host    {h['tokens']} tokens in {h['verify_passes']} verify passes, "
                     f"{h['tokens_per_pass']:.2f} tokens/pass, accepted {h['accepted']}; "
                     f"{'equal to' if h['same_as_pytorch'] else 'DIFFERENT from'} PyTorch's "
                     f"(host csim {h['compile_s']:.1f}/{h['run_s']:.2f} s); build {r['build_s']:.1f} s, exit "
                     f"{r['exit_code']}")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="mamba1,mamba2")
    ap.add_argument("--trees", default="chain:7;2,2,1", help="tree shapes separated by ';'")
    ap.add_argument("--board", default="vck190")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--csim-trees", type=int, default=3)
    ap.add_argument("--out", default=None, help="where the projects go (default: a temporary folder)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out or tmp)
        for pair in args.pairs.split(","):
            for tree in args.trees.split(";"):
                name = f"{pair}_{tree.replace(':', '').replace(',', 'x')}"
                print(f"building {pair} {tree} ...", file=sys.stderr, flush=True)
                rows.append(run_one(pair, tree, args.board, args.tokens, args.csim_trees, base / name))
    print(table(rows))
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "argv": sys.argv[1:], "prompt": PROMPT,
            "note": "resources are the emitter's estimate (targets/hls/resources.py), not synthesis; csim times "
                    "are g++ compile / run of the testbench; accepted_per_verify is on the csim's real trees"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
