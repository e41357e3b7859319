"""The emitter's resource count (DSP, LUT, FF, BRAM18K, URAM) on small hand-built kernels,
against values computed by hand from the table in `targets.hls.resources`, and the fit
check's shares and its message when a design does not fit."""

from __future__ import annotations

import pytest
from torch_mlir import ir

from mambaflow.dialects import directives as D
from mambaflow.flow.mlir import funcs, new_context
from mambaflow.targets.hls.resources import INTERFACE, estimate_resources
from mambaflow.targets.versal import Board, check_fit, get_board

IR = """
func.func @mac(%a: memref<16xf32>, %b: memref<16xf32>, %o: memref<1xf32>) {
  %acc = memref.alloc() : memref<1xf32>
  affine.for %i = 0 to 16 {
    %x = affine.load %a[%i] : memref<16xf32>
    %y = affine.load %b[%i] : memref<16xf32>
    %p = arith.mulf %x, %y : f32
    %s = affine.load %acc[0] : memref<1xf32>
    %t = arith.addf %s, %p : f32
    affine.store %t, %acc[0] : memref<1xf32>
  } {unroll = 4 : i64}
  return
}
func.func @w4(%w: memref<4x8xi4>, %x: memref<8xi8>, %o: memref<4xi32>) {
  affine.for %r = 0 to 4 {
    affine.for %i = 0 to 8 {
      %wi = affine.load %w[%r, %i] : memref<4x8xi4>
      %we = arith.extsi %wi : i4 to i32
      %xi = affine.load %x[%i] : memref<8xi8>
      %xe = arith.extsi %xi : i8 to i32
      %p = arith.muli %we, %xe : i32
      %a = affine.load %o[%r] : memref<4xi32>
      %s = arith.addi %a, %p : i32
      affine.store %s, %o[%r] : memref<4xi32>
    }
  } {pipeline_ii = 1 : i64}
  return
}
func.func @wide(%a: memref<4xi16>, %b: memref<4xi16>, %o: memref<4xi32>) {
  affine.for %i = 0 to 4 {
    %x = affine.load %a[%i] : memref<4xi16>
    %xe = arith.extsi %x : i16 to i32
    %y = affine.load %b[%i] : memref<4xi16>
    %ye = arith.extsi %y : i16 to i32
    %p = arith.muli %xe, %ye : i32
    %c3 = arith.constant 3 : i32
    %q = arith.muli %p, %c3 : i32
    %sh = arith.shli %q, %c3 : i32
    %sv = arith.shrsi %sh, %p : i32
    %c = arith.cmpi slt, %sv, %p : i32
    %m = arith.select %c, %sv, %q : i32
    affine.store %m, %o[%i] : memref<4xi32>
  }
  return
}
func.func @bufs() {
  %r = memref.alloc() : memref<64x16xf32>
  %l = memref.alloc() : memref<1024xf32>
  %b = memref.alloc() {buffer_name = "tile"} : memref<4096xf32>
  return
}
"""


@pytest.fixture(scope="module")
def est():
    ctx = new_context()
    with ctx, ir.Location.unknown():
        m = ir.Module.parse(IR)
        fs = funcs(m)
        r, l, _ = [op.operation for op in fs["bufs"].regions[0].blocks[0].operations][:3]
        D.set_partition(r, "complete", dim=0)
        D.set_storage(l, "lutram")
        e = estimate_resources(m, fs, "mac")
    e.maxi_bundles = 2
    yield e


def _k(e, name):
    return next(k for k in e.all_kernels if k.name == name)


def test_float_mac_unrolled_by_4(est):
    k = _k(est, "mac")
    # 4 copies of mulf + addf on DSPFP32: 8 x (1 DSP, 32 LUT, 64 FF)
    assert k.ops == {"arith.mulf": 4, "arith.addf": 4}
    assert k.dsp == 8
    assert k.lut_by == {"operators": 8 * 32,
                        "loop control": 2 * 3 + 8,   # 16 / 4 = 4 iterations: a 3-bit counter
                        "control": 20,               # the function's handshake
                        "lutram": 1}                 # the 32-bit accumulator
    assert k.ff_by == {"operators": 8 * 64, "loop control": 3 + 4, "control": 10}
    assert (k.lut, k.ff, k.max_copies) == (291, 529, 4)


def test_w4_mac_in_a_pipeline_is_built_in_luts(est):
    k = _k(est, "w4")
    # the inner loop is fully unrolled by the pipeline: 8 copies; the i4 x i8 multiply is
    # narrow (4 significant bits) so it is 4*8 LUTs and a 12-bit product register
    assert k.dsp == 0 and k.max_copies == 8
    assert k.lut_by == {"operators": 8 * (4 * 8) + 8 * 32, "loop control": 2 * 3 + 8, "control": 20}
    assert k.ff_by == {"operators": 8 * 12 + 8 * 32, "loop control": 3 + 4, "control": 10}
    assert (k.lut, k.ff) == (546, 369)


def test_integer_operator_rules(est):
    k = _k(est, "wide")
    # i16 x i16 on one DSP58 (FF 32); x3 a shift-add (32 LUT, 32 FF); shl by a constant
    # is wiring; a variable shift is a 32 x 5 / 2 LUT barrel (32 FF); cmpi 32 LUT, 1 FF;
    # select 32 LUT, 32 FF; extensions cost nothing
    assert k.dsp == 1
    assert k.lut_by["operators"] == 32 + 80 + 32 + 32
    assert k.ff_by["operators"] == 32 + 32 + 32 + 1 + 32
    assert (k.lut, k.ff) == (176 + 14 + 20, 129 + 7 + 10)


def test_buffers_to_registers_lutram_bram(est):
    k = _k(est, "bufs")
    by = {b.name: b for b in k.buffers}
    assert by["alloc0"].storage == "registers" and k.ff_by["registers"] == 64 * 16 * 32
    assert by["alloc1"].storage == "lutram" and k.lut_by["lutram"] == 1024 * 32 // 32
    assert by["tile"].storage == "bram" and by["tile"].bram18k == 8  # 4096 x 32: 8 x (512x36)
    assert (k.bram18k, k.uram) == (8, 0)


def test_interface_and_totals(est):
    i = _k(est, INTERFACE)
    # 2 m_axi bundles (2 BRAM18K, 1000 LUT, 1500 FF each) + s_axilite with 3 arguments of @mac
    assert (i.bram18k, i.lut, i.ff) == (4, 2 * 1000 + 100 + 3 * 16, 2 * 1500 + 100 + 3 * 64)
    assert est.dsp == 8 + 0 + 1
    assert est.lut == 291 + 546 + 210 + (1024 + 20) + 2148
    assert est.ff == 529 + 369 + 146 + (32768 + 10) + 3292
    assert (est.bram18k, est.uram) == (8 + 4, 0)


def test_fit_shares_and_no_advice_when_it_fits(est):
    rep = check_fit(est, get_board("vck190"))
    assert [(i.resource, i.used, i.available) for i in rep.items] == [
        ("DSP", 9, 1968), ("LUT", 4239, 899_840), ("FF", 37_114, 1_799_680), ("BRAM18K", 12, 1934), ("URAM", 0, 463)]
    assert rep.item("FF").utilization == pytest.approx(37_114 / 1_799_680)
    assert rep.fits and rep.advice == [] and "does not fit" not in rep.table()
    assert "  FF              37,114  1,799,680    2.1%" in rep.table()


def _board(**kw):
    base = dict(name="small", part="xcvc1902-vsva2197-2MP-e-S", platform="xilinx_vck190_base_202320_1",
                dsp=1968, lut=899_840, ff=1_799_680, bram36=967, uram=463, clock_mhz=100.0, io_memory="DDR",
                weight_memories=("DDR",), memories=get_board("vck190").memories[:1])
    return Board(**(base | kw))


def test_does_not_fit_names_resource_kernel_and_knob(est):
    rep = check_fit(est, _board(dsp=4, ff=30_000, bram36=3))
    assert not rep.fits
    assert {i.resource for i in rep.items if not i.fits} == {"DSP", "FF", "BRAM18K"}
    dsp, ff, bram = rep.advice
    assert dsp == ("DSP: 9 of 4 (225%); mac takes 8 (89% of it): reduce unroll/partition factors of mac "
                   "(up to 4 copies of one operator; e.g. a smaller `tile`/`lanes` in the recipe)")
    assert ff.startswith("FF: 37,114 of 30,000 (124%); bufs takes 32,778 (88% of it): ")
    assert ff.endswith("partition buffer bufs:alloc0 less (completely partitioned it is 32,768 bits of registers)")
    assert bram.startswith("BRAM18K: 12 of 6 (200%); bufs takes 8 (67% of it): ")
    assert bram.endswith("bind buffer bufs:tile to URAM (s.storage('bufs:tile', 'uram')), or stream it instead of buffering")
    table = rep.table()
    assert "does not fit:" in table and all(a in table for a in rep.advice) and "<-- over" in table


def test_lut_knobs(est):
    # LUT: the interface is the largest user on a board this small
    rep = check_fit(est, _board(lut=3000))
    (lut,) = rep.advice
    assert lut.startswith(f"LUT: 4,239 of 3,000 (141%); {INTERFACE} takes 2,148 (51% of it): use fewer m_axi bundles")
    # with one bundle, the LUTRAM buffer of bufs leads and the knob is its binding
    est.maxi_bundles = 0
    try:
        (lut,) = check_fit(est, _board(lut=1000)).advice
    finally:
        est.maxi_bundles = 2
    assert "bufs takes 1,044 " in lut and lut.endswith("bind buffer bufs:alloc1 to BRAM (s.storage('bufs:alloc1', 'bram'))")


def test_fifo_and_global_knobs():
    from mambaflow.targets.hls.resources import BufferUse, KernelResources
    from mambaflow.targets.versal.fit import knob

    k = KernelResources("top", bram18k=3, buffers=[BufferUse("fifo x_to_ssm", (1536,), 1536 * 32, 1, "bram", bram18k=3)])
    assert knob("BRAM18K", k) == "reduce the depth of stream x_to_ssm in top (1,536 slots; a smaller `depth` in the recipe)"
    g = KernelResources("global w_embed", bram18k=100)
    assert knob("BRAM18K", g).startswith("stream weights instead of buffering: make `w_embed` an off-chip port")


def test_offchip_bytes_of_narrow_ports():
    from mambaflow.targets.hls.emitter import Port
    from mambaflow.targets.versal.fit import _port_bytes

    p = Port(name="w", source="layers.0.in_proj.w", elem="ap_int<4>", shape=(1024, 768), role="weight", read=True, written=False,
             interface="m_axi", bundle="gmem_w0")
    assert _port_bytes(p) == 1024 * 768 // 2
