"""Mamba recipes: the accelerator structure (linear-parallel, SSM-serial, layer
pipeline over streams) on mamba-130m-shaped decode, and the CPU recipe, all run on
llvm and equal to PyTorch; every recipe's log replays byte-identically."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mambaflow.dialects import directives as D
from mambaflow.dialects import stream as S
from mambaflow.flow.capture import capture
from mambaflow.flow.mlir import funcs, walk
from mambaflow.models import build_model, get_config
from mambaflow.runtime.backends import LLVMBackend, TorchBackend
from mambaflow.schedules import recipes, replay
from mambaflow.schedules.testing import copy_design
from mambaflow.targets.llvm.jit import JitFunction


def _decode_matches(model, design, tokens=(1, 2, 3), tol=1e-4):
    fn = JitFunction(design.module, design.top, opt_level=1)
    llvm = LLVMBackend.from_compiled(model, {("decode", 1): (design, fn)})
    ref = TorchBackend(model)
    st_l = st_t = ref.zero_state()
    for tok in tokens:
        a, st_l = llvm.decode(tok, st_l)
        b, st_t = ref.decode(tok, st_t)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(st_l.ssm.numpy(), st_t.ssm.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(st_l.conv.numpy(), st_t.conv.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["mamba-130m", "mamba2-130m"])
def test_accelerator_recipe_on_130m_shaped_decode(name):
    # every dimension of the 130m model (d_model 768, vocab 50280, ...), two layers
    cfg = dataclasses.replace(get_config(name), n_layer=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    design = capture(model, "decode", progress=False)
    s = recipes.accelerator_schedule(design, tile=16, ii=1, lanes=16, depth=2)
    ops = {e["op"] for e in s.log}
    assert {"split", "unroll", "pipeline", "partition", "buffer_at", "to", "dataflow"} <= ops
    top = funcs(design.module)[design.top]
    assert D.is_dataflow(top)
    fifos = {S.stream_name(o): D.stream_depth(o) for o in walk(top) if o.name == S.CREATE}
    assert min(fifos.values()) == 2 and len(fifos) >= 5 * cfg.n_layer
    if name == "mamba-130m":
        assert fifos["in_proj_arg2"] == 2  # x streams to the conv element by element
        # z is written before x: a shallow z FIFO would deadlock, the Kahn check widened it
        assert fifos["in_proj_arg3"] == cfg.d_inner
    in_proj = funcs(design.module)["in_proj"]
    assert D.partitions_of(D.BufferRef(in_proj, arg=1)) == [D.Partition("cyclic", 2, 16)]
    assert any(D.get_pipeline(o) == 1 for o in walk(in_proj) if o.name == "affine.for")
    _decode_matches(model, design)


def test_recipes_are_parameterized_and_replay(tmp_path):
    torch.manual_seed(0)
    model = build_model(get_config("tiny-mamba2")).eval()
    base = capture(model, "decode", progress=False)
    d = copy_design(base)
    s = recipes.accelerator_schedule(d, tile=8, ii=2, lanes=4, depth=4)
    assert all(e["ii"] == 2 for e in s.log if e["op"] == "pipeline")
    assert {e["factor"] for e in s.log if e["op"] == "partition" and "proj" in e["buffer"]} <= {8}
    assert min(e["depth"] for e in s.log if e["op"] == "to") == 4
    s.save(tmp_path / "acc.json")
    fresh = capture(model, "decode", progress=False)
    replay(fresh, tmp_path / "acc.json")
    assert str(fresh.module) == str(d.module)
    _decode_matches(model, d)


@pytest.mark.parametrize("name", ["tiny-mamba1", "tiny-mamba2"])
def test_cpu_recipe_matches_pytorch(name):
    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    design = capture(model, "decode", progress=False)
    s = recipes.cpu_schedule(design)
    ops = [e["op"] for e in s.log]
    assert "vectorize" in ops and "buffer_at" in ops and "unroll" in ops
    assert not any(o.name == "math.exp" for o in walk(funcs(design.module)["ssm"]))
    assert recipes.cpu(capture(model, "decode", progress=False)) is not None
    _decode_matches(model, design)


def test_recipes_apply_to_prefill():
    torch.manual_seed(0)
    model = build_model(get_config("tiny-mamba1")).eval()
    design = capture(model, "prefill", T=4, progress=False)
    recipes.accelerator_schedule(design)
    fn = JitFunction(design.module, design.top, opt_level=1)
    llvm = LLVMBackend.from_compiled(model, {("prefill", 4): (design, fn)}, prefill_chunk=4)
    toks = torch.tensor([5, 6, 7, 8])
    a, sa = llvm.prefill(toks)
    b, sb = TorchBackend(model).prefill(toks)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sa.ssm.numpy(), sb.ssm.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-mamba1", "tiny-mamba2"])
def test_fuse_nests_fuses_like_nests_of_a_tree_scan(name):
    """fuse_nests inside the verify scan's token loop: elementwise nests fuse (the state
    update takes the copy of the node's state out), reductions stay apart from them, and
    the verify still equals PyTorch node for node."""
    from mambaflow.schedules import customize

    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    T = 5
    design = capture(model, "verify", T=T, progress=False)
    s = customize(design)
    band = next(b for b, loops in s.get_loops("ssm").items() if next(iter(loops)) == "t")

    def nests():  # the nests inside the token loop (looked up afresh: fuse rewrites the IR)
        return [o for o in recipes.rw.body_ops(s.loop(f"ssm:{band}.t").op) if o.name == "affine.for"]

    before = [recipes._reduces(o) for o in nests()]
    n = recipes.fuse_nests(s, "ssm", f"{band}.t")
    after = [recipes._reduces(o) for o in nests()]
    assert n > 0 and all(e["op"] == "fuse" for e in s.log)
    # elementwise nests merged; the y = h.C reduction stayed a nest of its own (fused into
    # the update its innermost loop would end in a horizontal sum per state row)
    assert after.count(False) < before.count(False) and after.count(True) >= 1
    fn = JitFunction(design.module, design.top, opt_level=1)
    llvm = LLVMBackend.from_compiled(model, {("verify", T): (design, fn)})
    ref = TorchBackend(model)
    _, state = ref.prefill(torch.tensor([3, 1, 4, 1, 5]))
    toks, parents = torch.tensor([9, 2, 6, 5, 3]), [-1, 0, 0, 1, 2]
    a, ca = llvm.verify_tree(toks, parents, state)
    b, cb = ref.verify_tree(toks, parents, state)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    for node in range(T):
        np.testing.assert_allclose(llvm.state_at(ca, node).ssm.numpy(), ref.state_at(cb, node).ssm.numpy(),
                                   rtol=1e-4, atol=1e-5)
