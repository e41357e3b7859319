"""The QoR estimate (targets/estimate): II reasons, dataflow regions, FIFO stalls, the
direction of every primitive's effect, the memory bound, and Mamba designs end to end.

Unit cases are small kernels written as IR, scheduled with the real primitives; the
expected numbers follow from the model's stated latencies (targets/estimate/latency.py).
"""

from __future__ import annotations

import json
import math

import pytest
from torch_mlir import ir

from mambaflow.cli import main
from mambaflow.dialects.stream import ensure_loaded
from mambaflow.flow.mlir import new_context
from mambaflow.schedules import customize
from mambaflow.targets.estimate import BURST_EFFICIENCY, estimate, estimate_model
from mambaflow.targets.estimate import latency as LT


def parse(text: str) -> ir.Module:
    ctx = new_context()
    ensure_loaded(ctx)
    with ctx:
        return ir.Module.parse(text)


def loop(est, path_end: str):
    got = [l for l in est.loops if l.path.endswith(path_end)]
    assert got, [l.path for l in est.loops]
    return got[0]


# an accumulation into on-chip memory carried across the pipelined loop
RECURRENCE = """
func.func @k(%a: memref<1024xf32>, %out: memref<4xf32>) attributes {mf.top} {
  %acc = memref.alloc() {buffer_name = "acc"} : memref<4xf32>
  affine.for %i = 0 to 1024 {
    %x = affine.load %a[%i] : memref<1024xf32>
    %s = affine.load %acc[0] : memref<4xf32>
    %y = arith.addf %s, %x : f32
    affine.store %y, %acc[0] : memref<4xf32>
  } {loop_name = "i", op_name = "S_i", pipeline_ii = 1 : i64}
  affine.for %i = 0 to 4 {
    %v = affine.load %acc[%i] : memref<4xf32>
    affine.store %v, %out[%i] : memref<4xf32>
  } {loop_name = "i", op_name = "S_o"}
  return
}
"""

# 16 reads of an on-chip buffer per iteration (the inner loop unrolled by the pipeline)
PORTS = """
func.func @k(%a: memref<64x16xf32>, %out: memref<64xf32>) attributes {mf.top} {
  %buf = memref.alloc() {buffer_name = "w"} : memref<64x16xf32>
  affine.for %i = 0 to 64 {
    affine.for %j = 0 to 16 {
      %v = affine.load %a[%i, %j] : memref<64x16xf32>
      affine.store %v, %buf[%i, %j] : memref<64x16xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_c"}
  affine.for %i = 0 to 64 {
    affine.for %j = 0 to 16 {
      %v = affine.load %buf[%i, %j] : memref<64x16xf32>
      %w = arith.mulf %v, %v : f32
      affine.store %w, %out[%i] : memref<64xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i", pipeline_ii = 1 : i64}
  return
}
"""

# 16 reads of an m_axi port per iteration: contiguous (a[i, j]) or strided (b[j, i])
MAXI = """
func.func @k(%a: memref<256x16xf32>, %b: memref<16x256xf32>, %out: memref<256xf32>) attributes {mf.top} {
  affine.for %i = 0 to 256 {
    affine.for %j = 0 to 16 {
      %u = affine.load %a[%i, %j] : memref<256x16xf32>
      %v = affine.load %b[%j, %i] : memref<16x256xf32>
      %w = arith.mulf %u, %v : f32
      affine.store %w, %out[%i] : memref<256xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i", pipeline_ii = 1 : i64}
  return
}
"""

# a long independent float chain per element: compute bound, not pipelined
CHAIN = """
func.func @k(%a: memref<64xf32>, %out: memref<64xf32>) attributes {mf.top} {
  affine.for %i = 0 to 64 {
    %x = affine.load %a[%i] : memref<64xf32>
    %e = math.exp %x : f32
    %l = math.log1p %e : f32
    %m = arith.mulf %l, %x : f32
    affine.store %m, %out[%i] : memref<64xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}
"""


# a dot product written out: 8 loads at neighbouring constant offsets per copy of the
# unrolled j, 64 bytes of `a` per iteration (one 512-bit beat), 64 reads of `q`
DOT = """
func.func @k(%a: memref<64x64xi8>, %qin: memref<8x8xi8>, %out: memref<64x8xi8>) attributes {mf.top} {
  %q = memref.alloc() {buffer_name = "q"} : memref<8x8xi8>
  affine.for %r = 0 to 8 {
    affine.for %c = 0 to 8 {
      %v = affine.load %qin[%r, %c] : memref<8x8xi8>
      affine.store %v, %q[%r, %c] : memref<8x8xi8>
    } {loop_name = "c"}
  } {loop_name = "r", op_name = "S_c"}
  affine.for %i = 0 to 64 {
    affine.for %j = 0 to 8 {
      %w0 = affine.load %a[%i, %j * 8 + 0] : memref<64x64xi8>
      %w1 = affine.load %a[%i, %j * 8 + 1] : memref<64x64xi8>
      %w2 = affine.load %a[%i, %j * 8 + 2] : memref<64x64xi8>
      %w3 = affine.load %a[%i, %j * 8 + 3] : memref<64x64xi8>
      %w4 = affine.load %a[%i, %j * 8 + 4] : memref<64x64xi8>
      %w5 = affine.load %a[%i, %j * 8 + 5] : memref<64x64xi8>
      %w6 = affine.load %a[%i, %j * 8 + 6] : memref<64x64xi8>
      %w7 = affine.load %a[%i, %j * 8 + 7] : memref<64x64xi8>
      %q0 = affine.load %q[%j, 0] : memref<8x8xi8>
      %q1 = affine.load %q[%j, 1] : memref<8x8xi8>
      %q2 = affine.load %q[%j, 2] : memref<8x8xi8>
      %q3 = affine.load %q[%j, 3] : memref<8x8xi8>
      %q4 = affine.load %q[%j, 4] : memref<8x8xi8>
      %q5 = affine.load %q[%j, 5] : memref<8x8xi8>
      %q6 = affine.load %q[%j, 6] : memref<8x8xi8>
      %q7 = affine.load %q[%j, 7] : memref<8x8xi8>
      %p0 = arith.muli %w0, %q0 : i8
      %p1 = arith.muli %w1, %q1 : i8
      %p2 = arith.muli %w2, %q2 : i8
      %p3 = arith.muli %w3, %q3 : i8
      %p4 = arith.muli %w4, %q4 : i8
      %p5 = arith.muli %w5, %q5 : i8
      %p6 = arith.muli %w6, %q6 : i8
      %p7 = arith.muli %w7, %q7 : i8
      %s0 = arith.addi %p0, %p0 : i8
      %s1 = arith.addi %s0, %p1 : i8
      %s2 = arith.addi %s1, %p2 : i8
      %s3 = arith.addi %s2, %p3 : i8
      %s4 = arith.addi %s3, %p4 : i8
      %s5 = arith.addi %s4, %p5 : i8
      %s6 = arith.addi %s5, %p6 : i8
      %s7 = arith.addi %s6, %p7 : i8
      affine.store %s7, %out[%i, %j] : memref<64x8xi8>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i", pipeline_ii = 1 : i64}
  return
}
"""


def test_recurrence_sets_the_ii():
    est = estimate(parse(RECURRENCE), "vck190")
    l = loop(est, "S_i:i")
    assert l.ii_req == 1 and l.reason == "recurrence"
    # load (LOAD_LATENCY) -> fadd (FP_LATENCY) -> store (a cycle), then the next load
    assert l.ii == LT.LOAD_LATENCY + LT.FP_LATENCY["arith.addf"] + 1
    assert "acc" in l.detail
    assert l.cycles == (1024 - 1) * l.ii + l.depth + LT.LOOP_OVERHEAD


def test_port_conflict_and_partitioning_removes_it():
    m = parse(PORTS)
    l = loop(estimate(m, "vck190"), "S_i:i")
    assert (l.ii, l.reason) == (8, "ports") and "w" in l.detail  # 16 reads over 2 BRAM ports
    s = customize(m)
    s.partition("k:w", "cyclic", dim=2, factor=8)
    l8 = loop(estimate(s.module, "vck190"), "S_i:i")
    assert l8.ii == 1 and l8.reason is None  # 16 reads over 8 banks x 2 ports
    s.partition("k:w", "cyclic", dim=2, factor=4)
    l4 = loop(estimate(s.module, "vck190"), "S_i:i")
    assert (l4.ii, l4.reason) == (2, "ports")


def test_m_axi_beats_bound_the_ii():
    est = estimate(parse(MAXI), "vck190")
    l = loop(est, "S_i:i")
    # a[i, 0:16] is 16 x 32 bits: one 512-bit beat; b[0:16, i] is 16 beats; one bundle
    assert (l.ii, l.reason) == (17, "m_axi") and "17 AXI read beats" in l.detail
    # the burst latency is paid once, in the depth
    assert l.depth >= LT.MAXI_LATENCY


def test_neighbouring_accesses_share_beats_and_banks():
    """The accesses of one iteration are counted together: a dot product's 8 loads at
    neighbouring offsets of `a` (over the 8 copies of j: 64 contiguous bytes) share one
    512-bit beat, and the 64 reads of `q` spread over the banks of both partitioned
    dimensions (j's copies along dim 1, the 8 offsets along dim 2)."""
    m = parse(DOT)
    l = loop(estimate(m, "vck190"), "S_i:i")
    assert (l.ii, l.reason) == (32, "ports") and "q" in l.detail  # 64 reads, one BRAM, 2 ports
    s = customize(m)
    s.partition("k:q", "cyclic", dim=1, factor=8)
    l1 = loop(estimate(s.module, "vck190"), "S_i:i")
    assert (l1.ii, l1.reason) == (4, "ports")  # 8 banks by j, each read at 8 offsets
    s.partition("k:q", "cyclic", dim=2, factor=8)
    l2 = loop(estimate(s.module, "vck190"), "S_i:i")
    assert l2.ii == 1 and l2.reason is None  # 64 banks; `a` takes one beat an iteration
    # feed_pipelines finds both dimensions on its own (it schedules kernels, not a top)
    from mambaflow.dialects import directives as D
    from mambaflow.flow.mlir import funcs, walk
    from mambaflow.schedules.recipes import feed_pipelines

    m2 = parse(DOT.replace(" attributes {mf.top}", ""))
    feed_pipelines(m2, cap=64)
    fn = funcs(m2)["k"]
    q = next(o for o in walk(fn) if o.name == "memref.alloc")
    assert sorted((p.dim, p.factor) for p in D.partitions_of(D.BufferRef(fn, alloc_op=q))) == [(1, 8), (2, 8)]


def test_unroll_by_two_halves_a_compute_bound_loop():
    m = parse(CHAIN)
    base = loop(estimate(m, "vck190"), "S_i:i")
    s = customize(m)
    s.unroll("k:S_i.i", 2)
    half = loop(estimate(s.module, "vck190"), "S_i:i")
    assert half.cycles == pytest.approx(base.cycles / 2, rel=0.05)
    s.pipeline("k:S_i.i", 1)
    piped = loop(estimate(s.module, "vck190"), "S_i:i")
    assert piped.ii is not None and piped.cycles < half.cycles / 4


def test_pipeline_depth_is_the_op_latencies():
    est = estimate(parse(CHAIN), "vck190")
    l = loop(est, "S_i:i")
    chain = LT.LOAD_LATENCY + LT.FP_LATENCY["math.exp"] + LT.FP_LATENCY["math.log1p"] + LT.FP_LATENCY["arith.mulf"] + 1
    assert l.depth == chain and l.cycles == 64 * (chain + LT.LOOP_OVERHEAD) + LT.LOOP_OVERHEAD


def _region(p_tail: int, c_head: int, depth: int) -> str:
    """A dataflow region: P streams 256 values to C, then works `p_tail` iterations
    more; C first works `c_head` iterations, then reads the stream."""
    return f"""
func.func @P(%x: memref<256xf32>, %s: !mf.stream<f32, 256 : i64>, %o: memref<{p_tail}xf32>) {{
  affine.for %i = 0 to 256 {{
    %v = affine.load %x[%i] : memref<256xf32>
    "mf.stream_write"(%s, %v) : (!mf.stream<f32, 256 : i64>, f32) -> ()
  }} {{loop_name = "i", op_name = "S_w", pipeline_ii = 1 : i64}}
  affine.for %i = 0 to {p_tail} {{
    %v = affine.load %x[0] : memref<256xf32>
    %w = arith.mulf %v, %v : f32
    affine.store %w, %o[%i] : memref<{p_tail}xf32>
  }} {{loop_name = "i", op_name = "S_t", pipeline_ii = 1 : i64}}
  return
}}
func.func @C(%s: !mf.stream<f32, 256 : i64>, %x: memref<256xf32>, %y: memref<256xf32>, %o: memref<{c_head}xf32>) {{
  affine.for %i = 0 to {c_head} {{
    %v = affine.load %x[0] : memref<256xf32>
    %w = arith.mulf %v, %v : f32
    affine.store %w, %o[%i] : memref<{c_head}xf32>
  }} {{loop_name = "i", op_name = "S_h", pipeline_ii = 1 : i64}}
  affine.for %i = 0 to 256 {{
    %v = "mf.stream_read"(%s) : (!mf.stream<f32, 256 : i64>) -> f32
    affine.store %v, %y[%i] : memref<256xf32>
  }} {{loop_name = "i", op_name = "S_r", pipeline_ii = 1 : i64}}
  return
}}
func.func @region(%x: memref<256xf32>, %x2: memref<256xf32>, %y: memref<256xf32>, %o1: memref<{p_tail}xf32>,
                  %o2: memref<{c_head}xf32>) attributes {{dataflow}} {{
  %s = "mf.stream_create"() {{depth = {depth} : i64, name = "s"}} : () -> !mf.stream<f32, 256 : i64>
  call @P(%x, %s, %o1) : (memref<256xf32>, !mf.stream<f32, 256 : i64>, memref<{p_tail}xf32>) -> ()
  call @C(%s, %x2, %y, %o2) : (!mf.stream<f32, 256 : i64>, memref<256xf32>, memref<256xf32>, memref<{c_head}xf32>) -> ()
  return
}}
func.func @top(%x: memref<256xf32>, %x2: memref<256xf32>, %y: memref<256xf32>, %o1: memref<{p_tail}xf32>,
               %o2: memref<{c_head}xf32>) attributes {{mf.top}} {{
  call @region(%x, %x2, %y, %o1, %o2) : (memref<256xf32>, memref<256xf32>, memref<256xf32>, memref<{p_tail}xf32>, memref<{c_head}xf32>) -> ()
  return
}}
"""


def test_the_slowest_process_sets_the_region_rate():
    est = estimate(parse(_region(4000, 10, 256)), "vck190")
    r = est.regions[0]
    p, c = est.kernel("P").cycles, est.kernel("C").cycles
    assert r.slowest == "P" and p > 10 * c
    assert p <= r.latency <= p + c  # C runs alongside P: only its drain adds
    assert r.latency < p + c - 100 and not r.stalls


def test_a_shallow_fifo_stalls_and_a_deeper_one_removes_it():
    shallow = estimate(parse(_region(2000, 2000, 2)), "vck190").regions[0]
    deep = estimate(parse(_region(2000, 2000, 256)), "vck190").regions[0]
    assert [s.stream for s in shallow.stalls] == ["s"] and shallow.stalls[0].producer == "P"
    # P cannot run ahead of C by more than 2 values, so its tail waits for C's reads
    assert shallow.stalls[0].cycles > 1500
    assert not deep.stalls
    assert deep.latency < shallow.latency - 1500


def test_memory_bound_uses_the_board_bandwidth():
    m = parse(MAXI)
    est = estimate(m, "vck190")
    read = sum(d["read"] for d in est.bytes_per_token.values())
    assert read == (256 * 16 + 16 * 256) * 4  # every element of a and b once
    mem = next(iter(est.memories.values()))
    assert mem["seconds"] == pytest.approx(mem["bytes"] / (mem["bandwidth_gbs"] * 1e9 * BURST_EFFICIENCY))
    assert est.tokens_per_s == min(est.compute_tokens_per_s, est.memory_tokens_per_s)
    assert est.bound == "compute"


def test_mamba_decode_end_to_end_and_the_layer_count():
    one = estimate_model("tiny-mamba2", board="vck190", schedule="accelerator", layers=1)
    four = estimate_model("tiny-mamba2", board="vck190", schedule="accelerator", layers=4)
    assert four.layers == 4 and one.layers == 1
    # the layer loop is the only thing that grows: per-layer cycles and bytes stay
    assert four.layer_cycles == one.layer_cycles
    assert four.cycles_per_token - one.cycles_per_token == 3 * (one.layer_cycles + LT.LOOP_OVERHEAD)
    assert four.resources == one.resources
    d = four.to_dict()
    assert d["bound"] in ("compute", "memory") and d["kernels"] and json.loads(four.to_json())["layers"] == 4
    r = four.regions[0]
    assert r.name == "layer_step" and r.slowest in r.processes


def test_schedules_move_the_estimate_the_right_way():
    none = estimate_model("tiny-mamba1", board="vck190", schedule=None)
    acc = estimate_model("tiny-mamba1", board="vck190", schedule="accelerator")
    assert acc.compute_tokens_per_s > 1.5 * none.compute_tokens_per_s
    assert acc.resources["dsp"] > none.resources["dsp"]


def test_verify_and_prefill_count_their_tokens():
    v = estimate_model("tiny-mamba1", board="vck190", phase="verify", T=4, schedule="tree_buffer",
                       tokens_per_pass=2.5)
    assert v.tokens_per_pass == 2.5
    assert v.compute_tokens_per_s == pytest.approx(2.5 * v.clock_mhz * 1e6 / (v.cycles_per_token * 2.5))
    p = estimate_model("tiny-mamba1", board="vck190", phase="prefill", T=8)
    assert p.tokens_per_pass == 8


def test_cli_estimate_prints_a_table_and_json(capsys):
    assert main(["estimate", "--model", "tiny-mamba1", "--board", "vhk158", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["board"] == "vhk158" and d["tokens_per_s"] > 0 and math.isfinite(d["cycles_per_token"])
    assert main(["estimate", "--model", "tiny-mamba1", "--accepted", "2"]) == 2
    assert "--phase verify" in capsys.readouterr().err
    assert main(["estimate", "--model", "no-such-model"]) == 2


# ------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def lightmamba():
    from mambaflow.schedules.lightmamba import LIGHTMAMBA

    L = LIGHTMAMBA
    return L, estimate_model(L["model"], board=L["board"], quant=L["quant"], schedule="lightmamba",
                             clock_mhz=L["clock_mhz"], beat_bits=L["beat_bits"])


def test_lightmamba_mirror_has_the_published_structure(lightmamba):
    """The mirror's linear layers take one 256-bit beat (64 4-bit weights) a cycle at
    II=1 from m_axi, with no on-chip weight copy, in one pipeline over all the rows (the
    rows flattened with their 64-MAC steps), and the weights are the off-chip bytes."""
    L, e = lightmamba
    # rows x (reduction / 64): in_proj 10576 x 2560, out_proj 2560 x 5120, lm_head 50288 (padded vocab) x 2560
    for k, steps in (("in_proj", 10576 * 2560 // 64), ("out_proj", 2560 * 5120 // 64), ("lm_head", 50288 * 2560 // 64)):
        macs = [l for l in e.kernel(k).loops if l.ii == 1 and l.ii_req == 1 and l.path.endswith("_fused")
                and l.trip == steps]
        assert macs, [(l.path, l.ii, l.trip) for l in e.kernel(k).loops]
    assert not [l for l in e.loops if l.reason == "m_axi"]
    mb = sum(m["bytes"] for m in e.memories.values()) / 1e6
    # 64 layers x (in_proj 10576 x 2560 + out_proj 2560 x 5120) 4-bit weights and the
    # 4-bit group shifts (one per 8 weights, two terms), plus lm_head and the states
    weights = 64 * (10576 * 2560 + 2560 * 5120) * 0.5 * (1 + 2 / 8) / 1e6
    assert weights < mb < 1.2 * weights + 200


def test_lightmamba_calibration(lightmamba):
    """The estimate of the mirror against LightMamba's measured 7.21 tokens/s (25%) and
    its 228 DSP / 107k LUT / 456 BRAM (30%), with no per-design factor (the one global
    factor is BURST_EFFICIENCY, and the mirror is compute bound)."""
    L, e = lightmamba
    assert abs(e.tokens_per_s / L["tokens_per_s"] - 1) <= 0.25, e.table()
    assert abs(e.resources["dsp"] / L["dsp"] - 1) <= 0.30
    assert abs(e.resources["lut"] / L["lut"] - 1) <= 0.30
    assert abs(e.resources["bram18k"] / 2 / L["bram"] - 1) <= 0.30


def test_lightmamba_schedule_keeps_the_numbers_bit_for_bit(tmp_path):
    """The calibration recipe is a real schedule: on a W4A4 Mamba2 its llvm build and its
    C simulation equal the integer reference bit for bit, and it passes the dataflow rules."""
    import shutil

    import numpy as np
    import torch

    from mambaflow.models import build_model, get_config
    from mambaflow.quant.flow import capture_quantized, example_env, layer_values, run_csim, run_llvm
    from mambaflow.quant.ptq import quantize
    from mambaflow.quant.schemes import W4A4
    from mambaflow.schedules.lightmamba import lightmamba_schedule
    from mambaflow.targets.versal import dataflow as DF

    torch.manual_seed(0)
    qm = quantize(build_model(get_config("tiny-mamba2")), W4A4,
                  torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(1)))
    d = capture_quantized(qm, "model")
    s = lightmamba_schedule(d)
    assert {e["op"] for e in s.log} >= {"split", "pipeline", "partition", "buffer_at", "dataflow"}
    assert not [f for f in DF.check(d.module) if f.severity == "error"]
    tok, st = example_env(qm)
    vals, ref = layer_values(qm, d, tok, st)
    out = run_llvm(d, vals)
    for k, v in ref.items():
        assert np.array_equal(out[k].astype(np.int64), v.numpy().astype(np.int64)), k
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: HLS csim not run")
    r = run_csim(d, vals, ref, tmp_path / "csim")
    assert r.ok, r.summary()
