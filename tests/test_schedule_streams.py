"""Streams (`to`): FIFO rewrite, Kahn-process deadlock check, multi-consumer rejection,
CPU execution through FIFO queues, and a streamed Mamba decode equal to PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_mlir import ir

from mambaflow.dialects import directives as D
from mambaflow.dialects import stream as S
from mambaflow.errors import ScheduleError
from mambaflow.flow.capture import capture
from mambaflow.flow.mlir import funcs, new_context, walk
from mambaflow.models import build_model, get_config
from mambaflow.schedules import customize, replay
from mambaflow.schedules.testing import copy_design
from mambaflow.targets.llvm.jit import JitFunction

# producer writes all of a, then all of b; the consumer reads a[i], b[i] interleaved
TWO = """
func.func @prod(%x: memref<8xf32>, %a: memref<8xf32>, %b: memref<8xf32>) {
  affine.for %i = 0 to 8 {
    %v = affine.load %x[%i] : memref<8xf32>
    affine.store %v, %a[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i"}
  affine.for %i = 0 to 8 {
    %v = affine.load %x[%i] : memref<8xf32>
    %w = arith.mulf %v, %v : f32
    affine.store %w, %b[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i_1"}
  return
}
func.func @cons(%a: memref<8xf32>, %b: memref<8xf32>, %y: memref<8xf32>) {
  affine.for %i = 0 to 8 {
    %u = affine.load %a[%i] : memref<8xf32>
    %v = affine.load %b[%i] : memref<8xf32>
    %w = arith.addf %u, %v : f32
    affine.store %w, %y[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}
func.func @other(%a: memref<8xf32>, %y: memref<8xf32>) {
  affine.for %i = 0 to 8 {
    %u = affine.load %a[7 - %i] : memref<8xf32>
    affine.store %u, %y[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}
func.func @top(%x: memref<8xf32>, %y: memref<8xf32>) attributes {mf.top} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  call @prod(%x, %a, %b) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  return
}
func.func @top2(%x: memref<8xf32>, %y: memref<8xf32>, %z: memref<8xf32>) attributes {mf.top} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  call @prod(%x, %a, %b) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  call @other(%a, %z) : (memref<8xf32>, memref<8xf32>) -> ()
  return
}
"""


def two_kernels(with_top2: bool = False):
    ctx = new_context()
    with ctx:
        mod = ir.Module.parse(TWO)
    top2 = funcs(mod)["top2"]
    if with_top2:
        top = funcs(mod)["top"]
        top.erase()
    else:
        top2.erase()
    return mod


def run_top(mod, name="top", opt_level=0):
    x = np.arange(8, dtype=np.float32)
    y = np.zeros(8, np.float32)
    JitFunction(mod, name, opt_level=opt_level)(x, y)
    return x, y


def test_too_shallow_fifo_is_a_deadlock_naming_kernels_and_fifo():
    mod = two_kernels()
    s = customize(mod)
    before = str(mod)
    with pytest.raises(S.DeadlockError) as ei:
        s.to("prod:arg1", "cons", depth=2)
    msg = str(ei.value)
    assert "deadlock" in msg and "prod blocked writing FIFO 'prod_arg1'" in msg and "cons" in msg
    assert str(mod) == before and s.log == []
    # while b is a ping-pong buffer, cons starts only after prod: a must hold all 8
    with pytest.raises(S.DeadlockError):
        s.to("prod:arg1", "cons", depth=7)
    info = s.to("prod:arg1", "cons", depth=8)
    assert info["fifo_peak"]["prod_arg1"] == 8 and not info["producer_adapter"] and not info["consumer_adapter"]
    info = s.to("prod:arg2", "cons", depth=2)
    x, y = run_top(mod)
    np.testing.assert_array_equal(y, x + x * x)
    creates = [o for o in walk(funcs(mod)["top"]) if o.name == S.CREATE]
    assert [D.stream_depth(o) for o in creates] == [8, 2]
    assert [S.stream_name(o) for o in creates] == ["prod_arg1", "prod_arg2"]
    assert D.is_dataflow(funcs(mod)["top"])


def test_the_cpu_build_refuses_a_deadlocking_depth():
    mod = two_kernels()
    s = customize(mod)
    s.to("prod:arg1", "cons", depth=8)
    op = next(o for o in walk(funcs(mod)["top"]) if o.name == S.CREATE)
    with mod.context:
        op.attributes["depth"] = ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 1)  # edited by hand
    with pytest.raises(S.DeadlockError, match="prod_arg1"):
        run_top(mod)


def test_multi_consumer_stream_is_rejected():
    mod = two_kernels(with_top2=True)
    s = customize(mod)
    before = str(mod)
    with pytest.raises(ScheduleError, match=r"also read by \['other'\].*exactly one consumer"):
        s.to("prod:arg1", "cons", depth=8)
    assert str(mod) == before


def test_multi_producer_stream_is_rejected():
    clobber = """
func.func @clobber(%a: memref<8xf32>) {
  %c = arith.constant 0.0 : f32
  affine.for %i = 0 to 8 {
    affine.store %c, %a[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}
"""
    text = TWO.replace("  call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()\n  return\n}\nfunc.func @top2",
                       "  call @clobber(%a) : (memref<8xf32>) -> ()\n"
                       "  call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()\n  return\n}\nfunc.func @top2", 1)
    ctx = new_context()
    with ctx:
        mod = ir.Module.parse(clobber + text)
    funcs(mod)["top2"].erase()
    s = customize(mod)
    before = str(mod)
    with pytest.raises(ScheduleError, match=r"written by \['clobber', 'prod'\].*exactly one producer"):
        s.to("prod:arg1", "cons", depth=8)
    assert str(mod) == before


def test_consumer_in_another_order_gets_an_adapter():
    ctx = new_context()
    top3 = """
func.func @top3(%x: memref<8xf32>, %y: memref<8xf32>) attributes {mf.top} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  call @prod(%x, %a, %b) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  call @other(%b, %y) : (memref<8xf32>, memref<8xf32>) -> ()
  return
}
"""
    with ctx:
        mod = ir.Module.parse(TWO + top3)
    funcs(mod)["top"].erase()
    funcs(mod)["top2"].erase()
    s = customize(mod)
    before = str(mod)
    with pytest.raises(ScheduleError, match="FIFO-exactly"):
        s.to("prod:arg2", "other", depth=2, adapt=False)
    assert str(mod) == before
    info = s.to("prod:arg2", "other", depth=2)
    assert info["consumer_adapter"] and not info["producer_adapter"]
    assert "S_arg2_in" in customize(mod).get_loops("other")
    x, y = run_top(mod, "top3")
    np.testing.assert_array_equal(y, (x * x)[::-1])


LOOPED = """
func.func @inloop(%x: memref<8xf32>, %y: memref<8xf32>) attributes {mf.top} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  affine.for %l = 0 to 3 {
    func.call @prod(%x, %a, %b) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
    func.call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  } {loop_name = "layer", op_name = "layer"}
  return
}
func.func @across(%x: memref<8xf32>, %y: memref<8xf32>) attributes {mf.top} {
  %a = memref.alloc() : memref<8xf32>
  %b = memref.alloc() : memref<8xf32>
  affine.for %l = 0 to 3 {
    func.call @prod(%x, %a, %b) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  } {loop_name = "layer", op_name = "layer"}
  call @cons(%a, %b, %y) : (memref<8xf32>, memref<8xf32>, memref<8xf32>) -> ()
  return
}
"""


@pytest.mark.parametrize("top", ["inloop", "across"])
def test_streams_between_calls_of_a_layer_loop(top):
    """Kernels called in the top's layer loop stream to each other once per iteration:
    the Kahn check still sees the too-shallow FIFO, and the CPU build runs the loop. A
    stream from inside the loop to a call after it (written 3 times, read once) is refused."""
    ctx = new_context()
    with ctx:
        mod = ir.Module.parse(TWO + LOOPED)
    for other in ("top", "top2", "inloop", "across"):
        if other != top:
            funcs(mod)[other].erase()
    s = customize(mod)
    before = str(mod)
    if top == "across":
        with pytest.raises(ScheduleError, match="called in different loops of 'across'"):
            s.to("prod:arg2", "cons", depth=2)
        assert str(mod) == before
        return
    # streams between calls in a loop would make the top a dataflow region around a
    # loop of calls, which Vitis runs as one process: refused, the body is outlined first
    with pytest.raises(ScheduleError, match="region-form"):
        s.to("prod:arg1", "cons", depth=8)
    assert str(mod) == before
    s.outline(f"{top}:layer.layer", "step")
    with pytest.raises(S.DeadlockError, match="prod blocked writing FIFO 'prod_arg1'"):
        s.to("prod:arg1", "cons", depth=2)
    s.to("prod:arg1", "cons", depth=8)
    s.to("prod:arg2", "cons", depth=2)
    step = funcs(mod)["step"]
    assert [o.name for o in walk(step) if o.name == "func.call"] == ["func.call"] * 2
    assert all(S.is_stream_type(v.type) for c in walk(step) if c.name == "func.call" for v in list(c.operands)[1:2])
    # opt_level 1: at 0 the JIT crashes on stream queues in a function called from a
    # loop (found here, not yet understood; see the closing note of issue 13)
    x, y = run_top(mod, top, opt_level=1)
    np.testing.assert_array_equal(y, x + x * x)


def test_stream_module_round_trips_through_text():
    mod = two_kernels()
    customize(mod).to("prod:arg1", "cons", depth=8)
    text = str(mod)
    ctx = new_context()
    S.ensure_loaded(ctx)
    with ctx:
        again = ir.Module.parse(text)
        again.operation.verify()
    assert str(again) == text


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model(get_config("tiny-mamba1")).eval()
    return model, capture(model, "decode", progress=False)


def test_streamed_mamba_layer_matches_pytorch_and_replays(tiny, tmp_path):
    from mambaflow.runtime.backends import LLVMBackend, TorchBackend

    model, base = tiny
    design = copy_design(base)
    E = design.cfg.d_inner
    s = customize(design)
    s.outline("decode:layer.layer", "layer_step", keep=["resid"])
    s.fork("layer_step:embed_resid")
    s.fork("layer_step:conv_xc")  # read by x_proj and the SSM
    s.to("in_proj:x", "conv", depth=2)
    with pytest.raises(S.DeadlockError, match="in_proj blocked writing FIFO 'in_proj_z'"):
        s.to("in_proj:z", "ssm", depth=2)  # z is written before x: needs E
    s.to("in_proj:z", "ssm", depth=E)
    s.to("ssm:y", "out_proj", depth=2)
    with pytest.raises(ScheduleError, match=r"also read by \[.fork_conv_xc.\]"):
        s.to("conv:xc", "x_proj", depth=2)  # the fork reads the conv output, for x_proj and the SSM
    s.to("conv:xc", "fork_conv_xc", depth=2)
    # the residual out of a layer leaves the region: the top copies it for the next layer
    with pytest.raises(ScheduleError, match="not a buffer of 'layer_step'"):
        s.to("out_proj:resid_out", "norm", depth=2)
    s.save(tmp_path / "s.json")
    fresh = capture(design.cfg, "decode", progress=False)
    replay(fresh, tmp_path / "s.json")
    assert str(fresh.module) == str(design.module)
    fn = JitFunction(design.module, design.top, opt_level=1)
    llvm = LLVMBackend.from_compiled(model, {("decode", 1): (design, fn)})
    ref = TorchBackend(model)
    st_l = st_t = ref.zero_state()
    for tok in (1, 2, 3):
        a, st_l = llvm.decode(tok, st_l)
        b, st_t = ref.decode(tok, st_t)
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
