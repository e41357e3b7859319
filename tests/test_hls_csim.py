"""C simulation of the emitted HLS C++ (g++ + AMD's ap_types headers) against
PyTorch and the llvm JIT.

Tolerance (float32): every element within atol + rtol*|want| with rtol = atol = 1e-5,
as the reference-model tests (tests/test_models.py); the largest errors observed on the
tiny models are ~1e-6 absolute, from different summation orders. Integer ports are
compared bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_mlir import ir

from mambaflow.flow.capture import capture
from mambaflow.models import build_model, get_config
from mambaflow.schedules import customize
from mambaflow.schedules.testing import copy_design
from mambaflow.targets.hls.csim import CsimError, run_csim
from mambaflow.targets.hls.design import emit_design
from mambaflow.targets.hls.emitter import emit_module
from mambaflow.targets.hls.reference import random_state, reference_data
from mambaflow.targets.hls.testbench import TestbenchSpec

from test_models import lively  # a tiny model moved away from its gentle init

TOL = dict(rtol=1e-5, atol=1e-5)




@pytest.fixture(scope="module", params=["tiny-mamba1", "tiny-mamba2"])
def decode_case(request):
    m = lively(request.param)
    d = capture(m, "decode", progress=False)
    return m, d


def test_decode_csim_equals_pytorch(decode_case, tmp_path):
    m, d = decode_case
    inputs, golden, spec = reference_data(m, d, steps=3, seed=1, **TOL)
    r = run_csim(emit_design(d), tmp_path, inputs, golden, spec)
    assert r.ok, r.summary()
    assert r.headers == "AMD ap_types"
    assert (tmp_path / "include" / "etc" / "ap_private.h").exists()  # what it compiled against
    ports = {c.port for c in r.compares}
    assert "logits" in ports and "ssm_state_out" in ports
    assert len([c for c in r.compares if c.port == "logits"]) == 3  # every step compared
    # the csim outputs read back agree with PyTorch too (the comparison is not only in C++)
    assert np.allclose(r.outputs["logits"], golden["logits"][-1], **TOL)
    assert np.abs(r.outputs["logits"]).max() > 0.1  # non-trivial values


def test_csim_catches_a_wrong_value(decode_case, tmp_path):
    m, d = decode_case
    inputs, golden, spec = reference_data(m, d, steps=2, seed=2, **TOL)
    golden["logits"] = golden["logits"].copy()
    golden["logits"][1, 0, 5] += 1e-3
    golden["ssm_state_out"] = golden["ssm_state_out"].copy()
    golden["ssm_state_out"][0] *= 1.001  # layer 0's slice of the stacked state
    r = run_csim(emit_design(d), tmp_path, inputs, golden, spec)
    assert not r.ok
    bad = {(c.port, c.step): c.mismatches for c in r.compares if c.mismatches}
    assert bad[("logits", 1)] == 1 and ("logits", 0) not in bad
    assert bad[("ssm_state_out", 1)] > 0


def test_scheduled_decode_csim(tmp_path):
    m = lively("tiny-mamba2", seed=3)
    d = copy_design(capture(m, "decode", progress=False))
    s = customize(d)
    jo, ji = s.split("in_proj:S_i_j.j", 16)
    s.pipeline(ji, ii=1)
    s.reorder("out_proj:S_i_j.j", "out_proj:S_i_j.i")
    s.unroll("out_proj:S_i_j.i", 4)
    s.partition("ssm:alloc0", "cyclic", dim=1, factor=2)
    s.storage("ssm:alloc1", "uram")
    s.outline("decode:layer.layer", "layer_step", keep=["resid"])
    s.inline("norm_f")
    code = emit_design(d)
    assert any("pipeline" in p for p in code.pragmas["in_proj"])
    inputs, golden, spec = reference_data(m, d, steps=2, **TOL)
    r = run_csim(code, tmp_path, inputs, golden, spec)
    assert r.ok, r.summary()


def test_prefill_csim_equals_pytorch(tmp_path):
    m = lively("tiny-mamba1", seed=4)
    d = capture(m, "prefill", T=6, progress=False)
    inputs, golden, spec = reference_data(m, d, **TOL)
    r = run_csim(emit_design(d), tmp_path, inputs, golden, spec)
    assert r.ok, r.summary()


def test_verify_csim_equals_llvm_jit(tmp_path):
    """Tree verify (scf.if choosing a parent's state, subviews): csim vs the llvm JIT."""
    from mambaflow.models.common import tree_conv_windows
    from mambaflow.targets.llvm.jit import JitFunction

    m = lively("tiny-mamba2", seed=5)
    cfg = m.config
    d = capture(m, "verify", T=6, progress=False)
    parents = [-1, 0, 0, 1, 3, 2]
    st = random_state(cfg, 5)
    inputs = {"tokens": np.array([3, 5, 7, 9, 11, 13], np.int64),
              "windows": tree_conv_windows(parents, cfg.d_conv).numpy().astype(np.int64),
              "parents": np.array(parents, np.int64)}
    inputs["conv_state"] = st.conv[:, 0].numpy().copy()
    inputs["ssm_state"] = st.ssm[:, 0].numpy().copy()
    inputs.update(zip(d.weight_names, d.weights(m)))
    outs = {p.name: np.zeros(p.shape, np.float32) for p in d.outputs}
    JitFunction(d.module, d.top)(*[np.ascontiguousarray(inputs[p.name]) for p in d.inputs],
                                 *[outs[p.name] for p in d.outputs])
    code = emit_design(d)
    assert "nullptr" in code.source  # the parent-or-committed state pointer
    r = run_csim(code, tmp_path, inputs, outs, TestbenchSpec(**TOL))
    assert r.ok, r.summary()


# -------------------------------------------------------------------- streams

def _sd():
    return pytest.importorskip("mambaflow.dialects.stream", reason="the mf stream dialect is not installed")


def _stream_module(n: int, depth: int, swap_reads: bool = False, dataflow: bool = True):
    from mambaflow.flow.mlir import new_context

    ctx = new_context()
    _sd().ensure_loaded(ctx)
    S = f"!mf.stream<f32, {n} : i64>"
    reads = ["%sa", "%sb"] if not swap_reads else ["%sb", "%sa"]
    src = f"""
func.func @producer(%x: memref<{n}xf32>, %sa: {S}, %sb: {S}) {{
  affine.for %i = 0 to {n} {{
    %v = affine.load %x[%i] : memref<{n}xf32>
    %c = arith.constant 2.0 : f32
    %w = arith.mulf %v, %c : f32
    "mf.stream_write"(%sa, %w) : ({S}, f32) -> ()
  }} {{loop_name = "i", op_name = "S_i", pipeline_ii = 1 : i64}}
  affine.for %i = 0 to {n} {{
    %v = affine.load %x[%i] : memref<{n}xf32>
    "mf.stream_write"(%sb, %v) : ({S}, f32) -> ()
  }} {{loop_name = "i", op_name = "S_i_1", pipeline_ii = 1 : i64}}
  return
}}
func.func @consumer(%sa: {S}, %sb: {S}, %y: memref<{n}xf32>) {{
  affine.for %i = 0 to {n} {{
    %a = "mf.stream_read"({reads[0]}) : ({S}) -> f32
    affine.store %a, %y[%i] : memref<{n}xf32>
  }} {{loop_name = "i", op_name = "S_i"}}
  affine.for %i = 0 to {n} {{
    %b = "mf.stream_read"({reads[1]}) : ({S}) -> f32
    %a = affine.load %y[%i] : memref<{n}xf32>
    %s = arith.addf %a, %b : f32
    affine.store %s, %y[%i] : memref<{n}xf32>
  }} {{loop_name = "i", op_name = "S_i_1", pipeline_ii = 1 : i64}}
  return
}}
func.func @top(%x: memref<{n}xf32>, %y: memref<{n}xf32>) attributes {{mf.top{', dataflow' if dataflow else ''}}} {{
  %sa = "mf.stream_create"() {{depth = {depth} : i64, name = "twice"}} : () -> {S}
  %sb = "mf.stream_create"() {{depth = {depth} : i64, name = "same"}} : () -> {S}
  call @producer(%x, %sa, %sb) : (memref<{n}xf32>, {S}, {S}) -> ()
  call @consumer(%sa, %sb, %y) : ({S}, {S}, memref<{n}xf32>) -> ()
  return
}}"""
    with ctx:
        return ir.Module.parse(src)


NAMES = {"producer": ["x", "a", "b"], "consumer": ["a", "b", "y"], "top": ["x", "y"]}


def test_streamed_two_kernel_dataflow_csim(tmp_path):
    mod = _stream_module(16, depth=2)
    code = emit_module(mod, arg_names=NAMES)
    # "twice" fills to its depth before the consumer starts; "same" then streams through
    # in lock step, one value in flight
    assert code.uses_streams and code.fifo_peaks == {"top": {"twice": 2, "same": 1}}
    src = code.source
    assert "void producer(\n    const float x[16],\n    hls::stream<float> &a,\n    hls::stream<float> &b)" in src
    assert 'hls::stream<float> twice("twice");\n#pragma HLS stream variable=twice depth=2' in src
    assert "a.write(v" in src and "= a.read();" in src
    x = np.linspace(-1, 1, 16).astype(np.float32)
    r = run_csim(code, tmp_path, {"x": x}, {"y": 3 * x}, TestbenchSpec(rtol=0.0, atol=0.0))
    assert r.ok, r.summary()


def test_stream_deadlock_is_reported_at_emission():
    mod = _stream_module(16, depth=2, swap_reads=True)  # consumer waits on 'same', producer on 'twice'
    with pytest.raises(_sd().DeadlockError, match="deadlock"):
        emit_module(mod, arg_names=NAMES)


def test_stream_depth_checked_in_sequential_csim(tmp_path):
    """Outside a dataflow region a FIFO holds everything written before it is read:
    a depth smaller than that aborts the csim (the depth check of the project's hls_stream.h)."""
    mod = _stream_module(16, depth=4, dataflow=False)
    code = emit_module(mod, arg_names=NAMES)
    assert ".set_depth(4)" in code.source
    x = np.ones(16, np.float32)
    with pytest.raises(CsimError, match="write beyond depth 4"):
        run_csim(code, tmp_path, {"x": x}, {"y": 3 * x}, TestbenchSpec())
