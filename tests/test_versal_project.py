"""targets.versal: boards, the generated Vitis project (tcl, HLS config, v++ cfg, XRT host,
Makefile agree with each other and with the kernel, for each Vitis release's flow and for
a two-kernel project), the platform as an input, the fit check, csynth report parsing and
the one-shot build (without Vitis here: the missing tools are reported; a stand-in
`vitis_hls` checks the wiring of the vendor steps, stand-in `v++` banners the release
detection)."""

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
from mambaflow.targets.versal.project import hls_config, hls_tcl, link_cfg
from mambaflow.targets.versal.reports import ReportError
from mambaflow.targets.versal.vitis import (PlatformError, detect_vitis, has_sw_emu, hls_flow, parse_version,
                                            resolve_platform)

build_mod = importlib.import_module("mambaflow.targets.versal.build")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

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
        assert b.clock_mhz > 0 and b.io_memory in {m.name for m in b.memories}
        assert set(b.weight_memories) <= {m.name for m in b.memories}
    # only published platform names (docs/VITIS_REFERENCE.md); none for the VHK158
    assert v.default_platform("2023.2") == "xilinx_vck190_base_202320_1"
    assert v.default_platform("2024.2") == "xilinx_vck190_base_202420_1"
    assert v.default_platform("2025.1") == "xilinx_vck190_base_202510_1"
    assert v.default_platform(None) == "xilinx_vck190_base_202420_1" and v.default_platform("2026.1") is None
    assert all(n == f"xilinx_vck190_base_{r.replace('.', '')}0_1" for r, n in v.published_platforms)
    assert h.platform is None and h.published_platforms == () and h.default_platform("2024.2") is None
    with pytest.raises(MambaflowError, match="unknown board"):
        get_board("zcu102")


def test_bundle_memories_for_any_bundle_name():
    """io/out bundles on the io memory, every other bundle round-robin over the weight
    memories in first-appearance order, whatever its name (old gmem_w<k> included)."""
    v, h = get_board("vck190"), get_board("vhk158")
    order = ["gmem_in_proj", "gmem_io", "gmem_conv", "gmem_in_proj", "gmem_ssm", "gmem_out", "gmem_out_proj",
             "gmem_w", None]
    assert v.bundle_memories(order) == {"gmem_in_proj": "LPDDR", "gmem_io": "DDR", "gmem_conv": "DDR",
                                        "gmem_ssm": "LPDDR", "gmem_out": "DDR", "gmem_out_proj": "DDR",
                                        "gmem_w": "LPDDR", None: "DDR"}
    assert [h.bundle_memories(order)[b] for b in ("gmem_in_proj", "gmem_conv", "gmem_ssm", "gmem_out_proj",
                                                 "gmem_w", "gmem_io")] == \
        ["HBM[1]", "HBM[2]", "HBM[3]", "HBM[4]", "HBM[5]", "HBM[0]"]
    old = [f"gmem_w{k}" for k in range(10)] + ["gmem_io", "gmem_out"]
    m = h.bundle_memories(old)
    assert [m[f"gmem_w{k}"] for k in range(10)] == [f"HBM[{1 + k % 8}]" for k in range(10)]
    assert m["gmem_io"] == m["gmem_out"] == "HBM[0]"
    assert v.memory_of_bundle("gmem_ssm", ["gmem_conv", "gmem_ssm"]) == "DDR"
    assert v.memory_of_bundle("gmem_out", order) == "DDR"
    assert v.bundle_memories(order) == v.bundle_memories(list(order))  # deterministic


# ---------------------------------------------------------------------- project


@pytest.fixture(scope="module")
def tiny():
    d = capture(get_config("tiny-mamba1"), "decode", progress=False)
    return d, emit_design(d, bundles=default_bundles(d))


def _tb():
    return TestbenchSpec(steps=2, per_step={"tokens"}, feedback={f"{k}_out": k for k in ("conv_state", "ssm_state")})


def _xpfm(tmp_path, name="my_vhk158_platform"):
    p = tmp_path / "platforms" / name / f"{name}.xpfm"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("<xpfm/>")
    return p


def _spec(code, board="vck190", platform=None, release=None, **kw):
    return ProjectSpec(board=get_board(board), kernels=[KernelSpec(code.top, code.ports)], tb=_tb(),
                       platform=platform, vitis_release=release, **kw)


def _cfg(text):
    """hls_config.cfg -> (general options, [hls] options as a list of pairs)."""
    general, hls, section = [], [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        (hls if section == "[hls]" else general).append((key, value))
    return general, hls


def _make(cwd, *args):
    return subprocess.run(["make", *args], cwd=cwd, capture_output=True, text=True)


def _sources(out, spec):
    """Stand-ins for what the build writes beside the project (sources, testbench, data)."""
    for k in spec.kernels:
        for f in (k.source, k.header, f"{k.testbench_dir}/tb.cpp", f"{k.testbench_dir}/mf_data.h"):
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_text("// stand-in\n")
        (out / k.testbench_dir / "data").mkdir(exist_ok=True)
    (out / "host" / "host.cpp").touch()


@pytest.mark.parametrize("board", ["vck190", "vhk158"])
def test_project_is_consistent(tiny, board, tmp_path):
    d, code = tiny
    xpfm = _xpfm(tmp_path) if board == "vhk158" else None  # the VHK158 has no default platform
    spec = _spec(code, board, platform=str(xpfm) if xpfm else None)
    files = write_project(tmp_path / "p", spec)
    b = spec.board
    ports = [p.name for p in code.ports]
    tcl = files["tcl"].read_text()
    assert files["tcl"] == tmp_path / "p" / "hls" / "run_hls.tcl"
    assert re.findall(r"^set_top (\w+)$", tcl, re.M) == ["decode"]
    assert re.findall(r"^set_part (\S+)$", tcl, re.M) == [b.part]
    assert re.findall(r"^add_files (\S+)$", tcl, re.M) == ["kernels.cpp"]
    assert re.findall(r"^add_files -tb (\S+)", tcl, re.M) == ["tb.cpp", "mf_data.h"]
    assert float(re.search(r"create_clock -period ([\d.]+)", tcl).group(1)) == pytest.approx(1000 / b.clock_mhz, abs=1e-3)
    assert "set data [file normalize data]" in tcl
    assert "csim_design -argv $data" in tcl and "cosim_design -argv $data" in tcl
    assert "export_design -format xo -output [file normalize decode.xo]" in tcl

    # the 2024.2+ HLS component: part outside [hls] (UG1702 "v++ Mode HLS"), the rest under it
    general, hls = _cfg(files["hls_config"].read_text())
    assert files["hls_config"].parent == files["tcl"].parent
    assert general == [("part", b.part)]
    assert dict(hls)["syn.top"] == "decode" and dict(hls)["flow_target"] == "vitis"
    assert [v for k, v in hls if k == "syn.file"] == ["kernels.cpp"]
    assert [v for k, v in hls if k == "tb.file"] == ["tb.cpp", "mf_data.h"]
    assert dict(hls)["package.output.format"] == "xo" and dict(hls)["tb.cflags"] == "-Wno-unknown-pragmas"
    assert float(dict(hls)["clock"].removesuffix("ns")) == pytest.approx(1000 / b.clock_mhz, abs=1e-3)

    ccfg = files["compile_cfg"].read_text()
    assert re.findall(r"^clock=(\d+):(\w+)$", ccfg, re.M) == [(str(int(b.clock_mhz * 1e6)), "decode")]

    lcfg = files["link_cfg"].read_text()
    assert re.findall(r"^nk=(\w+):1:(\w+)$", lcfg, re.M) == [("decode", "decode_1")]
    sp = re.findall(r"^sp=decode_1\.(\w+):(\S+)$", lcfg, re.M)
    assert [p for p, _ in sp] == ports  # every m_axi port, in order, once
    mems = {m.name for m in b.memories}
    by_port = dict(sp)
    mem_of = b.bundle_memories(p.bundle for p in code.ports)
    for p in code.ports:
        assert by_port[p.name] in mems
        assert by_port[p.name] == mem_of[p.bundle]
    # one memory per bundle (one AXI master); both memories are used
    assert len({(p.bundle, by_port[p.name]) for p in code.ports}) == len({p.bundle for p in code.ports})
    assert len(set(by_port.values())) > 1
    # a state and its output share a memory, so the host can ping-pong the buffers
    assert by_port["ssm_state"] == by_port["ssm_state_out"]
    assert re.findall(r"^freqHz=(\d+):(\w+)$", lcfg, re.M) == [(str(int(b.clock_mhz * 1e6)), "decode_1")]
    assert "stream_connect=" not in lcfg

    host = files["host"].read_text()
    assert re.findall(r'xrt::kernel kernel\(device, uuid, "(\w+)"\)', host) == ["decode"]
    groups = re.findall(r"xrt::bo (\w+)\(device, (\d+), kernel\.group_id\((\d+)\)\);", host)
    assert [g[0] for g in groups] == ports and [int(g[2]) for g in groups] == list(range(len(ports)))
    assert [int(g[1]) for g in groups] == [p.nbytes for p in code.ports]
    call = re.search(r"xrt::run run = kernel\(([^)]*)\);", host).group(1)
    assert [a.strip() for a in call.split(",")] == ports
    assert "static const int kSteps = 2;" in host
    assert host.count("std::swap(") == 2  # the two stacked states, all layers at once
    # every XRT call is inside the try; the handler names the step and exits 3
    body = host[host.index("  try {"):host.index("  } catch (const std::exception& e) {")]
    assert "xrt::device device(0);" in body and "device.load_xclbin(argv[1])" in body and "run.wait();" in body
    for step in ("open device 0", "load xclbin ", "find kernel 'decode'", "allocate buffer 'tokens'",
                 "sync buffer 'logits' from the device", "run kernel 'decode' (step "):
        assert f'g_step = "{step}' in body or f'g_step = std::string("{step}' in body, step
    assert 'MF_ERROR XRT: %s failed: %s\\n", g_step.c_str(), e.what()' in host and "    return 3;" in host

    mk = files["makefile"].read_text()
    assert re.search(r"^TOP\s+:= decode$", mk, re.M) and re.search(rf"^PART\s+:= {re.escape(b.part)}$", mk, re.M)
    assert re.search(r"^KERNELS\s+:= decode$", mk, re.M)
    if xpfm:
        assert re.findall(r"^PLATFORM \?= (.*)$", mk, re.M) == [str(xpfm.resolve())]
    else:  # the published platform of the release make finds
        assert re.findall(r"^PLATFORM \?= (.*)$", mk, re.M) == ["$(PLATFORM_$(VITIS_VERSION))"]
        assert dict(re.findall(r"^PLATFORM_(\S+) := (\S+)$", mk, re.M)) == dict(b.published_platforms)
    assert re.search(rf"^FREQ_HZ\s+:= {int(b.clock_mhz * 1e6)}$", mk, re.M)
    for t in ("csim", "vitis_csim", "csynth", "cosim", "xo", "sw_emu", "hw_emu", "hw", "run_hw_emu", "platforminfo",
              "help", "csynth_decode"):
        assert re.search(rf"^{t}:", mk, re.M), t
    assert "--config link.cfg" in mk and "--config compile.cfg -k decode" in mk
    # edge XRT headers live in <sysroot>/usr/include/xrt; the host links xrt_coreutil
    host_rule = re.search(r"^\t\$\(HOST_CXX\) (.*)$", mk, re.M).group(1)
    assert "--sysroot=$(SYSROOT) -I$(SYSROOT)/usr/include/xrt" in host_rule and "-lxrt_coreutil" in host_rule
    assert "host/host.cpp" in host_rule

    # the kernel's own prototype has the same ports in the same order
    params = re.findall(r"^\s+(?:const )?\w+ (\w+)\[", code.header, re.M)
    assert params == ports
    readme = files["readme"].read_text()
    assert all(f"`{p}`" in readme for p in ports)
    assert (str(xpfm.resolve()) if xpfm else "xilinx_vck190_base_202420_1") in readme
    # make csim's headers: AMD's ap_types and the project's two, copied into the project
    inc = files["include"]
    assert inc == tmp_path / "p" / "hls" / "include" and (inc / "etc" / "ap_private.h").is_file()
    assert all((inc / h).is_file() for h in ("ap_int.h", "ap_fixed.h", "LICENSE", "NOTICE", *PROJECT_HEADERS))
    assert re.search(r"^\S*csim:.*\n\t\$\(CXX\) \$\(CSIM_FLAGS\) -isystem hls/include -I ", mk, re.M)

    # deterministic: the same spec writes the same bytes
    again = write_project(tmp_path / "q", spec)
    for key, path in files.items():
        if key != "include":
            assert again[key].read_bytes() == path.read_bytes(), key


RELEASES = {  # release -> (HLS flow, sw_emu, platform)
    "2023.2": ("tcl", True, "xilinx_vck190_base_202320_1"),
    "2024.2": ("unified", True, "xilinx_vck190_base_202420_1"),
    "2025.1": ("unified", False, "xilinx_vck190_base_202510_1"),
}


def test_release_rules():
    assert [hls_flow(r) for r in ("2023.1", "2023.2", "2024.1", "2024.2", "2025.1", "2025.2")] == \
        ["tcl", "tcl", "tcl", "unified", "unified", "unified"]
    assert [has_sw_emu(r) for r in ("2023.2", "2024.1", "2024.2", "2025.1", "2025.2", None)] == \
        [True, True, True, False, False, False]
    assert parse_version("v++ v2025.2, SW Build 6295257 on 2025-10-20") == "2025.2"
    assert parse_version("Vitis HLS - High-Level Synthesis from C, C++ and OpenCL v2023.2 (64-bit)") == "2023.2"
    assert parse_version("v++ v (64-bit)") is None
    with pytest.raises(MambaflowError, match="YYYY.N"):
        hls_flow("24.2")


@needs_make
@pytest.mark.parametrize("release", sorted(RELEASES))
def test_makefile_commands_per_release(tiny, release, tmp_path):
    """`make -n` with the release the Makefile would find: the HLS commands of that
    release's flow, its published platform, and sw_emu only before 2025.1."""
    _, code = tiny
    flow, sw_emu, platform = RELEASES[release]
    out = tmp_path / "p"
    spec = _spec(code)
    write_project(out, spec)
    _sources(out, spec)
    v = f"VITIS_VERSION={release}"
    p = _make(out, "help", v)
    assert p.returncode == 0 and f"Vitis release: {release} (HLS flow: {flow}); platform: {platform}" in p.stdout
    assert ("sw_emu" in p.stdout) == sw_emu
    p = _make(out, "-n", "vitis_csim", "csynth", "cosim", v)
    assert p.returncode == 0, p.stderr
    cmds = [c for c in p.stdout.splitlines() if c.startswith("cd hls && ")]
    if flow == "tcl":
        assert cmds == [f"cd hls && vitis_hls -f run_hls.tcl -tclargs {s}" for s in ("csim", "csynth", "cosim")]
    else:
        assert cmds == ["cd hls && vitis-run --mode hls --csim --config hls_config.run.cfg --work_dir proj_decode",
                        "cd hls && v++ -c --mode hls --config hls_config.run.cfg --work_dir proj_decode",
                        "cd hls && vitis-run --mode hls --cosim --config hls_config.run.cfg --work_dir proj_decode"]
        # the run config: the static one plus the absolute data and .xo paths
        run_cfg = [c for c in p.stdout.splitlines() if c.endswith("> hls/hls_config.run.cfg")][0]
        assert run_cfg.startswith("{ cat hls/hls_config.cfg;")
        assert f"echo 'csim.argv={out / 'hls' / 'data'}'" in run_cfg and f"echo 'cosim.argv={out / 'hls' / 'data'}'" in run_cfg
        assert f"echo 'package.output.file={out / 'hls' / 'decode.xo'}'" in run_cfg
    p = _make(out, "-n", "hw", v)
    assert p.returncode == 0, p.stderr
    vpp = [c for c in p.stdout.splitlines() if c.startswith("v++ ") or c.startswith("cd hls && ")]
    if flow == "tcl":
        assert vpp[0] == (f"v++ -c -t hw --platform {platform} --config compile.cfg -k decode -I hls "
                          "-o build_hw/decode.xo hls/kernels.cpp")
    else:
        assert vpp[:2] == ["cd hls && v++ -c --mode hls --config hls_config.run.cfg --work_dir proj_decode",
                           "cd hls && vitis-run --mode hls --package --config hls_config.run.cfg --work_dir proj_decode"]
        assert "cp hls/decode.xo build_hw/decode.xo" in p.stdout
    assert f"v++ -l -t hw --platform {platform} --config link.cfg -o build_hw/decode.xsa build_hw/decode.xo" in vpp
    assert any(c.startswith(f"v++ -p -t hw --platform {platform} --package.out_dir build_hw/package") for c in vpp)
    assert f"xilinx-versal-common-v{release}/rootfs.ext4" in p.stdout
    p = _make(out, "sw_emu", v) if not sw_emu else _make(out, "-n", "sw_emu", v)
    if sw_emu:
        assert p.returncode == 0 and "v++ -l -t sw_emu" in p.stdout
    else:  # refused, with the reason, and nothing run
        assert p.returncode != 0 and "v++" not in p.stdout
        assert f"Vitis {release} has no software emulation (removed in 2025.1" in p.stderr and "make hw_emu" in p.stderr


def test_project_written_with_2025_has_no_sw_emu(tiny, tmp_path):
    _, code = tiny
    files = write_project(tmp_path / "p", _spec(code, release="2025.1"))
    mk, readme = files["makefile"].read_text(), files["readme"].read_text()
    assert "TARGET=sw_emu" not in mk and "launch_sw_emu" not in mk and "HAS_SW_EMU),yes" not in mk
    assert re.search(r"^sw_emu run_sw_emu:\n\t@echo .*removed in 2025\.1.*exit 2$", mk, re.M)
    assert "make sw_emu" not in readme and "sw_emu was removed in 2025.1" in readme
    assert "Vitis 2025.1 was found" in readme
    old = write_project(tmp_path / "o", _spec(code, release="2023.2"))
    assert "TARGET=sw_emu" in old["makefile"].read_text() and "`make sw_emu`" in old["readme"].read_text()


def _port(name, iface="m_axi", written=False, bundle="gmem_io", role="input", shape=(16,)):
    return Port(name, name, "float", shape if iface == "m_axi" else (), role, not written, written, iface,
                bundle if iface == "m_axi" else None)


def test_two_kernel_project(tmp_path):
    """The speculative layout: a target `verify` and a draft `decode` kernel, each from its
    own folder with its own testbench, one HLS project each, both CUs in one xclbin, and the
    caller's host."""
    verify = KernelSpec("verify", [_port("tree", bundle="gmem_io"), _port("w", bundle="gmem_in_proj", role="weight"),
                                   _port("s", bundle="gmem_ssm", role="state"),
                                   _port("logits", written=True, bundle="gmem_out", role="output")],
                        source="hls/verify/kernels.cpp")
    draft = KernelSpec("decode", [_port("tok", bundle="gmem_io"), _port("dw", bundle="gmem_w0", role="weight"),
                                  _port("dw2", bundle="gmem_w1", role="weight"),
                                  _port("out", written=True, bundle="gmem_out", role="output")],
                       source="hls/draft/kernels.cpp")
    spec = ProjectSpec(get_board("vhk158"), [verify, draft], platform=str(_xpfm(tmp_path)))
    host = "// the draft -> verify -> accept host\nint main() { return 0; }\n"
    files = write_project(tmp_path / "p", spec, readme_extra="\n## Speculative\n", host=host)
    assert files["host"].read_text() == host
    for k, d in (("verify", "hls/verify"), ("decode", "hls/draft")):
        tcl = files[f"tcl:{k}"]
        assert tcl == tmp_path / "p" / d / "run_hls.tcl"
        assert re.findall(r"^set_top (\w+)$", tcl.read_text(), re.M) == [k]
        assert f"open_project -reset proj_{k}" in tcl.read_text()
        _, hls = _cfg(files[f"hls_config:{k}"].read_text())
        assert dict(hls)["syn.top"] == k and dict(hls)["syn.file"] == "kernels.cpp"
    assert files["tcl"] == files["tcl:verify"]
    lcfg = files["link_cfg"].read_text()
    assert re.findall(r"^nk=(\w+):1:(\w+)$", lcfg, re.M) == [("verify", "verify_1"), ("decode", "decode_1")]
    sp = re.findall(r"^sp=(\w+)\.(\w+):(\S+)$", lcfg, re.M)
    assert sp == [("verify_1", "tree", "HBM[0]"), ("verify_1", "w", "HBM[1]"), ("verify_1", "s", "HBM[2]"),
                  ("verify_1", "logits", "HBM[0]"),
                  ("decode_1", "tok", "HBM[0]"), ("decode_1", "dw", "HBM[1]"), ("decode_1", "dw2", "HBM[2]"),
                  ("decode_1", "out", "HBM[0]")]
    assert re.findall(r"^freqHz=\d+:(\w+)$", lcfg, re.M) == ["verify_1", "decode_1"]
    assert re.findall(r"^clock=\d+:(\w+)$", files["compile_cfg"].read_text(), re.M) == ["verify", "decode"]
    mk = files["makefile"].read_text()
    assert re.search(r"^KERNELS\s+:= verify decode$", mk, re.M) and re.search(r"^TOP\s+:= verify$", mk, re.M)
    assert re.search(r"^XOS\s+:= \$\(BUILD\)/verify\.xo \$\(BUILD\)/decode\.xo$", mk, re.M)
    assert re.search(r"^csim: csim_verify csim_decode$", mk, re.M)
    assert re.search(r"^csynth: csynth_verify csynth_decode$", mk, re.M)
    assert "$(CXX) $(CSIM_FLAGS) -isystem hls/include -I hls/verify hls/verify/kernels.cpp hls/verify/tb.cpp -o $@" in mk
    assert "./hls/draft/csim hls/draft/data" in mk
    assert "v++ -l -t $(TARGET) --platform $(PLATFORM) --config link.cfg -o $@ $(XOS)" in mk
    readme = files["readme"].read_text()
    assert "`verify` (hls/verify/kernels.cpp)" in readme and "| `decode` | `dw2` |" in readme
    assert "`verify.xclbin` (all 2 kernels)" in readme and "`hls/verify/data`, `hls/draft/data`" in readme
    assert "--package.sd_dir=hls " in mk  # both kernels' data on the SD card
    assert readme.rstrip().endswith("## Speculative")
    if shutil.which("make"):
        _sources(tmp_path / "p", spec)
        for release, cmd in (("2023.2", "cd hls/{d} && vitis_hls -f run_hls.tcl -tclargs csynth"),
                             ("2025.1", "cd hls/{d} && v++ -c --mode hls --config hls_config.run.cfg "
                                        "--work_dir proj_{k}")):
            p = _make(tmp_path / "p", "-n", "csynth", f"VITIS_VERSION={release}")
            assert p.returncode == 0, p.stderr
            got = [c for c in p.stdout.splitlines() if c.startswith("cd hls/")]
            assert got == [cmd.format(d="verify", k="verify"), cmd.format(d="draft", k="decode")]
        p = _make(tmp_path / "p", "-n", "hw", "VITIS_VERSION=2025.1")
        assert (f"v++ -l -t hw --platform {spec.platform} --config link.cfg -o build_hw/verify.xsa "
                "build_hw/verify.xo build_hw/decode.xo") in p.stdout
    with pytest.raises(MambaflowError, match="share the HLS folder"):
        write_project(tmp_path / "x", ProjectSpec(get_board("vck190"), [verify, KernelSpec("k2", [], source=verify.source)]))


def test_host_copies_a_state_across_memories():
    """A state and its output on different memories cannot swap buffers (each buffer
    belongs to its argument's memory): the host copies instead."""
    k = KernelSpec("decode", [_port("x"), _port("s", bundle="gmem_io", role="state"),
                              _port("s_out", written=True, bundle="gmem_ssm", role="output")])
    spec = ProjectSpec(get_board("vck190"), [k], tb=TestbenchSpec(steps=3, feedback={"s_out": "s"}))
    from mambaflow.targets.versal.host import host_source

    host = host_source(spec)
    assert "std::swap(" not in host and "if (step + 1 < kSteps) s.copy(s_out);  // LPDDR -> DDR" in host
    assert "g_step = \"copy buffer 's_out' to 's'\";" in host


def test_stream_connectivity_between_kernels():
    prod = KernelSpec("producer", [_port("x"), _port("out", "axis", True)], source="hls/producer/kernels.cpp")
    cons = KernelSpec("consumer", [_port("in", "axis"), _port("y", "m_axi", True)], source="hls/consumer/kernels.cpp")
    spec = ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "out", "consumer", "in", 32)])
    cfg = link_cfg(spec)
    assert re.findall(r"^nk=(\w+):1:(\w+)$", cfg, re.M) == [("producer", "producer_1"), ("consumer", "consumer_1")]
    assert re.findall(r"^stream_connect=(\S+)$", cfg, re.M) == ["producer_1.out:consumer_1.in:32"]
    assert re.findall(r"^sp=(\S+):", cfg, re.M) == ["producer_1.x", "consumer_1.y"]  # streams are not memory ports
    assert len(re.findall(r"^freqHz=", cfg, re.M)) == 2
    assert "set_top producer" in hls_tcl(spec) and "set_top consumer" in hls_tcl(spec, cons)
    assert "syn.top=consumer" in hls_config(spec, cons)
    bad = ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "x", "consumer", "in")])
    with pytest.raises(MambaflowError, match="not an AXI4-Stream port"):
        link_cfg(bad)
    with pytest.raises(MambaflowError, match="no kernel has"):
        link_cfg(ProjectSpec(get_board("vck190"), [prod, cons], streams=[StreamLink("producer", "out", "nobody", "in")]))
    with pytest.raises(MambaflowError, match="drives m_axi array ports only"):
        write_project("/nonexistent/never", spec)  # the default host cannot drive a stream kernel


# -------------------------------------------------------------------- platforms


FAKE_VPP = "#!/bin/sh\necho 'v++ v{release}, SW Build 1234 on 2025-01-01'\n"


def _fake_vitis(tmp_path, release, tool="v++"):
    """A Vitis install whose `tool` prints the release banner: (which, env)."""
    root = tmp_path / "Vitis" / release
    (root / "bin").mkdir(parents=True)
    exe = root / "bin" / tool
    exe.write_text(FAKE_VPP.format(release=release))
    exe.chmod(0o755)
    return (lambda t: str(exe) if t == tool else None), {"XILINX_VITIS": str(root)}


def test_platform_errors_say_what_and_where(tmp_path):
    vck, vhk = get_board("vck190"), get_board("vhk158")
    with pytest.raises(PlatformError) as e:
        resolve_platform(vhk, None, None)
    msg = str(e.value)
    assert "\n" not in msg and "vhk158" in msg and "no default" in msg and "--platform NAME|PATH.xpfm" in msg
    assert "the platform your board runs" in msg
    with pytest.raises(PlatformError, match="no default"):  # write_project refuses the same spec
        ProjectSpec(vhk, [KernelSpec("k", [])]).validate()
    missing = tmp_path / "nowhere" / "p.xpfm"
    with pytest.raises(PlatformError) as e:
        resolve_platform(vhk, str(missing), None)
    assert f"does not exist (looked at {missing.resolve()})" in str(e.value)
    with pytest.raises(PlatformError, match="does not name a .xpfm"):
        resolve_platform(vhk, str(tmp_path / "hw.xsa"), None)
    with pytest.raises(PlatformError, match="characters no platform name has"):
        resolve_platform(vck, "bad name!", None)
    xpfm = _xpfm(tmp_path)
    got = resolve_platform(vhk, str(xpfm), None)
    assert (got.value, got.explicit, got.checked) == (str(xpfm.resolve()), True, True)

    # a name with no Vitis here: written unchecked, and the note says so
    got = resolve_platform(vhk, "my_vhk158_platform", None)
    assert (got.value, got.checked) == ("my_vhk158_platform", False) and "not checked" in got.note

    # with Vitis: looked up in $PLATFORM_REPO_PATHS, then <Vitis>/base_platforms
    which, env = _fake_vitis(tmp_path, "2024.2")
    vitis = detect_vitis(which, env)
    assert vitis.release == "2024.2" and vitis.flow == "unified" and "sw_emu" not in vitis.describe()
    env["PLATFORM_REPO_PATHS"] = str(xpfm.parent.parent)
    got = resolve_platform(vhk, "my_vhk158_platform", vitis, env)
    assert got.checked and str(xpfm) in got.note
    env["PLATFORM_REPO_PATHS"] = str(tmp_path / "empty")
    with pytest.raises(PlatformError) as e:
        resolve_platform(vhk, "my_vhk158_platform", vitis, env)
    msg = str(e.value)
    assert "platform 'my_vhk158_platform' was not found" in msg
    assert f"in {tmp_path / 'empty'}, {tmp_path / 'Vitis' / '2024.2' / 'base_platforms'}" in msg
    # the default follows the release found; a missing default is a note, not an error
    got = resolve_platform(vck, None, vitis, env)
    assert got.value == "xilinx_vck190_base_202420_1" and not got.explicit and "NOT found" in got.note
    base = tmp_path / "Vitis" / "2024.2" / "base_platforms" / "xilinx_vck190_base_202420_1"
    base.mkdir(parents=True)
    (base / "xilinx_vck190_base_202420_1.xpfm").write_text("<xpfm/>")
    assert resolve_platform(vck, None, vitis, env).checked
    which, env = _fake_vitis(tmp_path / "new", "2026.1")
    with pytest.raises(PlatformError, match="no published platform is known for Vitis 2026.1"):
        resolve_platform(vck, None, detect_vitis(which, env), env)


def test_detect_vitis_from_banners(tmp_path):
    which, env = _fake_vitis(tmp_path / "a", "2025.1")
    v = detect_vitis(which, env)
    assert (v.release, v.flow) == ("2025.1", "unified") and "hw_emu only, no sw_emu" in v.describe()
    which, env = _fake_vitis(tmp_path / "b", "2023.2", tool="vitis_hls")
    v = detect_vitis(which, env)
    assert (v.release, v.flow, v.root) == ("2023.2", "tcl", tmp_path / "b" / "Vitis" / "2023.2")
    assert detect_vitis(lambda t: None, {}) is None


def test_build_and_cli_refuse_vhk158_without_platform(tmp_path, capsys):
    from mambaflow.cli import main

    with pytest.raises(PlatformError, match="no default"):
        build("tiny-mamba1", "vhk158", None, "csim", tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()  # refused before anything was written
    rc = main(["build", "--model", "tiny-mamba1", "--board", "vhk158", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("mambaflow build: error: board vhk158:")
    assert "--platform NAME|PATH.xpfm" in err[0]
    rc = main(["build", "--model", "tiny-mamba1", "--board", "vhk158", "--platform", str(tmp_path / "no.xpfm"),
               "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"looked at {tmp_path / 'no.xpfm'}" in err[0]
    if any(shutil.which(t) for t in ("vitis_hls", "v++", "vitis-run")):
        return  # the rest needs Vitis to be missing
    xpfm = _xpfm(tmp_path)
    rc = main(["build", "--model", "tiny-mamba1", "--board", "vhk158", "--platform", str(xpfm), "--steps", "1",
               "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 3 and "C simulation matches PyTorch" in out and f"platform file {xpfm.resolve()}" in out
    mk = (tmp_path / "d" / "Makefile").read_text()
    assert re.findall(r"^PLATFORM \?= (.*)$", mk, re.M) == [str(xpfm.resolve())]
    assert "sp=decode_1.tokens:HBM[1]" in (tmp_path / "d" / "link.cfg").read_text()


# ------------------------------------------------------------------ XRT stub

XRT_STUB = {
    "xrt/xrt_device.h": """#pragma once
#include <cstdlib>
#include <stdexcept>
#include <string>
namespace xrt {
struct uuid {};
inline void mf_stub_maybe_fail(const char* step) {  // MF_STUB_FAIL=<step> makes that call throw
  const char* f = std::getenv("MF_STUB_FAIL");
  if (f && std::string(f) == step) throw std::runtime_error(std::string("stub: ") + step + " refused");
}
class device {
 public:
  explicit device(unsigned) { mf_stub_maybe_fail("device"); }
  uuid load_xclbin(const std::string&) { mf_stub_maybe_fail("load_xclbin"); return {}; }
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
  bo(const device&, std::size_t n, int) : mem_((n + 7) / 8) { mf_stub_maybe_fail("bo"); }
  template <class T> T map() { return reinterpret_cast<T>(mem_.data()); }
  void* data() { return mem_.data(); }
  void sync(xclBOSyncDirection) { mf_stub_maybe_fail("sync"); }
  void copy(const bo& src) { mem_ = src.mem_; }
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
  void wait() { mf_stub_maybe_fail("wait"); }
};
class kernel {
 public:
  kernel(const device&, const uuid&, const std::string&) { mf_stub_maybe_fail("kernel"); }
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
    monkeypatch.setattr(build_mod, "_which", lambda t: None if t in ("vitis_hls", "v++", "vitis-run") else real(t))


def test_build_csim_without_vitis(tmp_path, monkeypatch):
    """The issue's acceptance run, on the tiny model: csim matches, project written,
    non-zero exit only because Vitis is missing; then the project's own `make csim` and
    the XRT host program (on a stub XRT that calls the C++ kernel) pass on the data, and
    an XRT failure names its step."""
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
    assert "Vitis: not found on PATH" in text and "platform xilinx_vck190_base_202420_1: the published" in text
    assert json.loads((out / "build.json").read_text())["notes"] == r.notes
    assert (out / "schedule.json").exists() and "pipeline II=1" in (out / "hls" / "kernels.cpp").read_text()
    for f in ("Makefile", "link.cfg", "compile.cfg", "README.md", "host/host.cpp", "hls/run_hls.tcl",
              "hls/hls_config.cfg", "hls/tb.cpp", "hls/kernels.h", "build.json", "resources.json"):
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
    run = [str(exe), "kernel.xclbin", str(out / "hls" / "data")]
    p = subprocess.run(run, capture_output=True, text=True)
    assert p.returncode == 0 and "MF_RESULT PASS" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("MF_COMPARE logits") == 2  # both decode steps were compared
    for fail, step in (("device", "open device 0"), ("load_xclbin", "load xclbin kernel.xclbin"),
                       ("kernel", "find kernel 'decode' in the xclbin"), ("bo", "allocate buffer 'tokens' (8 bytes in"),
                       ("sync", "sync buffer 'conv_state' to the device"), ("wait", "run kernel 'decode' (step 0)")):
        p = subprocess.run(run, capture_output=True, text=True, env=os.environ | {"MF_STUB_FAIL": fail})
        assert p.returncode == 3 and "MF_RESULT" not in p.stdout, (fail, p.stdout[-500:], p.stderr[-500:])
        assert p.stderr.startswith(f"MF_ERROR XRT: {step}") and f"stub: {fail} refused" in p.stderr, p.stderr
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
