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
from mambaflow.flow.mlir import funcs, str_attr, walk
from mambaflow.models import build_model, get_config
from mambaflow.runtime.backends import LLVMBackend, TorchBackend
from mambaflow.errors import ScheduleError
from mambaflow.schedules import Schedule, customize, recipes, replay
from mambaflow.schedules.registry import RECIPES, apply_recipe
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


STREAMS = {  # the streams layer_pipeline builds, as <producer>_<port>
    "mamba1": {"fork_embed_resid_to_norm", "fork_embed_resid_to_out_proj", "norm_xn", "in_proj_x", "in_proj_z",
               "conv_xc", "fork_conv_xc_to_x_proj", "fork_conv_xc_to_ssm", "x_proj_delta", "x_proj_B", "x_proj_C",
               "ssm_y"},
    "mamba2": {"fork_embed_resid_to_norm", "fork_embed_resid_to_out_proj", "norm_xn", "in_proj_z", "in_proj_x",
               "in_proj_dt", "conv_xc", "ssm_y", "gated_norm_yn"},
}


@pytest.mark.parametrize("name", ["mamba-130m", "mamba2-130m"])
def test_accelerator_recipe_on_130m_shaped_decode(name):
    # every dimension of the 130m model (d_model 768, vocab 50280, ...), two layers
    cfg = dataclasses.replace(get_config(name), n_layer=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    design = capture(model, "decode", progress=False)
    s = apply_recipe("accelerator", design)  # tile 16, II 1, 16 lanes, depth 2
    ops = {e["op"] for e in s.log}
    assert {"split", "unroll", "pipeline", "partition", "buffer_at", "to", "dataflow", "outline", "fork"} <= ops
    top = funcs(design.module)[design.top]
    assert not D.is_dataflow(top)  # embed, the layer loop and the head run in sequence
    region = funcs(design.module)["layer_step"]
    assert D.is_dataflow(region)  # each layer is one dataflow region
    creates = [o for o in walk(region) if o.name == S.CREATE]
    fifos = {S.stream_name(o): D.stream_depth(o) for o in creates}
    # one stream per pair of processes, in the layer body every layer runs
    assert set(fifos) == STREAMS[cfg.arch] and min(fifos.values()) == 2
    for c in creates:
        users = [u.owner for u in c.results[0].uses]
        assert len(users) == 2 and all(u.name == "func.call" and u.parent == region for u in users)
    assert fifos["in_proj_x"] == 2  # x streams to the conv element by element
    # z is written before x (Mamba1; Mamba2 writes z first too): a shallow z FIFO would
    # deadlock, the Kahn check widened it to the buffer
    assert fifos["in_proj_z"] == cfg.d_inner
    in_proj = funcs(design.module)["in_proj"]
    # in_proj_w (an m_axi port, [L][2E][D]) is not partitioned; its row is copied on chip
    # and the copy partitioned along the reduction
    assert D.partitions_of(D.BufferRef(in_proj, arg=1)) == []
    row = next(o for o in walk(in_proj) if str_attr(o, "buffer_name") == "in_proj_w.buf")
    assert D.partitions_of(row) == [D.Partition("cyclic", 3, 16)]
    from mambaflow.targets.versal.dataflow import check

    assert [f for f in check(design.module) if f.severity == "error"] == []
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
    s = apply_recipe("cpu", design)
    ops = [e["op"] for e in s.log]
    assert "vectorize" in ops and "buffer_at" in ops and "unroll" in ops
    assert not any(o.name == "math.exp" for o in walk(funcs(design.module)["ssm"]))
    assert recipes.cpu(capture(model, "decode", progress=False)) is not None
    _decode_matches(model, design)


def test_recipes_apply_to_prefill():
    torch.manual_seed(0)
    model = build_model(get_config("tiny-mamba1")).eval()
    design = capture(model, "prefill", T=4, progress=False)
    apply_recipe("accelerator", design)
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


# ------------------------------------------------------------------ the registry


@pytest.fixture(scope="module")
def tiny1():
    torch.manual_seed(0)
    model = build_model(get_config("tiny-mamba1")).eval()
    return model, capture(model, "decode", progress=False)


@pytest.mark.parametrize("name", list(RECIPES))
def test_a_recipe_by_name_saves_a_log_that_replays_to_the_same_ir(name, tiny1, tmp_path):
    """`mambaflow build --schedule NAME` (apply_schedule) schedules the design and
    returns the Schedule holding the whole log: schedule.json replays byte-identically."""
    from mambaflow.targets.versal.build import apply_schedule

    model, base = tiny1
    design = copy_design(base)
    s = apply_schedule(design, name)
    if name == "tree_buffer":  # a decode design has no tree FIFO: left as it is
        assert s.log == [] and str(design.module) == str(base.module)
    else:
        assert s.log and str(design.module) != str(base.module)
    if name == "ssm_serial":  # on-chip tiles of the SSM state ([L][E][N] ports), partitioned along N
        parts = {e["buffer"]: e["dim"] for e in s.log if e["op"] == "partition"}
        assert parts and set(parts.values()) == {3}
        assert all(b.startswith(("ssm:ssm_state.buf", "ssm:ssm_state_out.buf")) for b in parts)
    s.save(tmp_path / "schedule.json")
    fresh = capture(model, "decode", progress=False)
    again = apply_schedule(fresh, str(tmp_path / "schedule.json"))
    assert again.log == s.log
    assert str(fresh.module) == str(design.module)


def test_recipes_schedule_into_the_schedule_they_are_given(tiny1):
    _, base = tiny1
    s = customize(copy_design(base))
    assert customize(s) is s
    with pytest.raises(ScheduleError, match="customize"):
        Schedule(s)
    assert apply_recipe("linear_parallel", s) is s and s.log
    n = len(s.log)
    apply_recipe("ssm_serial", s)
    assert len(s.log) > n and {e["op"] for e in s.log[n:]} >= {"pipeline", "partition"}
    with pytest.raises(ScheduleError, match="unknown schedule recipe 'nope'; known: cpu, linear_parallel"):
        apply_recipe("nope", s)


def test_build_help_lists_every_recipe(capsys):
    from mambaflow.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["build", "--help"])
    assert ei.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "RECIPE|FILE.py|LOG.json" in text
    for r in RECIPES.values():
        assert f"{r.name} {r.description}" in text


def test_ssm_serial_runs_lanes_per_cycle_and_keeps_the_numbers():
    """With lanes < N the split's outer loop is pipelined and only `lanes` copies of the
    state update are built (pipelining the loop above would unroll all N): fewer DSPs
    with fewer lanes, and the scheduled decode still equals PyTorch."""
    from mambaflow.targets.hls import emit_design

    model = build_model(get_config("tiny-mamba2")).eval()  # d_state N = 16
    dsp = {}
    for lanes in (4, 16):
        d = copy_design(capture(model, "decode", progress=False))
        s = recipes.ssm_serial_schedule(d, lanes=lanes)
        piped = {e["loop"] for e in s.log if e["op"] == "pipeline" and e["loop"].startswith("ssm:")}
        split = [e["loop"] for e in s.log if e["op"] == "split" and e["loop"].startswith("ssm:")]
        assert piped and (len(split) > 0) == (lanes < 16)
        for loop in split:  # the split's outer loop is pipelined, never a loop around it
            band = loop.split(".")[0]
            assert f"{loop}.outer" in piped and not any(p.startswith(band + ".") and p != f"{loop}.outer"
                                                        for p in piped), (loop, piped)
        dsp[lanes] = next(k for k in emit_design(d).resources.kernels if k.name == "ssm").dsp
        _decode_matches(model, d)
    assert 0 < dsp[4] < dsp[16]


def test_large_buffers_go_to_uram():
    d = copy_design(capture(get_config("tiny-mamba2"), "decode", progress=False))
    s = recipes.large_buffers_to_uram(d, min_bytes=1024)
    bound = {e["buffer"] for e in s.log if e["op"] == "storage"}
    assert bound and all(e["impl"] == "uram" for e in s.log)
    for k in s.kernels():
        for name, h in s.get_buffers(k).items():
            ref = s._buffer(h, "storage")[1]
            if ref.arg is None:
                n = int(np.prod(ref.type.shape)) * ref.type.element_type.width // 8
                assert (f"{k}:{name}" in bound) == (n >= 1024), (k, name, n)
