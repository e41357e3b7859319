"""Speculative decoding with the trained draft/target pairs, on llvm and on torch.

For each pair of `models.zoo` (target + the draft trained for it), greedy decoding of
held-out prompts from the byte corpus, across tree shapes:
- mean accepted length and target passes per generated token (greedy: the same on
  both backends, and the tokens equal the target's own greedy tokens; checked);
- decode tokens/s of speculative and of plain target decoding, on llvm and on torch,
  and the speedup (plain seconds per token / speculative seconds per token);
- at the best tree (llvm speedup), every backtracking strategy: its peak state memory
  (target, draft, total) and its tokens/s on llvm; plus the same memory model at the
  published Mamba2-2.7B shape for scale.
Prints a table and writes benchmarks/results/speculative.{json,png}. The JSON's
top-level "tokens_per_target_pass" and "speedup_llvm" are those of the best tree of
the first pair. Timings are medians over --reps runs, plain and speculative runs
interleaved, with Python's garbage collector paused during timed runs (as timeit does);
they never gate anything (see DESIGN.md).

On llvm every design is scheduled with `schedules.verify_cpu` (the project's CPU recipe,
plus node unroll-and-jam of the verify linear layers), plain decoding included, and
trees are padded to a multiple of 4 nodes so the jam has a factor. Greedy chains are
drafted in one call of a compiled draft chain (`flow.chain`); static trees one batched
draft step per level (`Backend.decode_batch`, `flow.batch` on llvm); dynamic trees
best-first, one decode per expanded node.

The drafting policies (`--trees`):
- chain:K, widths per depth (4,2,1,1), dynNwW: the fixed shapes of `runtime.trees`;
- search:N: test-time tree search (`runtime.search`), a tree per round under N draft
  nodes, its width and depth picked by a UCB bandit rewarded with tokens per second.
  One policy per backend learns through the warm-up (every prompt once) and all timed
  runs; its acceptance is counted over every timed run, and the arms it ran are listed;
- ngram/TREE: the prompt-lookup drafter (`runtime.ngram`, suffixes of 3..1 tokens) over
  a chain or a static tree (its first width = branches): no draft model at all.

The tree sweep backtracks with the memory-aware hybrid under --budget-mib (with the trained pairs'
small states everything fits, so it checkpoints, the fastest on a CPU); the strategy
table at the best tree compares checkpoint, replay, the SpecMamba split (hybrid without
a budget: draft checkpoints, target replays) and the budgeted hybrid.

    python benchmarks/speculative.py [--pairs mamba1-target mamba2-target] [--tokens 64]
        [--prompts 4] [--trees chain:3 4,2,1,1 dyn16w4 ...] [--backends llvm torch]
        [--reps 3] [--threads 1] [--random]

--random uses randomly initialized models of the zoo's shapes when no trained weights
are installed (acceptance is then meaningless; for a dry run of the script only).
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
DEFAULT_TREES = ["chain:3", "chain:5", "chain:7", "chain:11", "chain:15", "2,1,1", "2,2,1", "4,2,1,1", "dyn11w4",
                 "search:8", "search:16", "ngram/chain:7", "ngram/3,1,1"]
STRATEGIES = ("checkpoint", "replay", "hybrid")
PAD = 4  # verify sizes are padded to a multiple of this (the node jam of schedules.verify_cpu)


def verify_size(tree) -> int | None:
    """A fixed tree's padded verify size; None for a searched tree (padded per round)."""
    from mambaflow.runtime.search import Search

    shape = parse_policy(tree)[1]
    return None if isinstance(shape, Search) else -(-shape.nodes // PAD) * PAD


def parse_policy(tree: str):
    """A policy spelled as a tree: 'chain:7', '4,2,1,1', 'dyn11w4', 'search:16' (draft
    model), or 'ngram/TREE' (the prompt-lookup drafter, `runtime.ngram`, over a chain or
    a static tree whose first width is its number of branches). Returns (NgramDraft or
    None, the tree shape)."""
    from mambaflow.runtime.ngram import NgramDraft
    from mambaflow.runtime.trees import parse_shape

    if tree.startswith("ngram/"):
        shape = parse_shape(tree.split("/", 1)[1])
        return NgramDraft(3, branches=shape.widths[0]), shape
    return None, parse_shape(tree)


class Policies:
    """The speculative_generate arguments of each policy on one backend. A searched tree
    keeps ONE TreeSearch per backend through the warm-up and every timed run: it learns
    across prompts, as a server would."""

    def __init__(self, draft):
        self.draft, self.search = draft, {}

    def kwargs(self, tree: str) -> dict:
        from mambaflow.runtime.search import Search, TreeSearch

        lookup, shape = parse_policy(tree)
        if isinstance(shape, Search):
            policy = self.search.setdefault(tree, TreeSearch(shape, multiple=PAD))
            return dict(draft=self.draft, tree=policy, verify_multiple=PAD)
        return dict(draft=lookup or self.draft, tree=shape, verify_size=verify_size(tree))


class paused_gc:
    def __enter__(self):
        self.was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc):
        if self.was:
            gc.enable()


def load_pair(target_name: str, random_ok: bool):
    from mambaflow.errors import MambaflowError
    from mambaflow.models import build_model
    from mambaflow.models import zoo

    draft_name = zoo.draft_for(target_name)
    try:
        return zoo.load_shipped(target_name), zoo.load_shipped(draft_name), draft_name, True
    except MambaflowError as e:
        if not random_ok:
            raise SystemExit(f"speculative benchmark: {e}\n(run with --random for a dry run on random weights)")
        print(f"warning: {e}; using random weights (--random)", file=sys.stderr)
        torch.manual_seed(0)
        return (build_model(zoo.SHIPPED[target_name]).eval(), build_model(zoo.SHIPPED[draft_name]).eval(),
                draft_name, False)


def prompts(n: int, length: int, vocab: int) -> list[list[int]]:
    """The first `length` bytes of the first `n` held-out documents (topics corpus)."""
    from mambaflow.data import BOS, load_corpus

    docs = load_corpus(("topics",)).split("heldout")
    docs = [d for d in docs if len(d.text.encode()) >= length][:n]
    return [[BOS, *list(d.text.encode("utf-8"))[: length - 1]] for d in docs]


def arms_timed(gens) -> dict[str, int]:
    """How often a searched tree's bandit ran each arm over `gens`."""
    return dict(collections.Counter(a for g in gens for a in g.configs))


def median_s_per_token(gens) -> float:
    return statistics.median(g.decode_s / max(len(g.tokens) - 1, 1) for g in gens)


def warm_and_time(target, prompt_ids, policies, kwargs_of, spec, n_tokens, sampling, reps, label=""):
    """(plain runs, {policy: runs}): every policy warmed first (its designs compiled; a
    searched tree on every prompt, since each arm's first round is not counted by its
    bandit), then `reps` rounds of plain greedy and every policy, interleaved per prompt
    on this noisy machine, each output checked equal to plain greedy."""
    from tqdm import tqdm

    from mambaflow.runtime.generate import generate
    from mambaflow.runtime.speculative import speculative_generate

    def spec_run(p, q):
        return speculative_generate(target, prompt=q, max_new_tokens=n_tokens, sampling=sampling,
                                    **kwargs_of(p), **spec)

    ref = {i: generate(target, q, n_tokens, sampling) for i, q in enumerate(prompt_ids)}  # warm + reference
    for p in tqdm(policies, desc=f"{label}warm-up", unit="policy", leave=False):
        for q in prompt_ids if "search" in p else prompt_ids[:1]:
            spec_run(p, q)
    plain_runs, runs = [], {p: [] for p in policies}
    bar = tqdm(total=reps * len(prompt_ids) * (len(policies) + 1), desc=f"{label}timed runs", unit="run",
               leave=False)
    for _ in range(reps):
        for i, q in enumerate(prompt_ids):
            with paused_gc():
                plain_runs.append(generate(target, q, n_tokens, sampling))
            bar.update()
            for p in policies:
                with paused_gc():
                    g = spec_run(p, q)
                if g.tokens != ref[i].tokens:
                    raise SystemExit(f"MISMATCH: speculative ({p}) differs from plain greedy: {label}prompt {i}")
                runs[p].append(g)
                bar.update()
    bar.close()
    return plain_runs, runs


def run_backend(name, target_model, draft_model, prompt_ids, n_tokens, trees, reps, sampling, budget, log):
    from mambaflow.runtime.backends import make_backend
    from mambaflow.schedules.verify_cpu import verify_cpu

    kw = dict(prefill_chunk=16, progress=False, schedule=verify_cpu) if name == "llvm" else {}
    t0 = time.perf_counter()
    target = make_backend(name, target_model, **kw)
    draft = make_backend(name, draft_model, **kw)
    policies = Policies(draft)
    spec = dict(backtrack="hybrid", budget_bytes=budget)
    plain_runs, spec_runs = warm_and_time(target, prompt_ids, trees, policies.kwargs, spec, n_tokens, sampling,
                                          reps, f"[{name}] ")
    log(f"  [{name}] backends built, warmed and timed in {time.perf_counter() - t0:.0f} s")
    plain_spt = median_s_per_token(plain_runs)
    rows = {}
    for tree in trees:
        searched = tree.startswith("search")
        # acceptance is deterministic for a fixed tree (one rep tells it); a searched
        # tree's changes as its bandit learns: count every timed run
        gens = spec_runs[tree] if searched else spec_runs[tree][: len(prompt_ids)]
        passes = sum(g.target_passes for g in gens)
        toks = sum(len(g.tokens) - 1 for g in gens)
        spt = median_s_per_token(spec_runs[tree])
        rows[tree] = dict(
            tree=tree, nodes=parse_policy(tree)[1].nodes, verify_size=verify_size(tree),
            replay_layers=list(gens[0].replay_layers), draft_checkpoint=gens[0].draft_checkpoint,
            mean_accepted=sum(sum(g.accepted) for g in gens) / passes,
            tokens_per_target_pass=toks / passes, target_passes_per_token=passes / toks,
            draft_calls_per_token=sum(g.draft_calls for g in gens) / toks,
            tokens_per_s=1 / spt, plain_tokens_per_s=1 / plain_spt, speedup=plain_spt / spt,
            time_split=_time_split(spec_runs[tree]),
        )
        if searched:  # which arms the bandit ran in the timed runs, and what it learned
            rows[tree]["arms_timed"] = arms_timed(spec_runs[tree])
            rows[tree]["bandit"] = policies.search[tree].report()
    return dict(plain_tokens_per_s=1 / plain_spt, trees=rows), (target, draft)


def _time_split(gens) -> dict:
    tot = {}
    for g in gens:
        for k, v in g.times.items():
            tot[k] = tot.get(k, 0.0) + v
    s = sum(g.decode_s for g in gens)
    tot["other"] = s - sum(tot.values())
    return {k: v / s for k, v in tot.items()}


def strategies_at(target, draft, prompt_ids, n_tokens, tree, reps, sampling, budget):
    """Peak state memory and tokens/s of each backtracking strategy at one tree."""
    from mambaflow.runtime.generate import generate
    from mambaflow.runtime.speculative import speculative_generate

    ref = [generate(target, p, n_tokens, sampling).tokens for p in prompt_ids]
    out = {}
    variants = {"checkpoint": ("checkpoint", None), "replay": ("replay", None),
                "hybrid (SpecMamba split)": ("hybrid", None), f"hybrid ({budget / 2**20:.0f} MiB)": ("hybrid", budget)}
    for label, (s, b) in variants.items():
        kw = dict(Policies(draft).kwargs(tree), backtrack=s, budget_bytes=b)
        draft_of = kw.pop("draft")
        for p in prompt_ids:  # compile (and a searched tree's warm-up)
            speculative_generate(target, draft_of, p, n_tokens, sampling, **kw)
        gens = []
        for _ in range(reps):
            for p, r in zip(prompt_ids, ref):
                with paused_gc():
                    g = speculative_generate(target, draft_of, p, n_tokens, sampling, **kw)
                if g.tokens != r:
                    raise SystemExit(f"MISMATCH under backtracking '{s}'")
                gens.append(g)
        peak = {k: max(g.peak_state_bytes[k] for g in gens) for k in ("target", "draft", "total")}
        out[label] = dict(peak_state_bytes=peak, tokens_per_s=1 / median_s_per_token(gens),
                      replay_layers=list(gens[0].replay_layers), draft_checkpoint=gens[0].draft_checkpoint,
                      fifo_depth=gens[0].fifo_depth, tree_nodes=gens[0].tree_nodes)
    return out


def published_memory(tree: str) -> dict:
    """The memory model at the Mamba2-2.7B target / Mamba2-130M draft shapes."""
    from mambaflow.models.config import get_config
    from mambaflow.runtime.backtrack import Backtrack, draft_peak_bytes, verify_bytes

    shape = parse_policy(tree)[1]
    tcfg, dcfg = get_config("mamba2-2.7b"), get_config("mamba2-130m")
    T, fifo = shape.nodes, shape.fifo_depth()
    out = {}
    for s in STRATEGIES:
        plan = Backtrack(s).plan(tcfg, dcfg, T, T, fifo)
        t = verify_bytes(tcfg, T, plan.replay_layers, fifo)
        d = draft_peak_bytes(dcfg, True, T if plan.draft_checkpoint else shape.depth + 1)
        out[s] = dict(target=t, draft=d, total=t + d)
    return dict(target="mamba2-2.7b", draft="mamba2-130m", tree=tree, fp32_bytes=out)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(result["pairs"].items())
    fig, axes = plt.subplots(len(pairs), 2, figsize=(13, 4 * len(pairs)), squeeze=False)
    for row, (name, r) in enumerate(pairs):
        trees = list(next(iter(r["backends"].values()))["trees"])
        x = range(len(trees))
        ax = axes[row][0]
        first = next(iter(r["backends"].values()))["trees"]
        ax.bar(x, [first[t]["tokens_per_target_pass"] for t in trees], color="tab:blue")
        ax.axhline(2.0, color="gray", ls="--", lw=1)
        ax.set_xticks(list(x), trees, rotation=30)
        ax.set_ylabel("tokens per target pass")
        ax.set_title(f"{name}: acceptance (greedy)")
        ax = axes[row][1]
        w = 0.8 / len(r["backends"])
        for k, (bn, br) in enumerate(r["backends"].items()):
            ax.bar([i + k * w for i in x], [br["trees"][t]["speedup"] for t in trees], width=w, label=bn)
        ax.axhline(1.0, color="black", lw=1)
        ax.axhline(1.5, color="gray", ls="--", lw=1)
        ax.set_xticks([i + w / 2 for i in x], trees, rotation=30)
        ax.set_ylabel("speedup over plain decoding")
        ax.set_title(f"{name}: wall clock (1 thread)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=["mamba1-target", "mamba2-target"], help="zoo targets")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--trees", nargs="+", default=DEFAULT_TREES)
    ap.add_argument("--backends", nargs="+", default=["llvm", "torch"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-mib", type=float, default=64.0, help="state memory budget of the hybrid strategy")
    ap.add_argument("--random", action="store_true", help="random weights if no trained ones (dry run)")
    ap.add_argument("--out", default=str(RESULTS / "speculative.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    budget = int(args.budget_mib * 2**20)
    result = dict(threads=args.threads, tokens=args.tokens, prompts=args.prompts, reps=args.reps,
                  budget_mib=args.budget_mib, machine=platform.processor() or platform.machine(),
                  llvm_schedule="schedules.verify_cpu", pairs={})
    for tname in args.pairs:
        target, draft, dname, trained = load_pair(tname, args.random)
        ids = prompts(args.prompts, args.prompt_len, target.config.vocab_size)
        from mambaflow.runtime.generate import Sampling

        sampling = Sampling(vocab_limit=256 if trained else None)  # byte models: never the padding rows
        log(f"{tname} + {dname} ({'trained' if trained else 'RANDOM weights'}): {len(ids)} prompts, "
            f"{args.tokens} tokens each")
        r = dict(draft=dname, trained=trained, backends={})
        for b in args.backends:
            r["backends"][b], (tb, db) = run_backend(b, target, draft, ids, args.tokens, args.trees, args.reps,
                                                     sampling, budget, log)
            if b == "llvm":
                llvm_backends = (tb, db)
        main_b = "llvm" if "llvm" in r["backends"] else args.backends[0]
        trees = r["backends"][main_b]["trees"]
        best = max(trees, key=lambda t: (trees[t]["speedup"], trees[t]["tokens_per_target_pass"]))
        r["best_tree"] = best
        r["tokens_per_target_pass"] = trees[best]["tokens_per_target_pass"]
        r["speedup_llvm"] = r["backends"].get("llvm", {}).get("trees", {}).get(best, {}).get("speedup")
        r["speedup_torch"] = r["backends"].get("torch", {}).get("trees", {}).get(best, {}).get("speedup")
        if "llvm" in r["backends"]:
            r["strategies_llvm"] = strategies_at(*llvm_backends, ids, args.tokens, best, args.reps, sampling, budget)
        r["published_shape_memory"] = published_memory(best)
        result["pairs"][tname] = r
        _print_pair(tname, r)
    first = result["pairs"][args.pairs[0]]
    result = dict(tokens_per_target_pass=first["tokens_per_target_pass"], speedup_llvm=first["speedup_llvm"],
                  best_tree=first["best_tree"], pair=args.pairs[0], **result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")


def _print_pair(name: str, r: dict) -> None:
    print(f"\n{name} + {r['draft']}  (greedy; speedup = plain s/token over speculative s/token)")
    backends = list(r["backends"])
    hdr = f"{'policy':14} {'T':>3} {'acc len':>7} {'tok/pass':>8} {'pass/tok':>8} {'draft/tok':>9}"
    for b in backends:
        hdr += f" {b + ' tok/s':>11} {b + ' x':>8}"
    print(hdr)
    first = r["backends"][backends[0]]["trees"]
    for tree, row in first.items():
        line = (f"{tree:14} {row['nodes']:3d} {row['mean_accepted']:7.2f} {row['tokens_per_target_pass']:8.2f} "
                f"{row['target_passes_per_token']:8.2f} {row['draft_calls_per_token']:9.2f}")
        for b in backends:
            br = r["backends"][b]["trees"][tree]
            line += f" {br['tokens_per_s']:11.1f} {br['speedup']:8.2f}"
        print(line)
    for b in backends:
        print(f"plain {b}: {r['backends'][b]['plain_tokens_per_s']:.1f} tok/s")
        for tree, row in r["backends"][b]["trees"].items():
            if "arms_timed" in row:
                print(f"  {b} {tree} rounds per arm (timed): "
                      + ", ".join(f"{a} {n}" for a, n in sorted(row["arms_timed"].items(), key=lambda kv: -kv[1])))
    print(f"best tree: {r['best_tree']} ({r['tokens_per_target_pass']:.2f} tokens/pass, "
          f"llvm x{r['speedup_llvm'] or float('nan'):.2f})")
    if "strategies_llvm" in r:
        print(f"{'strategy':26} {'target KiB':>10} {'draft KiB':>9} {'total KiB':>9} {'llvm tok/s':>10}  plan")
        for s, v in r["strategies_llvm"].items():
            pk = v["peak_state_bytes"]
            plan = f"draft {'checkpoint' if v['draft_checkpoint'] else 'replay'}, target replays {v['replay_layers']}"
            print(f"{s:26} {pk['target'] / 1024:10.1f} {pk['draft'] / 1024:9.1f} {pk['total'] / 1024:9.1f} "
                  f"{v['tokens_per_s']:10.1f}  {plan}")
    pm = r["published_shape_memory"]
    print(f"memory model at {pm['target']} + {pm['draft']}, tree {pm['tree']} (fp32 MiB): " + ", ".join(
        f"{s} {v['total'] / 2**20:.0f}" for s, v in pm["fp32_bytes"].items()))


if __name__ == "__main__":
    main()
