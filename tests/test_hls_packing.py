"""Odd-width m_axi ports packed into AXI beats: the numpy layout (pack / unpack) and
the emitted C++ that reads and writes it, compiled with g++ and run, bit for bit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from torch_mlir import ir

from mambaflow.errors import MambaflowError
from mambaflow.flow.mlir import new_context
from mambaflow.targets.hls import packing as PK
from mambaflow.targets.hls.cxx import csim_include_dir
from mambaflow.targets.hls.emitter import Port, emit_module

CXX = shutil.which("g++")
FLAGS = ["-std=c++17", "-O2", "-Wall", "-Werror", "-Wno-unknown-pragmas"]


def _port(w, shape, beat_bits):
    n = int(np.prod(shape))
    lay = PK.layout(w, n, beat_bits)
    return Port("p", "p", f"ap_int<{w}>", tuple(shape), "weight", True, False, "m_axi", "gmem0",
                w, beat_bits, lay.elems_per_beat, lay.beats)


def _signed(rng, w, shape):
    return rng.integers(-(1 << (w - 1)), 1 << (w - 1), size=shape, dtype=np.int64)


@pytest.mark.parametrize("w", [4, 17, 3, 63])
@pytest.mark.parametrize("beat_bits", [64, 256, 512])
def test_pack_unpack_round_trip(w, beat_bits):
    rng = np.random.default_rng(w * beat_bits)
    for shape in [(1,), (7, 13), (2, 3, 41)]:
        a = _signed(rng, w, shape)
        a.flat[0], a.flat[-1] = -(1 << (w - 1)), (1 << (w - 1)) - 1  # both extremes
        p = _port(w, shape, beat_bits)
        words = PK.pack(p, a)
        assert words.dtype == np.uint64 and words.shape == (p.beats, beat_bits // 64)
        assert p.beats == -(-a.size // (beat_bits // w))
        assert np.array_equal(PK.unpack(p, words), a)


def test_layout_is_the_documented_one():
    # 4-bit elements in 64-bit beats: 16 per beat, element k at bits 4*(k%16) of beat k//16
    p = _port(4, (18,), 64)
    a = np.zeros(18, np.int64)
    a[0], a[1], a[15], a[16] = 1, -1, -8, 5
    words = PK.pack(p, a)
    assert words.tolist() == [[0x8000_0000_0000_00F1], [0x5]]
    # 17-bit elements in 64-bit beats: 3 per beat, bits 51..63 stay zero
    p = _port(17, (4,), 64)
    words = PK.pack(p, np.array([-1, 0, 1, 2]))
    assert words.tolist() == [[0x1FFFF | (1 << 34)], [2]]
    # unsigned values in range pack to the same bits as their signed reading
    assert np.array_equal(PK.pack(p, np.array([0x1FFFF, 0, 1, 2])), words)


def test_pack_rejects_wrong_values_and_shapes():
    p = _port(4, (2, 3), 256)
    with pytest.raises(MambaflowError, match="4-bit values"):
        PK.pack(p, np.array([[0, 1, 2], [3, 4, 16]]))
    with pytest.raises(MambaflowError, match="shape"):
        PK.pack(p, np.zeros((3, 2), np.int64))
    with pytest.raises(MambaflowError, match="beat_bits"):
        PK.layout(4, 10, 96)


# ------------------------------------------------------------ emitted C++, compiled

# A stacked i4 weight read per layer through a subview by a kernel (an unaligned element
# offset: 40 elements per layer), an i17 table read in the top, an i17 output written.
MODULE = """
func.func @k(%w: memref<3x40xi4>, %t: memref<5xi17>, %y: memref<3x40xi64>, %o: memref<2x20xi17>)
    attributes {mf.top} {
  affine.for %l = 0 to 3 {
    %v = memref.subview %w[%l, 0] [1, 40] [1, 1] : memref<3x40xi4> to memref<40xi4, strided<[1], offset: ?>>
    %u = memref.subview %y[%l, 0] [1, 40] [1, 1] : memref<3x40xi64> to memref<40xi64, strided<[1], offset: ?>>
    func.call @widen(%v, %u) : (memref<40xi4, strided<[1], offset: ?>>, memref<40xi64, strided<[1], offset: ?>>) -> ()
  } {loop_name = "l", op_name = "S_l"}
  affine.for %i = 0 to 2 {
    affine.for %j = 0 to 20 {
      %a = affine.load %t[(%i * 20 + %j) mod 5] : memref<5xi17>
      %x = arith.extsi %a : i17 to i64
      %c = arith.index_cast %j : index to i64
      %s = arith.muli %x, %c : i64
      %b = arith.trunci %s : i64 to i17
      affine.store %b, %o[%i, %j] : memref<2x20xi17>
    } {loop_name = "j", op_name = "S_i_j"}
  } {loop_name = "i", op_name = "S_i_j"}
  return
}
func.func @widen(%w: memref<40xi4, strided<[1], offset: ?>>, %y: memref<40xi64, strided<[1], offset: ?>>) {
  affine.for %j = 0 to 40 {
    %a = affine.load %w[%j] : memref<40xi4, strided<[1], offset: ?>>
    %b = arith.extsi %a : i4 to i64
    affine.store %b, %y[%j] : memref<40xi64, strided<[1], offset: ?>>
  } {loop_name = "j", op_name = "S_j"}
  return
}
"""


def _wrap(v, w):
    v = v & ((1 << w) - 1)
    return np.where(v >= 1 << (w - 1), v - (1 << w), v)


def _testbench(code, data: dict) -> str:
    """main(): fill each packed input's beats from its `pack` words, call the top, print
    the int64 outputs and the packed output's words."""
    ports = {p.name: p for p in code.ports}
    L = ['#include <cstdio>', '#include "kernels.h"']
    for p in code.ports:
        dims = f"[{p.beats}]" if p.packed else "".join(f"[{d}]" for d in p.shape)
        L.append(f"static {p.arg_type} {p.name}{dims};")
        if p.name in data:
            words = ", ".join(f"0x{int(x):x}ull" for x in data[p.name].reshape(-1))
            L.append(f"static const unsigned long long {p.name}_words[] = {{{words}}};")
    L.append("int main() {")
    for name in data:
        p = ports[name]
        k = p.beat_bits // 64
        L.append(f"  for (int b = 0; b < {p.beats}; ++b) for (int j = 0; j < {k}; ++j)")
        L.append(f"    {name}[b].range(64 * j + 63, 64 * j) = {name}_words[b * {k} + j];")
    L.append(f"  {code.top}({', '.join(p.name for p in code.ports)});")
    for p in code.ports:
        if p.name in data:
            continue
        if p.packed:
            k = p.beat_bits // 64
            L.append(f"  for (int b = 0; b < {p.beats}; ++b) for (int j = 0; j < {k}; ++j)")
            L.append(f'    std::printf("{p.name} %llx\\n", (unsigned long long){p.name}[b].range(64 * j + 63, 64 * j).to_uint64());')
        else:
            L.append(f"  for (int i = 0; i < {p.size}; ++i)")
            L.append(f'    std::printf("{p.name} %lld\\n", (long long)((const long long*){p.name})[i]);')
    L += ["  return 0;", "}", ""]
    return "\n".join(L)


def _run(d: Path, include: Path, flags: list[str]) -> dict[str, list[str]]:
    exe = d / "tb"
    r = subprocess.run([CXX, *flags, "-isystem", str(include), "-I", str(d), str(d / "tb.cpp"),
                        str(d / "kernels.cpp"), "-o", str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=True).stdout
    got: dict[str, list[str]] = {}
    for line in out.splitlines():
        name, v = line.split()
        got.setdefault(name, []).append(v)
    return got


@pytest.mark.skipif(CXX is None, reason="g++ not on PATH")
@pytest.mark.parametrize("beat_bits", [64, 512])
def test_emitted_code_reads_and_writes_packed_ports_bit_exact(beat_bits, tmp_path):
    with new_context():
        m = ir.Module.parse(MODULE)
    code = emit_module(m, arg_names={"k": ["w", "t", "y", "o"], "widen": ["w", "y"]}, beat_bits=beat_bits)
    ports = {p.name: p for p in code.ports}
    assert [n for n, p in ports.items() if p.packed] == ["w", "t", "o"] and not ports["y"].packed
    assert f"const ap_uint<{beat_bits}> w[{ports['w'].beats}]" in code.source
    assert not re.search(r"ap_int<\d+> \w+\[", code.source), "an ap_int array is still on the interface"
    assert f"depth={ports['w'].beats}" in "\n".join(code.pragmas["k"])

    rng = np.random.default_rng(beat_bits)
    w = _signed(rng, 4, (3, 40))
    t = _signed(rng, 17, (5,))
    t[:2] = [-(1 << 16), (1 << 16) - 1]
    data = {"w": PK.pack(ports["w"], w), "t": PK.pack(ports["t"], t)}
    want_o = _wrap(t[np.arange(40) % 5].reshape(2, 20) * np.arange(20), 17)

    code.write(tmp_path)
    (tmp_path / "tb.cpp").write_text(_testbench(code, data))
    # the ap_int<17> arithmetic of this hand-written top trips AMD's ap_private.h under
    # -Werror=uninitialized (see test_hls_headers); the designs' own code does not
    got = _run(tmp_path, csim_include_dir(tmp_path / "include"), FLAGS + ["-Wno-error=uninitialized"])
    y = np.array(got["y"], np.int64).reshape(3, 40)
    assert np.array_equal(y, w), "unpacked i4 weights differ from numpy"
    words = np.array([int(x, 16) for x in got["o"]], np.uint64).reshape(ports["o"].beats, -1)
    assert np.array_equal(PK.unpack(ports["o"], words), want_o), "packed i17 output differs"
    assert np.array_equal(words, PK.pack(ports["o"], want_o)), "beats differ from pack()"
