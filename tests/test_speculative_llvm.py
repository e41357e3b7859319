"""Speculative decoding on the llvm backend: the verify phase captured with the FIFO
tree buffer and replay outputs, lowered and JIT-compiled, gives the target's own greedy
tokens for chain and tree drafts under every backtracking strategy, Mamba1 and Mamba2.

Kept small: tiny configs, one verify size (trees are padded to T = 7 nodes) and one
FIFO depth (5) per arch, so each arch compiles three designs: decode (shared by target
and draft, which have the same config and different weights) and verify with every
layer checkpointing or every layer replaying (the default hybrid plan is the latter).
"""

from __future__ import annotations

import pytest
import torch

from mambaflow.flow.identity import kernel_kind
from mambaflow.flow.mlir import funcs, walk
from mambaflow.runtime.backends import LLVMBackend, TorchBackend
from mambaflow.runtime.backtrack import fifo_need
from mambaflow.runtime.generate import generate
from mambaflow.runtime.speculative import speculative_generate
from mambaflow.runtime.trees import parse_shape

from test_speculative import ARCHS, PROMPT, pair_for

T, FIFO = 7, 5
TREES = ["chain:3", "2,2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module", params=ARCHS)
def llvm_pair(request):
    target, draft = pair_for(request.param)
    t = LLVMBackend(target, prefill_chunk=1, progress=False)
    d = LLVMBackend(draft, prefill_chunk=1, progress=False)
    return t, d, TorchBackend(target)


def test_tree_sizes_fit_one_design():
    for tree in TREES:
        shape = parse_shape(tree)
        assert shape.nodes <= T and shape.fifo_depth() <= FIFO


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("backtrack", ["checkpoint", "replay", "hybrid"])
def test_greedy_speculative_on_llvm_equals_target_greedy(llvm_pair, tree, backtrack):
    target, draft, ref_backend = llvm_pair
    ref = generate(target, PROMPT, 16)
    assert ref.tokens == generate(ref_backend, PROMPT, 16).tokens  # llvm agrees with torch
    got = speculative_generate(target, draft, PROMPT, 16, tree=tree, backtrack=backtrack,
                               verify_size=T, fifo_depth=FIFO)
    assert got.tokens == ref.tokens
    assert 0 < got.mean_accepted and got.target_passes < 15
    assert got.tree_nodes == T and got.fifo_depth == FIFO


def _verify_design(backend, replay):
    return backend.design("verify", T, replay_layers=replay, fifo_depth=FIFO)


def test_verify_chain_on_llvm_equals_sequential_decode(llvm_pair):
    target, _, _ = llvm_pair
    _, state = target.prefill(torch.tensor(PROMPT))
    toks = torch.tensor([7, 1, 30, 30, 2, 9, 11])
    chain = list(range(-1, T - 1))
    assert fifo_need(chain) == 2 <= FIFO
    logits, cache = target.verify_tree(toks, chain, state, (), FIFO)
    st = state
    for node, tok in enumerate(toks):
        ref, st = target.decode(int(tok), st)
        torch.testing.assert_close(logits[node], ref, atol=2e-5, rtol=1e-5)
        got = target.state_at(cache, node)
        torch.testing.assert_close(got.ssm, st.ssm, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(got.conv, st.conv, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("replay", [(), (1,), (0, 1)])
def test_fifo_tree_buffer_design_matches_torch_at_every_node(llvm_pair, replay):
    target, _, ref_backend = llvm_pair
    _, state = ref_backend.prefill(torch.tensor(PROMPT))
    toks = torch.tensor([4, 8, 15, 16, 23, 42, 5])
    parents = [-1, 0, 0, 1, 1, 2, 2]  # the full 2x2 tree: node 6 reads node 2, 4 slots back
    logits, cache = target.verify_tree(toks, parents, state, replay, FIFO)
    ref_logits, ref_cache = ref_backend.verify_tree(toks, parents, state)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-5)
    for node in range(T):
        a, b = target.state_at(cache, node), ref_backend.state_at(ref_cache, node)
        torch.testing.assert_close(a.ssm, b.ssm, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(a.conv, b.conv, atol=2e-5, rtol=1e-5)
    # the design: each layer's tree scan holds FIFO slots of state, not T; replaying
    # layers write no per-node state at all
    design = _verify_design(target, replay)
    ports = {p.name for p in design.ports}
    L = target.cfg.n_layer
    assert ("ssm_states" in ports) == (len(replay) < L)
    # one SSM engine per mode: checkpointing layers run `ssm`, replaying ones `ssm_replay`
    ssm_fns = [k for k in design.kernels if kernel_kind(funcs(design.module)[k]) == "ssm"]
    assert ssm_fns == (["ssm"] if len(replay) < L else []) + (["ssm_replay"] if replay else [])
    for k in ssm_fns:
        fifo = [o for o in walk(funcs(design.module)[k])
                if o.name == "memref.alloc" and "buffer_name" in o.attributes]
        assert len(fifo) == 1
        shape = fifo[0].results[0].type.shape
        assert shape[0] == FIFO and list(shape[1:]) == list(target.cfg.ssm_state_shape(1)[1:])


def test_sampled_speculative_runs_on_llvm(llvm_pair):
    from mambaflow.runtime.generate import Sampling

    target, draft, _ = llvm_pair
    s = Sampling(temperature=1.0, seed=3)
    a = speculative_generate(target, draft, PROMPT, 12, s, tree="2,2", verify_size=T, fifo_depth=FIFO)
    b = speculative_generate(target, draft, PROMPT, 12, s, tree="2,2", verify_size=T, fifo_depth=FIFO)
    assert a.tokens == b.tokens and len(a.tokens) == 12  # seeded: reproducible


def test_tree_buffer_schedule_keeps_the_numbers_and_emits_fifo_pragmas(llvm_pair):
    """schedules/tree_buffer.py: the FIFO rings bound to on-chip RAM, partitioned and
    their state loops pipelined; on llvm the scheduled design equals PyTorch, and the
    HLS C++ carries the ring as a partitioned ram_2p array indexed modulo its depth."""
    from types import SimpleNamespace

    from mambaflow.errors import ScheduleError
    from mambaflow.schedules.tree_buffer import tree_buffer, tree_buffer_schedule
    from mambaflow.targets.hls import emit_design

    target, _, ref_backend = llvm_pair
    scheduled = LLVMBackend(target.model, prefill_chunk=1, progress=False, schedule=tree_buffer)
    _, state = ref_backend.prefill(torch.tensor(PROMPT))
    toks = torch.tensor([4, 8, 15, 16, 23, 42, 5])
    parents = [-1, 0, 0, 1, 1, 2, 2]
    replay = tuple(range(target.cfg.n_layer))
    logits, cache = scheduled.verify_tree(toks, parents, state, replay, FIFO)
    ref_logits, ref_cache = ref_backend.verify_tree(toks, parents, state)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-5)
    last = scheduled.state_at(cache, T - 1)
    torch.testing.assert_close(last.ssm, ref_backend.state_at(ref_cache, T - 1).ssm, atol=2e-5, rtol=1e-5)
    design = scheduled.design("verify", T, replay_layers=replay, fifo_depth=FIFO)
    code = emit_design(design)
    pragmas = code.pragmas["ssm_replay"]  # every layer replays: one SSM engine, in replay mode
    assert any(p.startswith("bind_storage") and "ram_2p" in p for p in pragmas)
    assert any(p.startswith("array_partition") and "cyclic" in p for p in pragmas)
    assert any(p.startswith("pipeline") for p in pragmas)
    assert f"% {FIFO}" in code.source  # the ring is indexed modulo its depth
    with pytest.raises(ScheduleError, match="fifo_depth"):
        tree_buffer_schedule(SimpleNamespace(phase="decode"))


def test_verify_cpu_schedule_keeps_the_numbers(llvm_pair):
    """schedules/verify_cpu.py (node unroll-and-jam of the verify linear layers + the CPU
    recipe): greedy speculative decoding through the scheduled designs still gives the
    target's own tokens, and the scheduled verify equals PyTorch."""
    from mambaflow.schedules.verify_cpu import jam_factor, verify_cpu

    target, draft, ref_backend = llvm_pair
    assert jam_factor(T) == 7 and jam_factor(8) == 8 and jam_factor(29) == 1
    st = LLVMBackend(target.model, prefill_chunk=1, progress=False, schedule=verify_cpu)
    _, state = ref_backend.prefill(torch.tensor(PROMPT))
    toks = torch.tensor([4, 8, 15, 16, 23, 42, 5])
    parents = [-1, 0, 0, 1, 1, 2, 2]
    logits, cache = st.verify_tree(toks, parents, state, (), FIFO)
    ref_logits, ref_cache = ref_backend.verify_tree(toks, parents, state)
    torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(st.state_at(cache, 6).ssm, ref_backend.state_at(ref_cache, 6).ssm,
                               atol=2e-5, rtol=1e-5)
    design = st.design("verify", T, fifo_depth=FIFO)
    assert "alloc0.buf" in str(funcs(design.module)["in_proj"])  # jammed accumulators
    got = speculative_generate(st, draft, PROMPT, 16, tree="2,2", backtrack="checkpoint", verify_size=T,
                               fifo_depth=FIFO)
    assert got.tokens == generate(ref_backend, PROMPT, 16).tokens


def test_draft_chain_on_llvm_equals_decode_loop(llvm_pair):
    """flow/chain.py: k greedy decode steps in one compiled call give the tokens, logits
    and per-step states of k decode calls, with and without a vocabulary limit."""
    from mambaflow.errors import MambaflowError
    from mambaflow.flow.chain import build_draft_chain

    target, draft, ref_backend = llvm_pair
    _, state = ref_backend.prefill(torch.tensor(PROMPT))
    for limit in (None, 40):
        toks, logits, states = target.draft_chain(9, state, 4, limit)
        ref_toks, ref_logits, ref_states = ref_backend.draft_chain(9, state, 4, limit)
        assert toks == ref_toks and len(states) == 4
        if limit:
            assert max(toks) < limit
        torch.testing.assert_close(logits, ref_logits, atol=2e-5, rtol=1e-5)
        for a, b in zip(states, ref_states):
            torch.testing.assert_close(a.ssm, b.ssm, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(a.conv, b.conv, atol=2e-5, rtol=1e-5)
    design = target.design("draft", 4, vocab_limit=40)
    assert [p.name for p in design.outputs][:3] == ["tokens_out", "step0.logits", "step0.conv_state_out"]
    with pytest.raises(MambaflowError, match="decode design"):
        build_draft_chain(target.design("verify", T, fifo_depth=FIFO), 4)
    with pytest.raises(MambaflowError, match="vocab_limit"):
        build_draft_chain(target.design("decode", 1), 4, vocab_limit=10**6)


def test_verify_reuses_a_spent_cache(llvm_pair):
    """verify_tree(out=cache) writes the node states and conv inputs into a spent cache's
    buffers (what the speculative loop does every round) and backtracks to the same
    states as a fresh pass; the state picked before reuse is a copy, left untouched."""
    target, _draft, ref_backend = llvm_pair
    _, state = ref_backend.prefill(torch.tensor(PROMPT))
    toks, parents = torch.tensor([4, 8, 15, 16, 23, 42, 5]), [-1, 0, 0, 1, 1, 2, 2]
    _, first = target.verify_tree(toks, parents, state, (), FIFO)
    kept = target.state_at(first, 5)
    snapshot = (kept.conv.clone(), kept.ssm.clone())
    toks2 = torch.tensor([9, 1, 2, 3, 4, 5, 6])
    logits, again = target.verify_tree(toks2, parents, state, (), FIFO, out=first)
    assert again.states.data_ptr() == first.states.data_ptr() and again.conv_in.data_ptr() == first.conv_in.data_ptr()
    ref_logits, ref_cache = ref_backend.verify_tree(toks2, parents, state)
    # float32 sums in another order than torch's (vectorized reductions): a few ulp of |logit| ~ 1
    torch.testing.assert_close(logits, ref_logits, atol=5e-5, rtol=1e-5)
    for node in (0, 3, 6):
        got, ref = target.state_at(again, node), ref_backend.state_at(ref_cache, node)
        torch.testing.assert_close(got.conv, ref.conv, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(got.ssm, ref.ssm, atol=2e-5, rtol=1e-5)
    assert torch.equal(kept.conv, snapshot[0]) and torch.equal(kept.ssm, snapshot[1])
