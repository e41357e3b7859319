"""Level-by-level drafting, test-time tree search and the n-gram drafter.

- the batched level step (`Backend.decode_batch`) equals decoding node by node, on torch
  (the model's batched decode) and on llvm (one compiled call of `flow.batch`, padded
  to a compiled width: bit for bit), and trees drafted level by level equal trees
  drafted node by node;
- searched trees keep their budget, width and depth, are breadth-first, fit their FIFO
  bound and take the most probable children;
- the bandit settles on the best arm of a synthetic reward (deterministic);
- greedy speculative decoding with a searched tree or the n-gram drafter gives the
  target's own tokens, on torch and llvm (the sampling distribution test is in
  tests/test_speculative.py);
- bad search specs and drafter settings raise one clear MambaflowError, and the CLI
  prints it as one line with exit code 2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mambaflow.errors import MambaflowError
from mambaflow.runtime.backends import Backend, LLVMBackend, TorchBackend
from mambaflow.runtime.backtrack import fifo_need
from mambaflow.runtime.generate import Sampling, generate
from mambaflow.runtime.ngram import NgramDraft
from mambaflow.runtime.search import Arm, Bandit, Search, TreeSearch, grow_best_levels, parse_search
from mambaflow.runtime.speculative import speculative_generate
from mambaflow.runtime.trees import Static, draft_tree, parse_shape

from test_speculative import ARCHS, PROMPT, pair_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class NodeByNode(Backend):
    """A backend's own decode, one node at a time (Backend's default decode_batch): the
    reference the batched level step must equal."""

    def __init__(self, inner: Backend):
        self.inner, self.cfg, self.name = inner, inner.cfg, inner.name + "-per-node"

    def decode(self, token, state):
        return self.inner.decode(token, state)


@pytest.fixture(scope="module", params=ARCHS)
def backends(request):
    target, draft = pair_for(request.param)
    return dict(torch=(TorchBackend(target), TorchBackend(draft)),
                llvm=(LLVMBackend(target, prefill_chunk=1, progress=False),
                      LLVMBackend(draft, prefill_chunk=1, progress=False)))


def _frontier(backend, n: int):
    """n different states (a chain decoded from the prompt) and n tokens to advance them."""
    _, st = backend.prefill(torch.tensor(PROMPT))
    states = []
    for t in range(n):
        _, st = backend.decode(7 + t, st)
        states.append(st)
    return [11 + 3 * t for t in range(n)], states


@pytest.mark.parametrize("engine", ["torch", "llvm"])
def test_batched_level_step_equals_per_node_decode(backends, engine):
    _, draft = backends[engine]
    for n in (3, 5):  # llvm: padded to the compiled widths 4 and 8
        tokens, states = _frontier(draft, n)
        logits, nxt = draft.decode_batch(tokens, states)
        assert logits.shape == (n, draft.cfg.vocab_size) and len(nxt) == n
        for b in range(n):
            ref_logits, ref = draft.decode(tokens[b], states[b])
            if engine == "llvm":  # the same compiled decode, called B times in one function
                assert torch.equal(logits[b], ref_logits)
                assert torch.equal(nxt[b].conv, ref.conv) and torch.equal(nxt[b].ssm, ref.ssm)
            else:  # a batched matmul may round differently from a batch of one
                torch.testing.assert_close(logits[b], ref_logits, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(nxt[b].ssm, ref.ssm, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(nxt[b].conv, ref.conv, rtol=1e-5, atol=1e-5)


def _root(draft):
    _, st = draft.prefill(torch.tensor(PROMPT[:-1]))
    logits, st = draft.decode(PROMPT[-1], st)
    return PROMPT[-1], logits, st


@pytest.mark.parametrize("engine", ["torch", "llvm"])
def test_trees_drafted_by_level_equal_trees_drafted_by_node(backends, engine):
    _, draft = backends[engine]
    root, logits, st = _root(draft)
    ref_draft = NodeByNode(draft)
    for sampling in (Sampling(), Sampling(temperature=1.0, seed=5)):
        got, got_states = draft_tree(draft, Static((3, 2, 1)), root, logits, st, sampling,
                                     torch.Generator().manual_seed(1), keep_states=True)
        ref, ref_states = draft_tree(ref_draft, Static((3, 2, 1)), root, logits, st, sampling,
                                     torch.Generator().manual_seed(1), keep_states=True)
        assert (got.tokens, got.parents, got.depth) == (ref.tokens, ref.parents, ref.depth)
        assert len(got) == 1 + 3 + 6 + 6 and got.draft_calls == 2  # one batched call per inner level
        assert sorted(got_states) == sorted(ref_states) == list(range(10))
        for n in got_states:
            torch.testing.assert_close(got_states[n].ssm, ref_states[n].ssm, rtol=1e-5, atol=1e-5)
    for arm in (Arm(2, 4), Arm(4, 3)):
        got, _ = grow_best_levels(draft, arm.width, arm.depth, 9, root, logits, st, Sampling(), True)
        ref, _ = grow_best_levels(ref_draft, arm.width, arm.depth, 9, root, logits, st, Sampling(), True)
        assert (got.tokens, got.parents) == (ref.tokens, ref.parents)


def test_search_trees_keep_budget_width_depth_and_take_the_most_probable(backends):
    _, draft = backends["torch"]
    root, logits, st = _root(draft)
    for budget in (1, 2, 5, 9):
        spec = Search(budget)
        for arm in spec.arms():
            tree, states = grow_best_levels(draft, arm.width, arm.depth, budget, root, logits, st, Sampling(), True)
            n = len(tree) - 1
            assert 1 <= n <= budget and max(tree.depth) <= arm.depth
            widths = [tree.depth.count(d) for d in range(1, max(tree.depth) + 1)]
            assert max(widths) <= arm.width
            assert n == min(budget, arm.width * arm.depth)  # every level full until the budget
            assert all(tree.parents[i] < i for i in range(1, len(tree)))  # breadth-first
            assert tree.depth == sorted(tree.depth) and tree.parents[1:] == sorted(tree.parents[1:])
            assert fifo_need(tree.parents) <= spec.fifo_depth()
            inner = {p for p in tree.parents if p >= 0}
            assert inner <= set(states) and max(tree.depth[i] for i in states) < max(tree.depth)  # leaves never decoded
    # level 2 of a width-3 tree: its nodes are the 3 most probable of all the
    # grandchildren of the root through level 1 (checked by decoding every path)
    tree, _ = grow_best_levels(draft, 3, 2, 6, root, logits, st, Sampling(), True)
    level1 = [i for i in range(len(tree)) if tree.depth[i] == 1]
    probs1 = torch.softmax(logits, -1)
    assert [tree.tokens[i] for i in level1] == torch.topk(probs1, 3).indices.tolist()
    cands = []
    for i in level1:
        lg, _ = draft.decode(tree.tokens[i], st)
        p = torch.softmax(lg, -1)
        cands += [(float(probs1[tree.tokens[i]] * p[t]), i, t) for t in range(len(p))]
    best = sorted(cands, reverse=True)[:3]
    level2 = {(tree.parents[i], tree.tokens[i]) for i in range(len(tree)) if tree.depth[i] == 2}
    assert level2 == {(i, t) for _, i, t in best}


def _synthetic(arm: int, means, k: int) -> float:
    """A deterministic noisy reward: the arm's mean times a fixed wobble of +-20%."""
    return means[arm] * (1.0 + 0.2 * ((k * 7919 + arm * 104729) % 11 - 5) / 5)


@pytest.mark.parametrize("mode", ["ucb", "thompson"])
def test_bandit_settles_on_the_best_arm_of_a_synthetic_reward(mode):
    for means in ([1.0, 3.0, 2.0, 0.5], [2.5, 1.0, 1.0, 3.0]):
        b = Bandit(len(means), mode, seed=0)
        picks = []
        for k in range(400):
            arm = b.choose()
            picks.append(arm)
            b.update(arm, _synthetic(arm, means, k))
        best = max(range(len(means)), key=means.__getitem__)
        assert sorted(picks[: len(means)]) == list(range(len(means)))  # every arm tried
        assert picks[-100:].count(best) >= 80, (mode, means, picks[-100:])
        assert b.pulls[best] == max(b.pulls)


def test_tree_search_warms_each_arm_up_before_counting():
    policy = TreeSearch(Search(8), reward="tokens")
    arms = policy.arms
    assert [str(a) for a in arms] == ["w1d8", "w1d3", "w2d4", "w2d1", "w4d2"]  # the budget and half of it
    assert [str(a) for a in TreeSearch(Search(16), multiple=4).arms] == ["w1d15", "w1d7", "w2d7", "w2d3", "w4d3",
                                                                         "w4d1"]  # filling 16 and 8 nodes
    seen = []
    for _ in range(len(arms)):  # the warm-up rounds: every arm once, rewards not counted
        arm = policy.choose()
        seen.append(arm)
        policy.update(arm, 100, 1.0)
    assert seen == arms and sum(policy.bandit.pulls) == 0
    policy.update(arms[0], 100, 1.0, verify_size=12)  # the first round of a verify size: not counted either
    assert sum(policy.bandit.pulls) == 0
    for k in range(60):  # then the arm with the most tokens per round wins (w2d4 here)
        arm = policy.choose()
        policy.update(arm, 6 if arm == Arm(2, 4) else 2, 1.0, verify_size=12)
    assert max(policy.report().items(), key=lambda kv: kv[1]["pulls"])[0] == "w2d4"


@pytest.mark.parametrize("engine", ["torch", "llvm"])
def test_search_and_ngram_are_lossless_greedy(backends, engine):
    target, draft = backends[engine]
    ref = generate(target, PROMPT, 20).tokens
    if engine == "llvm":  # the verify designs of tests/test_speculative_llvm.py (T 7, FIFO 5): one compile each
        kw, strategies = dict(verify_size=7, fifo_depth=5), ("checkpoint",)
        # trees <= 7 nodes, FIFO <= 4; both modes search the same arms (the same draft chain designs)
        spec, other = Search(4, max_width=2), Search(4, "thompson", max_width=2)
    else:
        kw, strategies = {}, ("checkpoint", "replay")
        spec, other = Search(6), Search(5, "thompson")
    policy = TreeSearch(spec, reward="tokens")
    for backtrack in strategies:
        for run in range(2):  # the second run starts from what the policy learned
            g = speculative_generate(target, draft, PROMPT, 20, tree=policy, backtrack=backtrack, **kw)
            assert g.tokens == ref, (engine, backtrack, g.configs)
            assert len(g.configs) == g.target_passes and g.tree == str(spec)
    assert any(a.width > 1 and a.depth > 1 for a in policy.arms)  # a bushy arm drafts level by level
    g = speculative_generate(target, draft, PROMPT, 20, tree=TreeSearch(other), **kw)
    assert g.tokens == ref
    repeat = PROMPT * 3  # the prompt repeats itself: the lookup has something to copy
    ref = generate(target, repeat, 20).tokens
    for drafter, tree in ((NgramDraft(3), "chain:5"), (NgramDraft(3, branches=2), "2,1,1")):
        g = speculative_generate(target, drafter, repeat, 20, tree=tree, **kw)
        assert g.tokens == ref and g.draft_calls == 0 and g.peak_state_bytes["draft"] == 0


def test_ngram_drafter_copies_the_most_recent_longest_match():
    ctx = [1, 2, 3, 9, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3]
    chain = NgramDraft(3).draft_tree(ctx, parse_shape("chain:4"))
    assert chain.tokens == [3, 4, 5, 6, 7] and chain.parents == [-1, 0, 1, 2, 3]  # after the later 1 2 3
    tree = NgramDraft(3, branches=2).draft_tree(ctx, parse_shape("2,1,1"))
    # two continuations of "1 2 3": "4 5 6" (most recent) and "9 1 2", merged breadth-first
    assert tree.tokens == [3, 4, 9, 5, 1, 6, 2] and tree.parents == [-1, 0, 0, 1, 2, 3, 4]
    assert NgramDraft(2).draft_tree([5, 6, 7], parse_shape("chain:3")).tokens == [7]  # no match: the root alone
    clipped = NgramDraft(3).draft_tree(ctx, parse_shape("chain:4"), max_depth=2)
    assert clipped.tokens == [3, 4, 5]


def test_bad_search_and_drafter_input_raise_clear_errors(backends):
    target, draft = backends["torch"]
    for spec, words in (("search:0", "node budget"), ("search:-2", "node budget"),
                        ("search:8:greedy", "unknown search mode 'greedy'"), ("search:x", "bad search tree spec")):
        with pytest.raises(MambaflowError, match=words):
            parse_shape(spec)
    with pytest.raises(MambaflowError, match="search:8:ucb or search:8:thompson"):
        parse_search("search:8:foo")
    with pytest.raises(MambaflowError, match="n-gram drafter has no probabilities"):
        speculative_generate(target, NgramDraft(), PROMPT, 4, tree="search:4")
    with pytest.raises(MambaflowError, match="chains and static trees"):
        speculative_generate(target, NgramDraft(), PROMPT, 4, tree="dyn:4")
    with pytest.raises(MambaflowError, match="min_n"):
        NgramDraft(min_n=0)
    with pytest.raises(MambaflowError, match="verify_multiple"):
        speculative_generate(target, draft, PROMPT, 4, tree="search:4", verify_multiple=0)
    with pytest.raises(MambaflowError, match="reward"):
        TreeSearch(Search(4), reward="speed")


def test_cli_bad_search_tree_is_one_line_exit_2(tmp_path):
    import os

    env = dict(os.environ, MAMBAFLOW_CACHE=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "mambaflow.cli", "run", "--speculative", "--tree", "search:0"],
                       env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "node budget" in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_bandit_recovers_from_one_slow_round():
    """A machine hiccup in an arm's first round (100x its time) must not bar it for good:
    its cost is the median of its rounds."""
    b = Bandit(3, "ucb")
    means = [1.0, 3.0, 2.0]
    picks = []
    for k in range(300):
        arm = b.choose()
        picks.append(arm)
        slow = arm == 1 and b.pulls[1] == 0
        b.update(arm, _synthetic(arm, means, k), 100.0 if slow else 1.0)
    assert picks[-100:].count(1) >= 80, picks[-100:]
