"""Speculative decoding with a draft and a target Mamba (SpecMamba's algorithm).

Each round:
1. the draft grows a token tree under the pending token (runtime.trees): a chain, a
   static tree (widths per depth) or a dynamic tree grown by confidence;
2. the target verifies the whole tree in one pass (`Backend.verify_tree`: each node's
   conv window gathered from its ancestors, its SSM state computed from its parent's in
   breadth-first order through the FIFO tree buffer);
3. acceptance walks the tree from the root: greedy takes the longest path on which every
   token is the target's argmax; sampling uses multi-candidate recursive rejection
   sampling (SpecInfer / Sequoia), which keeps the target's distribution exactly;
4. both models' states are backtracked to the last accepted node (runtime.backtrack:
   checkpoint, replay or the memory-aware hybrid), and the target's own next token
   (the "bonus": its correction, or the token after a fully accepted path) becomes the
   next round's root.

The target may also be a transformer (runtime/transformer.py; Choi et al.'s Mamba
drafters for transformer targets): its verify is one forward pass under a tree attention
mask, its backtracking a gather of the KV cache, and its memory (`Backend.memory`) grows
with the context, which the backtracking budget reads at the run's longest context.

Every round emits at least one token, so a target pass never yields fewer tokens than
plain decoding; greedy output is token for token the target's own greedy output.

    from mambaflow.runtime.generate import generate
    g = generate(target_backend, prompt, 64, draft=draft_backend, tree="4,2,1,1", backtrack="hybrid")
    g.tokens, g.tokens_per_target_pass, g.peak_state_bytes
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import MambaflowError
from .backends import Backend
from .backtrack import STRATEGIES, Backtrack, fifo_need
from .generate import Generation, Sampling, choose, filter_logits
from .trees import Chain, DraftTree, draft_chain_tree, draft_tree, parse_shape


@dataclass
class SpeculativeGeneration(Generation):
    """A Generation plus what speculation did: one entry per target verify pass."""

    accepted: list[int] = field(default_factory=list)  # draft tokens accepted per pass
    draft_calls: int = 0
    tree: str = ""
    tree_nodes: int = 0  # verify size T (root included, after padding)
    fifo_depth: int | None = None
    backtrack: str = ""
    replay_layers: tuple[int, ...] = ()
    draft_checkpoint: bool = True
    peak_state_bytes: dict[str, int] = field(default_factory=dict)  # target, draft, total
    times: dict[str, float] = field(default_factory=dict)  # draft, verify, accept, backtrack seconds
    configs: list[str] = field(default_factory=list)  # a searched tree: the arm of each round (runtime.search)

    @property
    def target_passes(self) -> int:
        return len(self.accepted)

    @property
    def mean_accepted(self) -> float:
        return sum(self.accepted) / len(self.accepted) if self.accepted else float("nan")

    @property
    def tokens_per_target_pass(self) -> float:
        """Tokens emitted per verify pass (accepted drafts + the target's own token); the
        first token, which comes from the prompt's prefill, is not counted."""
        n = len(self.tokens) - 1
        return n / len(self.accepted) if self.accepted else float("nan")

    @property
    def target_passes_per_token(self) -> float:
        return 1.0 / self.tokens_per_target_pass

    def summary(self) -> dict:
        return dict(tree=self.tree, tree_nodes=self.tree_nodes, backtrack=self.backtrack,
                    new_tokens=len(self.tokens), target_passes=self.target_passes,
                    mean_accepted=self.mean_accepted, tokens_per_target_pass=self.tokens_per_target_pass,
                    target_passes_per_token=self.target_passes_per_token, draft_calls=self.draft_calls,
                    decode_s=self.decode_s, decode_tokens_per_s=self.decode_tokens_per_s,
                    fifo_depth=self.fifo_depth, replay_layers=list(self.replay_layers),
                    draft_checkpoint=self.draft_checkpoint, peak_state_bytes=dict(self.peak_state_bytes),
                    times=dict(self.times), configs=list(self.configs))


# ---------------------------------------------------------------- acceptance


def _children(tree: DraftTree) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in tree.tokens]
    for i, p in enumerate(tree.parents):
        if p >= 0:
            kids[p].append(i)
    return kids


def accept_greedy(tree: DraftTree, logits: Tensor, sampling: Sampling) -> tuple[list[int], int]:
    """The longest root path whose every token is the target's argmax at its parent.
    Returns the path (node ids, root first) and the target's argmax after it."""
    kids = _children(tree)
    limit = sampling.vocab_limit
    n = len(tree.tokens)  # (logits may have padding rows after the tree's nodes)
    best = (logits[:n] if limit is None else logits[:n, :limit]).argmax(-1).tolist()  # one op for all nodes
    node, path = 0, [0]
    while True:
        nxt = next((c for c in kids[node] if tree.tokens[c] == best[node]), None)
        if nxt is None:
            return path, best[node]
        path.append(nxt)
        node = nxt


def accept_sampling(tree: DraftTree, logits: Tensor, sampling: Sampling,
                    gen: torch.Generator) -> tuple[list[int], int]:
    """Multi-candidate recursive rejection sampling down the tree (SpecInfer; without
    replacement as in Sequoia). At a node with target distribution p, its children
    x_1..x_k are tried in draft order: x_i is accepted with probability
    min(1, p(x_i) / q_i(x_i)); on rejection p <- norm(max(p - q_i, 0)) and
    q_{i+1} = q_i with x_i removed (children drawn without replacement from the draft's q),
    or, for children chosen deterministically, q_i is the point mass on x_i (so p loses
    x_i). If no child is accepted the token is drawn from what is left of p. Each step
    leaves the output distributed exactly as p, whatever the proposals, so the emitted
    sequence has the target's distribution."""
    kids = _children(tree)
    node, path = 0, [0]
    while True:
        p = torch.softmax(filter_logits(logits[node], sampling), dim=-1).double()
        q = tree.q[node].double().clone() if tree.q[node] is not None else None
        accepted = None
        for c in kids[node]:
            x = tree.tokens[c]
            r = float(torch.rand((), generator=gen, dtype=torch.float64))
            if q is not None:
                ratio = float(p[x] / q[x]) if q[x] > 0 else 0.0
            else:
                ratio = float(p[x])
            if r < min(1.0, ratio):
                accepted = c
                break
            if q is not None:
                resid = (p - q).clamp_min(0)
                q[x] = 0
                q = q / q.sum() if q.sum() > 0 else q
            else:
                resid = p.clone()
                resid[x] = 0
            if resid.sum() > 0:  # (zero only through float rounding on an event of probability 0)
                p = resid / resid.sum()
        if accepted is None:
            return path, int(torch.multinomial(p.float(), 1, generator=gen))
        path.append(accepted)
        node = accepted


# ------------------------------------------------------------------ the loop


def _run_pending(draft: Backend, tokens: list[int], state):
    """Feed the draft the tokens it has not seen yet: logits after the last, state."""
    if len(tokens) == 1:
        return draft.decode(tokens[0], state)
    logits, st = draft.prefill(torch.tensor(tokens, dtype=torch.long), state)
    return logits[-1], st


def speculative_generate(target: Backend, draft, prompt: list[int], max_new_tokens: int,
                         sampling: Sampling = Sampling(), tree="chain:4", backtrack: str = "hybrid",
                         budget_bytes: int | None = None, verify_size: int | None = None,
                         fifo_depth: int | None = None, verify_multiple: int | None = None) -> SpeculativeGeneration:
    """Generate `max_new_tokens` after `prompt` with `target`, drafting with `draft` (a
    Backend, or a model-free drafter such as `runtime.ngram.NgramDraft`).

    tree: a shape (runtime.trees: Chain / Static / Dynamic, runtime.search.Search) or its
    spec ('chain:4', '4,2,1,1', 'dyn:16', 'search:16'), or a `runtime.search.TreeSearch`
    policy (which keeps what it learned across calls). backtrack: 'checkpoint', 'replay'
    or 'hybrid' (with `budget_bytes`; None = draft checkpoints, target replays).
    verify_size: pad every tree to this many nodes (default: the shape's size), so the
    llvm backend compiles one verify design. verify_multiple: pad to a multiple of this
    instead; a searched tree, whose size changes per round, is then padded per round to
    its arm's size (`Search.verify_sizes`: one verify design per arm size). fifo_depth:
    the FIFO tree buffer depth (default: the shape's bound).
    """
    from .ngram import NgramDraft
    from .search import Search, TreeSearch

    if not prompt:
        raise MambaflowError("speculative_generate: the prompt is empty; give at least one token")
    if max_new_tokens < 1:
        raise MambaflowError(f"speculative_generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    lookup = isinstance(draft, NgramDraft)  # a model-free drafter: no draft state to keep
    if not lookup and target.cfg.vocab_size != draft.cfg.vocab_size:
        raise MambaflowError(
            f"draft and target must share a vocabulary: the target has {target.cfg.vocab_size} "
            f"rows, the draft {draft.cfg.vocab_size}; pick a draft trained with the target's tokenizer")
    if backtrack not in STRATEGIES:
        raise MambaflowError(f"unknown backtracking strategy '{backtrack}': use one of {', '.join(STRATEGIES)}")
    if verify_multiple is not None and verify_multiple < 1:
        raise MambaflowError(f"speculative_generate: verify_multiple must be >= 1, got {verify_multiple}")
    shape = parse_shape(tree)
    mult = verify_multiple or 1
    policy = tree if isinstance(tree, TreeSearch) else TreeSearch(shape, sampling.seed, multiple=mult) \
        if isinstance(shape, Search) else None
    if lookup and policy is not None:
        raise MambaflowError(f"the n-gram drafter has no probabilities to search a tree with: give it a chain or "
                             f"static tree (e.g. chain:7), not {shape}")
    sizes = policy.verify_sizes(mult) if policy is not None else []  # a searched tree's padded sizes
    T = verify_size or (sizes[-1] if sizes else -(-shape.nodes // mult) * mult)  # the largest verify pass
    largest = sizes[-1] if sizes else shape.nodes  # (a searched tree's arms may stop short of its budget)
    if T < largest:
        raise MambaflowError(f"verify_size {T} is smaller than the tree {shape} ({largest} nodes)")
    fifo = fifo_depth or min(shape.fifo_depth(), T)
    strategy = Backtrack(backtrack, budget_bytes)
    # memory at the run's longest context (a KV cache grows with it; a Mamba state does
    # not); a lookup drafter holds no state: the hybrid's budget books it as one node of
    # the target's size (a small overcount, which keeps Backtrack's one memory model)
    longest = len(prompt) + max_new_tokens
    tmem = target.memory(longest)
    plan = strategy.plan(tmem, tmem if lookup else draft.memory(longest), T, 1 if lookup else shape.nodes, fifo)
    gen = torch.Generator().manual_seed(sampling.seed)
    greedy = sampling.temperature == 0
    times = dict(draft=0.0, verify=0.0, accept=0.0, backtrack=0.0)

    t0 = time.perf_counter()
    prompt_t = torch.tensor(prompt, dtype=torch.long)
    t_logits, t_state = target.prefill(prompt_t)
    d_state = None if lookup else draft.prefill(prompt_t)[1]
    t1 = time.perf_counter()

    first = choose(t_logits[-1], sampling, gen)
    out, seen = [first], [t_logits[-1]]
    accepted, configs, draft_calls, peak_live, T_max = [], [], 0, 1, 0
    cache = None
    d_pending = [first]
    while len(out) < max_new_tokens:
        remaining = max_new_tokens - len(out)
        root = out[-1]
        ta = time.perf_counter()
        arm = policy.choose() if policy is not None else None
        # a greedy chain (or a searched width-1 tree) is drafted in one call (runtime.trees.draft_chain_tree)
        chain_k = shape.k if isinstance(shape, Chain) else arm.depth if arm is not None and arm.width == 1 else 0
        if lookup:
            dtree, dstates = draft.draft_tree(prompt + out, shape, max_depth=remaining - 1), {}
        elif greedy and chain_k:
            st = d_state if len(d_pending) == 1 else _run_pending(draft, d_pending[:-1], d_state)[1]
            dtree, dstates = draft_chain_tree(draft, chain_k, root, st, sampling, plan.draft_checkpoint,
                                              max_depth=remaining - 1)
        else:
            root_logits, root_state = _run_pending(draft, d_pending, d_state)
            if arm is not None:
                dtree, dstates = policy.grow(draft, arm, root, root_logits, root_state, sampling,
                                             plan.draft_checkpoint, max_depth=remaining - 1)
            else:
                dtree, dstates = draft_tree(draft, shape, root, root_logits, root_state, sampling, gen,
                                            keep_states=plan.draft_checkpoint, max_depth=remaining - 1)
        draft_calls += 0 if lookup else 1 + dtree.draft_calls
        tb = time.perf_counter()
        T_r = T if verify_size or policy is None else next(t for t in sizes if t >= len(dtree))
        fifo_r = min(fifo, T_r)
        T_max = max(T_max, T_r)
        toks, pars = dtree.padded(T_r)
        if fifo_need(pars) > fifo_r:
            raise MambaflowError(f"internal: tree {shape} needs a FIFO of {fifo_need(pars)} > {fifo_r}")
        # last round's cache is spent (state_at copies out of it): its buffers are reused
        logits, cache = target.verify_tree(toks, pars, t_state, plan.replay_layers, fifo_r, out=cache)
        tc = time.perf_counter()
        if greedy:
            path, bonus = accept_greedy(dtree, logits, sampling)
        else:
            path, bonus = accept_sampling(dtree, logits, sampling, gen)
        td = time.perf_counter()
        t_state = target.state_at(cache, path[-1])
        if not lookup:
            # the draft resumes from its deepest decoded node on the path (checkpoint) or
            # from the root (replay), and first runs the accepted tokens it has not seen
            keep = max(i for i, n in enumerate(path) if n in dstates)
            d_state = dstates[path[keep]]
            d_pending = [dtree.tokens[n] for n in path[keep + 1 :]] + [bonus]
        te = time.perf_counter()

        new = [dtree.tokens[n] for n in path[1:]] + [bonus]
        out += new
        seen += [logits[n] for n in path]
        accepted.append(len(path) - 1)
        times["draft"] += tb - ta
        times["verify"] += tc - tb
        times["accept"] += td - tc
        times["backtrack"] += te - td
        if arm is not None:
            policy.update(arm, len(new), te - ta, T_r)
            configs.append(str(arm))
        live = max(len(dstates), dtree.peak_live_states) if plan.draft_checkpoint else dtree.peak_live_states
        peak_live = max(peak_live, live)
    t2 = time.perf_counter()
    context = len(prompt) + len(out) - 1  # tokens the models have seen at the end
    strategy.record("target", target.memory(context).verify_bytes(T_max or T, plan.replay_layers,
                                                                   min(fifo, T_max or T)))
    strategy.record("draft", 0 if lookup else draft.memory(context).draft_bytes(True, peak_live))
    out, seen = out[:max_new_tokens], seen[:max_new_tokens]
    peak = dict(strategy.peak)
    peak["total"] = peak["target"] + peak["draft"]
    return SpeculativeGeneration(
        out, seen, prefill_s=t1 - t0, decode_s=t2 - t1, accepted=accepted, draft_calls=draft_calls,
        tree=str(draft) + "/" + str(shape) if lookup else str(shape), tree_nodes=T_max or T, fifo_depth=fifo,
        backtrack=backtrack, replay_layers=tuple(plan.replay_layers), draft_checkpoint=plan.draft_checkpoint,
        peak_state_bytes=peak, times=times, configs=configs)


# --------------------------------------------------------------- entry point


DEFAULT_BUDGET = 64 * 2**20  # bytes of state the CLI's hybrid strategy may hold


def run_speculative(target_model, draft_model, prompt_ids: list[int], n_tokens: int, tree="chain:7",
                    backend_name: str = "llvm", sampling: Sampling = Sampling(), backtrack: str = "hybrid",
                    budget_bytes: int | None = DEFAULT_BUDGET, progress: bool = True, prefill_chunk: int = 16,
                    reps: int = 3) -> dict:
    """What `mambaflow run --speculative` shows: plain target decoding and speculative
    decoding on one backend, their tokens, whether they agree (greedy) and the speed.

    On llvm every design is scheduled with `schedules.verify_cpu` (plain decoding too) and
    trees are padded to a multiple of 4 nodes. A searched tree ('search:N') keeps one
    `TreeSearch` policy through the warm-up and the timed runs (it learns across them).
    Times are medians of `reps` runs with the garbage collector paused. Returns {"plain": Generation, "speculative":
    SpeculativeGeneration, "same_tokens": bool, "speedup": plain s/token over
    speculative s/token, "summary": dict}.
    """
    import gc
    import statistics

    from .backends import make_backend
    from .generate import generate

    kw = {}
    if backend_name == "llvm":
        from ..schedules.verify_cpu import verify_cpu

        kw = dict(prefill_chunk=prefill_chunk, progress=progress, schedule=verify_cpu)
    from .search import Search, TreeSearch

    shape = parse_shape(tree)  # a bad spec fails before anything is compiled
    target = make_backend(backend_name, target_model, **kw)
    draft = make_backend(backend_name, draft_model, **kw)
    pad = 4 if backend_name == "llvm" else None  # the verify node jam of schedules.verify_cpu
    spec_kw = dict(tree=shape, backtrack=backtrack, budget_bytes=budget_bytes, verify_multiple=pad)
    warm = min(n_tokens, shape.depth + 2)
    if isinstance(shape, Search):  # one policy learns through the warm-up and every timed run
        spec_kw["tree"] = TreeSearch(shape, sampling.seed, multiple=pad or 1)
        warm = n_tokens  # every arm's first (uncounted) round, and its verify design, in the warm-up
    # compile / warm everything once so neither timing pays for it
    speculative_generate(target, draft, prompt_ids, warm, sampling, **spec_kw)
    generate(target, prompt_ids, 2, sampling)
    plains, specs = [], []
    was = gc.isenabled()
    try:
        for _ in range(max(reps, 1)):
            gc.collect()
            gc.disable()
            plains.append(generate(target, prompt_ids, n_tokens, sampling))
            specs.append(speculative_generate(target, draft, prompt_ids, n_tokens, sampling, **spec_kw))
            gc.enable()
    finally:
        if was:
            gc.enable()
    per_token = lambda g: g.decode_s / max(len(g.tokens) - 1, 1)  # noqa: E731
    plain = sorted(plains, key=per_token)[len(plains) // 2]
    spec = sorted(specs, key=per_token)[len(specs) // 2]
    speedup = statistics.median(map(per_token, plains)) / statistics.median(map(per_token, specs))
    summary = spec.summary()
    summary.update(backend=backend_name, target_engine=target.name, draft_engine=draft.name,
                   plain_decode_tokens_per_s=plain.decode_tokens_per_s, speedup=speedup,
                   same_tokens=plain.tokens == spec.tokens)
    return {"plain": plain, "speculative": spec, "same_tokens": plain.tokens == spec.tokens,
            "speedup": speedup, "summary": summary}


def print_speculative_run(target_model, draft_model, names: tuple[str, str], prompt_ids: list[int], n_tokens: int,
                          sampling: Sampling, tree="chain:7", backtrack: str = "hybrid", prefill_chunk: int = 16,
                          show=None, budget_bytes: int | None = DEFAULT_BUDGET) -> int:
    """`mambaflow run --speculative`: plain and speculative decoding on llvm and torch,
    printed; returns the exit status (1 when greedy speculative output differs from the
    target's own). `show` turns token ids into text (None: print the ids)."""
    runs = {}
    for backend in ("llvm", "torch"):
        t0 = time.perf_counter()
        runs[backend] = run_speculative(target_model, draft_model, prompt_ids, n_tokens, tree, backend, sampling,
                                        backtrack, budget_bytes, progress=backend == "llvm",
                                        prefill_chunk=prefill_chunk)
        s = runs[backend]["summary"]
        engines = "" if s["target_engine"] == s["draft_engine"] else \
            f" (target on {s['target_engine']}, draft on {s['draft_engine']})"
        print(f"[{backend}] built, warmed and ran in {time.perf_counter() - t0:.1f} s{engines}")
    spec = runs["llvm"]["speculative"]
    budget = f" under {budget_bytes / 2**20:.0f} MiB" if backtrack == "hybrid" and budget_bytes else ""
    print(f"\ntarget {names[0]}, draft {names[1]}, tree {spec.tree} ({spec.tree_nodes} nodes, FIFO tree buffer "
          f"{spec.fifo_depth}), backtracking {backtrack}{budget}: draft "
          f"{'checkpoints' if spec.draft_checkpoint else 'replays'}, target replays layers {list(spec.replay_layers)}")
    for nm, r in runs.items():
        ids = r["speculative"].tokens
        print(f"[{nm:5}] {show(ids) if show else ' '.join(map(str, ids))!r}")
    print(f"\n{'backend':8} {'plain tok/s':>11} {'spec tok/s':>10} {'speedup':>8} {'tok/pass':>8} {'accepted':>8}")
    for nm, r in runs.items():
        s = r["speculative"]
        print(f"{nm:8} {r['plain'].decode_tokens_per_s:11.1f} {s.decode_tokens_per_s:10.1f} {r['speedup']:8.2f} "
              f"{s.tokens_per_target_pass:8.2f} {s.mean_accepted:8.2f}")
    peak = spec.peak_state_bytes
    print(f"peak state memory: target {peak['target'] / 1024:.1f} KiB, draft {peak['draft'] / 1024:.1f} KiB")
    if sampling.temperature == 0:
        same = all(r["same_tokens"] for r in runs.values())
        print(f"\ncheck: greedy speculative tokens identical to the target's own greedy tokens: {same}")
        if not same:
            print("MISMATCH: speculative decoding changed the output", file=sys.stderr)
            return 1
    return 0


__all__ = ["SpeculativeGeneration", "accept_greedy", "accept_sampling", "print_speculative_run",
           "run_speculative", "speculative_generate"]
