"""targets.versal: boards, the generated Vitis project (tcl, v++ cfg, XRT host, Makefile
agree with each other and with the kernel), the fit check, csynth report parsing and
the one-shot build (without Vitis here: the missing tools are reported; a stand-in
`vitis_hls` checks the wiring of the vendor steps)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess

import pytest

from mambaflow.errors import MambaflowError
from mambaflow.flow.capture import capture
from mambaflow.models import get_config
from mambaflow.targets.hls.csim import CXXFLAGS, compiler
from mambaflow.targets.hls.cxx import PROJECT_HEADERS
from mambaflow.targets.hls.design import default_bundles, emit_design
from mambaflow.targets.hls.emitter import Port
from mambaflow.targets.hls.testbench import TestbenchSpec
from mambaflow.targets.versal import (BOARDS, Board, KernelSpec, ProjectSpec, StreamLink, build, check_fit,
                                      get_board, parse_csynth, write_project)
from mambaflow.targets.versal.project import hls_tcl, link_cfg
from mambaflow.targets.versal.reports import ReportError

build_mod = importlib.import_module("mambaflow.targets.versal.build")

# ----------------------------------------------------------------------- boards


def test_boards():
    v = get_board("VCK190")
    assert v.part == "xcvc1902-vsva2197-2MP-e-S"
    assert (v.dsp, v.lut, v.ff, v.bram36, v.uram) == (1968, 899_840, 1_799_680, 967, 463)  # AMD AM004 / DS950
    assert v.bram18k == 1934 and v.resources_verified
    h = get_board("vhk158")
    assert h.part == "xcvh1582-vsva3697-2MP-e-S"
    hbm = [m for m in h.memories if m.kind == "HBM2e"]
    assert len(hbm) == 32 and abs(sum(m.bandwidth_gbs for m in hbm) - 819.2) < 1e-6
    assert not h.resources_verified
    for b in BOARDS.values():
        assert b.ff == 2 * b.lut  # 32 LUTs and 64 flip-flops per CLB (UG1273)
        assert b.platform.startswith(f"xilinx_{b.name}_base_")
        assert b.clock_mhz > 0 and b.io_memory in {m.name for m in b.memories}
        assert set(b.weight_memories) <= {m.name for m in b.memories}
    assert h.memory_of_bundle("gmem_w0") == "HBM[1]" and h.memory_of_bundle("gmem_w9") == "HBM[2]"
    assert v.memory_of_bundle("gmem_io") == "DDR"
    with pytest.raises(MambaflowError, match="unknown board"):
        get_board("zcu102")


# ---------------------------------------------------------------------- project


@pytest.fixture(scope="module")
def tiny():
    d = capture(get_config("tiny-mamba1"), "decode", progress=False)
    return d, emit_design(d, bundles=default_bundles(d))


def _spec(code, board="vck190"):
    tb = TestbenchSpec(steps=2, per_step={"tokens"},
                       feedback={f"{k}_out": k for k in ("conv_state", "ssm_state")})
    return ProjectSpec(board=get_board(board), kernels=[KernelSpec(code.top, code.ports)], tb=tb)


@pytest.mark.parametrize("board", ["vck190", "vhk158"])
def test_project_is_consistent(tiny, board, tmp_path):
    d, code = tiny
    spec = _spec(code, board)
    files = write_project(tmp_path, spec)
    b = spec.board
    ports = [p.name for p in code.ports]
    tcl = files["tcl"].read_text()
    assert re.findall(r"^set_top (\w+)$", tcl, re.M) == ["decode"]
    assert re.findall(r"^set_part (\S+)$", tcl, re.M) == [b.part]
    assert float(re.search(r"create_clock -period ([\d.]+)", tcl).group(1)) == pytest.approx(1000 / b.clock_mhz, abs=1e-3)
    assert "csim_design -argv $data" in tcl and "cosim_design -argv $data" in tcl
    assert "export_design -format xo" in tcl

    ccfg = files["compile_cfg"].read_text()
    assert re.findall(r"^clock=(\d+):(\w+)$", ccfg, re.M) == [(str(int(b.clock_mhz * 1e6)), "decode")]

    lcfg = files["link_cfg"].read_text()
    assert re.findall(r"^nk=(\w+):1:(\w+)$", lcfg, re.M) == [("decode", "decode_1")]
    sp = re.findall(r"^sp=decode_1\.(\w+):(\S+)$", lcfg, re.M)
    assert [p for p, _ in sp] == ports  # every m_axi port, in order, once
    mems = {m.name for m in b.memories}
    by_port = dict(sp)
    for p in code.ports:
        assert by_port[p.name] in mems
        assert by_port[p.name] == b.memory_of_bundle(p.bundle)
    # a state and its output share a memory, so the host can ping-pong the buffers
    assert by_port["ssm_state"] == by_port["ssm_state_out"]
    assert re.findall(r"^freqHz=(\d+):(\w+)$", lcfg, re.M) == [(str(int(b.clock_mhz * 1e6)), "decode_1")]
    assert "sc=" not in lcfg

    host = files["host"].read_text()
    assert re.findall(r'xrt::kernel kernel\(device, uuid, "(\w+)"\)', host) == ["decode"]
    groups = re.findall(r"xrt::bo (\w+)\(device, (\d+), kernel\.group_id\((\d+)\)\);", host)
    assert [g[0] for g in groups] == ports and [int(g[2]) for g in groups] == list(range(len(ports)))
    assert [int(g[1]) for g in groups] == [p.nbytes for p in code.ports]
    call = re.search(r"xrt::run run = kernel\(([^)]*)\);", host).group(1)
    assert [a.strip() for a in call.split(",")] == ports
    assert "static const int kSteps = 2;" in host
    assert host.count("std::swap(") == 2  # the two stacked states, all layers at once

    mk = files["makefile"].read_text()
    assert re.search(r"^TOP\s+:= decode$", mk, re.M) and re.search(rf"^PART\s+:= {re.escape(b.part)}$", mk, re.M)
    assert re.search(rf"^PLATFORM \?= {re.escape(b.platform)}$", mk, re.M)
    assert re.search(rf"^FREQ_HZ\s+:= {int(b.clock_mhz * 1e6)}$", mk, re.M)
    for t in ("csim", "vitis_csim", "csynth", "cosim", "sw_emu", "hw_emu", "hw", "run_hw_emu", "platforminfo"):
        assert re.search(rf"^{t}:", mk, re.M), t
    assert "--config link.cfg" in mk and "--config compile.cfg" in mk and "-k $(TOP)" in mk

    # the kernel's own prototype has the same ports in the same order
    params = re.findall(r"^\s+(?:const )?\w+ (\w+)\[", code.header, re.M)
    assert params == ports
    readme = files["readme"].read_text()
    assert all(f"`{p}`" in readme for p in ports)
    # make csim's headers: AMD's ap_types and the project's two, copied into the project
    inc = files["include"]
    assert inc == tmp_path / "hls" / "include" and (inc / "etc" / "ap_private.h").is_file()
    assert all((inc / h).is_file() for h in ("ap_int.h", "ap_fixed.h", "LICENSE", "NOTICE", *PROJECT_HEADERS))
    assert re.search(r"^hls/csim:.*\n\t\$\(CXX\) \$\(CSIM_FLAGS\) -isystem hls/include -I hls ", mk, re.M)


def test_stream_connectivity_between_kernels():
    def port(name, iface, written=False):
        return Port(name, name, "float", (16,) if iface == "m_axi" else (), "input", not written, written, iface,
                    "gmem_io" if iface == "m_axi" else None)

    prod = KernelSpec("producer", [port("x", "m_axi"), port("out", "axis", True)])
    cons = KernelSpec("consumer", [port("in", "axis"), port("y", "m_axi", True)])
    spec = ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "out", "consumer", "in", 32)])
    cfg = link_cfg(spec)
    assert re.findall(r"^nk=(\w+):1:(\w+)$", cfg, re.M) == [("producer", "producer_1"), ("consumer", "consumer_1")]
    assert re.findall(r"^sc=(\S+)$", cfg, re.M) == ["producer_1.out:consumer_1.in:32"]
    assert re.findall(r"^sp=(\S+):", cfg, re.M) == ["producer_1.x", "consumer_1.y"]  # streams are not memory ports
    assert len(re.findall(r"^freqHz=", cfg, re.M)) == 2
    assert "set_top producer" in hls_tcl(spec)
    bad = ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "x", "consumer", "in")])
    with pytest.raises(MambaflowError, match="not an AXI4-Stream port"):
        link_cfg(bad)
    with pytest.raises(MambaflowError, match="no kernel has"):
        link_cfg(ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "out", "nobody", "in")]))


# ------------------------------------------------------------------ XRT stub

XRT_STUB = {
    "xrt/xrt_device.h": """#pragma once
#include <string>
namespace xrt {
struct uuid {};
class device {
 public:
  explicit device(unsigned) {}
  uuid load_xclbin(const std::string&) { return {}; }
};
}  // namespace xrt
""",
    "xrt/xrt_bo.h": """#pragma once
#include <cstddef>
#include <vector>
#include "xrt/xrt_device.h"
enum xclBOSyncDirection { XCL_BO_SYNC_BO_TO_DEVICE, XCL_BO_SYNC_BO_FROM_DEVICE };
namespace xrt {
class bo {
  std::vector<double> mem_;  // 8-byte aligned
 public:
  bo(const device&, std::size_t n, int) : mem_((n + 7) / 8) {}
  template <class T> T map() { return reinterpret_cast<T>(mem_.data()); }
  void* data() { return mem_.data(); }
  void sync(xclBOSyncDirection) {}
};
}  // namespace xrt
""",
    "xrt/xrt_kernel.h": """#pragma once
#include <string>
#include <vector>
#include "xrt/xrt_bo.h"
void mf_stub_run(const std::vector<xrt::bo*>& args);  // the test's glue calls the C++ kernel
namespace xrt {
class run {
 public:
  void wait() {}
};
class kernel {
 public:
  kernel(const device&, const uuid&, const std::string&) {}
  int group_id(int i) const { return i; }
  template <class... A> run operator()(A&... a) {
    mf_stub_run(std::vector<bo*>{&a...});
    return {};
  }
};
}  // namespace xrt
""",
}


def _glue(code) -> str:
    args = []
    for i, p in enumerate(code.ports):
        if len(p.shape) <= 1:
            args.append(f"static_cast<{p.elem}*>(a[{i}]->data())")
        else:
            dims = "".join(f"[{d}]" for d in p.shape[1:])
            args.append(f"reinterpret_cast<{p.elem}(*){dims}>(a[{i}]->data())")
    return ('#include "xrt/xrt_kernel.h"\n#include "kernels.h"\n'
            "void mf_stub_run(const std::vector<xrt::bo*>& a) {\n"
            f"  {code.top}({', '.join(args)});\n}}\n")


# ------------------------------------------------------------------------ build


def _no_vitis(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(build_mod, "_which", lambda t: None if t in ("vitis_hls", "v++") else real(t))


def test_build_csim_without_vitis(tmp_path, monkeypatch):
    """The issue's acceptance run, on the tiny model: csim matches, project written,
    non-zero exit only because Vitis is missing; then the project's own `make csim` and
    the XRT host program (on a stub XRT that calls the C++ kernel) pass on the data."""
    _no_vitis(monkeypatch)
    sched = tmp_path / "sched.py"
    sched.write_text("def schedule(s):\n    s.pipeline(s.split('in_proj:S_i_j.j', 8).inner)\n")
    out = tmp_path / "proj"
    r = build("tiny-mamba1", "vck190", str(sched), "csim", out, progress=False)
    assert r.csim is not None and r.csim.ok and r.fit.fits
    assert r.missing_tools == ["vitis_hls"] and r.exit_code == 3
    assert r.commands_left == [f"cd {out.resolve()} && make vitis_csim"]
    text = r.report()
    assert "C simulation matches PyTorch" in text and str(out.resolve()) in text
    assert "vitis_hls" in text and "make vitis_csim" in text and "make hw" in text
    assert (out / "schedule.json").exists() and "pipeline II=1" in (out / "hls" / "kernels.cpp").read_text()
    for f in ("Makefile", "link.cfg", "compile.cfg", "README.md", "host/host.cpp", "hls/run_hls.tcl",
              "hls/tb.cpp", "hls/kernels.h", "build.json", "resources.json"):
        assert (out / f).exists(), f

    if shutil.which("make"):
        p = subprocess.run(["make", "csim"], cwd=out, capture_output=True, text=True)
        assert p.returncode == 0 and "MF_RESULT PASS" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]

    stub = tmp_path / "xrt"
    for name, text in XRT_STUB.items():
        (stub / name).parent.mkdir(parents=True, exist_ok=True)
        (stub / name).write_text(text)
    d = capture(get_config("tiny-mamba1"), "decode", progress=False)
    from mambaflow.targets.versal.build import apply_schedule

    apply_schedule(d, str(sched))
    code = emit_design(d)
    (out / "hls" / "glue.cpp").write_text(_glue(code))
    exe = tmp_path / "host.exe"
    cmd = [compiler(), *CXXFLAGS, "-I", str(stub), "-isystem", str(out / "hls" / "include"), "-I", str(out / "hls"),
           str(out / "host" / "host.cpp"), str(out / "hls" / "glue.cpp"), str(out / "hls" / "kernels.cpp"), "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr[:3000]
    p = subprocess.run([str(exe), "kernel.xclbin", str(out / "hls" / "data")], capture_output=True, text=True)
    assert p.returncode == 0 and "MF_RESULT PASS" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("MF_COMPARE logits") == 2  # both decode steps were compared


def test_build_does_not_fit(tmp_path, monkeypatch):
    _no_vitis(monkeypatch)
    small = Board(name="tinyboard", part="xcvc1902-vsva2197-2MP-e-S", platform="xilinx_vck190_base_202320_1",
                  dsp=50, lut=500_000, ff=1_000_000, bram36=100, uram=0, clock_mhz=100.0, io_memory="DDR",
                  weight_memories=("DDR",), memories=get_board("vck190").memories[:1])
    r = build("tiny-mamba1", small, None, "hw", tmp_path / "p", progress=False)
    assert not r.fit.fits and r.exit_code == 1
    over = {i.resource for i in r.fit.items if not i.fits}
    assert over == {"DSP"}
    # the message names the resource, the kernel that takes most of it and the knob
    (msg,) = r.fit.advice
    assert msg.startswith("DSP: ") and "; ssm takes 26 " in msg and "ssm is not unrolled: quantize it" in msg
    assert "<-- over" in r.fit.table() and "largest users" in r.fit.table() and msg in r.fit.table()
    assert "does not fit" in r.report()


def test_fit_counts_offchip_memory(tiny):
    d, code = tiny
    b = get_board("vck190")
    rep = check_fit(code.resources, b, ports=code.ports)
    names = [i.resource for i in rep.items]
    assert names[:5] == ["DSP", "LUT", "FF", "BRAM18K", "URAM"] and "DDR MiB" in names and rep.fits
    assert rep.advice == []
    h = check_fit(code.resources, get_board("vhk158"))
    assert any("unverified" in n for n in h.notes)


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(MambaflowError, match="unknown mode"):
        build("tiny-mamba1", "vck190", None, "bitstream", tmp_path)
    with pytest.raises(MambaflowError, match="unknown board"):
        build("tiny-mamba1", "u280", None, "csim", tmp_path)
    with pytest.raises(MambaflowError, match="does not exist"):
        build("tiny-mamba1", "vck190", str(tmp_path / "nope.py"), "csim", tmp_path, progress=False)


FAKE_VITIS_HLS = r"""#!/bin/sh
# stand-in for vitis_hls: writes what csynth writes (a report) so the build's wiring is tested
mode="$4"
mkdir -p proj_decode/solution1/syn/report
cat > proj_decode/solution1/syn/report/csynth.xml <<EOF
<profile><ReportVersion><Version>2023.2</Version></ReportVersion>
<UserAssignments><Part>xcvc1902-vsva2197-2MP-e-S</Part><TopModelName>decode</TopModelName><TargetClockPeriod>3.33</TargetClockPeriod></UserAssignments>
<PerformanceEstimates><SummaryOfTimingAnalysis><EstimatedClockPeriod>2.9</EstimatedClockPeriod></SummaryOfTimingAnalysis>
<SummaryOfOverallLatency><Best-caseLatency>100</Best-caseLatency><Average-caseLatency>100</Average-caseLatency><Worst-caseLatency>100</Worst-caseLatency><Interval-min>101</Interval-min><Interval-max>101</Interval-max></SummaryOfOverallLatency></PerformanceEstimates>
<AreaEstimates><Resources><BRAM_18K>4</BRAM_18K><DSP>7</DSP><FF>900</FF><LUT>1200</LUT><URAM>0</URAM></Resources>
<AvailableResources><BRAM_18K>1934</BRAM_18K><DSP>1968</DSP><FF>1799680</FF><LUT>899840</LUT><URAM>463</URAM></AvailableResources></AreaEstimates></profile>
EOF
echo "fake vitis_hls ran: $mode"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_build_runs_vendor_steps_when_present(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vitis_hls"
    tool.write_text(FAKE_VITIS_HLS)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = build("tiny-mamba1", "vck190", None, "csynth", tmp_path / "p", progress=False)
    assert r.errors == [] and r.missing_tools == [] and r.exit_code == 0, r.report()
    assert "fake vitis_hls ran: csynth" in (tmp_path / "p" / "make_csynth.log").read_text()
    assert r.synth is not None and r.synth.top == "decode" and r.synth.kernel("decode").resources["DSP"] == 7
    assert "csynth report" in r.report()


# ---------------------------------------------------------------- csynth xml

TOP_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments>
    <unit>ns</unit><ProductFamily>versal</ProductFamily><Part>xcvc1902-vsva2197-2MP-e-S</Part>
    <TopModelName>decode</TopModelName><TargetClockPeriod>3.33</TargetClockPeriod>
  </UserAssignments>
  <PerformanceEstimates>
    <PipelineType>no</PipelineType>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>2.431</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <unit>clock cycles</unit>
      <Best-caseLatency>51234</Best-caseLatency><Average-caseLatency>51300</Average-caseLatency>
      <Worst-caseLatency>52000</Worst-caseLatency><Interval-min>51235</Interval-min><Interval-max>52001</Interval-max>
    </SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>36</BRAM_18K><DSP>163</DSP><FF>40123</FF><LUT>60321</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>1934</BRAM_18K><DSP>1968</DSP><FF>1799680</FF><LUT>899840</LUT><URAM>463</URAM></AvailableResources>
  </AreaEstimates>
</profile>
"""

KERNEL_XML = """<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <UserAssignments><TopModelName>decode</TopModelName><TargetClockPeriod>3.33</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><EstimatedClockPeriod>2.2</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <Best-caseLatency>4240</Best-caseLatency><Worst-caseLatency>undef</Worst-caseLatency>
      <Interval-min>4241</Interval-min><Interval-max>undef</Interval-max>
    </SummaryOfOverallLatency>
    <SummaryOfLoopLatency>
      <S_i_i><Name>S_i_i</Name><TripCount>128</TripCount><Latency>128</Latency><IterationLatency>1</IterationLatency></S_i_i>
      <S_i_j_i><Name>S_i_j_i</Name><TripCount>128</TripCount><Latency>4096</Latency><IterationLatency>32</IterationLatency>
        <S_i_j_j><Name>S_i_j_j</Name><TripCount>32</TripCount><Latency>30</Latency><PipelineII>1</PipelineII><PipelineDepth>5</PipelineDepth></S_i_j_j>
      </S_i_j_i>
    </SummaryOfLoopLatency>
  </PerformanceEstimates>
  <AreaEstimates><Resources><BRAM_18K>1</BRAM_18K><DSP>2</DSP><FF>500</FF><LUT>700</LUT><URAM>0</URAM></Resources></AreaEstimates>
</profile>
"""


def test_parse_csynth_reports(tmp_path):
    rep = tmp_path / "proj_decode" / "solution1" / "syn" / "report"
    rep.mkdir(parents=True)
    (rep / "csynth.xml").write_text(TOP_XML)
    (rep / "decode_csynth.xml").write_text(TOP_XML)
    (rep / "in_proj_csynth.xml").write_text(KERNEL_XML)
    r = parse_csynth(tmp_path)
    assert r.top == "decode" and r.part == "xcvc1902-vsva2197-2MP-e-S" and r.version == "2023.2"
    assert [k.name for k in r.kernels] == ["decode", "in_proj"]
    top = r.kernel("decode")
    assert (top.latency_best, top.latency_avg, top.latency_worst) == (51234, 51300, 52000)
    assert (top.interval_min, top.interval_max) == (51235, 52001)
    assert top.resources == {"DSP": 163, "LUT": 60321, "FF": 40123, "BRAM_18K": 36, "URAM": 0}
    assert top.estimated_clock_ns == pytest.approx(2.431) and top.target_clock_ns == pytest.approx(3.33)
    assert r.available["DSP"] == 1968 and r.available["BRAM_18K"] == 1934
    k = r.kernel("in_proj")
    assert k.latency_worst is None and k.interval_max is None and k.latency_best == 4240  # 'undef'
    assert [lp.name for lp in k.loops] == ["S_i_i", "S_i_j_i"]
    inner = k.loops[1].loops[0]
    assert (inner.name, inner.trip_count, inner.pipeline_ii, inner.pipeline_depth) == ("S_i_j_j", 32, 1, 5)
    table = r.table()
    assert "in_proj" in table and "available" in table and "?" in table
    with pytest.raises(ReportError, match="no csynth.xml"):
        parse_csynth(tmp_path / "nothing")
    bad = tmp_path / "bad.xml"
    bad.write_text("<html/>")
    with pytest.raises(ReportError, match="not a Vitis HLS csynth report"):
        parse_csynth(bad)


def test_build_quant_w4a4_accelerator_csim_bit_exact(tmp_path, monkeypatch):
    """`build --quant w4a4 --schedule accelerator`: the integer layer engine passes csim
    bit for bit against the integer reference (the flow's own testbench, 4-bit weights
    packed into 512-bit AXI beats), fits, writes the project, and exits non-zero only
    because Vitis is missing; the project's `make csim` passes on the same data."""
    _no_vitis(monkeypatch)
    out = tmp_path / "q"
    r = build("tiny-mamba2", "vck190", "accelerator", "csim", out, progress=False, quant="w4a4")
    assert r.csim is not None and r.csim.ok and r.fit.fits, r.report()
    assert r.exit_code == 3 and r.missing_tools == ["vitis_hls"]
    assert {c.port for c in r.csim.compares} == {"logits", "conv_state_out", "ssm_state_out"}
    assert all(c.mismatches == 0 and c.max_abs_err == 0 for c in r.csim.compares)
    assert "matches the integer reference (bit for bit)" in r.report()
    assert json.loads((out / "build.json").read_text())["quant"] == "w4a4"
    src = (out / "hls" / "kernels.cpp").read_text()
    assert "ap_uint<512>" in src and "mf_unpack<4, 512>" in src  # packed sub-byte ports
    assert "layer_layer: for" in src  # one engine per kernel kind, reused by every layer
    log = json.loads((out / "schedule.json").read_text())["log"]
    assert {"pipeline", "unroll", "to"} <= {e["op"] for e in log}
    if shutil.which("make"):
        p = subprocess.run(["make", "csim"], cwd=out, capture_output=True, text=True)
        assert p.returncode == 0 and "MF_RESULT PASS" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]


def test_build_quant_that_cannot_be_built_says_why(tmp_path):
    from mambaflow.models.config import MambaConfig

    cfg = MambaConfig("mamba1", d_model=26, n_layer=1, vocab_size=64, d_state=8)  # no Hadamard of order 26
    with pytest.raises(MambaflowError, match=r"w4a4: rotation needs a Hadamard matrix of order d_model=26"):
        build(cfg, "vck190", None, "csim", tmp_path / "q", progress=False, quant="w4a4")


def test_build_float_accelerator_csim_matches_pytorch(tmp_path, monkeypatch):
    """The float design scheduled with `accelerator` (MAC arrays, serial SSM lanes,
    dataflow streams in the layer loop) passes csim within tolerance of PyTorch."""
    _no_vitis(monkeypatch)
    r = build("tiny-mamba2", "vck190", "accelerator", "csim", tmp_path / "f", progress=False)
    assert r.csim is not None and r.csim.ok and r.fit.fits and r.exit_code == 3, r.report()
    assert {c.port for c in r.csim.compares} == {"logits", "conv_state_out", "ssm_state_out"}
    assert 0 < r.csim.max_abs_err < 1e-5  # float reassociation only (the check itself: rtol/atol 1e-4)
    src = (tmp_path / "f" / "hls" / "kernels.cpp").read_text()
    assert "hls::stream" in src and "#pragma HLS pipeline II=1" in src
