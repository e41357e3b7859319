"""dialects/: typed directive helpers (the HLS emitter's contract) and the mf stream dialect."""

from __future__ import annotations

import pytest
from torch_mlir import ir

from mambaflow.dialects import directives as D
from mambaflow.dialects import stream as S
from mambaflow.flow.mlir import funcs, new_context, walk

K = """
func.func @k(%a: memref<4x8xf32>, %b: memref<8xf32>) {
  %c = arith.constant 0.0 : f32
  %t = memref.alloc() : memref<8xf32>
  affine.for %i = 0 to 4 {
    affine.for %j = 0 to 8 {
      affine.store %c, %t[%j] : memref<8xf32>
    } {loop_name = "j"}
  } {loop_name = "i", op_name = "S_i_j"}
  return
}
"""


@pytest.fixture
def mod():
    ctx = new_context()
    with ctx:
        return ir.Module.parse(K)


def test_loop_and_func_directives_round_trip(mod):
    fn = funcs(mod)["k"]
    i, j = [o for o in walk(fn) if o.name == "affine.for"]
    D.set_pipeline(j, 2, rewind=True)
    D.set_unroll(i, 0)
    D.set_dataflow(fn)
    D.set_dataflow(i)
    D.set_inline(fn)
    assert (D.get_pipeline(j), D.is_rewind(j), D.get_unroll(i), D.get_pipeline(i)) == (2, True, 0, None)
    assert D.is_dataflow(fn) and D.is_dataflow(i) and D.is_inline(fn)
    text = str(mod)
    assert "pipeline_ii = 2 : i64" in text and "rewind" in text and "unroll = 0 : i64" in text
    D.set_pipeline(j, 1)  # rewind dropped when not asked for
    assert not D.is_rewind(j)
    with pytest.raises(D.DirectiveError):
        D.set_pipeline(fn, 1)
    with pytest.raises(D.DirectiveError):
        D.set_pipeline(j, 0)
    with pytest.raises(D.DirectiveError):
        D.set_unroll(j, -2)


def test_partitions_on_args_and_allocs(mod):
    fn = funcs(mod)["k"]
    alloc = next(o for o in walk(fn) if o.name == "memref.alloc")
    a = D.BufferRef(fn, arg=0)
    D.set_partition(a, "cyclic", 2, 4)
    D.set_partition(a, "block", 1, 2)
    D.set_partition(a, "complete", 2)  # replaces the dim-2 directive
    D.set_partition(alloc, "complete", 0)
    D.set_storage(a, "uram")
    D.set_storage(alloc, "lutram")
    assert D.partitions_of(a) == [D.Partition("block", 1, 2), D.Partition("complete", 2, 0)]
    assert D.partitions_of(alloc) == [D.Partition("complete", 0, 0)]
    assert D.partitions_of(D.BufferRef(fn, arg=1)) == []
    assert (D.storage_of(a), D.storage_of(alloc), D.storage_of(D.BufferRef(fn, arg=1))) == ("uram", "lutram", None)
    fn.verify()  # argument attributes carry the dialect prefix (mf.partition)
    text = str(fn)
    assert "mf.partition = [{dim = 1 : i64, factor = 2 : i64, kind = \"block\"}" in text
    assert "partition = [{dim = 0 : i64, factor = 0 : i64, kind = \"complete\"}]" in text
    with pytest.raises(D.DirectiveError):
        D.set_partition(a, "cyclic", 3, 2)
    with pytest.raises(D.DirectiveError):
        D.set_partition(a, "cyclic", 1, 0)
    with pytest.raises(D.DirectiveError):
        D.set_storage(a, "ddr")


def test_strip_directives_restores_the_plain_ir(mod):
    plain = str(mod)
    fn = funcs(mod)["k"]
    i, j = [o for o in walk(fn) if o.name == "affine.for"]
    D.set_pipeline(j, 1)
    D.set_unroll(i, 2)
    D.set_dataflow(fn)
    D.set_partition(D.BufferRef(fn, arg=0), "complete", 1)
    D.set_storage(next(o for o in walk(fn) if o.name == "memref.alloc"), "bram")
    assert str(mod) != plain
    assert D.strip_directives(mod) == 5
    assert str(mod) == plain


def test_stream_type_and_ops(mod):
    with mod.context, ir.Location.unknown():
        S.ensure_loaded()
        S.ensure_loaded()  # idempotent
        t = S.stream_type(ir.F32Type.get(), 64)
        assert str(t) == "!mf.stream<f32, 64 : i64>" and S.is_stream_type(t)
        elem, n = S.stream_info(t)
        assert str(elem) == "f32" and n == 64
        m = ir.Module.create()
        f = ir.Operation.create("func.func", regions=1, attributes={
            "sym_name": ir.StringAttr.get("f"),
            "function_type": ir.TypeAttr.get(ir.FunctionType.get([], []))}, ip=ir.InsertionPoint(m.body))
        blk = f.regions[0].blocks.append()
        ip = ir.InsertionPoint(blk)
        sv = S.create(ir.F32Type.get(), 64, 4, "x", ip=ip)
        v = S.read(sv, ip=ip)
        S.write(sv, v, ip=ip)
        ir.Operation.create("func.return", ip=ip)
        m.operation.verify()
        c = next(o for o in walk(m.operation) if o.name == S.CREATE)
        assert D.stream_depth(c) == 4 and S.stream_name(c) == "x"
