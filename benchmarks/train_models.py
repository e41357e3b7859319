"""Retrain the shipped byte-level models (models/checkpoints/<name>/) on the CPU.

    python benchmarks/train_models.py                 # all four, one after another
    python benchmarks/train_models.py --only mamba1-target --out /tmp/ckpts

Each model trains with ``mambaflow.train.train`` and the recipe in RECIPES below (seed 0,
one thread: with other jobs on the machine, a second OpenMP thread made the scan's many
small per-token ops wait on each other and ran 3x slower). Checkpoints go to
models/checkpoints/<name>/ (or --out/<name>), the JSON log and loss curve to
benchmarks/results/training/<name>/. Same arguments, thread count, torch build and stdlib
(corpus fingerprint in the log) give the same weights. Prints a table and writes
benchmarks/results/train_models.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mambaflow.data import load_corpus
from mambaflow.models.zoo import CHECKPOINTS, SHIPPED
from mambaflow.train import param_count, train

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

# Same tokens for a target and its draft: batch x seq_len x steps.
RECIPES = {
    "mamba2-target": dict(steps=560, batch=16, seq_len=256, lr=4e-3),
    "mamba2-draft": dict(steps=560, batch=16, seq_len=256, lr=4e-3),
    "mamba1-target": dict(steps=340, batch=16, seq_len=256, lr=4e-3),
    "mamba1-draft": dict(steps=340, batch=16, seq_len=256, lr=4e-3),
    # the transformers (models/zoo.py): smaller batches, more steps (a transformer needs
    # many updates to leave the unigram plateau, where a Mamba's conv starts off local;
    # at 1200 steps of 8 x 256 the target stopped at 2.34 bits/byte on the slice)
    "gpt-target": dict(steps=3200, batch=4, seq_len=256, lr=2.5e-3),
    "gpt-draft": dict(steps=650, batch=8, seq_len=256, lr=3e-3),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", choices=list(RECIPES), help="models to train")
    p.add_argument("--out", default=None, help="checkpoint root (default models/checkpoints)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    names = args.only or list(RECIPES)
    out_root = Path(args.out) if args.out else CHECKPOINTS
    corpus = load_corpus()
    rows = {}
    for name in names:
        r = train(SHIPPED[name], seed=0, out_dir=out_root / name,
                  log_dir=RESULTS / "training" / name, threads=args.threads,
                  progress=not args.no_progress, corpus=corpus, **RECIPES[name])
        cpu = r.cpu_seconds
        rows[name] = dict(params=param_count(SHIPPED[name]), wall_s=round(r.seconds, 1),
                          cpu_s=round(cpu, 1), heldout_bpb_slice=round(r.heldout[-1][1], 4),
                          threads=args.threads, **RECIPES[name])
        print(f"{name}: {r.seconds:.0f} s wall, {cpu:.0f} s CPU, held-out slice "
              f"{r.heldout[-1][1]:.3f} bits/byte", flush=True)
    print(f"\n{'model':15s} {'params':>9s} {'steps':>6s} {'wall s':>7s} {'cpu s':>7s} {'bpb*':>6s}")
    for name, row in rows.items():
        print(f"{name:15s} {row['params']:9d} {row['steps']:6d} {row['wall_s']:7.0f} "
              f"{row['cpu_s']:7.0f} {row['heldout_bpb_slice']:6.3f}")
    print("* on the held-out slice used during training; see benchmarks/eval_models.py")
    out = RESULTS / "train_models.json"
    old = json.loads(out.read_text()) if out.is_file() else {}
    old.setdefault("models", {}).update(rows)
    old["corpus_fingerprint"] = corpus.fingerprint
    out.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
