"""The headers every C simulation compiles against (targets/hls/cxx.csim_include_dir):
AMD's ap_types from the hls4ml wheel, next to the project's own hls_stream.h and
hls_math.h (the two things no package ships; see their header comments).

* the include folder: what it holds, byte-identical copies, the clear error when AMD's
  headers are missing, and $MAMBAFLOW_AP_TYPES_DIR;
* the ap_int idioms the emitter writes (wrapping arithmetic, shifts, division, signed
  and unsigned views, casts), on AMD's headers, bit for bit against Python integers;
* hls::stream (order, depth checks, aborts naming the stream) and the hls_math subset,
  against <cmath> / Python's math; both project headers compile with -Wall -Wextra
  -Werror, and g++ needs -Wno-unknown-pragmas for `#pragma HLS` lines;
* the emitted decode designs (float, and W4A4 with packed ports) compile with -Wall
  -Werror against the folder.
"""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mambaflow.targets.hls import cxx
from mambaflow.targets.hls.csim import CsimError, compile_csim
from mambaflow.targets.hls.cxx import PROJECT_HEADERS, PROJECT_INCLUDE, csim_include_dir

CSIM_FLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas"]
# Hand-written test programs that build ap types from C values at -O2 (see the idioms test).
VENDOR_QUIET = ["-O2", "-Wno-uninitialized", "-Wno-maybe-uninitialized"]
CXX = shutil.which("g++")
needs_gxx = pytest.mark.skipif(CXX is None, reason="g++ not on PATH")


@pytest.fixture(scope="module")
def inc(tmp_path_factory) -> Path:
    return csim_include_dir(tmp_path_factory.mktemp("hls_headers") / "include")


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def compile_cpp(src: Path, exe: Path, inc: Path, flags: list[str]) -> None:
    # the project's headers by -I, so -Wextra -Werror check them; AMD's as system headers
    r = subprocess.run([CXX, *flags, "-I", str(PROJECT_INCLUDE), "-isystem", str(inc), str(src), "-o", str(exe)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"compiling {src.name} failed:\n{r.stderr[-6000:]}"


# ---------------------------------------------------------------------------------
# The include folder
# ---------------------------------------------------------------------------------


def test_include_dir_is_amds_headers_and_the_projects_two(monkeypatch, tmp_path):
    monkeypatch.delenv(cxx.AP_TYPES_ENV, raising=False)   # the default: hls4ml's copy
    src, origin, _ = cxx._ap_types_source()
    assert origin.startswith("hls4ml ") and src.parts[-4:] == ("hls4ml", "templates", "vivado", "ap_types")
    inc = csim_include_dir(tmp_path / "include")
    files = _files(inc)
    for f in ("ap_int.h", "ap_fixed.h", "ap_int_base.h", "ap_fixed_base.h", "ap_common.h", "etc/ap_private.h"):
        assert files[f] == (src / f).read_bytes(), f"{f} is not AMD's copy"
    assert b"Licensed under the Apache License, Version 2.0" in files["ap_int.h"]
    # hls_stream.h / hls_math.h are the project's, not hls4ml's stand-ins of the same name
    for h in PROJECT_HEADERS:
        assert files[h] == (PROJECT_INCLUDE / h).read_bytes() != (src / h).read_bytes()
    assert sorted(p.name for p in PROJECT_INCLUDE.iterdir()) == sorted(PROJECT_HEADERS)  # no ap_* of our own
    assert b"Apache License" in files["LICENSE"] and b"hls4ml" in files["NOTICE"]
    # copies, byte-identical run to run (a generated project holds the same bytes)
    assert not any(p.is_symlink() for p in inc.rglob("*"))
    assert _files(csim_include_dir(tmp_path / "again")) == files


def test_missing_headers_say_what_and_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv(cxx.AP_TYPES_ENV, raising=False)
    monkeypatch.setattr(cxx.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CsimError) as e:
        csim_include_dir(tmp_path / "a")
    msg = str(e.value)
    assert "ap_int.h" in msg and "hls4ml is not importable" in msg
    assert "pip install hls4ml" in msg and cxx.AP_TYPES_ENV in msg
    assert not (tmp_path / "a").exists()  # nothing half-written

    monkeypatch.setenv(cxx.AP_TYPES_ENV, str(tmp_path))
    (tmp_path / "ap_int.h").write_text("// not enough\n")
    with pytest.raises(CsimError, match=r"MAMBAFLOW_AP_TYPES_DIR=.* \(missing: ap_fixed\.h, etc/ap_private\.h\)"):
        csim_include_dir(tmp_path / "b")


@needs_gxx
def test_csim_compile_stops_on_missing_headers(monkeypatch, tmp_path):
    """No silent fallback: the csim build raises before it runs the compiler."""
    monkeypatch.setenv(cxx.AP_TYPES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(CsimError, match="does not hold AMD's ap_types headers"):
        compile_csim(tmp_path)


VENDOR_NOISE = """#include <ap_int.h>
#include <cstdint>
int64_t k(int64_t x) { ap_int<5> v = ap_int<5>(x); return int64_t(v); }  // arith.trunci + extsi
"""


@needs_gxx
@pytest.mark.parametrize("own_bug", [False, True])
def test_csim_werror_holds_for_the_emitted_code(own_bug, tmp_path):
    """AMD's ap_private.h reads its own uninitialized word in every ap_int<W>(x); csim
    lets that through (it is the vendor's), but an uninitialized read in the emitted code
    still fails the build, as -Werror would."""
    kern = VENDOR_NOISE + ("int64_t j(int64_t x) { int64_t u; return u + k(x); }\n" if own_bug else "")
    (tmp_path / "kernels.cpp").write_text(kern)
    (tmp_path / "tb.cpp").write_text("#include <cstdint>\nint64_t k(int64_t);\nint main(int c, char**) { return int(k(c + 30)); }\n")
    cmd = [CXX, "-std=c++17", "-O2", "-Wall", "-Werror", "-isystem", str(csim_include_dir(tmp_path / "inc")), "-c",
           str(tmp_path / "kernels.cpp"), "-o", str(tmp_path / "plain.o")]
    plain = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "inc/etc/ap_private.h" in plain.stderr  # the vendor's, through -isystem
    if own_bug:
        with pytest.raises(CsimError, match=r"-Werror: uninitialized values in .*kernels\.cpp"):
            compile_csim(tmp_path)
    else:
        exe, _, _ = compile_csim(tmp_path)
        assert subprocess.run([str(exe)]).returncode == 255  # ap_int<5>(31) == -1, exit status -1 & 0xff


def test_env_dir_wins_over_hls4ml(monkeypatch, tmp_path):
    src, _, _ = cxx._ap_types_source()
    mine = tmp_path / "vendor"
    shutil.copytree(src, mine, ignore=shutil.ignore_patterns("LICENSE*"))
    (mine / "ap_int.h").write_text("// marker: the env copy\n" + (src / "ap_int.h").read_text())
    (mine / "hls_half.h").write_text("// ap_int_base.h includes it (when _AP_ENABLE_HALF_): copied\n")
    (mine / "x_other.h").write_text("// included by nothing: not copied\n")
    monkeypatch.setenv(cxx.AP_TYPES_ENV, str(mine))
    d = csim_include_dir(tmp_path / "inc")
    assert (d / "ap_int.h").read_text().startswith("// marker: the env copy")
    assert (d / "hls_stream.h").read_bytes() == (PROJECT_INCLUDE / "hls_stream.h").read_bytes()
    assert (d / "hls_half.h").exists() and not (d / "x_other.h").exists() and not (d / "LICENSE").exists()
    assert "$MAMBAFLOW_AP_TYPES_DIR" in (d / "NOTICE").read_text()


# ---------------------------------------------------------------------------------
# The emitter's ap_int idioms on AMD's headers, against Python integers
# ---------------------------------------------------------------------------------


def wrap(v: int, w: int, signed: bool = True) -> int:
    v &= (1 << w) - 1
    return v - (1 << w) if signed and v >> (w - 1) else v


def c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


WIDTHS = [2, 3, 4, 5, 7, 12, 17, 24, 33, 48, 63]
IDIOMS = r"""
#include <ap_int.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
template <class T> static inline T mf_max(T a, T b) { return a < b ? b : a; }
template <class T> static inline T mf_min(T a, T b) { return b < a ? b : a; }
typedef unsigned long long u64;
template <int W> static u64 bits(ap_int<W> x) { return x.range(W - 1, 0).to_uint64(); }
// Spelled as targets/hls/emitter.py writes them: results assigned to the op's type.
template <int W> static void idioms(int64_t x, int64_t y, int s) {
  ap_int<W> a = ap_int<W>(x), b = ap_int<W>(y);       // arith.trunci from i64
  ap_int<W> add = a + b, sub = a - b, mul = a * b, band = a & b, bor = a | b, bxor = a ^ b;
  ap_int<W> shl = a << ap_int<W>(s), shr = a >> ap_int<W>(s);
  ap_int<W> shru = ap_int<W>(ap_uint<W>(a) >> ap_uint<W>(s));
  ap_int<W> mx = ap_int<W>(mf_max(a, b)), mn = ap_int<W>(mf_min(ap_uint<W>(a), ap_uint<W>(b)));
  std::printf("%d %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx %llx", W, bits(a), bits(add), bits(sub),
              bits(mul), bits(band), bits(bor), bits(bxor), bits(shl), bits(shr), bits(shru), bits(mx), bits(mn));
  if (b != 0) {
    ap_int<W> q = a / b, r = a % b;
    ap_int<W> qu = ap_int<W>(ap_uint<W>(a) / ap_uint<W>(b)), ru = ap_int<W>(ap_uint<W>(a) % ap_uint<W>(b));
    std::printf(" %llx %llx %llx %llx", bits(q), bits(r), bits(qu), bits(ru));
  } else {
    std::printf(" - - - -");
  }
  bool lt = a < b, eq = a == b, ult = ap_uint<W>(a) < ap_uint<W>(b);
  int64_t ext = int64_t(a), extu = int64_t(ap_uint<W>(a));   // arith.extsi / arith.extui
  int32_t t32 = int32_t(a);
  double fa = double(a);                                      // arith.sitofp
  u64 fbits; std::memcpy(&fbits, &fa, 8);
  std::printf(" %d%d%d %lld %lld %d %llx\n", lt, eq, ult, (long long)ext, (long long)extu, t32, fbits);
}
int main() {
  FILE* f = std::fopen("cases.txt", "r");
  long long x, y; int w, s;
  while (std::fscanf(f, "%d %lld %lld %d", &w, &x, &y, &s) == 4) {
    switch (w) {
CASES
    }
  }
  std::fclose(f);
  return 0;
}
"""


def _idiom_expect(w: int, x: int, y: int, s: int) -> str:
    a, b = wrap(x, w), wrap(y, w)
    ua, ub = wrap(a, w, False), wrap(b, w, False)
    h = lambda v: f"{wrap(v, w, False):x}"  # noqa: E731
    outs = [str(w), h(a), h(a + b), h(a - b), h(a * b), h(a & b), h(a | b), h(a ^ b), h(a << s), h(a >> s),
            h(ua >> s), h(max(a, b)), h(min(ua, ub))]
    outs += [h(c_div(a, b)), h(a - b * c_div(a, b)), h(ua // ub), h(ua % ub)] if b else ["-"] * 4
    outs += [f"{int(a < b)}{int(a == b)}{int(ua < ub)}", str(a), str(ua), str(wrap(a, 32)),
             f"{struct.unpack('<Q', struct.pack('<d', float(a)))[0]:x}"]
    return " ".join(outs)


@needs_gxx
def test_emitter_ap_int_idioms_bit_exact(inc, tmp_path):
    rng = random.Random(20240617)
    cases = []
    for w in WIDTHS:
        lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
        edges = [lo, hi, 0, -1, 1, lo + 1, hi - 1]
        for k in range(60):
            x = edges[k] if k < len(edges) else rng.randint(lo, hi)
            y = edges[(k * 3) % len(edges)] if k < 2 * len(edges) else rng.randint(lo, hi)
            if k % 5 == 4:   # out of range: the truncation wraps
                x = rng.randint(-(2**63), 2**63 - 1)
            if (wrap(x, w), wrap(y, w)) == (lo, -1):
                y = 1        # INT_MIN / -1: undefined in MLIR (divsi), not asked
            cases.append((w, x, y, rng.randrange(w)))
    (tmp_path / "cases.txt").write_text("".join(f"{w} {x} {y} {s}\n" for w, x, y, s in cases))
    src = IDIOMS.replace("CASES", "\n".join(f"      case {w}: idioms<{w}>(x, y, s); break;" for w in WIDTHS))
    (tmp_path / "idioms.cpp").write_text(src)
    # -O2 as csim. Every ap_int<W> built from a C integer reads an uninitialized word in
    # AMD's ap_private.h (its default constructor's clearUnusedBits); g++ 12 reports that
    # through -isystem once inlined, so this hand-written program, unlike the emitted
    # designs (see test_emitted_designs_compile_wall_werror), switches the warnings off.
    compile_cpp(tmp_path / "idioms.cpp", tmp_path / "idioms", inc, CSIM_FLAGS + VENDOR_QUIET)
    r = subprocess.run([str(tmp_path / "idioms")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = r.stdout.splitlines()
    want = [_idiom_expect(*c) for c in cases]
    bad = [(c, g, x) for c, g, x in zip(cases, got, want) if g != x]
    assert len(got) == len(want) == 660 and not bad, "\n".join(f"{c}\n  got  {g}\n  want {x}" for c, g, x in bad[:8])


# ---------------------------------------------------------------------------------
# hls::stream, hls_math, pragmas
# ---------------------------------------------------------------------------------

MISC_SRC = r"""
#include <ap_int.h>
#include <ap_fixed.h>
#include <hls_math.h>
#include <hls_stream.h>
#include <cmath>
#include <cstdio>
#include <cstring>

// A dataflow-style kernel as the emitter writes it: pragmas g++ must ignore.
static void producer(hls::stream<ap_int<12> >& out, int n) {
#pragma HLS inline off
  for (int i = 0; i < n; ++i) {
#pragma HLS pipeline II=1
    out.write(ap_int<12>(i * 300));
  }
}
static void consumer(hls::stream<ap_int<12> >& in, int n, long long& sum) {
  for (int i = 0; i < n; ++i) {
#pragma HLS pipeline II=1
    sum += in.read().to_int64();
  }
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "ok";
  if (!std::strcmp(mode, "ok")) {
    hls::stream<ap_int<12> > s("fifo_a");
#pragma HLS stream variable=s depth=8
    s.set_depth(8);
    long long sum = 0;
    producer(s, 8);
    std::printf("size %zu full %d empty %d max %zu\n", s.size(), s.full(), s.empty(), s.max_occupancy());
    consumer(s, 8, sum);
    std::printf("sum %lld empty %d\n", sum, s.empty());
    hls::stream<float> f;
    f << 1.5f; f << -2.0f;
    float x, y; f >> x; f.read(y);
    ap_int<12> z; bool got = s.read_nb(z);
    std::printf("fifo %g %g nb %d\n", x, y, got);
    hls::stream<int, 2> t("fifo_t");
    bool w1 = t.write_nb(1), w2 = t.write_nb(2), w3 = t.write_nb(3);
    std::printf("wnb %d %d %d full %d\n", w1, w2, w3, t.full());
    // hls_math: float and double forward to <cmath> (the contract), so bit-equal to it.
    std::printf("same %d %d %d %d %d %d\n", hls::expf(0.75f) == std::exp(0.75f),
                hls::exp(0.75) == std::exp(0.75), hls::rsqrt(4.0f) == 0.5f,
                hls::recip(8.0) == 0.125, hls::tanh(0.5f) == std::tanh(0.5f),
                hls::max(3, 7) == 7 && hls::min(2.5, -1.0) == -1.0);
    std::printf("math %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n", (double)hls::expf(0.75f), hls::log(3.0),
                (double)hls::sqrt(2.0f), (double)hls::tanh(-0.5f), hls::fmax(-1.0, 2.0), (double)hls::abs(-3.25f),
                (double)hls::fmod(7.5f, 2.0f));
    // ap_fixed overloads: through double, back into the argument's type and modes.
    ap_fixed<16, 4, AP_RND> two = 2.0;
    ap_fixed<8, 4, AP_RND, AP_SAT> big = -7.5;
    std::printf("fx %llx %llx %llx %llx\n", hls::sqrt(two).range().to_uint64(),
                hls::abs(big).range().to_uint64(), hls::floor(big).range().to_uint64(),
                hls::exp(ap_fixed<8, 4, AP_TRN, AP_SAT>(3.0)).range().to_uint64());
    return 0;
  }
  if (!std::strcmp(mode, "empty")) {
    hls::stream<int> s("empty_fifo");
    s.write(1);
    s.read();
    s.read();  // the producer wrote one element only
    return 0;
  }
  if (!std::strcmp(mode, "overflow")) {
    hls::stream<int> s("small_fifo");
    s.set_depth(2);
    for (int i = 0; i < 3; ++i) s.write(i);
    return 0;
  }
  if (!std::strcmp(mode, "tdepth")) {
    hls::stream<int, 1> s("tpl_fifo");
    s << 1;
    s << 2;
    return 0;
  }
  return 2;
}
"""


@pytest.fixture(scope="module")
def misc_exe(inc, tmp_path_factory):
    d = tmp_path_factory.mktemp("hls_misc")
    (d / "misc.cpp").write_text(MISC_SRC)
    compile_cpp(d / "misc.cpp", d / "misc", inc, CSIM_FLAGS + VENDOR_QUIET)
    return d / "misc"


def _run(exe: Path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), mode], capture_output=True, text=True, timeout=30)


def _fixed_bits(v: float, w: int, i: int, rnd: bool) -> int:
    """ap_fixed<w, i, AP_RND or AP_TRN, AP_SAT> of v: the raw bits (signed)."""
    f = w - i
    raw = math.floor(v * 2**f + (0.5 if rnd else 0.0))
    raw = max(-(1 << (w - 1)), min((1 << (w - 1)) - 1, raw))
    return raw & ((1 << w) - 1)


@needs_gxx
def test_stream_fifo_semantics_and_math(misc_exe):
    r = _run(misc_exe, "ok")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "size 8 full 1 empty 0 max 8"
    # ap_int<12>(i * 300) wraps: sum of the wrapped values
    assert lines[1] == f"sum {sum(wrap(i * 300, 12) for i in range(8))} empty 1"
    assert lines[2] == "fifo 1.5 -2 nb 0"
    assert lines[3] == "wnb 1 1 0 full 1"
    assert lines[4] == "same 1 1 1 1 1 1"
    got = [float(v) for v in lines[5].split()[1:]]
    want = [math.exp(0.75), math.log(3.0), math.sqrt(2.0), math.tanh(-0.5), 2.0, 3.25, 1.5]
    assert got == pytest.approx(want, rel=1e-6), lines[5]   # float results: within float32 rounding
    want_fx = [_fixed_bits(math.sqrt(2.0), 16, 4, True), _fixed_bits(7.5, 8, 4, True),
               _fixed_bits(-8.0, 8, 4, True), _fixed_bits(math.exp(3.0), 8, 4, False)]
    assert want_fx == [0x16a1, 0x78, 0x80, 0x7f]   # by hand: round(sqrt2 * 2^12), 7.5 * 16, -8, saturated
    assert lines[6] == "fx " + " ".join(f"{w:x}" for w in want_fx)
    assert "leftover" in r.stderr          # fifo_t still holds 2 elements at exit


@needs_gxx
@pytest.mark.parametrize("mode, name, what", [
    ("empty", "empty_fifo", "read while empty"),
    ("overflow", "small_fifo", "write beyond depth 2"),
    ("tdepth", "tpl_fifo", "write beyond depth 1"),
])
def test_stream_misuse_aborts_naming_the_stream(misc_exe, mode, name, what):
    r = _run(misc_exe, mode)
    assert r.returncode != 0, f"{mode}: expected an abort, got exit 0"
    assert f"hls::stream '{name}': {what}" in r.stderr, r.stderr


@needs_gxx
@pytest.mark.parametrize("pragmas_ok", [True, False])
def test_project_headers_warning_clean_and_pragmas(pragmas_ok, inc, tmp_path):
    """misc.cpp (both project headers, every template instantiated, `#pragma HLS` lines)
    passes the front end's -Wall -Wextra -Werror with the project's headers by -I (not
    system headers); without -Wno-unknown-pragmas, -Werror rejects the pragmas, which is
    why the csim command line passes it."""
    src = tmp_path / "p.cpp"
    src.write_text(MISC_SRC)
    flags = [f for f in CSIM_FLAGS if pragmas_ok or f != "-Wno-unknown-pragmas"] + ["-fsyntax-only"]
    r = subprocess.run([CXX, *flags, "-I", str(PROJECT_INCLUDE), "-isystem", str(inc), str(src)],
                       capture_output=True, text=True, timeout=120)
    if pragmas_ok:
        assert r.returncode == 0 and r.stderr == "", r.stderr[-4000:]
    else:
        assert r.returncode != 0 and "unknown-pragmas" in r.stderr


# ---------------------------------------------------------------------------------
# The emitted designs
# ---------------------------------------------------------------------------------


def _emitted(name: str):
    if name.startswith("w4a4-"):
        import torch

        from mambaflow.models import build_model, get_config
        from mambaflow.quant.flow import capture_quantized
        from mambaflow.quant.ptq import quantize
        from mambaflow.quant.schemes import W4A4
        from mambaflow.targets.hls.design import emit_design

        torch.manual_seed(0)
        calib = torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(1))
        qm = quantize(build_model(get_config(name[5:])), W4A4, calib)
        return emit_design(capture_quantized(qm, "model"))
    from mambaflow.flow.capture import capture
    from mambaflow.models import get_config
    from mambaflow.targets.hls.design import emit_design

    return emit_design(capture(get_config(name), "decode", T=1, progress=False))


@needs_gxx
@pytest.mark.parametrize("design", ["w4a4-tiny-mamba1", "w4a4-tiny-mamba2", "tiny-mamba1", "tiny-mamba2"])
def test_emitted_designs_compile_wall_werror(design, inc, tmp_path):
    """The decode designs' C++ compiles with -Wall -Werror against AMD's headers. AMD's
    ap_private.h reads an uninitialized word whenever an ap_int<W> is constructed (g++ 12
    -O2 reports it), so the emitter keeps loaded odd-width values in C integers and the
    packed ports' beats are read through .range()."""
    code = _emitted(design)
    if design.startswith("w4a4"):
        packed = [p for p in code.ports if p.packed]
        assert any(p.elem_bits == 4 for p in packed) and "mf_unpack<4, 512>" in code.source
    code.write(tmp_path)
    r = subprocess.run([CXX, "-std=c++17", "-O2", "-Wall", "-Werror", "-Wno-unknown-pragmas", "-isystem", str(inc),
                        "-c", str(tmp_path / "kernels.cpp"), "-o", str(tmp_path / "k.o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
