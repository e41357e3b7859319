"""Drafters for the shipped transformer target (issue 15; Choi et al., "Mamba Drafters
for Speculative Decoding"), side by side in one run.

Target: ``gpt-target`` (a byte-level Llama, transformers on PyTorch). Drafters:
- ``mamba``: the Mamba draft ``mamba1-draft`` compiled on llvm (the design that goes to
  the FPGA; `schedules.verify_cpu`), over a chain (one call of a compiled draft chain),
  a fixed tree (one batched draft step per level) or a test-time tree search
  (``search:N``, `runtime.search`: one TreeSearch per policy learns through the warm-up
  and every timed run; its bandit is rewarded with tokens per second, or with tokens
  per round with ``search:N@tokens``, which does not depend on the machine's load);
- ``ngram``: the prompt-lookup drafter (`runtime.ngram`, suffixes of 3..1 tokens), over
  a chain or a static tree (its first width = branches): no draft model;
- ``gpt``: the transformer drafter ``gpt-draft`` (transformers on PyTorch), chains;
- ``mamba-torch``: the same Mamba draft on PyTorch eager, to tell the model from the
  engine when it is compared with ``gpt`` (also on PyTorch).

Policies are spelled DRAFTER/TREE (``mamba/search:16``, ``ngram/chain:7``, ``gpt/chain:4``).
For each: tokens per target pass, wall-clock speedup over plain target decoding (greedy,
the same prompts, plain and speculative runs interleaved, medians over --reps, garbage
collector paused; every output is checked equal to plain greedy), and the measured split
of a round's time (draft, verify, accept, backtrack) in ms per generated token.

Drafter memory against context length (512, 2k, 8k tokens): a Mamba draft's state is
constant (`MambaMemory.state_bytes`), a transformer drafter's KV cache grows
(`runtime.transformer.kv_cache_bytes`); both with and without the drafter's weights,
float32 as the runtime holds them, and the Mamba draft's saving in %. The same
arithmetic at a published-size pair (Mamba-130m vs a GPT-2-small-sized drafter), from
configs only. The n-gram drafter holds no state (it reads the context the target keeps).

Timings never gate anything (see DESIGN.md). Prints a table, writes
benchmarks/results/drafters.{json,png}.

    python benchmarks/drafters.py [--prompts 3] [--prompt-len 48] [--prompt-offset 256] [--tokens 64] [--reps 5]
        [--policies mamba/chain:4 mamba/search:16 ngram/chain:7 gpt/chain:4 ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speculative  # noqa: E402  (the speculative benchmark's helpers: prompts, timing, gc pausing)
from speculative import _time_split, arms_timed, median_s_per_token, warm_and_time  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET, MAMBA_DRAFT, GPT_DRAFT = "gpt-target", "mamba1-draft", "gpt-draft"
DRAFTERS = {"mamba": MAMBA_DRAFT, "mamba-torch": MAMBA_DRAFT, "gpt": GPT_DRAFT, "ngram": None}
ENGINES = {"mamba": "llvm", "mamba-torch": "torch", "gpt": "torch", "ngram": "none"}
DEFAULT_POLICIES = ["mamba/chain:4", "mamba/chain:7", "mamba/4,2,1,1", "mamba/2,2,1,1", "mamba/search:8",
                    "mamba/search:16", "mamba/search:8@tokens", "mamba/search:16@tokens", "mamba-torch/chain:7",
                    "ngram/chain:7", "ngram/3,1,1", "gpt/chain:4", "gpt/chain:7"]
CONTEXTS = (512, 2048, 8192)


# ------------------------------------------------------------------ memory


def drafter_memory(name: str, cfg, contexts=CONTEXTS) -> dict:
    """A drafter's memory at each context length, float32: its state (a Mamba's constant
    state, a transformer's KV cache) and its state plus its weights."""
    from mambaflow.models.transformer import TransformerConfig
    from mambaflow.runtime.backtrack import F32, MambaMemory
    from mambaflow.runtime.transformer import kv_cache_bytes
    from mambaflow.train import param_count

    weights = param_count(cfg) * F32
    if isinstance(cfg, TransformerConfig):
        state = {n: kv_cache_bytes(cfg, n) for n in contexts}
        kind = f"{cfg.arch} d{cfg.d_model}x{cfg.n_layer}, {cfg.n_kv_head} kv heads x {cfg.head_dim}"
    else:
        state = {n: MambaMemory(cfg).state_bytes() for n in contexts}
        kind = f"{cfg.arch} d{cfg.d_model}x{cfg.n_layer}, d_state {cfg.d_state}"
    return dict(name=name, config=kind, params=param_count(cfg), weight_bytes=weights,
                state_bytes={str(n): b for n, b in state.items()},
                total_bytes={str(n): b + weights for n, b in state.items()})


def memory_table(mamba: tuple[str, object], transformer: tuple[str, object], contexts=CONTEXTS) -> dict:
    """The Mamba drafter against the transformer drafter at each context: both rows and
    the Mamba's saving in % (1 - mamba / transformer), on the state alone and on
    state + weights."""
    m, t = drafter_memory(*mamba, contexts), drafter_memory(*transformer, contexts)
    saving = {key: {str(n): 100.0 * (1 - m[key][str(n)] / t[key][str(n)]) for n in contexts}
              for key in ("state_bytes", "total_bytes")}
    return dict(contexts=list(contexts), mamba=m, transformer=t, saving_pct=saving,
                context_for_30pct_total=context_for_saving(mamba[1], transformer[1], 30.0))


def context_for_saving(mamba_cfg, transformer_cfg, pct: float) -> int:
    """The shortest context at which the Mamba drafter's state + weights are `pct` %
    below the transformer drafter's (whose KV cache grows by kv_cache_bytes(cfg, 1)
    per token); 0 when they already are at no context."""
    from mambaflow.runtime.backtrack import F32, MambaMemory
    from mambaflow.runtime.transformer import kv_cache_bytes
    from mambaflow.train import param_count

    m = MambaMemory(mamba_cfg).state_bytes() + F32 * param_count(mamba_cfg)
    w, per_token = F32 * param_count(transformer_cfg), kv_cache_bytes(transformer_cfg, 1)
    need = m / (1 - pct / 100) - w  # KV bytes the transformer must hold
    return max(0, -(-int(need) // per_token))


def published_pair(contexts=CONTEXTS) -> dict:
    """Pure arithmetic from configs: Mamba-130m against a GPT-2-small-sized drafter
    (d768 x 12 layers, 12 heads, GPT-2's vocabulary and 1024 positions: its 2k and 8k
    rows are the KV-cache arithmetic of the config, beyond what GPT-2 itself reads)."""
    from mambaflow.models.config import get_config
    from mambaflow.models.transformer import transformer_config

    gpt2 = transformer_config("gpt2", d_model=768, n_layer=12, n_head=12, vocab_size=50257,
                              max_positions=1024)
    t = memory_table(("mamba-130m", get_config("mamba-130m")), ("gpt2-small-sized", gpt2), contexts)
    t["note"] = "arithmetic from configs (float32), no model is run"
    return t


# ------------------------------------------------------------------ runs


def parse(policy: str):
    """'mamba/search:16' -> (drafter key, the tree spec); a searched tree may name its
    bandit's reward after '@' ('mamba/search:8@tokens', runtime.search.REWARDS)."""
    from mambaflow.errors import MambaflowError
    from mambaflow.runtime.search import REWARDS
    from mambaflow.runtime.trees import parse_shape

    drafter, _, tree = policy.partition("/")
    tree, _, reward = tree.partition("@")
    if reward and (reward not in REWARDS or not tree.startswith("search")):
        raise MambaflowError(f"bad policy {policy!r}: only a searched tree names a reward, one of "
                             f"{', '.join(REWARDS)} (e.g. mamba/search:8@tokens)")
    if drafter not in DRAFTERS or not tree:
        raise MambaflowError(f"bad policy {policy!r}: use DRAFTER/TREE with DRAFTER one of "
                             f"{', '.join(DRAFTERS)} (e.g. mamba/search:16, ngram/chain:7, gpt/chain:4)")
    parse_shape(tree)  # a bad tree fails before anything is built
    return drafter, tree


class Policies:
    """The speculative_generate arguments of each policy. A searched tree keeps ONE
    TreeSearch through the warm-up and every timed run (it learns across prompts). The
    target is a transformer on PyTorch: nothing is padded (a verify pass has no compiled
    size to fit)."""

    def __init__(self, drafts: dict):
        self.drafts, self.search = drafts, {}

    def kwargs(self, policy: str) -> dict:
        from mambaflow.runtime.ngram import NgramDraft
        from mambaflow.runtime.search import Search, TreeSearch
        from mambaflow.runtime.trees import parse_shape

        drafter, tree = parse(policy)
        shape = parse_shape(tree)
        if drafter == "ngram":
            return dict(draft=NgramDraft(3, branches=shape.widths[0]), tree=shape)
        if isinstance(shape, Search):
            reward = policy.partition("@")[2] or "time"
            return dict(draft=self.drafts[drafter],
                        tree=self.search.setdefault(policy, TreeSearch(shape, reward=reward)))
        return dict(draft=self.drafts[drafter], tree=shape)


def prompts(n: int, length: int, offset: int) -> list[list[int]]:
    """`length`-token prompts (BOS + bytes) from the first `n` held-out documents long
    enough, starting `offset` bytes in: 0 is the speculative benchmark's prompts (the
    documents' titles, often followed by an underline of '*' that any drafter guesses),
    the default starts mid-text."""
    if offset == 0:
        return speculative.prompts(n, length, None)
    from mambaflow.data import BOS, load_corpus

    docs = [d.text.encode("utf-8") for d in load_corpus(("topics",)).split("heldout")]
    docs = [d for d in docs if len(d) >= offset + length][:n]
    return [[BOS, *list(d[offset: offset + length - 1])] for d in docs]


def run(policies, n_prompts, prompt_len, n_tokens, reps, log, offset: int = 256) -> dict:
    from mambaflow.models import zoo
    from mambaflow.runtime.backends import make_backend
    from mambaflow.runtime.generate import Sampling
    from mambaflow.schedules.verify_cpu import verify_cpu

    t0 = time.perf_counter()
    target_model = zoo.load_shipped(TARGET)
    target = make_backend("torch", target_model)  # a transformer: transformers on PyTorch whatever the engine
    used = {parse(p)[0] for p in policies}
    drafts = {}
    if "mamba" in used:
        drafts["mamba"] = make_backend("llvm", zoo.load_shipped(MAMBA_DRAFT), prefill_chunk=16, progress=False,
                                       schedule=verify_cpu)
    if "mamba-torch" in used:
        drafts["mamba-torch"] = make_backend("torch", zoo.load_shipped(MAMBA_DRAFT))
    if "gpt" in used:
        drafts["gpt"] = make_backend("torch", zoo.load_shipped(GPT_DRAFT))
    ids = prompts(n_prompts, prompt_len, offset)
    sampling = Sampling(vocab_limit=256)  # byte models: never the padding rows
    pol = Policies(drafts)
    spec = dict(backtrack="hybrid")
    plain_runs, runs = warm_and_time(target, ids, policies, pol.kwargs, spec, n_tokens, sampling, reps)
    log(f"built, warmed and timed in {time.perf_counter() - t0:.0f} s ({len(ids)} prompts of {prompt_len} tokens, "
        f"{n_tokens} new tokens, {reps} reps)")
    plain_spt = median_s_per_token(plain_runs)
    rows, n = {}, len(ids)
    for p in policies:
        searched = "search" in p
        # a fixed policy's acceptance is deterministic (one rep tells it); a searched
        # tree's changes as its bandit learns: count every timed run
        gens = runs[p] if searched else runs[p][: len(ids)]
        passes = sum(g.target_passes for g in gens)
        toks = sum(len(g.tokens) - 1 for g in gens)
        all_toks = sum(len(g.tokens) - 1 for g in runs[p])
        spt = median_s_per_token(runs[p])
        ms_per_token = {k: 1e3 * sum(g.times.get(k, 0.0) for g in runs[p]) / all_toks
                        for k in ("draft", "verify", "accept", "backtrack")}
        all_passes = sum(g.target_passes for g in runs[p])
        drafter, tree = parse(p)
        rows[p] = dict(
            policy=p, drafter=drafter, draft_model=DRAFTERS[drafter], tree=tree,
            draft_engine=ENGINES[drafter],
            mean_accepted=sum(sum(g.accepted) for g in gens) / passes,
            tokens_per_target_pass=toks / passes, draft_calls_per_token=sum(g.draft_calls for g in gens) / toks,
            tokens_per_s=1 / spt, speedup=plain_spt / spt, same_as_greedy=True,
            ms_per_token=ms_per_token,
            ms_per_pass={k: v * all_toks / all_passes for k, v in ms_per_token.items()},
            time_split=_time_split(runs[p]),
            draft_peak_state_bytes=max(g.peak_state_bytes["draft"] for g in runs[p]),
            # the spread: each rep's speedup (its plain and speculative medians over the prompts)
            speedup_per_rep=[median_s_per_token(plain_runs[r * n: (r + 1) * n])
                             / median_s_per_token(runs[p][r * n: (r + 1) * n]) for r in range(reps)],
        )
        if searched:
            rows[p]["arms_timed"] = arms_timed(runs[p])
            rows[p]["bandit"] = pol.search[p].report()
    # a round's cost in plain decode steps (draft + verify + accept + backtrack over the
    # plain target's ms per token): speedup ~ tokens per pass / this
    plain_ms = 1e3 * plain_spt
    for row in rows.values():
        row["round_cost_plain_steps"] = sum(row["ms_per_pass"].values()) / plain_ms
        row["verify_cost_plain_steps"] = row["ms_per_pass"]["verify"] / plain_ms
    return dict(plain_tokens_per_s=1 / plain_spt, plain_ms_per_token=plain_ms, policies=rows,
                prompts=len(ids), prompt_len=prompt_len, prompt_offset=offset, tokens=n_tokens, reps=reps)


# ------------------------------------------------------------------ output


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["runs"]["policies"]
    names = list(rows)
    colors = {"mamba": "tab:green", "mamba-torch": "tab:olive", "ngram": "tab:gray", "gpt": "tab:orange"}
    c = [colors[rows[n]["drafter"]] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    ax = axes[0]
    ax.bar(range(len(names)), [rows[n]["tokens_per_target_pass"] for n in names], color=c)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("tokens per target pass")
    ax.set_title(f"{TARGET}: acceptance (greedy)")
    ax = axes[1]
    ax.bar(range(len(names)), [rows[n]["speedup"] for n in names], color=c)
    ax.axhline(1.0, color="black", lw=1)
    ax.axhline(1.5, color="gray", ls="--", lw=1)
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("wall-clock speedup over plain decoding")
    ax.set_title(f"{TARGET}: speedup (1 thread; green Mamba on llvm)")
    ax = axes[2]
    mem = result["memory"]
    ctx = mem["contexts"]
    for key, tab, style in (("shipped", mem, "-"), ("published", result["published_pair"], ":")):
        for side, color in (("mamba", "tab:green"), ("transformer", "tab:orange")):
            r = tab[side]
            ax.plot(ctx, [r["state_bytes"][str(n)] / 2**20 for n in ctx], style, marker="o", color=color,
                    label=f"{r['name']} state ({key})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ctx, [str(n) for n in ctx])
    ax.set_xlabel("context tokens")
    ax.set_ylabel("drafter state MiB (float32)")
    ax.set_title("drafter memory vs context (KV cache vs Mamba state)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_result(result: dict) -> None:
    r = result["runs"]
    print(f"\n{TARGET} (transformers, PyTorch): plain {r['plain_tokens_per_s']:.1f} tok/s "
          f"({r['plain_ms_per_token']:.2f} ms/token); greedy, every output equal to plain greedy")
    print("(pass/step: a round's time, draft + verify + accept + backtrack, in plain decode steps; "
          "speedup ~ tok/pass / pass/step)")
    print(f"{'policy':22} {'engine':6} {'acc len':>7} {'tok/pass':>8} {'tok/s':>7} {'speedup':>7} "
          f"{'draft ms/tok':>12} {'verify ms/tok':>13} {'draft ms/pass':>13} {'verify ms/pass':>14} {'pass/step':>9} {'x per rep':>10}")
    for p, row in r["policies"].items():
        m, mp = row["ms_per_token"], row["ms_per_pass"]
        print(f"{p:22} {row['draft_engine']:6} {row['mean_accepted']:7.2f} {row['tokens_per_target_pass']:8.2f} "
              f"{row['tokens_per_s']:7.1f} {row['speedup']:7.2f} {m['draft']:12.2f} {m['verify']:13.2f} "
              f"{mp['draft']:13.2f} {mp['verify']:14.2f} {row['round_cost_plain_steps']:9.2f}  {min(row['speedup_per_rep']):.2f}-"
              f"{max(row['speedup_per_rep']):.2f}")
        if "arms_timed" in row:
            print(f"  rounds per arm (timed): "
                  + ", ".join(f"{a} {n}" for a, n in sorted(row["arms_timed"].items(), key=lambda kv: -kv[1])))
    bm = result["best_mamba_policy"]
    print(f"best: {result['best_policy']} x{result['speedup']:.2f}"
          + (f"; best Mamba on llvm: {bm} x{result['best_mamba_speedup']:.2f}" if bm else ""))
    for label, tab in (("shipped drafters", result["memory"]), ("published-size pair (arithmetic)",
                                                                  result["published_pair"])):
        m, t = tab["mamba"], tab["transformer"]
        print(f"\ndrafter memory, {label}, float32: {m['name']} ({m['config']}, {m['params']} params) vs "
              f"{t['name']} ({t['config']}, {t['params']} params)")
        print(f"{'context':>8} {'mamba state':>12} {'KV cache':>12} {'saving':>8} {'mamba+W':>10} "
              f"{'transf.+W':>10} {'saving':>8}")
        for n in tab["contexts"]:
            k = str(n)
            print(f"{n:8d} {_fmt(m['state_bytes'][k]):>12} {_fmt(t['state_bytes'][k]):>12} "
                  f"{tab['saving_pct']['state_bytes'][k]:7.1f}% {_fmt(m['total_bytes'][k]):>10} "
                  f"{_fmt(t['total_bytes'][k]):>10} {tab['saving_pct']['total_bytes'][k]:7.1f}%")
        print(f"  state + weights: the Mamba drafter saves >= 30% at {tab['context_for_30pct_total']} tokens "
              "of context and more")


def _fmt(b: int) -> str:
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 1024:.1f} KiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES, help="DRAFTER/TREE (mamba, ngram, gpt)")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt-offset", type=int, default=256,
                    help="bytes into each document the prompt starts (0: the documents' titles)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "drafters.json"))
    args = ap.parse_args(argv)
    for p in args.policies:
        parse(p)
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, flush=True)  # noqa: E731
    from mambaflow.models import zoo

    runs = run(args.policies, args.prompts, args.prompt_len, args.tokens, args.reps, log, args.prompt_offset)
    rows = runs["policies"]
    best = max(rows, key=lambda p: rows[p]["speedup"])
    mamba = [p for p in rows if rows[p]["drafter"] == "mamba"]
    best_m = max(mamba, key=lambda p: rows[p]["speedup"]) if mamba else None
    result = dict(
        target=TARGET, best_policy=best, speedup=rows[best]["speedup"],
        tokens_per_target_pass=rows[best]["tokens_per_target_pass"],
        best_mamba_policy=best_m, best_mamba_speedup=rows[best_m]["speedup"] if best_m else None,
        threads=args.threads, machine=platform.processor() or platform.machine(),
        load_average=list(__import__("os").getloadavg()), torch=torch.__version__,
        mamba_draft_engine="llvm (schedules.verify_cpu)", runs=runs,
        memory=memory_table((MAMBA_DRAFT, zoo.SHIPPED[MAMBA_DRAFT]), (GPT_DRAFT, zoo.SHIPPED[GPT_DRAFT])),
        published_pair=published_pair(),
    )
    result["memory"]["note"] = (f"{GPT_DRAFT} has {zoo.SHIPPED[GPT_DRAFT].max_positions} positions: its 8k row "
                                "is the KV-cache arithmetic of its config")
    print_result(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
