"""The schedule language: every primitive's IR effect, numbers against PyTorch, misuse.

One tiny Mamba1 decode capture is shared; each test schedules a private copy. Kernel
numbers are checked by JIT-compiling the scheduled kernel alone and comparing it with
the PyTorch function the flow captured; end-to-end tests compile the whole design.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch_mlir import ir

import mambaflow
from mambaflow.dialects import directives as D
from mambaflow.errors import ScheduleError
from mambaflow.flow.capture import capture
from mambaflow.flow.mlir import funcs, str_attr, walk
from mambaflow.flow.naming import loops_of
from mambaflow.models import build_model, get_config
from mambaflow.schedules.recipes import layer_pipeline_schedule
from mambaflow.schedules import customize, replay
from mambaflow.schedules.testing import check_kernel, copy_design, kernel_case, run_kernel


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_config("tiny-mamba1")).eval()


@pytest.fixture(scope="module")
def base(model):
    return capture(model, "decode", progress=False)


@pytest.fixture
def design(base):
    return copy_design(base)


def fn_of(design, name):
    return funcs(design.module)[name]


def loop_names(design, kernel):
    return {b: list(ls) for b, ls in loops_of(fn_of(design, kernel)).items()}


def rejects(design, call, *match):
    """`call()` raises ScheduleError mentioning every `match`, and the IR is unchanged."""
    before = str(design.module)
    with pytest.raises(ScheduleError) as ei:
        call()
    for m in match:
        assert m in str(ei.value), str(ei.value)
    assert str(design.module) == before
    return ei.value


# ----------------------------------------------------------------- addressing


def test_customize_is_exported_and_loops_are_addressable(design):
    s = mambaflow.customize(design)
    loops = s.get_loops("in_proj")
    assert set(loops) == {"S_i", "S_i_j", "S_i_1", "S_i_2"}
    h = loops["S_i_j"]["j"]
    assert h.path == "in_proj:S_i_j.j"
    assert loops.S_i_j.j == h
    assert s.loop("in_proj:S_i_j.j") == h
    assert s.loop(h) is h
    assert "in_proj_w" in s.get_buffers("in_proj")


def test_unknown_names_are_errors(design):
    s = customize(design)
    rejects(design, lambda: s.split("in_prj:S_i_j.j", 4), "unknown kernel 'in_prj'")
    rejects(design, lambda: s.split("in_proj:S_i_j.q", 4), "no loop 'q'", "S_i_j")
    rejects(design, lambda: s.split("in_proj:S_x.j", 4), "no loop")
    rejects(design, lambda: s.split("no colon", 4), "kernel:band.loop")
    rejects(design, lambda: s.get_loops("in_proj")["S_q"], "has no 'S_q'")
    rejects(design, lambda: s.partition("in_proj:nope", "complete"), "no buffer 'nope'")
    assert s.log == []


# ---------------------------------------------------------------------- split


def test_split_effect_and_numbers(design):
    s = customize(design)
    o, i = s.split(s.get_loops("in_proj")["S_i_j"]["j"], 8)
    assert (o.path, i.path) == ("in_proj:S_i_j.j.outer", "in_proj:S_i_j.j.inner")
    assert o == s.loop("in_proj:S_i_j.j").outer
    assert loop_names(design, "in_proj")["S_i_j"] == ["i", "j.outer", "j.inner"]
    outer = o.op
    assert ir.IntegerAttr(outer.attributes["step"]).value == 8
    assert str_attr(fn_of(design, "in_proj"), "sym_name") == "in_proj"
    check_kernel(design.module, design, "in_proj")


def test_split_non_dividing_factor_uses_min_bound(design):
    s = customize(design)
    _, inner = s.split("x_proj:S_i_j.i", 5)  # 18 rows by 5
    ub = str(ir.AffineMapAttr(inner.op.attributes["upperBoundMap"]).value)
    assert "18" in ub and "+ 5" in ub
    check_kernel(design.module, design, "x_proj")


def test_split_errors(design):
    s = customize(design)
    rejects(design, lambda: s.split("in_proj:S_i_j.j", 0), "split of in_proj:S_i_j.j", "positive")
    rejects(design, lambda: s.split("in_proj:S_i_j.j", 33), "exceeds the trip count 32")
    rejects(design, lambda: s.split("in_proj:S_i_j.j", 2.5), "positive integer")


# -------------------------------------------------------------------- reorder


def test_reorder_effect_and_numbers(design):
    s = customize(design)
    jo, ji = s.split("in_proj:S_i_j.j", 4)
    s.reorder(jo, "in_proj:S_i_j.i")
    assert loop_names(design, "in_proj")["S_i_j"] == ["j.outer", "i", "j.inner"]
    band = s.get_loops("in_proj")["S_i_j"]
    assert str_attr(band["j.outer"].op, "op_name") == "S_i_j"  # the band keeps its name
    check_kernel(design.module, design, "in_proj")
    s.reorder("conv:S_i_j_1.j", "conv:S_i_j_1.i")
    check_kernel(design.module, design, "conv")


def test_reorder_errors(design):
    s = customize(design)
    s.split("in_proj:S_i_j.j", 4)
    rejects(design, lambda: s.reorder("in_proj:S_i_j.j.inner", "in_proj:S_i_j.j.outer"),
            "reorder", "depend on 'j.outer'")
    rejects(design, lambda: s.reorder("in_proj:S_i_j.i"), "at least two")
    rejects(design, lambda: s.reorder("in_proj:S_i_j.i", "in_proj:S_i.i"), "one band")
    # the prefill SSM's token loop holds several nests: not a perfect nest
    pre = capture(design.cfg, "prefill", T=2, progress=False)
    sp = customize(pre)
    rejects(pre, lambda: sp.reorder("ssm:S_t_i_j.i", "ssm:S_t_i_j.t"), "perfect nest")


STENCIL = """
func.func @wave(%a: memref<8x8xf32>) {
  affine.for %i = 1 to 8 {
    affine.for %j = 0 to 7 {
      %v = affine.load %a[%i - 1, %j + 1] : memref<8x8xf32>
      affine.store %v, %a[%i, %j] : memref<8x8xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i_j"}
  return
}
func.func @transpose_ok(%a: memref<8x8xf32>, %b: memref<8x8xf32>) {
  affine.for %i = 0 to 8 {
    affine.for %j = 0 to 8 {
      %v = affine.load %a[%j, %i] : memref<8x8xf32>
      affine.store %v, %b[%i, %j] : memref<8x8xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i_j"}
  return
}
"""


def test_reorder_that_breaks_a_dependence_is_rejected(base):
    with base.module.context:
        mod = ir.Module.parse(STENCIL)
    s = customize(mod)
    before = str(mod)
    with pytest.raises(ScheduleError, match="reverse a dependence"):
        s.reorder("wave:S_i_j.j", "wave:S_i_j.i")
    assert str(mod) == before
    s.reorder("transpose_ok:S_i_j.j", "transpose_ok:S_i_j.i")  # independent: legal
    assert s.log[-1]["op"] == "reorder"


# ----------------------------------------------------------------------- fuse


def test_fuse_nested_flattens(design):
    s = customize(design)
    h = s.fuse("x_proj:S_i_j.i", "x_proj:S_i_j.j")
    assert h.path == "x_proj:S_i_j.i_j_fused"
    assert loop_names(design, "x_proj")["S_i_j"] == ["i_j_fused"]
    from mambaflow.schedules.deps import trip_count

    assert trip_count(h.op) == 18 * 64
    check_kernel(design.module, design, "x_proj")


def test_fuse_siblings_and_dependence_check(design):
    s = customize(design)
    s.fuse("in_proj:S_i_1.i", "in_proj:S_i_2.i")
    assert "S_i_2" not in loop_names(design, "in_proj")
    check_kernel(design.module, design, "in_proj")
    # norm: S_i sums squares into one scalar that every iteration of S_i_1 reads;
    # fusing would read the partial sum
    rejects(design, lambda: s.fuse("norm:S_i.i", "norm:S_i_1.i"), "fuse", "breaking a dependence")
    rejects(design, lambda: s.fuse("in_proj:S_i.i", "in_proj:S_i_1.i"), "different")
    rejects(design, lambda: s.fuse("in_proj:S_i.i"), "at least two")



def test_fuse_flattens_a_register_accumulator_nest_under_guards(base, design):
    """Rows whose register accumulator is set up and drained around the reduction (an
    imperfect nest, which Vitis does not flatten) become one loop: the set-up runs under
    an scf.if on the first inner iteration, the drain on the last. The numbers stay, the
    split inner loop keeps its trip count, and one pipeline covers every row."""
    from mambaflow.schedules.deps import trip_count
    from mambaflow.schedules.recipes import accumulators
    from mambaflow.targets.estimate import estimate

    s = customize(design)
    acc = next(b for b, l in accumulators(s, "in_proj") if l == "in_proj:S_i_j.i")
    rows = trip_count(s.loop("in_proj:S_i_j.i").op)
    cols = trip_count(s.loop("in_proj:S_i_j.j").op)
    s.buffer_at(f"in_proj:{acc}", "in_proj:S_i_j.i")
    jo, ji = s.split("in_proj:S_i_j.j", 8)
    s.unroll(ji)
    h = s.fuse("in_proj:S_i_j.i", jo)
    s.pipeline(h, ii=1)
    assert loop_names(design, "in_proj")["S_i_j"] == ["i_j.outer_fused", "j.inner"]
    assert trip_count(h.op) == rows * cols // 8 and trip_count(s.loop("in_proj:S_i_j.j.inner").op) == 8
    assert len([o for o in walk(h.op) if o.name == "scf.if"]) == 2
    assert s.log[-2] == {"op": "fuse", "loops": ["in_proj:S_i_j.i", "in_proj:S_i_j.j.outer"]}
    check_kernel(design.module, design, "in_proj")
    l = next(x for x in estimate(design, "vck190").kernel("in_proj").loops if x.path.endswith("i_j.outer_fused"))
    assert l.trip == rows * cols // 8 and l.ii_req == 1
    # the log replays to the same IR
    fresh = copy_design(base)
    replay(fresh, s.log)
    assert str(fresh.module) == str(design.module)


def test_fuse_refuses_a_nest_whose_set_up_feeds_the_inner_loop():
    """A value computed around the inner loop and used inside it cannot move under a
    guard (a flattened iteration carries no SSA value): a clear error, IR unchanged."""
    from mambaflow.flow.mlir import new_context

    ctx = new_context()
    with ctx:
        m = ir.Module.parse("""
func.func @k(%a: memref<4x8xf32>, %out: memref<4xf32>) attributes {mf.kind = "in_proj"} {
  affine.for %i = 0 to 4 {
    %z = arith.constant 0.0 : f32
    %s = affine.load %a[%i, 0] : memref<4x8xf32>
    affine.for %j = 0 to 8 {
      %v = affine.load %a[%i, %j] : memref<4x8xf32>
      %w = arith.addf %v, %s : f32
      affine.store %w, %out[%i] : memref<4xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i_j"}
  return
}""")
    s = customize(m)
    before = str(m)
    with pytest.raises(ScheduleError, match="cannot run under guards"):
        s.fuse("k:S_i_j.i", "k:S_i_j.j")
    assert str(m) == before


# ------------------------------------------------------------ unroll, pipeline


def test_unroll_and_pipeline_annotate_and_run(design):
    s = customize(design)
    jo, ji = s.split("in_proj:S_i_j.j", 8)
    s.unroll(ji)
    s.pipeline(jo, ii=2, rewind=True)
    s.unroll("in_proj:S_i.i", 4)
    assert D.get_unroll(ji.op) == 0 and D.get_pipeline(jo.op) == 2 and D.is_rewind(jo.op)
    assert D.get_unroll(s.loop("in_proj:S_i.i").op) == 4
    check_kernel(design.module, design, "in_proj")
    rejects(design, lambda: s.unroll("in_proj:S_i.i", -1), "unroll", ">= 0")
    rejects(design, lambda: s.unroll("in_proj:S_i.i", 1000), "exceeds the trip count 128")
    rejects(design, lambda: s.pipeline("in_proj:S_i.i", ii=0), "pipeline", ">= 1")
    rejects(design, lambda: s.pipeline("in_proj:S_i_j.i"), "already pipelined")


def test_parallel_checks_carried_dependences(design):
    s = customize(design)
    s.parallel("in_proj:S_i_j.i")  # rows are independent
    assert D.get_unroll(s.loop("in_proj:S_i_j.i").op) == 0
    rejects(design, lambda: s.parallel("in_proj:S_i_j.j"), "depend on each other")


# ------------------------------------------------------------------ buffers


def test_partition_and_storage(design):
    s = customize(design)
    # in_proj_w is stacked by layer, [L][2E][D]: dim 3 is the reduction; it is an m_axi
    # port, so its row is copied on chip and the copy partitioned (HLS 214-126)
    rejects(design, lambda: s.partition("in_proj:in_proj_w", "cyclic", dim=3, factor=8), "no-partition-on-maxi")
    row = s.buffer_at("in_proj:in_proj_w", "in_proj:S_i_j.i")
    s.partition(row, "cyclic", dim=3, factor=8)
    s.partition("in_proj:alloc0", "complete", dim=2)
    s.storage("in_proj:in_proj_w", "uram")
    fn = fn_of(design, "in_proj")
    local = next(o for o in walk(fn) if o.name == "memref.alloca")
    assert D.partitions_of(local) == [D.Partition("cyclic", 3, 8)]
    assert D.partitions_of(D.BufferRef(fn, arg=1)) == []
    alloc = next(o for o in walk(fn) if o.name == "memref.alloc")
    assert D.partitions_of(alloc) == [D.Partition("complete", 2, 0)]
    assert D.storage_of(D.BufferRef(fn, arg=1)) == "uram"
    fn.verify()
    check_kernel(design.module, design, "in_proj")
    rejects(design, lambda: s.partition("in_proj:in_proj_w", "diagonal"), "kind must be one of")
    rejects(design, lambda: s.partition("in_proj:in_proj_w", "block", dim=4, factor=2), "out of range")
    rejects(design, lambda: s.partition("in_proj:in_proj_w", "block", dim=3, factor=0), "factor >= 1")
    rejects(design, lambda: s.partition("in_proj:in_proj_w", "block", dim=3, factor=64), "exceeds")
    rejects(design, lambda: s.storage("in_proj:in_proj_w", "dram"), "storage")
    # the trailing layer index of a layer kernel is a scalar, not a buffer
    rejects(design, lambda: s.partition("in_proj:layer", "complete"), "no buffer 'layer'")
    rejects(design, lambda: s.partition("in_proj:arg4", "complete"), "no buffer 'arg4'")


def test_dataflow_and_inline(design):
    s = customize(design)
    # Vitis runs a loop around calls as one process, and a kernel body of loops and
    # stores is no sequence of processes: both are refused (targets.versal.dataflow)
    rejects(design, lambda: s.dataflow(), "region-form", "the loop 'layer' calls")
    rejects(design, lambda: s.dataflow("ssm"), "HLS 200-779", "has 2 writers")
    s.outline("decode:layer.layer", "layer_step", keep=["resid"])
    s.fork("layer_step:embed_resid")
    if design.cfg.arch == "mamba1":
        s.fork("layer_step:conv_xc")
    s.dataflow("layer_step")
    s.inline("norm")
    assert D.is_dataflow(fn_of(design, "layer_step")) and not D.is_dataflow(fn_of(design, "decode"))
    assert D.is_inline(fn_of(design, "norm"))
    rejects(design, lambda: s.inline("decode"), "top function")
    rejects(design, lambda: s.inline("nrom"), "unknown kernel 'nrom'")


# -------------------------------------------------------------- compute_at


def test_compute_at_fuses_producer_into_consumer(design):
    s = customize(design)
    # ssm: the state update (S_i_j_1) into the y reduction (S_i_j_2), down to j
    h = s.compute_at("ssm:S_i_j_1.i", "ssm:S_i_j_2.j")
    names = loop_names(design, "ssm")
    assert "S_i_j_2" not in names and names["S_i_j_1"] == ["i", "j"]
    assert h.path == "ssm:S_i_j_1.j"
    check_kernel(design.module, design, "ssm")
    rejects(design, lambda: s.compute_at("norm:S_i.i", "norm:S_i_1.i"), "compute_at",
            "breaking a dependence")
    rejects(design, lambda: s.compute_at("norm:S_i.i", "in_proj:S_i.i"), "one kernel")


# ------------------------------------------------------------------ log


def test_log_prints_saves_and_replays_byte_identically(design, tmp_path):
    s = customize(design)
    jo, ji = s.split("in_proj:S_i_j.j", 8)
    s.reorder(jo, "in_proj:S_i_j.i")
    s.pipeline(ji)
    s.partition(s.buffer_at("in_proj:in_proj_w", "in_proj:S_i_j.i"), "cyclic", 3, 8)
    s.fuse("x_proj:S_i_j.i", "x_proj:S_i_j.j")
    s.compute_at("ssm:S_i_j_1.i", "ssm:S_i_j_2.j")
    s.outline("decode:layer.layer", "layer_step", keep=["resid"])
    assert "split(loop='in_proj:S_i_j.j', factor=8)" in str(s)
    path = tmp_path / "sched.json"
    s.save(path)
    assert json.loads(path.read_text())["log"] == s.log
    fresh = capture(design.cfg, "decode", progress=False)  # a new capture, new context
    s2 = replay(fresh, path)
    assert str(fresh.module) == str(design.module)
    assert s2.log == s.log


def test_compose_applies_a_kernel_schedule_to_every_layer(design):
    """Kernels are per kind: a schedule written on a one-layer capture composes onto the
    two-layer design as it is, and the one scheduled in_proj is right at every layer."""
    one = capture(dataclasses.replace(design.cfg, n_layer=1), "decode", progress=False)
    s0 = customize(one)
    s0.split("in_proj:S_i_j.j", 8)
    s0.pipeline("in_proj:S_i_j.j.inner")
    s = customize(design)
    s.compose(s0)
    assert s.log == s0.log
    assert loop_names(design, "in_proj")["S_i_j"] == ["i", "j.outer", "j.inner"]
    layer_loop = next(o for o in walk(fn_of(design, design.top)) if str_attr(o, "loop_name") == "layer")
    assert [ir.FlatSymbolRefAttr(c.attributes["callee"]).value for c in walk(layer_loop)
            if c.name == "func.call"].count("in_proj") == 1
    for layer in range(design.cfg.n_layer):
        ins, exp = kernel_case(design, "in_proj", seed=layer, layer=layer)
        got = run_kernel(design.module, "in_proj", ins, [e.shape for e in exp], layer=layer)
        for g, e in zip(got, exp):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_compose_with_id_maps_kernels_to_a_prefixed_instance(base):
    with base.module.context:
        src = ir.Module.parse(STENCIL)
        mod = ir.Module.parse(STENCIL.replace("@transpose_ok", "@draft_transpose_ok"))
    s0 = customize(src)
    s0.reorder("transpose_ok:S_i_j.j", "transpose_ok:S_i_j.i")
    s0.split("transpose_ok:S_i_j.i", 4)
    s = customize(mod)
    s.compose(s0, id="draft")
    assert [e.get("loop") or e.get("loops") for e in s.log] == [
        ["draft_transpose_ok:S_i_j.j", "draft_transpose_ok:S_i_j.i"], "draft_transpose_ok:S_i_j.i"]
    assert str(funcs(mod)["draft_transpose_ok"]) == str(funcs(src)["transpose_ok"]).replace(
        "@transpose_ok", "@draft_transpose_ok")
    assert str(funcs(mod)["wave"]) == str(funcs(src)["wave"])  # not in the log: untouched


def test_per_layer_addresses_name_the_per_kind_address(design):
    s = customize(design)
    rejects(design, lambda: s.split("layer0_in_proj:S_i_j.j", 8),
            "split", "'layer0_in_proj' names a per-layer clone", "per kind now", "write 'in_proj:S_i_j.j'")
    rejects(design, lambda: s.partition("layer1_in_proj:in_proj_w", "cyclic", 3, 8), "write 'in_proj:in_proj_w'")
    rejects(design, lambda: s.get_loops("layer0_ssm"), "write 'ssm'")
    # composing a kernel schedule per layer, as for the old per-layer clones, says the same
    s0 = customize(copy_design(design))
    s0.split("in_proj:S_i_j.j", 8)
    rejects(design, lambda: s.compose(s0, id="layer0"), "per kind now", "write 'in_proj:S_i_j.j'")
    assert s.log == []


def test_failed_rewrite_restores_ir_exactly(design, monkeypatch):
    from mambaflow.schedules import rewrite

    real = rewrite.split

    def broken(loop, factor, divisible):
        real(loop, factor, divisible)  # half-done work on the live IR ...
        raise RuntimeError("boom")  # ... then a crash

    monkeypatch.setattr(rewrite, "split", broken)
    s = customize(design)
    e = rejects(design, lambda: s.split("in_proj:S_i_j.j", 8), "internal error", "unchanged")
    assert s.log == []


# -------------------------------------------------------------- end to end


def test_scheduled_design_matches_pytorch_end_to_end(design, model):
    from mambaflow.runtime.backends import LLVMBackend, TorchBackend
    from mambaflow.targets.llvm.jit import JitFunction

    s = customize(design)  # each kind once: the layer loop runs the scheduled kernels L times
    jo, ji = s.split("in_proj:S_i_j.j", 8)
    s.reorder(jo, "in_proj:S_i_j.i")
    s.pipeline(ji)
    s.fuse("x_proj:S_i_j.i", "x_proj:S_i_j.j")
    s.compute_at("ssm:S_i_j_1.i", "ssm:S_i_j_2.j")
    s.partition(s.buffer_at("in_proj:in_proj_w", "in_proj:S_i_j.i"), "cyclic", 3, 8)
    s.split("lm_head:S_i_j.i", 16)
    layer_pipeline_schedule(s)  # outlined, forked, a dataflow region over streams
    fn = JitFunction(design.module, design.top, opt_level=1)
    llvm = LLVMBackend.from_compiled(model, {("decode", 1): (design, fn)})
    ref = TorchBackend(model)
    st_l = st_t = ref.zero_state()
    for tok in (3, 17, 42):
        a, st_l = llvm.decode(tok, st_l)
        b, st_t = ref.decode(tok, st_t)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st_l.ssm.numpy(), st_t.ssm.numpy(), rtol=1e-4, atol=1e-5)


def test_the_kernel_check_catches_a_wrong_rewrite(design):
    """The numeric oracle has teeth: a loop that skips every other row is caught."""
    s = customize(design)
    L = s.loop("in_proj:S_i_j.i").op
    with design.module.context:
        L.attributes["step"] = ir.IntegerAttr.get(ir.IndexType.get(), 2)
    with pytest.raises(AssertionError):
        check_kernel(design.module, design, "in_proj")


# ------------------------------------------------------- buffer_at / reuse_at


def test_buffer_at_makes_a_register_accumulator(design):
    s = customize(design)
    b = s.buffer_at("in_proj:alloc0", "in_proj:S_i_j.i")
    assert b.path == "in_proj:alloc0.buf"
    fn = fn_of(design, "in_proj")
    local = next(o for o in walk(fn) if o.name == "memref.alloca")
    assert str(local.results[0].type) == "memref<1x1xf32>" and str_attr(local, "buffer_name") == "alloc0.buf"
    j = s.loop("in_proj:S_i_j.j").op
    assert all(o.operands[0] != next(x for x in walk(fn) if x.name == "memref.alloc").results[0]
               for o in walk(j) if o.name == "affine.load")
    check_kernel(design.module, design, "in_proj")
    s.split("out_proj:S_i_j.j", 16)
    s.buffer_at("out_proj:resid_out", "out_proj:S_i_j.j.outer")
    check_kernel(design.module, design, "out_proj")
    rejects(design, lambda: s.buffer_at("in_proj:in_proj_w", "in_proj:S_i.i"), "does not access")
    # the conv gathers its window with computed (non-affine) indices
    rejects(design, lambda: s.buffer_at("conv:alloc1", "conv:S_i_j_1.i"), "non-affine")


STENCIL1D = """
func.func @conv1d(%x: memref<4x19xf32>, %w: memref<4xf32>, %y: memref<4x16xf32>) {
  %c0 = arith.constant 0.0 : f32
  affine.for %c = 0 to 4 {
    affine.for %t = 0 to 16 {
      affine.store %c0, %y[%c, %t] : memref<4x16xf32>
      affine.for %k = 0 to 4 {
        %a = affine.load %x[%c, %t + %k] : memref<4x19xf32>
        %b = affine.load %w[%k] : memref<4xf32>
        %p = arith.mulf %a, %b : f32
        %s = affine.load %y[%c, %t] : memref<4x16xf32>
        %q = arith.addf %s, %p : f32
        affine.store %q, %y[%c, %t] : memref<4x16xf32>
      } {loop_name = "k"}
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i_j_k"}
  return
}
"""


def test_reuse_at_builds_a_sliding_window(base):
    from mambaflow.targets.llvm.jit import JitFunction

    with base.module.context:
        mod = ir.Module.parse(STENCIL1D)
    s = customize(mod)
    before = str(mod)
    with pytest.raises(ScheduleError, match="only reads"):
        s.reuse_at("conv1d:arg2", "conv1d:S_i_j_k.j")
    with pytest.raises(ScheduleError, match="nothing to reuse"):
        s.reuse_at("conv1d:arg0", "conv1d:S_i_j_k.i")
    assert str(mod) == before
    r = s.reuse_at("conv1d:arg0", "conv1d:S_i_j_k.j")
    assert r.path == "conv1d:arg0.reuse"
    k = s.loop("conv1d:S_i_j_k.k").op
    loads = [o for o in walk(k) if o.name == "affine.load"]
    assert not any(o.operands[0] == funcs(mod)["conv1d"].regions[0].blocks[0].arguments[0] for o in loads)
    x = np.random.default_rng(0).standard_normal((4, 19)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal(4).astype(np.float32)
    y = np.zeros((4, 16), np.float32)
    JitFunction(mod, "conv1d", opt_level=0)(x, w, y)
    ref = np.stack([sum(x[:, t + q] * w[q] for q in range(4)) for t in range(16)], 1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
