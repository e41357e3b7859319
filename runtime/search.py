"""Test-time tree search: the draft tree is built per round under a node budget, and its
width and depth adapt from round to round to the acceptance observed so far.

Each round a bandit picks one tree configuration (an arm): a level width W (1, 2, 4)
and a depth D that fills the budget or half of it (`Search.arms`). The tree is then
grown level by level (`trees.grow_levels`, one batched draft step per level): level d+1
is the W most probable children of level d's nodes, scored by the product of the
draft's probabilities along the path, until D levels or the budget of N draft nodes.
After verification the arm is rewarded with the tokens the round emitted per second
it took (drafting, verify, acceptance, backtracking: the measured cost of a bigger tree
is part of the reward), so the search settles on the shape that is fastest for this
pair on this machine: a chain of the right length where verify costs grow with the
tree (the CPU), a bushier tree where a draft is often second-best and nodes are cheap.

Spec `search:N` (UCB1, the default), `search:N:ucb` or `search:N:thompson`; N is the
node budget (root excluded). Children are chosen deterministically (the top ones), so
sampling acceptance treats them as fixed proposals and keeps the target's distribution
(runtime.speculative.accept_sampling); greedy output is the target's own.

A `TreeSearch` keeps what its bandit learned: pass the same one to several
`speculative_generate(tree=policy)` calls to carry it across prompts (a spec string
starts a fresh one per call). A round that first uses an arm or a verify size is a
warm-up whose reward is not counted (on llvm it pays for compiling that arm's draft
chain or batched step and that size's verify design).

    from mambaflow.runtime.search import TreeSearch
    policy = TreeSearch.from_spec("search:16", multiple=4)   # arms sized for llvm's verify padding
    g = speculative_generate(target, draft, prompt, 64, tree=policy, verify_multiple=4)
    policy.report()   # {arm: {"pulls", "reward"}}; g.configs: the arm of each round
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MambaflowError
from .generate import Sampling, filter_logits
from .trees import grow_levels

MODES = ("ucb", "thompson")
#: what a round is worth: tokens per measured second (the default), or tokens alone
#: (reproducible: the same inputs choose the same arms, whatever the machine's load)
REWARDS = ("time", "tokens")
WIDTHS = (1, 2, 4)  # level widths the arms try (each filling the budget and half of it)


@dataclass(frozen=True)
class Search:
    """The spec of a searched tree: at most `budget` draft nodes per round, at most
    `max_width` nodes per level and `max_depth` levels, arms chosen by `mode`."""

    budget: int
    mode: str = "ucb"
    max_width: int = 4
    max_depth: int = 16

    def __post_init__(self):
        if not isinstance(self.budget, int) or self.budget < 1:
            raise MambaflowError(f"tree search:{self.budget}: the node budget (draft nodes per round) must be "
                                 "an integer >= 1; use e.g. search:16")
        if self.mode not in MODES:
            raise MambaflowError(f"tree search:{self.budget}:{self.mode}: unknown search mode '{self.mode}'; "
                                 "use " + " or ".join(f"search:{self.budget}:{m}" for m in MODES))
        if self.max_width < 1 or self.max_depth < 1:
            raise MambaflowError(f"a search tree needs max_width, max_depth >= 1, got {self}")

    def arms(self, multiple: int = 1) -> list["Arm"]:
        """The tree configurations searched: every width of WIDTHS up to max_width, each
        filling a verify pass of the whole budget and of half of it (root included),
        sizes rounded down to `multiple` (the llvm verify pads to a multiple of 4, so a
        chain of 7 fills 8 nodes where a chain of 8 would pay for 12)."""
        def fit(n: int) -> int:
            return n // multiple * multiple if n >= multiple else n

        sizes = sorted({fit(self.budget + 1), fit((self.budget + 1) // 2)} - {0, 1}, reverse=True)
        out = []
        for w in WIDTHS:
            if w > min(self.max_width, self.budget):
                continue
            for size in sizes:
                arm = Arm(w, min((size - 1) // w, self.max_depth))
                if arm.depth >= 1 and arm not in out:
                    out.append(arm)
        return out

    def verify_sizes(self, arms: list["Arm"], multiple: int = 1) -> list[int]:
        """The verify pass sizes searched trees are padded to: each arm's full tree
        (root included) rounded up to `multiple`. A round's tree, clipped or not, goes
        to the smallest that holds it, so the llvm backend compiles one verify design
        per arm size, all of them in the arms' first rounds."""
        full = {min(self.budget, a.width * a.depth) + 1 for a in arms}
        return sorted({-(-n // multiple) * multiple for n in full})

    @property
    def nodes(self) -> int:
        """The largest tree (root included)."""
        return self.budget + 1

    @property
    def depth(self) -> int:
        return min(self.budget, self.max_depth)

    def fifo_depth(self) -> int:
        # breadth-first with at most W nodes per level: a parent is under 2W nodes behind
        return min(self.nodes, 2 * min(self.max_width, self.budget, WIDTHS[-1]))

    def __str__(self) -> str:
        return f"search{self.budget}" + ("" if self.mode == "ucb" else f":{self.mode}")


def parse_search(spec: str) -> Search:
    """'search:N' | 'searchN' | 'search:N:MODE' -> Search."""
    m = re.fullmatch(r"search:?(-?\d+)(?::(\w+))?", spec.strip().lower())
    if not m:
        raise MambaflowError(f"bad search tree spec {spec!r}: use search:N (N = draft nodes per round) or "
                             f"search:N:MODE with MODE one of {', '.join(MODES)}")
    return Search(int(m.group(1)), m.group(2) or "ucb")


@dataclass(frozen=True)
class Arm:
    width: int  # nodes per level at most
    depth: int  # levels at most

    def __str__(self) -> str:
        return f"w{self.width}d{self.depth}"


# ------------------------------------------------------------------- bandit


@dataclass
class Bandit:
    """A multi-armed bandit over `n` arms maximizing value per cost (tokens per second).
    An arm's estimate is its mean value over its lower median cost: a round's time is
    nearly fixed per arm but for the machine's hiccups, and one slow round must not pin
    itself on the arm for good. Estimates are scaled by the best one (tokens/s has no
    fixed range). `ucb`: UCB1, untried arms first, then estimate + c·sqrt(2 ln t / n_i)
    (deterministic); `thompson`: a draw per arm from a normal posterior (estimate,
    spread of its rounds / sqrt(n_i)), from its own seeded generator."""

    n: int
    mode: str = "ucb"
    c: float = 0.4
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise MambaflowError(f"unknown bandit mode '{self.mode}': use one of {', '.join(MODES)}")
        self.pulls, self.values, self.sq = [0] * self.n, [0.0] * self.n, [0.0] * self.n
        self.costs: list[list[float]] = [[] for _ in range(self.n)]
        self._gen = torch.Generator().manual_seed(self.seed)

    def estimate(self, arm: int) -> float:
        """The arm's value per cost so far (0 before its first pull)."""
        if not self.pulls[arm]:
            return 0.0
        cost = statistics.median_low(self.costs[arm])
        return self.values[arm] / self.pulls[arm] / cost if cost > 0 else 0.0

    def choose(self) -> int:
        untried = [i for i in range(self.n) if not self.pulls[i]]
        if untried:
            return untried[0]
        top = max(self.estimate(i) for i in range(self.n)) or 1.0
        mean = [self.estimate(i) / top for i in range(self.n)]
        if self.mode == "ucb":
            t = sum(self.pulls)
            return max(range(self.n), key=lambda i: mean[i] + self.c * math.sqrt(2 * math.log(t) / self.pulls[i]))
        draws = []
        for i in range(self.n):
            per_round = self.sq[i] / self.pulls[i] / top**2  # E[(value/cost)^2], scaled
            spread = math.sqrt(max(per_round - mean[i] ** 2, 0.0) + 0.01)  # a floor: one lucky round does not end it
            draws.append(mean[i] + spread / math.sqrt(self.pulls[i]) * float(torch.randn((), generator=self._gen)))
        return max(range(self.n), key=draws.__getitem__)

    def update(self, arm: int, value: float, cost: float = 1.0) -> None:
        self.pulls[arm] += 1
        self.values[arm] += value
        self.costs[arm].append(cost)
        self.sq[arm] += (value / cost) ** 2 if cost > 0 else 0.0


# ------------------------------------------------------------------- policy


class TreeSearch:
    """The per-round policy of a `Search` spec: `choose()` an arm, `grow(...)` its tree,
    `update(arm, tokens, seconds)` with what the round gave (`reward`: see REWARDS)."""

    def __init__(self, spec: Search, seed: int = 0, reward: str = "time", multiple: int = 1):
        if reward not in REWARDS:
            raise MambaflowError(f"unknown tree search reward '{reward}': use one of {', '.join(REWARDS)}")
        self.spec, self.reward, self.multiple = spec, reward, multiple
        self.arms = spec.arms(multiple)
        self.bandit = Bandit(len(self.arms), spec.mode, seed=seed)
        self._warm = [False] * len(self.arms)
        self._sizes: set = set()  # verify sizes seen

    @classmethod
    def from_spec(cls, spec, seed: int = 0, reward: str = "time", multiple: int = 1) -> "TreeSearch":
        """`multiple`: the verify padding the arms are sized for (4 on llvm)."""
        return cls(spec if isinstance(spec, Search) else parse_search(str(spec)), seed, reward, multiple)

    def verify_sizes(self, multiple: int | None = None) -> list[int]:
        return self.spec.verify_sizes(self.arms, self.multiple if multiple is None else multiple)

    def __str__(self) -> str:
        return str(self.spec)

    def choose(self) -> Arm:
        # arms not yet warmed up go first, in order (their reward is not counted)
        cold = next((i for i, w in enumerate(self._warm) if not w), None)
        return self.arms[cold if cold is not None else self.bandit.choose()]

    def update(self, arm: Arm, tokens: int, seconds: float, verify_size: int | None = None) -> None:
        """Count a round: `tokens` emitted in `seconds`. A round that first uses an arm or
        a verify size is a warm-up and not counted (it paid for compiling them)."""
        i = self.arms.index(arm)
        if not self._warm[i] or verify_size not in self._sizes:
            self._warm[i] = True
            self._sizes.add(verify_size)
            return
        self.bandit.update(i, float(tokens), max(seconds, 1e-9) if self.reward == "time" else 1.0)

    def report(self) -> dict[str, dict]:
        b = self.bandit
        return {str(a): dict(pulls=b.pulls[i], reward=b.estimate(i) if b.pulls[i] else None)
                for i, a in enumerate(self.arms)}

    def grow(self, draft, arm: Arm, root: int, root_logits: Tensor, root_state, sampling: Sampling,
             keep_states: bool, max_depth: int | None = None):
        """The arm's tree under `root` (draft logits and state after it given), level by
        level within the budget; returns the tree and {node: draft state}, as
        `trees.draft_tree`."""
        return grow_best_levels(draft, arm.width, arm.depth if max_depth is None else min(arm.depth, max_depth),
                                self.spec.budget, root, root_logits, root_state, sampling, keep_states)


def grow_best_levels(draft, width: int, depth: int, budget: int, root: int, root_logits: Tensor, root_state,
                     sampling: Sampling, keep_states: bool):
    """A tree grown level by level: each level keeps the `width` most probable children
    of the previous level's nodes (path probability under the draft, vocab limit
    applied), at most `depth` levels and `budget` draft nodes."""
    if depth < 1:
        from .trees import DraftTree

        return DraftTree([root], [-1], [0], [None], 0, 1), {0: root_state}
    score = {0: 1.0}
    only_vocab = Sampling(vocab_limit=sampling.vocab_limit)

    def expand(d: int, level: list[int], logits: Tensor, tree):
        probs = torch.softmax(filter_logits(logits, only_vocab), dim=-1)
        top = torch.topk(probs, min(width, probs.shape[-1]), dim=-1)
        path = torch.tensor([score[n] for n in level], dtype=probs.dtype)[:, None] * top.values
        k = min(width, path.numel(), budget - (len(tree) - 1))
        best = torch.topk(path.flatten(), k)  # the level's most probable children
        picked = []
        for s, flat in zip(best.values.tolist(), best.indices.tolist()):
            if s <= 0:
                break
            row, rank = divmod(flat, top.values.shape[1])
            picked.append((row, rank, s, int(top.indices[row, rank])))
        picked.sort()  # grouped under their parents, parents in level order (breadth-first)
        kids = []
        for row, _rank, s, tok in picked:
            score[len(tree) + len(kids)] = s
            kids.append((level[row], tok))
        return kids

    return grow_levels(draft, root, root_logits, root_state, expand, depth, keep_states, budget=budget)
