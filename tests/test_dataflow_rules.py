"""The Vitis dataflow / interface rules (targets.versal.dataflow): each rule has a
schedule it rejects, with its message, the IR left unchanged, and a legal variant; the
recipes' designs pass the checker and match PyTorch in csim."""

from __future__ import annotations

import numpy as np
import pytest

from mambaflow.errors import ScheduleError
from mambaflow.flow.capture import capture
from mambaflow.flow.mlir import funcs
from mambaflow.schedules import customize
from mambaflow.schedules.registry import apply_recipe
from mambaflow.schedules.testing import copy_design
from mambaflow.targets.hls.csim import run_csim
from mambaflow.targets.hls.design import default_bundles, emit_design
from mambaflow.targets.hls.reference import reference_data
from mambaflow.targets.versal import dataflow as DF

from test_models import lively

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["tiny-mamba1", "tiny-mamba2"])
def case(request):
    m = lively(request.param, seed=11)
    return m, capture(m, "decode", progress=False)


def _regioned(d0, fork: bool = True):
    """The layer body outlined and (with `fork`) every doubly read buffer forked."""
    s = customize(copy_design(d0))
    s.outline(f"{s.top}:layer.layer", "layer_step", keep=["resid"])
    if fork:
        s.fork("layer_step:embed_resid")
        if s.design.cfg.arch == "mamba1":
            s.fork("layer_step:conv_xc")  # read by x_proj and ssm
    return s


def _refused(s, fn, *needles):
    before = str(s.module)
    with pytest.raises(ScheduleError) as e:
        fn()
    assert str(s.module) == before, "a refused primitive must leave the IR unchanged"
    for n in needles:
        assert n in str(e.value), str(e.value)
    return str(e.value)


def test_region_form_loop_around_calls(case):
    """dataflow on the top: the layer loop around the kernel calls is one process."""
    _, d0 = case
    s = customize(copy_design(d0))
    msg = _refused(s, lambda: s.dataflow(), "[region-form]", "the loop 'layer' calls", "s.outline(")
    assert "UG1399" in msg
    # legal: outline the body, fork what two processes read, then the body is a region
    s = _regioned(d0)
    s.dataflow("layer_step")
    assert [f for f in DF.check(s.module) if f.severity == "error"] == []


def test_single_reader_rule(case):
    """the residual read by norm and out_proj (HLS 200-779)."""
    _, d0 = case
    s = customize(copy_design(d0))
    s.outline(f"{s.top}:layer.layer", "layer_step", keep=["resid"])
    msg = _refused(s, lambda: s.dataflow("layer_step"), "[single-reader-writer, HLS 200-779]",
                   "'embed_resid' has 2 readers", "norm", "out_proj", "s.fork(")
    assert "in 'layer_step'" in msg
    name = s.fork("layer_step:embed_resid")
    assert name == "fork_embed_resid"
    bufs = s.get_buffers("layer_step")
    assert "embed_resid_norm" in bufs and "embed_resid_out_proj" in bufs


def test_feedback_rule(case):
    """outlining the residual copy into the region makes it write what the region's
    first process reads: a feedback."""
    _, d0 = case
    s = customize(copy_design(d0))
    s.outline(f"{s.top}:layer.layer", "layer_step")  # nothing kept: the copy is a process
    found = {f.rule for f in DF.check(s.module)}
    assert "no-feedback" not in found  # not a region yet
    s2 = customize(copy_design(d0))
    s2.outline(f"{s2.top}:layer.layer", "layer_step")
    from mambaflow.dialects import directives as D

    D.set_dataflow(funcs(s2.module)["layer_step"])
    fb = [f for f in DF.check(s2.module) if f.rule == "no-feedback"]
    assert fb and "'embed_resid' is read before it is written" in str(fb[0]) and "resid" in fb[0].processes


def test_partition_on_maxi_rule(case):
    """array_partition on an argument bound to an m_axi port (HLS 214-126)."""
    _, d0 = case
    s = customize(copy_design(d0))
    _refused(s, lambda: s.partition("in_proj:in_proj_w", "cyclic", dim=3, factor=4),
             "[no-partition-on-maxi, HLS 214-126]", "['in_proj_w']", "buffer_at")
    # legal: a local copy of the row the loop uses, partitioned
    row = s.buffer_at("in_proj:in_proj_w", "in_proj:S_i_j.i")
    s.partition(row, "cyclic", dim=3, factor=4)
    assert not [f for f in DF.check(s.module) if f.rule == "no-partition-on-maxi"]
    # the checker sees a directive set behind the schedule's back too
    from mambaflow.dialects import directives as D

    fn = funcs(s.module)["out_proj"]
    D.set_partition(D.BufferRef(fn, arg=1), "cyclic", 3, 2)
    bad = [f for f in DF.check(s.module) if f.rule == "no-partition-on-maxi"]
    assert len(bad) == 1 and "out_proj_w" in str(bad[0])


def test_one_bundle_per_process_rule(case):
    _, d0 = case
    d = copy_design(d0)
    apply_recipe("layer_pipeline", d)
    bundles = default_bundles(d)
    assert DF.enforce(d.module, bundles) is not None  # legal with a bundle per process
    shared = dict(bundles)
    shared["out_proj_w"] = shared["in_proj_w"]  # two processes of the region on one bundle
    with pytest.raises(DF.DataflowRuleError) as e:
        DF.enforce(d.module, shared, where="build")
    msg = str(e.value)
    assert "[one-bundle-per-process, HLS 200-1013]" in msg and "'gmem_in_proj'" in msg
    assert "in_proj" in msg and "out_proj" in msg and msg.startswith("build: ")



def test_the_bundle_primitive_is_read_by_the_checker_and_the_emitter(case):
    """`Schedule.bundle` puts a port on a bundle in the IR (replayable): the bundles the
    build, the checker and the estimate use follow it; a bundle two processes of a
    region share is the checker's HLS 200-1013 error; bad ports and names are refused."""
    from mambaflow.schedules import replay
    from mambaflow.targets.hls.design import emit_design

    _, d0 = case
    d = copy_design(d0)
    apply_recipe("layer_pipeline", d)
    s = customize(d)
    s.bundle("in_proj_w", "gmem_in_proj_w")
    b = default_bundles(d)
    assert b["in_proj_w"] == "gmem_in_proj_w" and DF.enforce(d.module, b) is not None
    assert "bundle=gmem_in_proj_w" in emit_design(d).source
    again = copy_design(d0)
    apply_recipe("layer_pipeline", again)
    replay(again, [s.log[-1]])
    assert default_bundles(again)["in_proj_w"] == "gmem_in_proj_w"
    s.bundle("out_proj_w", "gmem_in_proj_w")  # two processes of the region on one bundle
    with pytest.raises(DF.DataflowRuleError, match=r"one-bundle-per-process, HLS 200-1013"):
        DF.enforce(d.module, default_bundles(d))
    _refused(s, lambda: s.bundle("no_such_port", "gmem_x"), "no such top-level port")
    _refused(s, lambda: s.bundle("in_proj_w", "not a name"), "C identifier")


def test_stream_order_rule(case):
    """a stream whose consumer reads in another order than the producer writes."""
    _, d0 = case
    s = _regioned(d0)
    # norm reads its input twice (mean, then scale): not FIFO-exact
    _refused(s, lambda: s.to("fork_embed_resid:to_norm", "norm", adapt=False), "[stream-order]",
             "does not access", "FIFO-exactly")
    info = s.to("fork_embed_resid:to_norm", "norm", depth=32)  # legal: with an adapter
    assert info["consumer_adapter"] and not info["producer_adapter"]


def test_fork_refuses_a_single_reader(case):
    _, d0 = case
    s = customize(copy_design(d0))
    s.outline(f"{s.top}:layer.layer", "layer_step", keep=["resid"])
    _refused(s, lambda: s.fork("layer_step:norm_xn"), "1 reader process")


def test_outline_errors(case):
    _, d0 = case
    s = customize(copy_design(d0))
    _refused(s, lambda: s.outline(f"{s.top}:layer.layer", "norm"), "exists already")
    _refused(s, lambda: s.outline(f"{s.top}:layer.layer", "x", keep=["nope"]), "no nest named ['nope']")


@pytest.mark.parametrize("recipe", ["layer_pipeline", "accelerator"])
def test_recipes_pass_the_checker_and_csim(case, recipe, tmp_path):
    m, d0 = case
    d = copy_design(d0)
    apply_recipe(recipe, d)
    found = DF.check(d.module, default_bundles(d))
    assert [f for f in found if f.severity == "error"] == []
    assert all(f.rule == "bypass" for f in found)  # only Vitis warnings remain
    code = emit_design(d)
    assert "#pragma HLS dataflow" in code.source
    assert len({p.bundle for p in code.ports}) >= 6  # one per process, not one for all
    inputs, golden, spec = reference_data(m, d, steps=2, seed=3, **TOL)
    r = run_csim(code, tmp_path, inputs, golden, spec)
    assert r.ok, r.summary()
    assert np.abs(r.outputs["logits"]).max() > 0.1


def test_recipes_keep_the_numbers_on_llvm(case):
    """the outlined, forked, streamed design runs on the CPU with PyTorch's numbers."""
    from mambaflow.targets.llvm.jit import JitFunction

    m, d0 = case
    d = copy_design(d0)
    apply_recipe("accelerator", d)
    inputs, golden, _ = reference_data(m, d, steps=1, seed=4, **TOL)
    outs = {p.name: np.zeros(p.shape, p.np_dtype) for p in d.outputs}
    args = [np.ascontiguousarray(inputs[p.name][0] if inputs[p.name].ndim > len(p.shape) else inputs[p.name])
            for p in d.inputs]
    JitFunction(d.module, d.top)(*args, *[outs[p.name] for p in d.outputs])
    want = golden["logits"][0]
    assert np.allclose(outs["logits"], want, rtol=1e-4, atol=1e-4), np.abs(outs["logits"] - want).max()


def test_buffer_at_after_a_split_copies_the_exact_tile(case):
    """the footprint of a stepped loop ends at its last value (not ub - 1 + the inner
    extent): the on-chip copy of a weight row is the row, after the reduction was split."""
    _, d0 = case
    s = customize(copy_design(d0))
    s.split("in_proj:S_i_j.j", 16)
    row = s.buffer_at("in_proj:in_proj_w", "in_proj:S_i_j.i")
    shape = s._buffer(row, "x")[1].type.shape
    assert list(shape) == [1, 1, d0.cfg.d_model]
