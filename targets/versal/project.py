"""A complete Vitis project for a Versal board, generated from the emitted HLS design.

    <out>/
      Makefile            csim (g++ + AMD's ap_types), vitis_csim, csynth, cosim, xo, hw_emu / hw
                          (v++ link + package + host), sw_emu before Vitis 2025.1; it finds
                          the Vitis release at make time and runs the HLS flow of that release
      compile.cfg         v++ --compile options (kernel clock) of the Tcl flow's `v++ -c -k`
      link.cfg            v++ --link: compute units (nk=), memories (sp=), streams (stream_connect=), clock
      host/host.cpp       XRT native-API host (targets.versal.host, or the caller's own)
      hls/                kernels.cpp, kernels.h, tb.cpp, mf_data.h, data/ (per kernel folder),
                          run_hls.tcl (2023.x-2024.1) and hls_config.cfg (2024.2+) per kernel,
                          include/ (AMD's ap_types and mambaflow's hls_stream/hls_math, for `make csim`)
      README.md           what is here and the commands, in order

Everything is derived from one `ProjectSpec` (kernel names, ports, bundles, memories,
streams, clock, platform), so the tcl, the HLS config, the v++ configs, the host and the
Makefile agree by construction; `tests/test_versal_project.py` checks that they do.
The facts behind each command and key are in docs/VITIS_REFERENCE.md.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import MambaflowError
from ..hls.emitter import Port
from ..hls.testbench import TestbenchSpec
from .boards import Board
from .host import host_source
from .vitis import (NO_SW_EMU_FROM, UNIFIED_FROM, PlatformError, has_sw_emu, no_default_platform, release_key,
                    resolve_platform)

VITIS_RELEASE = "2023.2"  # the oldest release the generated project supports


@dataclass(frozen=True)
class StreamLink:
    """An AXI4-Stream connection between two kernels (v++ `sc=`)."""

    src_kernel: str
    src_port: str
    dst_kernel: str
    dst_port: str
    depth: int = 16


@dataclass
class KernelSpec:
    """One HLS kernel: its top function, ports, source file and testbench folder (both
    relative to the project root). The HLS project files (run_hls.tcl, hls_config.cfg)
    go beside the source; tb.cpp, mf_data.h and data/ are in `tb_dir` (default: the
    source's folder)."""

    name: str
    ports: list[Port]
    source: str = "hls/kernels.cpp"
    tb_dir: str | None = None

    @property
    def cu(self) -> str:
        return f"{self.name}_1"

    @property
    def hls_dir(self) -> str:
        return posixpath.dirname(self.source) or "."

    @property
    def testbench_dir(self) -> str:
        return self.tb_dir or self.hls_dir

    @property
    def header(self) -> str:
        return posixpath.splitext(self.source)[0] + ".h"

    def rel(self, path: str) -> str:
        """`path` (from the project root) as seen from the kernel's HLS folder."""
        return posixpath.relpath(path, self.hls_dir)


@dataclass
class ProjectSpec:
    board: Board
    kernels: list[KernelSpec]
    tb: TestbenchSpec = field(default_factory=TestbenchSpec)
    streams: list[StreamLink] = field(default_factory=list)
    clock_mhz: float | None = None
    platform: str | None = None         # NAME or PATH.xpfm; None: the board's published default
    title: str = ""
    vitis_release: str | None = None    # the release found when the project was written (None: none)
    platform_note: str | None = None    # what the build found out about the platform (README)

    @property
    def top(self) -> KernelSpec:
        return self.kernels[0]

    @property
    def freq_hz(self) -> int:
        return int(round((self.clock_mhz or self.board.clock_mhz) * 1e6))

    @property
    def period_ns(self) -> float:
        return 1e9 / self.freq_hz

    @property
    def platform_name(self) -> str | None:
        """The platform the files name when no Vitis release is known at make time."""
        return self.platform or self.board.default_platform(self.vitis_release)

    def port_memories(self, k: KernelSpec) -> dict[str, str]:
        """m_axi port -> memory (v++ `sp=`), one memory per bundle (Board.bundle_memories)."""
        maxi = [p for p in k.ports if p.interface == "m_axi"]
        by_bundle = self.board.bundle_memories(p.bundle for p in maxi)
        return {p.name: by_bundle[p.bundle] for p in maxi}

    def validate(self) -> None:
        if not self.kernels:
            raise MambaflowError("project: no kernels")
        names = [k.name for k in self.kernels]
        if len(set(names)) != len(names):
            raise MambaflowError(f"project: duplicate kernel names {names}")
        dirs = [k.hls_dir for k in self.kernels]
        if len(set(dirs)) != len(dirs):
            raise MambaflowError(f"project: kernels {names} share the HLS folder(s) {dirs}: give each kernel its "
                                 "own source folder (KernelSpec.source), e.g. hls/verify/kernels.cpp")
        if self.vitis_release is not None:
            release_key(self.vitis_release)
        if self.platform is None and self.board.default_platform(self.vitis_release) is None:
            raise no_default_platform(self.board, self.vitis_release)
        by = {k.name: {p.name: p for p in k.ports} for k in self.kernels}
        for s in self.streams:
            for kern, port in ((s.src_kernel, s.src_port), (s.dst_kernel, s.dst_port)):
                if kern not in by or port not in by[kern]:
                    raise MambaflowError(f"project: stream {s} names {kern}.{port}, which no kernel has")
                if by[kern][port].interface != "axis":
                    raise MambaflowError(f"project: stream {s}: {kern}.{port} is not an AXI4-Stream port")


# ------------------------------------------------------------------------ tcl


def _in(folder: str, name: str) -> str:
    """`folder/name`, or `name` when the folder is '.'."""
    return name if folder == "." else posixpath.join(folder, name)


def hls_tcl(spec: ProjectSpec, k: KernelSpec | None = None) -> str:
    """Vitis HLS Tcl project of one kernel (the 2023.x / 2024.1 flow, UG1399 Tcl commands);
    run from the kernel's HLS folder."""
    k = k or spec.top
    tb = k.rel(k.testbench_dir)
    return "\n".join([
        f"# Generated by mambaflow: Vitis HLS project of kernel '{k.name}' for {spec.board.name} ({spec.board.part}).",
        "# usage, from this directory: vitis_hls -f run_hls.tcl -tclargs <csim|csynth|cosim|export|all>",
        "# (Vitis 2023.x / 2024.1; from 2024.2 the Makefile runs hls_config.cfg with v++ --mode hls instead)",
        "set mode csynth",
        "if {$argc > 0} { set mode [lindex $argv 0] }",
        f"open_project -reset proj_{k.name}",
        f"set_top {k.name}",
        f"add_files {posixpath.basename(k.source)}",
        f'add_files -tb {_in(tb, "tb.cpp")} -cflags "-Wno-unknown-pragmas"',
        f"add_files -tb {_in(tb, 'mf_data.h')}",
        "open_solution -reset solution1 -flow_target vitis",
        f"set_part {spec.board.part}",
        f"create_clock -period {spec.period_ns:.3f} -name default",
        f"set data [file normalize {_in(tb, 'data')}]",
        'if {$mode eq "csim" || $mode eq "all"} { csim_design -argv $data }',
        "if {$mode in {csynth cosim export all}} { csynth_design }",
        'if {$mode eq "cosim" || $mode eq "all"} { cosim_design -argv $data }',
        f'if {{$mode eq "export" || $mode eq "all"}} {{ export_design -format xo -output [file normalize {k.name}.xo] }}',
        "exit",
        "",
    ])


def hls_config(spec: ProjectSpec, k: KernelSpec | None = None) -> str:
    """HLS component config of one kernel for the unified flow (2024.2+): `v++ -c --mode
    hls` and `vitis-run --mode hls`. Keys: UG1702 "v++ Mode HLS" (part outside [hls], the
    rest under it), UG1399 "C-Synthesis Sources", "Test Bench Sources", "Package Options".
    Paths are relative to this file's folder, which is also where the Makefile runs it."""
    k = k or spec.top
    tb = k.rel(k.testbench_dir)
    return "\n".join([
        f"# Generated by mambaflow: Vitis HLS component of kernel '{k.name}' for {spec.board.name}.",
        f"# Vitis {UNIFIED_FROM}+, from this directory:",
        f"#   v++ -c --mode hls --config hls_config.cfg --work_dir proj_{k.name}          (C synthesis)",
        f"#   vitis-run --mode hls --csim|--cosim|--package --config hls_config.cfg --work_dir proj_{k.name}",
        "# `make vitis_csim|csynth|cosim|xo` runs a copy (hls_config.run.cfg) that adds the absolute",
        "# paths of the testbench data (csim.argv, cosim.argv) and of the .xo (package.output.file).",
        f"part={spec.board.part}",
        "",
        "[hls]",
        "flow_target=vitis",
        f"clock={spec.period_ns:.3f}ns",
        f"syn.top={k.name}",
        f"syn.file={posixpath.basename(k.source)}",
        f"tb.file={_in(tb, 'tb.cpp')}",
        f"tb.file={_in(tb, 'mf_data.h')}",
        "tb.cflags=-Wno-unknown-pragmas",
        "package.output.format=xo",
        "",
    ])


# --------------------------------------------------------------------- v++ cfg


def compile_cfg(spec: ProjectSpec) -> str:
    lines = [f"# Generated by mambaflow: v++ --compile options for {spec.board.name} "
             "(the Tcl flow's `v++ -c -k <kernel>`).", "[hls]"]
    for k in spec.kernels:
        lines.append(f"clock={spec.freq_hz}:{k.name}")
    return "\n".join(lines) + "\n"


def link_cfg(spec: ProjectSpec) -> str:
    """v++ --link: one CU per kernel (nk=), each m_axi port on its bundle's memory (sp=),
    kernel-to-kernel streams (stream_connect=, the config form of --connectivity.sc), the
    kernel clock (UG1393 "Mapping Kernel Ports to Memory", "Specifying Streaming
    Connections"; Xilinx/Vitis_Accel_Examples common/platform/vck190/validate.cfg)."""
    spec.validate()
    L = [f"# Generated by mambaflow: v++ --link configuration for {spec.board.name} "
         f"({spec.platform_name or 'the platform given to make'}).",
         "# memory names: `make platforminfo` lists what the installed platform offers.",
         "[connectivity]"]
    for k in spec.kernels:
        L.append(f"nk={k.name}:1:{k.cu}")
    for k in spec.kernels:
        mem = spec.port_memories(k)
        for p in k.ports:
            if p.interface == "m_axi":
                L.append(f"sp={k.cu}.{p.name}:{mem[p.name]}")
    if spec.streams:
        L.append("# kernel-to-kernel AXI4-Stream connections (src:dst:depth)")
        cus = {k.name: k.cu for k in spec.kernels}
        for s in spec.streams:
            L.append(f"stream_connect={cus[s.src_kernel]}.{s.src_port}:{cus[s.dst_kernel]}.{s.dst_port}:{s.depth}")
    else:
        L.append("# no kernel-to-kernel streams in this design")
    L += ["", "[clock]"]
    for k in spec.kernels:
        L.append(f"freqHz={spec.freq_hz}:{k.cu}")
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------- Makefile

# The Vitis release, once per make run (the eval memoizes the $(shell)); `v++ --version`
# prints "v++ v2025.2 ...", `vitis_hls -version` "... v2023.2 (64-bit)".
_DETECT = ("$(eval VITIS_VERSION := $(shell { v++ --version || vitis_hls -version; } 2>/dev/null "
           "| grep -oE '20[0-9][0-9]\\.[0-9]' | head -n 1))$(VITIS_VERSION)")


def _platform_lines(spec: ProjectSpec) -> list[str]:
    b = spec.board
    if spec.platform is not None:
        return [f"PLATFORM ?= {spec.platform}"]
    L = [f"# AMD's published {b.name} base platforms, one per Vitis release (docs/VITIS_REFERENCE.md)"]
    L += [f"PLATFORM_{rel} := {name}" for rel, name in b.published_platforms]
    L.append("PLATFORM ?= $(PLATFORM_$(VITIS_VERSION))")
    return L


def _kernel_rules(spec: ProjectSpec, k: KernelSpec) -> dict[str, list[str]]:
    """Make rules of one kernel, by flow: 'csim' (g++), 'tcl', 'unified', 'none'."""
    d, n, tbd = k.hls_dir, k.name, k.testbench_dir
    srcs = f"{k.source} {posixpath.join(tbd, 'tb.cpp')} {k.header} {posixpath.join(tbd, 'mf_data.h')}"
    csim_exe = posixpath.join(d, "csim")
    csim_target = "csim" if len(spec.kernels) == 1 else f"csim_{n}"
    xo_src = posixpath.join(d, f"{n}.xo")
    # the config with the absolute paths of the data and the .xo, rewritten before each run
    run_cfg = (f"\t{{ cat {d}/hls_config.cfg; echo 'csim.argv=$(abspath {tbd}/data)'; "
               f"echo 'cosim.argv=$(abspath {tbd}/data)'; echo 'package.output.file=$(abspath {xo_src})'; }} "
               f"> {d}/hls_config.run.cfg")

    def run(step: str) -> str:
        return f"\tcd {d} && vitis-run --mode hls --{step} --config hls_config.run.cfg --work_dir proj_{n}"

    vpp_hls = f"\tcd {d} && v++ -c --mode hls --config hls_config.run.cfg --work_dir proj_{n}"
    return {
        "csim": [
            f"{csim_target}: {csim_exe}",
            f"\t./{csim_exe} {posixpath.join(tbd, 'data')}",
            "",
            f"{csim_exe}: {srcs}",
            f"\t$(CXX) $(CSIM_FLAGS) -isystem hls/include -I {d} {k.source} {posixpath.join(tbd, 'tb.cpp')} -o $@",
        ],
        "tcl": [
            f"vitis_csim_{n}:",
            f"\tcd {d} && vitis_hls -f run_hls.tcl -tclargs csim",
            f"csynth_{n}:",
            f"\tcd {d} && vitis_hls -f run_hls.tcl -tclargs csynth",
            f"cosim_{n}:",
            f"\tcd {d} && vitis_hls -f run_hls.tcl -tclargs cosim",
            f"$(BUILD)/{n}.xo: {k.source} {k.header} compile.cfg | check-platform",
            "\tmkdir -p $(BUILD)",
            f"\tv++ -c -t $(TARGET) --platform $(PLATFORM) --config compile.cfg -k {n} -I {d} -o $@ {k.source}",
        ],
        "unified": [
            f"vitis_csim_{n}:",
            run_cfg,
            run("csim"),
            f"csynth_{n}:",
            run_cfg,
            vpp_hls,
            f"cosim_{n}: csynth_{n}",
            run("cosim"),
            f"$(BUILD)/{n}.xo: {k.source} {k.header} {posixpath.join(d, 'hls_config.cfg')}",
            run_cfg,
            vpp_hls,
            run("package"),
            "\tmkdir -p $(BUILD)",
            f"\tcp {xo_src} $@",
        ],
    }


def makefile(spec: ProjectSpec) -> str:
    """The project Makefile: the Vitis release is found at make time (VITIS_VERSION=
    overrides it) and picks the HLS flow (Tcl before 2024.2, v++ --mode hls from it) and
    whether sw_emu exists (before 2025.1). A project written with Vitis 2025.1+ found has
    no sw_emu rule at all."""
    spec.validate()
    b, top = spec.board, spec.top
    names = [k.name for k in spec.kernels]
    rules = [_kernel_rules(spec, k) for k in spec.kernels]
    many = len(spec.kernels) > 1
    sw_emu_possible = spec.vitis_release is None or has_sw_emu(spec.vitis_release)
    data_dirs = sorted({posixpath.join(k.testbench_dir, "data") for k in spec.kernels})
    sd_dirs = " ".join(f"--package.sd_dir={d}" for d in (["hls"] if many else data_dirs))
    inc = " ".join(f"-I {d}" for d in sorted({k.testbench_dir for k in spec.kernels}))
    mf_data = " ".join(sorted({posixpath.join(k.testbench_dir, "mf_data.h") for k in spec.kernels}))
    emu_line = ("#   make sw_emu | hw_emu | hw   v++ link + package and the XRT host (sw_emu: Vitis < 2025.1)"
                if sw_emu_possible else
                f"#   make hw_emu | hw            v++ link + package and the XRT host (no sw_emu from Vitis {NO_SW_EMU_FROM})")
    L = [
        f"# Generated by mambaflow: build kernel{'s' if many else ''} {', '.join(repr(n) for n in names)} "
        f"for {b.name} ({b.part}).",
        "#   make csim         C simulation with g++ and AMD's ap_types headers (no Vitis needed)",
        "#   make vitis_csim   C simulation in Vitis HLS, with Vitis' own headers",
        "#   make csynth       high-level synthesis (reports under hls/**/proj_<kernel>)",
        "#   make cosim        RTL / C co-simulation of the testbench",
        "#   make xo           the kernel objects (.xo)",
        emu_line,
        "#   make run_hw_emu   boot the emulated board with the package",
        "#   make help         what this Makefile found: Vitis release, HLS flow, platform",
        f"# Vitis {VITIS_RELEASE} or later; source <Vitis>/settings64.sh first. The release is read from",
        "# `v++ --version` (or `vitis_hls -version`); VITIS_VERSION=2024.2 overrides it. 2023.x and",
        f"# 2024.1 run HLS with vitis_hls -f run_hls.tcl; {UNIFIED_FROM}+ with v++ -c --mode hls / vitis-run",
        f"# and hls_config.cfg (UG1702). sw_emu was removed in {NO_SW_EMU_FROM} (UG1702 revision history).",
        f"KERNELS  := {' '.join(names)}",
        f"TOP      := {top.name}",
        f"BOARD    := {b.name}",
        f"PART     := {b.part}",
        *_platform_lines(spec),
        "TARGET   ?= hw",
        f"FREQ_HZ  := {spec.freq_hz}",
        "CXX      ?= g++",
        f"VITIS_VERSION ?= {_DETECT}",
        "VITIS_NUM = $(subst .,,$(VITIS_VERSION))",
        "HLS_FLOW ?= $(if $(VITIS_VERSION),$(if $(shell [ $(VITIS_NUM) -ge "
        f"{UNIFIED_FROM.replace('.', '')} ] && echo y),unified,tcl),"
        "$(if $(shell command -v vitis_hls),tcl,$(if $(shell command -v v++),unified,none)))",
        f"HAS_SW_EMU = $(if $(VITIS_VERSION),$(shell [ $(VITIS_NUM) -lt {NO_SW_EMU_FROM.replace('.', '')} ] && echo yes))",
        "# the Versal common image (rootfs, kernel, sysroot) of the same release; COMMON_IMAGE_VERSAL as in AMD's tutorials",
        "EDGE_COMMON_SW ?= $(or $(COMMON_IMAGE_VERSAL),/opt/xilinx/xilinx-versal-common-v$(VITIS_VERSION))",
        "# the sysroot folder is cortexa72-cortexa53-xilinx-linux up to 2024.1 and -amd-linux in 2025.x images",
        "SYSROOT  ?= $(firstword $(wildcard $(EDGE_COMMON_SW)/sysroots/cortexa72-cortexa53-*-linux "
        "$(EDGE_COMMON_SW)/sysroots/aarch64-*-linux) $(EDGE_COMMON_SW)/sysroots/cortexa72-cortexa53-xilinx-linux)",
        "ROOTFS   ?= $(EDGE_COMMON_SW)/rootfs.ext4",
        "KERNEL_IMAGE ?= $(EDGE_COMMON_SW)/Image",
        "# Vitis ships the Cortex-A72 cross compiler (Xilinx/Vitis_Accel_Examples makefile_versal_ps.mk)",
        "HOST_CXX ?= $(if $(XILINX_VITIS),$(XILINX_VITIS)/gnu/aarch64/lin/aarch64-linux/bin/aarch64-linux-gnu-g++,"
        "aarch64-linux-gnu-g++)",
        "BUILD    := build_$(TARGET)",
        "XOS      := " + " ".join(f"$(BUILD)/{n}.xo" for n in names),
        "CSIM_FLAGS := -std=c++17 -O2 -Wall -Werror -Wno-unknown-pragmas -Wno-error=uninitialized -Wno-error=maybe-uninitialized",
        "",
        ".PHONY: all help csim vitis_csim csynth cosim xo xsa host package sw_emu hw_emu hw run_sw_emu run_hw_emu "
        "platforminfo check-platform clean " + " ".join(f"csim_{n} vitis_csim_{n} csynth_{n} cosim_{n}" for n in names),
        "all: csim",
        "",
        "help:",
        '\t@echo "Vitis release: $(or $(VITIS_VERSION),not found) (HLS flow: $(HLS_FLOW)); platform: '
        '$(or $(PLATFORM),none)"',
        '\t@echo "targets: csim vitis_csim csynth cosim xo $(if $(HAS_SW_EMU),sw_emu run_sw_emu )hw_emu run_hw_emu hw '
        'platforminfo clean"' if sw_emu_possible else
        '\t@echo "targets: csim vitis_csim csynth cosim xo hw_emu run_hw_emu hw platforminfo clean"',
        "",
    ]
    if many:
        L += ["csim: " + " ".join(f"csim_{n}" for n in names), ""]
    for r in rules:
        L += r["csim"] + [""]
    for step in ("vitis_csim", "csynth", "cosim"):
        L.append(f"{step}: " + " ".join(f"{step}_{n}" for n in names))
    L += ["", "ifeq ($(HLS_FLOW),unified)"]
    for r in rules:
        L += r["unified"]
    L += ["else ifeq ($(HLS_FLOW),tcl)"]
    for r in rules:
        L += r["tcl"]
    L += ["else",
          " ".join(f"vitis_csim_{n} csynth_{n} cosim_{n} $(BUILD)/{n}.xo" for n in names) + ":",
          '\t@echo "no Vitis found (neither v++ nor vitis_hls on PATH): source <Vitis>/settings64.sh, '
          'or set VITIS_VERSION=" >&2; exit 2',
          "endif",
          "",
          "check-platform:",
          '\t@test -n "$(PLATFORM)" || { echo "no platform: none is published for $(BOARD) with Vitis '
          '$(or $(VITIS_VERSION),?) here; make ... PLATFORM=NAME|PATH.xpfm" >&2; exit 2; }',
          "",
          "xo: $(XOS)",
          "xsa: $(BUILD)/$(TOP).xsa",
          "$(BUILD)/$(TOP).xsa: $(XOS) link.cfg | check-platform",
          "\tv++ -l -t $(TARGET) --platform $(PLATFORM) --config link.cfg -o $@ $(XOS)",
          "",
          "host: $(BUILD)/host.exe",
          "# edge XRT installs its headers in <sysroot>/usr/include/xrt (Vitis_Accel_Examples makefile_versal_ps.mk)",
          f"$(BUILD)/host.exe: host/host.cpp {mf_data}",
          "\tmkdir -p $(BUILD)",
          f"\t$(HOST_CXX) -std=c++17 -O2 -Wall --sysroot=$(SYSROOT) -I$(SYSROOT)/usr/include/xrt {inc} -o $@ "
          "host/host.cpp -L$(SYSROOT)/usr/lib -lxrt_coreutil -pthread",
          "",
          "package: $(BUILD)/package/sd_card.img",
          "$(BUILD)/package/sd_card.img: $(BUILD)/$(TOP).xsa $(BUILD)/host.exe | check-platform",
          "\tv++ -p -t $(TARGET) --platform $(PLATFORM) --package.out_dir $(BUILD)/package \\",
          "\t    --package.boot_mode=sd --package.rootfs=$(ROOTFS) --package.kernel_image=$(KERNEL_IMAGE) \\",
          f"\t    --package.sd_file=$(BUILD)/host.exe {sd_dirs} \\",
          "\t    -o $(BUILD)/$(TOP).xclbin $(BUILD)/$(TOP).xsa",
          "",
          "hw_emu:",
          "\t$(MAKE) TARGET=hw_emu VITIS_VERSION=$(VITIS_VERSION) package",
          "hw:",
          "\t$(MAKE) TARGET=hw VITIS_VERSION=$(VITIS_VERSION) package",
          "run_hw_emu: hw_emu",
          '\t@echo "in the emulated board: cd /run/media/mmcblk0p1 && ./host.exe $(TOP).xclbin data"',
          "\tcd build_hw_emu/package && ./launch_hw_emu.sh",
          ""]
    refuse = ('\t@echo "sw_emu: $(if $(VITIS_VERSION),Vitis $(VITIS_VERSION) has no software emulation (removed in '
              f'{NO_SW_EMU_FROM}, UG1702 revision history),cannot tell the Vitis release (set VITIS_VERSION=)): '
              'use make hw_emu" >&2; exit 2')
    if sw_emu_possible:
        L += ["ifeq ($(HAS_SW_EMU),yes)",
              "sw_emu:",
              "\t$(MAKE) TARGET=sw_emu VITIS_VERSION=$(VITIS_VERSION) package",
              "run_sw_emu: sw_emu",
              '\t@echo "in the emulated board: cd /run/media/mmcblk0p1 && ./host.exe $(TOP).xclbin data"',
              "\tcd build_sw_emu/package && ./launch_sw_emu.sh",
              "else",
              "sw_emu run_sw_emu:",
              refuse,
              "endif"]
    else:
        L += [f"# no sw_emu: the project was written with Vitis {spec.vitis_release}, which has none",
              "sw_emu run_sw_emu:",
              refuse]
    projs = " ".join(posixpath.join(k.hls_dir, f"proj_{k.name}") for k in spec.kernels)
    extra = " ".join(f"{posixpath.join(k.hls_dir, 'csim')} {posixpath.join(k.hls_dir, 'hls_config.run.cfg')} "
                     f"{posixpath.join(k.hls_dir, k.name + '.xo')}" for k in spec.kernels)
    L += ["",
          "platforminfo: | check-platform",
          "\tplatforminfo -p $(PLATFORM)",
          "",
          "clean:",
          f"\trm -rf build_sw_emu build_hw_emu build_hw {projs} {extra} hls/*.o _x .Xil *.log",
          ""]
    return "\n".join(L)


# --------------------------------------------------------------------- README


def _platform_note(spec: ProjectSpec) -> str:
    if spec.platform_note:
        return spec.platform_note
    try:
        choice = resolve_platform(spec.board, spec.platform, None)
    except PlatformError as e:  # a .xpfm that moved since the build: say so, do not fail the README
        return str(e)
    return choice.note


def _on_board(spec: ProjectSpec) -> str:
    k = spec.top
    if len(spec.kernels) > 1:  # the caller's host; the SD card holds hls/ with every kernel's data/
        return (f"On the board: `cd /run/media/mmcblk0p1` holds `host.exe`, `{k.name}.xclbin` (all "
                f"{len(spec.kernels)} kernels) and `hls/` with each kernel's reference data "
                f"({', '.join(f'`{kk.testbench_dir}/data`' for kk in spec.kernels)}).")
    return (f"On the board: `cd /run/media/mmcblk0p1 && ./host.exe {k.name}.xclbin data` runs {spec.tb.steps} step(s) "
            f"of the\nreference data and prints `MF_RESULT PASS` when every output is within rtol={spec.tb.rtol:g}, "
            f"atol={spec.tb.atol:g};\nan XRT failure prints `MF_ERROR XRT: <step> failed: ...` and exits 3.")


def readme(spec: ProjectSpec, extra: str = "") -> str:
    k = spec.top
    b = spec.board
    rows = []
    for kk in spec.kernels:
        mem = spec.port_memories(kk)
        rows += [f"| `{kk.name}` | `{p.name}` | {p.role} | `{p.elem}{''.join(f'[{d}]' for d in p.shape)}` | "
                 f"{p.bundle or '-'} | {mem.get(p.name, p.interface)} |" for p in kk.ports]
    rel = spec.vitis_release
    if rel is not None and not has_sw_emu(rel):
        emu = [f"| hardware emulation | `make hw_emu` then `make run_hw_emu` | v++, platform, common image |"]
        emu_note = (f"Vitis {rel} was found: it has no software emulation (sw_emu was removed in {NO_SW_EMU_FROM}), "
                    "so hardware emulation is the emulation target.")
    else:
        emu = ["| software emulation (Vitis 2023.x-2024.2 only) | `make sw_emu` then `make run_sw_emu` | "
               "v++, platform, common image |",
               "| hardware emulation | `make hw_emu` then `make run_hw_emu` | v++, platform, common image |"]
        emu_note = (f"sw_emu exists up to Vitis 2024.2 (deprecated there) and was removed in {NO_SW_EMU_FROM}: "
                    "there `make sw_emu` stops and says so; use `make hw_emu`.")
    found = f"Vitis {rel} was found when this project was written." if rel else \
        "No Vitis was found when this project was written."
    kernels = ", ".join(f"`{kk.name}` ({kk.source})" for kk in spec.kernels)
    return f"""# {', '.join(kk.name for kk in spec.kernels)} for {b.name}

Generated by mambaflow{f' from {spec.title}' if spec.title else ''}.

Board: {b.describe()}

Kernels: {kernels}; one compute unit each, linked into one xclbin.

## Platform

{_platform_note(spec)}. `make PLATFORM=NAME|PATH.xpfm ...` overrides it; `make platforminfo` shows its
memories (the `sp=` names in link.cfg).

## Vitis releases

{found} The Makefile reads the installed release (`v++ --version`, or `VITIS_VERSION=`) and picks the flow:
2023.x and 2024.1 run `vitis_hls -f run_hls.tcl`; {UNIFIED_FROM} and later run `v++ -c --mode hls` and
`vitis-run --mode hls` with `hls_config.cfg` (both files are in each kernel's folder). {emu_note}
`make help` prints what it found. The sources of these rules: docs/VITIS_REFERENCE.md in mambaflow.

## Commands, in order

| step | command | needs |
|---|---|---|
| C simulation (g++, AMD's ap_types headers) | `make csim` | g++ |
| C simulation in Vitis HLS | `make vitis_csim` | vitis_hls (2023.x-2024.1) or vitis-run ({UNIFIED_FROM}+) |
| synthesis | `make csynth` | vitis_hls or v++ |
| co-simulation | `make cosim` | vitis_hls or vitis-run, and a simulator |
{chr(10).join(emu)}
| bitstream + SD card | `make hw` | v++, platform, common image |

{_on_board(spec)}

## Kernel ports

| kernel | port | role | type | bundle | memory |
|---|---|---|---|---|---|
{chr(10).join(rows)}
{extra}"""


def write_project(out_dir: str | Path, spec: ProjectSpec, readme_extra: str = "",
                  host: str | None = None) -> dict[str, Path]:
    """Write the tcl and HLS config of every kernel, the v++ configs, the host, the Makefile,
    the README and the csim headers; returns their paths ('tcl' / 'hls_config' are the top
    kernel's, 'tcl:<kernel>' / 'hls_config:<kernel>' every kernel's).

    host: the C++ text of host/host.cpp; default: the single-kernel host of `spec.top`
    (targets.versal.host). The HLS sources, testbenches and data go in each kernel's folder
    (written by the caller from the `HlsCode`, see `targets.versal.build`).
    """
    spec.validate()
    out = Path(out_dir)
    files: dict[str, tuple[Path, str]] = {}  # every text first: a refused spec writes nothing
    for k in spec.kernels:
        files[f"tcl:{k.name}"] = (out / k.hls_dir / "run_hls.tcl", hls_tcl(spec, k))
        files[f"hls_config:{k.name}"] = (out / k.hls_dir / "hls_config.cfg", hls_config(spec, k))
    files["tcl"] = files[f"tcl:{spec.top.name}"]
    files["hls_config"] = files[f"hls_config:{spec.top.name}"]
    files |= {
        "compile_cfg": (out / "compile.cfg", compile_cfg(spec)),
        "link_cfg": (out / "link.cfg", link_cfg(spec)),
        "host": (out / "host" / "host.cpp", host if host is not None else host_source(spec)),
        "makefile": (out / "Makefile", makefile(spec)),
        "readme": (out / "README.md", readme(spec, readme_extra)),
    }
    (out / "hls").mkdir(parents=True, exist_ok=True)
    (out / "host").mkdir(parents=True, exist_ok=True)
    for path, text in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    from ..hls.cxx import csim_include_dir

    return {k: v[0] for k, v in files.items()} | {"include": csim_include_dir(out / "hls" / "include")}
