"""The Vitis HLS emitter: pragma placement (checked on the structure of the emitted C++),
names and labels, determinism, errors, and g++ -Wall -Werror on every phase."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pytest
from torch_mlir import ir

from mambaflow.flow.capture import capture
from mambaflow.models import get_config
from mambaflow.schedules import customize
from mambaflow.schedules.testing import copy_design
from mambaflow.targets.hls.csim import CXXFLAGS, compiler
from mambaflow.targets.hls.cxx import csim_include_dir
from mambaflow.targets.hls.cxx import HlsEmitError, float_literal
from mambaflow.targets.hls.design import emit_design
from mambaflow.targets.hls.emitter import emit_module
from mambaflow.targets.hls.resources import buffer_use


# ------------------------------------------------------------ C++ structure


@dataclass
class Block:
    kind: str                 # 'file' | 'func' | 'loop' | 'if' | 'else' | 'other'
    name: str = ""            # function name or loop label
    items: list = field(default_factory=list)  # ('pragma', text) | ('stmt', text) | ('block', Block)
    parent: "Block | None" = None

    def pragmas(self):
        return [t for k, t in self.items if k == "pragma"]

    def first(self):
        return self.items[0] if self.items else None


_FUNC = re.compile(r'^(?:extern "C" )?\w[\w:<>]* (\w+)\($')
_LABEL = re.compile(r"^(\w+): for \(")


def parse_cpp(src: str) -> Block:
    """Blocks of the emitted C++ (one statement or pragma per line, as the emitter writes)."""
    root = Block("file")
    cur = root
    pending_func = None
    for raw in src.splitlines():
        line = raw.strip()
        if not line or line.startswith("//"):
            continue
        m = _FUNC.match(line)
        if m and cur is root:
            pending_func = m.group(1)
            continue
        if pending_func and cur is root:
            if line.endswith(") {"):
                b = Block("func", pending_func, parent=cur)
                cur.items.append(("block", b))
                cur, pending_func = b, None
            elif line.endswith(");"):
                pending_func = None
            continue
        if line.startswith("#pragma HLS "):
            cur.items.append(("pragma", line[len("#pragma HLS "):]))
            continue
        if line.startswith("#"):
            continue
        if line == "}":
            cur = cur.parent
            continue
        if line == "} else {":
            b = Block("else", parent=cur.parent)
            cur.parent.items.append(("block", b))
            cur = b
            continue
        if line.endswith("{"):
            lm = _LABEL.match(line)
            kind = "loop" if " for (" in f" {line}" else ("if" if line.startswith("if (") else "other")
            b = Block(kind, lm.group(1) if lm else "", parent=cur)
            cur.items.append(("block", b))
            cur = b
            continue
        cur.items.append(("stmt", line))
    return root


def find(block: Block, kind: str, name: str) -> Block:
    for k, x in block.items:
        if k == "block":
            if x.kind == kind and x.name == name:
                return x
            try:
                return find(x, kind, name)
            except KeyError:
                pass
    raise KeyError(f"{kind} {name}")


def statements(block: Block):
    """Every statement under `block`, nested blocks included."""
    for k, x in block.items:
        if k == "stmt":
            yield x
        elif k == "block":
            yield from statements(x)


def func(src: str, name: str) -> Block:
    return find(parse_cpp(src), "func", name)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def m1():
    return capture(get_config("tiny-mamba1"), "decode", progress=False)


@pytest.fixture(scope="module")
def m2():
    return capture(get_config("tiny-mamba2"), "decode", progress=False)


def gxx(path, extra=()):
    inc = csim_include_dir(path.parent / "include")
    cmd = [compiler(), *CXXFLAGS, "-isystem", str(inc), "-I", str(path.parent), "-c", str(path), "-o", str(path.with_suffix(".o")), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[:4000]
    assert p.stderr == "", p.stderr[:4000]  # -Wall clean: not even a note


# ---------------------------------------------------------------- structure


def test_unscheduled_kernel_shape(m1):
    code = emit_design(m1)
    f = func(code.source, "in_proj")
    # readable argument names from the kernel ports, read-only ones const
    # one engine for every layer: the stacked weight and the layer index as arguments
    assert ("void in_proj(\n    const float xn[1][32],\n    const float in_proj_w[2][128][32],\n"
            "    float x[1][64],\n    float z[1][64],\n    int layer)") in code.source
    assert any("in_proj_w[layer][" in t for t in statements(f))  # the layer's slice
    layer_loop = find(func(code.source, "decode"), "loop", "layer_layer")  # the layer loop calls the engines
    assert [t.split("(")[0] for k, t in layer_loop.items if k == "stmt"][:2] == ["norm", "in_proj"]
    assert code.source.count("void in_proj(") == 2  # declaration + definition, never a clone
    band = find(f, "loop", "S_i_j_i")
    inner = find(band, "loop", "S_i_j_j")
    assert inner.parent is band
    assert code.labels["in_proj"]["S_i_j.j"] == "S_i_j_j"
    assert code.labels["in_proj"]["S_i_j.i"] == "S_i_j_i"
    assert f.pragmas() == [] and inner.pragmas() == []
    # math goes through hls::
    assert "hls::exp(" in code.source and "hls::rsqrt(" in code.source and "hls::log1p(" in code.source
    assert "std::exp" not in code.source and "expf(" not in code.source


def test_top_interfaces(m1):
    code = emit_design(m1)
    top = func(code.source, "decode")
    prag = top.pragmas()
    ports = code.ports
    assert [p.source for p in ports] == [p.name for p in m1.ports]
    for p in ports:
        assert f"interface mode=m_axi port={p.name} offset=slave bundle={p.bundle} depth={p.size}" in prag
    assert prag[-1] == "interface mode=s_axilite port=return"
    # interface pragmas come first in the body, before any statement
    n = len(ports) + 1
    assert all(k == "pragma" for k, _ in top.items[:n])
    # one bundle per process that uses the port (HLS 200-1013 in dataflow regions)
    bundle = {p.source: p.bundle for p in ports}
    assert bundle["in_proj_w"] == "gmem_in_proj" and bundle["out_proj_w"] == "gmem_out_proj"
    assert bundle["conv_w"] == bundle["conv_state"] == bundle["conv_state_out"] == "gmem_conv"
    assert bundle["embed_w"] == bundle["tokens"] == "gmem_embed" and bundle["logits"] == "gmem_lm_head"
    assert code.source.count('extern "C" void decode(') == 1 and 'extern "C" void decode(' in code.header
    # inputs const, outputs writable
    assert "const int64_t tokens[1]" in code.header and "float logits[1][64]" in code.header
    assert "const float logits" not in code.header


def test_pipeline_unroll_order_and_place(m1):
    d = copy_design(m1)
    s = customize(d)
    jo, ji = s.split("in_proj:S_i_j.j", 8)
    s.pipeline(ji, ii=2, rewind=True)
    s.unroll("out_proj:S_i_j.j", 4)
    s.pipeline("x_proj:S_i_j.i", ii=1)
    s.unroll("x_proj:S_i_j.i", 2)
    s.unroll("lm_head:S_i_j.j", 0)
    code = emit_design(d)
    f = func(code.source, "in_proj")
    inner = find(f, "loop", "S_i_j_j_inner")
    assert inner.first() == ("pragma", "pipeline II=2 rewind")
    # the split inner loop has variable bounds: its trip count is stated for the reports
    assert ("pragma", "loop_tripcount min=8 max=8 avg=8") in inner.items
    assert find(f, "loop", "S_i_j_j_outer").pragmas() == []
    assert find(func(code.source, "out_proj"), "loop", "S_i_j_j").first() == ("pragma", "unroll factor=4")
    xb = find(func(code.source, "x_proj"), "loop", "S_i_j_i")
    assert xb.pragmas()[:2] == ["pipeline II=1", "unroll factor=2"]  # pipeline first
    assert xb.items[0][0] == "pragma" and xb.items[1][0] == "pragma"
    assert find(func(code.source, "lm_head"), "loop", "S_i_j_j").first() == ("pragma", "unroll")


def test_partition_and_storage_follow_the_declaration(m1):
    d = copy_design(m1)
    s = customize(d)
    s.partition("in_proj:alloc0", "cyclic", dim=2, factor=8)
    s.partition("ssm:alloc1", "block", dim=1, factor=4)
    s.storage("ssm:alloc1", "uram")
    s.partition("ssm:alloc2", "complete", dim=0)
    s.partition("conv:x", "complete", dim=2)      # an argument fed by an on-chip buffer
    code = emit_design(d)
    f = func(code.source, "in_proj")
    i = f.items.index(("stmt", "float buf0[1][128];"))
    assert f.items[i + 1] == ("pragma", "array_partition variable=buf0 type=cyclic factor=8 dim=2")
    g = func(code.source, "ssm")
    i = g.items.index(("stmt", "float buf1[64][8];"))
    assert g.items[i + 1:i + 3] == [("pragma", "array_partition variable=buf1 type=block factor=4 dim=1"),
                                    ("pragma", "bind_storage variable=buf1 type=ram_2p impl=uram")]
    i = g.items.index(("stmt", "float buf2[64];"))
    assert g.items[i + 1] == ("pragma", "array_partition variable=buf2 type=complete dim=0")
    c = func(code.source, "conv")
    assert c.first() == ("pragma", "array_partition variable=x type=complete dim=2")
    assert code.warnings == []
    r = {k.name: k for k in code.resources.kernels}
    assert r["ssm"].uram == 4 and r["ssm"].register_bits == 64 * 32


def test_partition_of_offchip_argument_warns(m1):
    from mambaflow.dialects import directives as D
    from mambaflow.errors import ScheduleError
    from mambaflow.flow.mlir import funcs

    d = copy_design(m1)
    with pytest.raises(ScheduleError, match="no-partition-on-maxi"):  # the schedule refuses it
        customize(d).partition("in_proj:in_proj_w", "cyclic", dim=3, factor=4)
    # a directive set behind the schedule's back: the emitter drops it, with a warning
    D.set_partition(D.BufferRef(funcs(d.module)["in_proj"], arg=1), "cyclic", 3, 4)
    code = emit_design(d)
    assert len(code.warnings) == 1
    assert "in_proj" in code.warnings[0] and "in_proj_w" in code.warnings[0]
    assert "m_axi" in code.warnings[0]


def test_dataflow_and_inline(m1):
    from mambaflow.schedules.recipes import layer_pipeline_schedule

    d = copy_design(m1)
    s = customize(d)
    layer_pipeline_schedule(s)  # the layer body: a dataflow function
    s.inline("norm_f")
    code = emit_design(d)
    assert func(code.source, "layer_step").first() == ("pragma", "dataflow")
    assert ("pragma", "dataflow") not in func(code.source, "decode").items
    assert func(code.source, "norm_f").first() == ("pragma", "inline")


def test_top_argument_partition_is_rejected(m1):
    from mambaflow.dialects import directives as D
    from mambaflow.flow.mlir import funcs

    d = copy_design(m1)
    top = funcs(d.module)["decode"]
    D.set_partition(D.BufferRef(top, arg=1), "complete", dim=2)
    with pytest.raises(HlsEmitError, match=r"decode.*top-level port.*m_axi"):
        emit_design(d)


# ------------------------------------------------------------- determinism


def test_byte_identical(m1, m2):
    a = emit_design(m1)
    b = emit_design(m1)
    assert a.source == b.source and a.header == b.header
    fresh = capture(get_config("tiny-mamba2"), "decode", progress=False, cache=False)
    c, e = emit_design(m2), emit_design(fresh)
    assert c.source == e.source and c.header == e.header
    # and after a schedule replayed on a fresh capture
    d1, d2 = copy_design(m2), copy_design(fresh)
    for d in (d1, d2):
        s = customize(d)
        s.pipeline(s.split("in_proj:S_i_j.j", 16).inner)
        s.partition("ssm:alloc0", "cyclic", dim=1, factor=2)
    assert emit_design(d1).source == emit_design(d2).source


# ----------------------------------------------------------------- compile


@pytest.mark.parametrize("arch", ["tiny-mamba1", "tiny-mamba2"])
@pytest.mark.parametrize("phase", ["prefill", "verify"])
def test_gxx_wall_werror(arch, phase, tmp_path):
    d = capture(get_config(arch), phase, T=4, progress=False)
    code = emit_design(d)
    code.write(tmp_path)
    gxx(tmp_path / "kernels.cpp")


# ------------------------------------------------------------------- errors


def _module(src: str):
    from mambaflow.flow.mlir import new_context

    ctx = new_context()
    with ctx:
        return ir.Module.parse(src)


def test_unsupported_op_names_function_and_op():
    m = _module("""
func.func @k(%a: memref<4xf32>, %b: memref<4xf32>) attributes {mf.top} {
  affine.for %i = 0 to 4 {
    %0 = affine.load %a[%i] : memref<4xf32>
    %1 = math.cbrt %0 : f32
    affine.store %1, %b[%i] : memref<4xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}""")
    with pytest.raises(HlsEmitError, match=r"function 'k', loop S_i, op 'math.cbrt'"):
        emit_module(m)


def test_integer_helpers_and_literals(tmp_path):
    """floordiv / ceildiv / rem on negative values, unsigned ops, narrow integers, float
    literals that round-trip: compiled and run against Python's definitions."""
    from mambaflow.targets.hls.csim import run_csim
    from mambaflow.targets.hls.testbench import TestbenchSpec

    m = _module("""
func.func @k(%a: memref<8xi64>, %fd: memref<8xi64>, %cd: memref<8xi64>, %rm: memref<8xi64>,
             %ud: memref<8xi64>, %w: memref<8xi64>, %f: memref<8xf32>) attributes {mf.top} {
  %c3 = arith.constant 3 : i64
  %cm5 = arith.constant -5 : i64
  %k = arith.constant 1.000000e-01 : f32
  affine.for %i = 0 to 8 {
    %x = affine.load %a[%i] : memref<8xi64>
    %0 = arith.floordivsi %x, %c3 : i64
    affine.store %0, %fd[%i] : memref<8xi64>
    %1 = arith.ceildivsi %x, %cm5 : i64
    affine.store %1, %cd[%i] : memref<8xi64>
    %2 = arith.remsi %x, %c3 : i64
    affine.store %2, %rm[%i] : memref<8xi64>
    %3 = arith.divui %x, %c3 : i64
    affine.store %3, %ud[%i] : memref<8xi64>
    %4 = arith.trunci %x : i64 to i5
    %5 = arith.extsi %4 : i5 to i64
    affine.store %5, %w[%i] : memref<8xi64>
    %6 = arith.sitofp %x : i64 to f32
    %7 = arith.mulf %6, %k : f32
    affine.store %7, %f[%i] : memref<8xf32>
  } {loop_name = "i", op_name = "S_i"}
  return
}""")
    code = emit_module(m, arg_names={"k": ["a", "fd", "cd", "rm", "ud", "w", "f"]})
    assert "ap_int<5>" in code.source and "mf_floordivsi" in code.source
    a = np.array([-7, -6, -1, 0, 1, 5, 17, -17], np.int64)

    def wrap5(v):
        v &= 31
        return v - 32 if v >= 16 else v

    golden = {
        "fd": a // 3, "cd": -(-a // -5), "rm": np.fmod(a, 3), "ud": (a.astype(np.uint64) // 3).astype(np.int64),
        "w": np.array([wrap5(int(v)) for v in a], np.int64), "f": a.astype(np.float32) * np.float32(0.1),
    }
    r = run_csim(code, tmp_path, {"a": a}, golden, TestbenchSpec(rtol=0.0, atol=0.0))
    assert r.ok, r.summary()


@pytest.mark.parametrize("v", [1e-5, 0.1, -0.0, 3.4028235e38, 1.4e-45, 2.5, -7.0, 1 / 3])
def test_float_literals_round_trip(v):
    f32 = np.float32(v)
    with ir.Context():
        lit = float_literal(float(f32), ir.F32Type.get())
    assert lit.endswith("f")
    assert np.float32(float(lit[:-1])) == f32 and np.signbit(np.float32(float(lit[:-1]))) == np.signbit(f32)


def test_buffer_resource_model():
    with ir.Context(), ir.Location.unknown():
        t = ir.MemRefType.get([1536, 16], ir.F32Type.get())
        from mambaflow.dialects.directives import Partition

        assert buffer_use("a", t, [], None).bram18k == 48           # 24576 words / 512 (512x36)
        assert buffer_use("a", t, [], "uram").uram == 6             # 24576 / 4096
        assert buffer_use("a", t, [Partition("cyclic", 2, 4)], None).bram18k == 4 * 12
        assert buffer_use("a", t, [Partition("complete", 0)], None).storage == "registers"
        small = ir.MemRefType.get([32], ir.F32Type.get())
        assert buffer_use("s", small, [], None).storage == "lutram"
