"""Draft token trees for speculative decoding: shapes, drafting, breadth-first order.

A tree's node 0 is the root: the last emitted token, which neither model has processed
yet. Its descendants are draft tokens. Nodes are numbered breadth-first with each
node's children together and in their draft order, which is what the target's verify
pass needs (a parent before its children) and what keeps the FIFO tree buffer shallow
(a parent is never more than about two tree widths behind its children).

Shapes:
- `Chain(k)`: k draft tokens in a row (classic speculative decoding);
- `Static(widths)`: every node at depth d gets widths[d] children, e.g. (4, 2, 1, 1);
- `Dynamic(budget, max_depth, max_width)`: grown best-first by the draft's confidence
  (the product of its probabilities along the path) until `budget` draft nodes;
- `runtime.search.Search(budget)` ('search:16'): built per round under a node budget,
  level by level, its width and depth picked by a bandit from the acceptance so far.

Children are the draft's top-k (greedy decoding, and the dynamic tree always). When
sampling, chain and static trees draw each node's children without replacement from the
draft's distribution q (Gumbel top-k), which the acceptance test needs to know (`q`).
Chain and static trees are drafted one level at a time (`grow_levels`): the draft
advances every node of a level whose children are wanted in ONE batched step
(`Backend.decode_batch`: B tokens, B states -> B logits, B states; one compiled call on
llvm), keeping each node's state. A greedy chain is drafted in one `Backend.draft_chain`
call instead (`draft_chain_tree`). The dynamic tree is grown best-first, one decode
per expanded node (each pick depends on the last); `runtime.search` builds its trees
level by level under a node budget instead.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import MambaflowError
from .generate import Sampling, filter_logits


# ---------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Chain:
    k: int

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise MambaflowError(f"a chain tree needs k >= 1 draft tokens, got {self.k!r}")

    @property
    def widths(self) -> tuple[int, ...]:
        return (1,) * self.k

    @property
    def nodes(self) -> int:
        """Tree size T for the verify pass (root included)."""
        return self.k + 1

    @property
    def depth(self) -> int:
        return self.k

    def fifo_depth(self) -> int:
        return fifo_bound(self.widths)

    def __str__(self) -> str:
        return f"chain{self.k}"


@dataclass(frozen=True)
class Static:
    widths: tuple[int, ...]

    def __post_init__(self):
        w = tuple(int(x) for x in self.widths)
        if not w or any(x < 1 for x in w):
            raise MambaflowError(f"a static tree needs widths >= 1 per depth, e.g. (4, 2, 1, 1); got {self.widths!r}")
        object.__setattr__(self, "widths", w)

    @property
    def nodes(self) -> int:
        n, level = 1, 1
        for w in self.widths:
            level *= w
            n += level
        return n

    @property
    def depth(self) -> int:
        return len(self.widths)

    def fifo_depth(self) -> int:
        return fifo_bound(self.widths)

    def __str__(self) -> str:
        return "tree" + "x".join(map(str, self.widths))


@dataclass(frozen=True)
class Dynamic:
    budget: int  # draft nodes (the root is extra)
    max_depth: int = 8
    max_width: int = 4  # children considered per node
    level_width: int | None = None  # nodes per depth at most (bounds the FIFO tree buffer)

    def __post_init__(self):
        if self.budget < 1 or self.max_depth < 1 or self.max_width < 1 or (
                self.level_width is not None and self.level_width < 1):
            raise MambaflowError(f"a dynamic tree needs budget, max_depth, max_width, level_width >= 1, got {self}")

    @property
    def nodes(self) -> int:
        return self.budget + 1

    @property
    def depth(self) -> int:
        return self.max_depth

    def fifo_depth(self) -> int:
        # a parent is at most the rest of its own level plus the start of the next one
        # behind its child: two levels of at most level_width nodes (or the whole tree)
        return self.nodes if self.level_width is None else min(self.nodes, 2 * self.level_width)

    def __str__(self) -> str:
        return f"dyn{self.budget}" + (f"w{self.level_width}" if self.level_width else "")


Shape = Chain | Static | Dynamic  # or runtime.search.Search (parse_shape knows all four)


def parse_shape(spec) -> Shape:
    """'chain:4' | 'chain4' | '4,2,1,1' | 'tree4x2x1x1' | 'static:4,2,1,1' | 'dyn:16' |
    'dyn16w4' (at most 4 nodes per depth) | 'dynamic:16:6:4' (budget, max depth, children
    per node) | 'search:16' (test-time tree search under a budget of 16 draft nodes,
    runtime.search; 'search:16:thompson'), or a shape object."""
    from .search import Search, TreeSearch, parse_search

    if isinstance(spec, (Chain, Static, Dynamic, Search)):
        return spec
    if isinstance(spec, TreeSearch):
        return spec.spec
    s = str(spec).strip().lower()
    if s.startswith("search"):
        return parse_search(s)
    m = re.fullmatch(r"chain:?(\d+)", s)
    if m:
        return Chain(int(m.group(1)))
    m = re.fullmatch(r"(?:dyn|dynamic):?(\d+)(?:w(\d+))?(?::(\d+))?(?::(\d+))?", s)
    if m:
        b, lw, d, w = m.groups()
        return Dynamic(int(b), int(d) if d else 8, int(w) if w else 4, int(lw) if lw else None)
    m = re.fullmatch(r"(?:static:|tree)?(\d+(?:[x,]\d+)*)", s)
    if m:
        return Static(tuple(int(x) for x in re.split(r"[x,]", m.group(1))))
    raise MambaflowError(f"unknown tree shape {spec!r}: use e.g. chain:4, 4,2,1,1 (static widths), dyn:16 or search:16")


def path_to(parents, node: int) -> list[int]:
    """The nodes from the root of a tree (parents[root] < 0) down to `node`, in order."""
    path = []
    while node >= 0:
        path.append(node)
        node = parents[node]
    return path[::-1]


def static_parents(widths) -> list[int]:
    """Parents of the full breadth-first tree with `widths` children per node per depth."""
    parents, level = [-1], [0]
    for w in widths:
        nxt = []
        for n in level:
            for _ in range(w):
                nxt.append(len(parents))
                parents.append(n)
        level = nxt
    return parents


def fifo_bound(widths) -> int:
    """FIFO tree buffer depth enough for every breadth-first tree with at most these
    widths: a node is computed (rest of its parent's level) + (start of its own level)
    nodes after its parent, which only shrinks when nodes are missing, so the full tree
    needs the most."""
    from .backtrack import fifo_need

    return fifo_need(static_parents(widths))


# ----------------------------------------------------------------- trees


@dataclass
class DraftTree:
    """tokens[0] is the root (the pending token); parents[0] = -1; BFS order.

    q[i]: the distribution node i's children were drawn from without replacement (when
    sampling chain/static trees), or None: children chosen deterministically.
    """

    tokens: list[int]
    parents: list[int]
    depth: list[int]
    q: list[Tensor | None] = field(default_factory=list)
    draft_calls: int = 0
    peak_live_states: int = 0  # draft states held at once while drafting

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self, node: int) -> list[int]:
        return [i for i, p in enumerate(self.parents) if p == node]

    def padded(self, T: int) -> tuple[list[int], list[int]]:
        """Tokens and parents padded to T nodes with dummy children of the committed state
        (they change nothing else and keep one compiled verify design per tree size)."""
        n = len(self.tokens)
        if n > T:
            raise MambaflowError(f"a tree of {n} nodes does not fit a verify pass of {T}")
        return self.tokens + [0] * (T - n), self.parents + [-1] * (T - n)


def _children(logits: Tensor, width: int, sampling: Sampling, gen: torch.Generator | None,
              sample: bool) -> tuple[list[int], Tensor | None]:
    """A node's children: the top `width` tokens, or `width` draws without replacement
    from q = softmax(filtered logits) (Gumbel top-k); returns them and q (None when top-k)."""
    if not sample:  # greedy: the top tokens below the vocabulary limit (no copy needed)
        f = logits if sampling.vocab_limit is None else logits[: sampling.vocab_limit]
        return torch.topk(f, min(width, f.shape[-1])).indices.tolist(), None
    f = filter_logits(logits, sampling)
    q = torch.softmax(f, dim=-1)
    support = int((q > 0).sum())
    u = torch.rand(q.shape, generator=gen).clamp_min(1e-20)
    keys = torch.log(q) - torch.log(-torch.log(u))
    keys[q == 0] = float("-inf")
    return torch.topk(keys, min(width, support)).indices.tolist(), q


def draft_tree(draft, shape: Shape, root: int, root_logits: Tensor, root_state, sampling: Sampling,
               gen: torch.Generator | None, keep_states: bool, max_depth: int | None = None):
    """Grow a draft tree under the pending token `root`, whose draft logits and state (the
    draft's state after it) are given. Returns the tree and {node: draft state} for the
    nodes the draft decoded (all of them with `keep_states`, else only the root's).

    Chain and static trees grow level by level (`grow_levels`: one batched draft step
    per level); a dynamic tree best-first, node by node. `max_depth` clips the tree
    (near the end of generation)."""
    depth_cap = shape.depth if max_depth is None else min(shape.depth, max_depth)
    if depth_cap < 1:  # nothing to draft: the tree is the root alone
        return DraftTree([root], [-1], [0], [None], 0, 1), {0: root_state}
    if isinstance(shape, Dynamic):
        return _draft_dynamic(draft, shape, root, root_logits, root_state, sampling, depth_cap, keep_states)
    sample = sampling.temperature > 0
    widths = shape.widths[:depth_cap]

    def expand(d: int, level: list[int], logits: Tensor, tree: DraftTree):
        kids = []
        for row, n in enumerate(level):  # in level order: the Gumbel draws stay in node order
            toks, tree.q[n] = _children(logits[row], widths[d], sampling, gen, sample)
            kids += [(n, t) for t in toks]
        return kids

    return grow_levels(draft, root, root_logits, root_state, expand, len(widths), keep_states)


def grow_levels(draft, root: int, root_logits: Tensor, root_state, expand, depth_cap: int, keep_states: bool,
                budget: int | None = None):
    """Grow a tree one level at a time: `expand(d, level, logits, tree)` picks the nodes of
    depth d+1 as (parent, token) pairs, grouped by parent in `level` order (breadth-first),
    from the draft logits of the level's nodes (row i: level[i]). Every new level that
    will have children is advanced by ONE `draft.decode_batch` (each node from its
    parent's state), so drafting costs a call per level, not per node. Stops at
    `depth_cap` levels or `budget` draft nodes (the last level is never decoded).
    Returns the tree and {node: draft state after it}, as `draft_tree`."""
    tree = DraftTree([root], [-1], [0], [None])
    states = {0: root_state}
    level, logits = [0], root_logits[None]
    for d in range(depth_cap):
        room = None if budget is None else budget - (len(tree) - 1)
        kids = expand(d, level, logits, tree)[:room]
        if not kids:
            break
        nxt = []
        for parent, tok in kids:
            nxt.append(len(tree))
            tree.tokens.append(tok)
            tree.parents.append(parent)
            tree.depth.append(d + 1)
            tree.q.append(None)
        full = budget is not None and len(tree) - 1 >= budget
        if d + 1 < depth_cap and not full:  # its children are wanted: advance the level at once
            logits, new = draft.decode_batch([tree.tokens[c] for c in nxt], [states[tree.parents[c]] for c in nxt])
            tree.draft_calls += 1
            states.update(zip(nxt, new))
        tree.peak_live_states = max(tree.peak_live_states, len(states))
        if not keep_states:  # a fully expanded level's states are no longer needed
            for n in level:
                if n:
                    del states[n]
        level = nxt
        if full:
            break
    tree.peak_live_states = max(tree.peak_live_states, 1)
    return tree, states


def draft_chain_tree(draft, k: int, root: int, state, sampling: Sampling, keep_states: bool,
                     max_depth: int | None = None):
    """A greedy chain of k draft tokens in one call (`Backend.draft_chain`: on llvm a
    compiled loop of decode steps, each fed the argmax of the last) from the draft's
    state before `root`: the root is decoded first. Returns the tree, clipped to
    `max_depth`, and {node: draft state after it} as `draft_tree` does."""
    depth = k if max_depth is None else max(0, min(k, max_depth))
    tokens, _logits, states = draft.draft_chain(root, state, k, sampling.vocab_limit)
    kept = range(max(depth, 1)) if keep_states else range(1)  # decoded nodes: all but the last
    tree = DraftTree([root] + tokens[:depth], list(range(-1, depth)), list(range(depth + 1)), [None] * (depth + 1),
                     draft_calls=k - 1, peak_live_states=k)  # the call holds all k states
    return tree, _Kept(states, kept)


class _Kept(Mapping):
    """{node: draft state after it} over the chain's per-step states, without making
    every step's state up front."""

    def __init__(self, states, nodes: range):
        self.states, self.nodes = states, nodes

    def __getitem__(self, node: int):
        if node not in self.nodes:
            raise KeyError(node)
        return self.states[node]

    def __contains__(self, node) -> bool:  # without making the state (Mapping's default would)
        return node in self.nodes

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)


def _draft_dynamic(draft, shape: Dynamic, root, root_logits, root_state, sampling, depth_cap, keep_states):
    """Best-first growth: a candidate child's score is the product of the draft's
    probabilities along its path. A node is decoded (to score its children) only when its
    best child could be the next one picked (lazy expansion)."""
    tokens, parents, depth = [root], [-1], [0]
    states = {0: root_state}
    calls, live, peak = 0, 1, 1
    heap: list = []  # (-score, tiebreak, kind, payload)
    order = 0

    def push_children(node: int, logits: Tensor, score: float):
        nonlocal order
        probs = torch.softmax(filter_logits(logits, Sampling(vocab_limit=sampling.vocab_limit)), -1)
        top = torch.topk(probs, min(shape.max_width, probs.shape[-1]))
        for rank, (p, t) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            if p > 0:
                heapq.heappush(heap, (-score * p, order, "node", (node, t, score * p)))
                order += 1

    per_level: dict[int, int] = {}
    full = lambda d: shape.level_width is not None and per_level.get(d, 0) >= shape.level_width  # noqa: E731
    push_children(0, root_logits, 1.0)
    while heap and len(tokens) - 1 < shape.budget:
        neg, _, kind, payload = heapq.heappop(heap)
        if kind == "expand":  # decode the node now: its children may be picked next
            node, score = payload
            if full(depth[node] + 1):
                continue
            logits, st = draft.decode(tokens[node], states[parents[node]])
            calls += 1
            states[node] = st
            live += 1
            peak = max(peak, live)
            push_children(node, logits, score)
            continue
        parent, tok, score = payload
        if full(depth[parent] + 1):
            continue
        per_level[depth[parent] + 1] = per_level.get(depth[parent] + 1, 0) + 1
        c = len(tokens)
        tokens.append(tok)
        parents.append(parent)
        depth.append(depth[parent] + 1)
        if depth[c] < depth_cap:
            # an upper bound of its children's scores: expand it when that bound is the best
            heapq.heappush(heap, (-score, order, "expand", (c, score)))
            order += 1
    # BFS renumbering, level by level: children grouped under their parent's new index,
    # in the order they were picked (best first)
    ranked: list[int] = []
    new: dict[int, int] = {}
    for d in range(max(depth) + 1):
        level = [i for i in range(len(tokens)) if depth[i] == d]
        level.sort(key=lambda i: (new.get(parents[i], -1), i))
        for i in level:
            new[i] = len(ranked)
            ranked.append(i)
    tree = DraftTree([tokens[o] for o in ranked], [new[parents[o]] if parents[o] >= 0 else -1 for o in ranked],
                     [depth[o] for o in ranked], [None] * len(ranked), calls, peak)
    kept = {new[o]: s for o, s in states.items()}
    if not keep_states:
        kept = {0: kept[0]}
    return tree, kept
