"""The host program of a speculative decoding project: draft -> verify -> accept with XRT.

`host_source(spec)` is the text of host/host.cpp. It runs `mfspec::Loop` (host/spec_loop.h,
plain C++ without XRT) over the two kernels of the project: the draft's `decode` and the
target's `verify`. Built as it is, it drives the kernels through XRT on the board; built
with -DMF_HOST_CSIM it calls the kernels' C++ functions directly, which is the host's C
simulation that `run_host_csim` compiles and runs during the build (the same file, so the
board runs the code that was checked). Either way it reads from the project's hls/ folder
(on the SD card too): the prompt in hls/spec/prompt.bin, PyTorch's greedy tokens in
hls/spec/tokens.golden.bin, and each kernel's weights from its csim reference data
(hls/verify/data/<port>.bin, hls/draft/data/<port>.bin); it generates `tokens` tokens,
compares them with the golden ones and prints `MF_RESULT PASS` when they agree.

Each kernel is wrapped in a struct with one buffer per kernel argument in argument order
(`xrt::bo(device, bytes, kernel.group_id(i))`), weights loaded once, and `run()`: on XRT
the inputs synced to the device, the kernel called with every buffer in argument order,
the outputs synced back.

Every XRT step (device, xclbin, kernels, buffers, each kernel run) is inside a try; a
`std::exception` is reported as `MF_ERROR XRT: <step> failed: <what>` and exits 3, as the
single-kernel host (targets.versal.host). Exit: 0 the tokens match, 1 they do not, 2 bad
arguments or data files, 3 an XRT call failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...errors import MambaflowError
from ..hls.csim import CXXFLAGS, CsimError, compiler, run_program
from ..hls.emitter import HlsCode, Port
from .host import EXIT_XRT

SPEC_LOOP = Path(__file__).resolve().parent / "host" / "spec_loop.h"

#: the design ports the host drives, per kernel, by design port name
VERIFY_INPUTS = ("tokens", "windows", "parents", "conv_state", "ssm_state")
VERIFY_OUTPUTS = ("logits", "conv_in", "ssm_states")
DRAFT_INPUTS = ("tokens", "conv_state", "ssm_state")
DRAFT_OUTPUTS = ("logits", "conv_state_out", "ssm_state_out")
_RESERVED = {"kernel", "run", "load"}  # members of the generated kernel structs


@dataclass(frozen=True)
class StateShape:
    """One model's decode state, batch 1 (mfspec::StateShape)."""

    layers: int
    conv_dim: int
    conv_k: int
    ssm: int  # values of one layer's SSM state

    @classmethod
    def of(cls, cfg) -> StateShape:
        n = 1
        for d in cfg.ssm_state_shape(1)[1:]:
            n *= d
        return cls(cfg.n_layer, cfg.conv_dim, cfg.d_conv, n)

    @property
    def conv_size(self) -> int:
        return self.layers * self.conv_dim * self.conv_k

    @property
    def ssm_size(self) -> int:
        return self.layers * self.ssm

    def cxx(self) -> str:
        return f"{{{self.layers}, {self.conv_dim}, {self.conv_k}, {self.ssm}}}"


@dataclass
class HostSpec:
    """What the host program is generated from."""

    verify: HlsCode
    draft: HlsCode
    vocab: int
    vocab_limit: int
    nodes: int
    fifo_depth: int
    widths: tuple[int, ...]
    target: StateShape
    draft_state: StateShape
    prompt_len: int
    tokens: int
    board: str = ""
    verify_folder: str = "verify"  # each kernel's folder under hls/: kernels.h, data/ (its weights)
    draft_folder: str = "draft"
    run_dir: str = "spec"  # the prompt, the golden tokens and acceptance under hls/


def _ports(code: HlsCode, inputs, outputs, what: str) -> dict[str, Port]:
    by = {p.source: p for p in code.ports}
    want = set(inputs) | set(outputs)
    missing = sorted(want - set(by))
    extra = sorted(p.source for p in code.ports if p.source not in want and p.role != "weight")
    if missing or extra:
        raise MambaflowError(f"host code: the {what} kernel '{code.top}' has ports {sorted(by)}; the speculative host "
                             f"drives {sorted(want)} plus weights (missing {missing}, not driven {extra})")
    for p in code.ports:
        if p.interface != "m_axi" or p.packed or not p.numpy_dtype:
            raise MambaflowError(f"host code: port '{p.name}' of '{code.top}' is {p.interface} {p.arg_type}; the "
                                 "speculative host drives unpacked m_axi arrays only (a float design)")
        if p.name in _RESERVED:
            raise MambaflowError(f"host code: port '{p.name}' of '{code.top}' has the name of a member of the host's "
                                 "kernel struct")
    return by


def _check_sizes(spec: HostSpec) -> None:
    ports = {"verify": _ports(spec.verify, VERIFY_INPUTS, VERIFY_OUTPUTS, "verify"),
             "draft": _ports(spec.draft, DRAFT_INPUTS, DRAFT_OUTPUTS, "draft")}
    T, V, t, s = spec.nodes, spec.vocab, spec.target, spec.draft_state
    want = {
        ("verify", "tokens"): T, ("verify", "windows"): T * t.conv_k, ("verify", "parents"): T,
        ("verify", "conv_state"): t.conv_size, ("verify", "ssm_state"): t.ssm_size, ("verify", "logits"): T * V,
        ("verify", "conv_in"): t.layers * T * t.conv_dim, ("verify", "ssm_states"): t.layers * T * t.ssm,
        ("draft", "tokens"): 1, ("draft", "conv_state"): s.conv_size, ("draft", "ssm_state"): s.ssm_size,
        ("draft", "logits"): V, ("draft", "conv_state_out"): s.conv_size, ("draft", "ssm_state_out"): s.ssm_size,
    }
    for (role, name), n in want.items():
        if ports[role][name].size != n:
            raise MambaflowError(f"internal: host code: port {name} of the {role} kernel has "
                                 f"{ports[role][name].size} elements, the loop expects {n}")


def _cast(p: Port, expr: str) -> str:
    if len(p.shape) <= 1:
        return expr
    dims = "".join(f"[{d}]" for d in p.shape[1:])
    return f"reinterpret_cast<{p.elem}(*){dims}>({expr})"


def _struct(code: HlsCode, cls: str, sub: str) -> tuple[str, str]:
    """The kernel's struct for the C simulation and for XRT."""
    ports = code.ports
    weights = [p for p in ports if p.role == "weight"]
    ins = [p for p in ports if not p.written and p.role != "weight"]
    outs = [p for p in ports if p.written]
    load = [f"  // the weights, once: <hls>/{sub}/<port>.bin",
            "  bool load(const std::string& dir) {",
            "    bool ok = true;"]
    load += [f'    ok = load_into(dir, "{sub}/{p.name}", {p.name}, {p.size}) && ok;' for p in weights]
    csim = [f"// kernel '{code.top}': its C++ function, called directly (the C simulation of the host)",
            f"struct {cls} {{"]
    csim += [f"  std::vector<{p.elem}> {p.name}_buf = std::vector<{p.elem}>({p.size});" for p in ports]
    csim += [f"  {p.elem}* {p.name} = {p.name}_buf.data();" for p in ports]
    csim += load + ["    return ok;", "  }", "  void run() {"]
    args = ",\n        ".join(_cast(p, p.name) for p in ports)
    csim += [f"    {code.top}(\n        {args});", "  }", "};", ""]
    xrt = [f"// kernel '{code.top}' through XRT: one buffer object per argument, in argument order",
           f"struct {cls} {{", "  xrt::kernel kernel;"]
    xrt += [f"  xrt::bo {p.name}_bo;" for p in ports]
    xrt += [f"  {p.elem}* {p.name};" for p in ports]
    init = [f'kernel(device, uuid, "{code.top}")']
    init += [f"{p.name}_bo(device, {p.nbytes}, kernel.group_id({i}))" for i, p in enumerate(ports)]
    init += [f"{p.name}({p.name}_bo.map<{p.elem}*>())" for p in ports]
    xrt += [f"  {cls}(xrt::device& device, const xrt::uuid& uuid)", "      : " + ",\n        ".join(init) + " {}"]
    xrt += load + [f"    if (ok) {p.name}_bo.sync(XCL_BO_SYNC_BO_TO_DEVICE);" for p in weights]
    xrt += ["    return ok;", "  }", "  void run() {"]
    xrt += [f"    {p.name}_bo.sync(XCL_BO_SYNC_BO_TO_DEVICE);" for p in ins]
    bos = ", ".join(f"{p.name}_bo" for p in ports)
    xrt += [f"    xrt::run r = kernel({bos});", "    r.wait();"]
    xrt += [f"    {p.name}_bo.sync(XCL_BO_SYNC_BO_FROM_DEVICE);" for p in outs]
    xrt += ["  }", "};", ""]
    return "\n".join(csim), "\n".join(xrt)


def host_source(spec: HostSpec) -> str:
    """host/host.cpp of a speculative project (see the module doc)."""
    _check_sizes(spec)
    v = {p.source: p.name for p in spec.verify.ports}
    d = {p.source: p.name for p in spec.draft.ports}
    vc, vx = _struct(spec.verify, "VerifyKernel", f"{spec.verify_folder}/data")
    dc, dx = _struct(spec.draft, "DraftKernel", f"{spec.draft_folder}/data")
    widths = ", ".join(map(str, spec.widths))
    T, V = spec.nodes, spec.vocab
    return f"""// Generated by mambaflow: the host of a speculative decoding project{' for ' + spec.board if spec.board else ''}.
// Draft -> verify -> accept: the draft's kernel '{spec.draft.top}' grows a token tree (widths {widths}), the
// target's kernel '{spec.verify.top}' verifies it in one pass of {T} nodes, the longest greedy-matching path
// is accepted, the target commits the accepted node's state from the verify kernel's per-node
// outputs, and the target's own next token becomes the next root (host/spec_loop.h).
//   on the board:      host.exe <kernel.xclbin> <hls-dir>
//   C simulation:      built with -DMF_HOST_CSIM and the kernels' C++: host_csim <hls-dir>
// <hls-dir> (the project's hls/) holds {spec.run_dir}/prompt.bin, {spec.run_dir}/tokens.golden.bin,
// {spec.run_dir}/accepted.golden.bin (int64) and each kernel's weights in {spec.verify_folder}/data/ and
// {spec.draft_folder}/data/. Prints MF_RESULT PASS when the {spec.tokens} generated tokens equal the golden
// ones (PyTorch's greedy output). Exit: 0 match, 1 mismatch, 2 bad arguments or data, {EXIT_XRT} an
// XRT call failed (the step is printed).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "mf_data.h"
#include "spec_loop.h"

#ifdef MF_HOST_CSIM
#include "{spec.verify_folder}/kernels.h"
#include "{spec.draft_folder}/kernels.h"
#else
#include "xrt/xrt_bo.h"
#include "xrt/xrt_device.h"
#include "xrt/xrt_kernel.h"
#endif

static const int kTokens = {spec.tokens};
static const int kPromptLen = {spec.prompt_len};
static const int kVocab = {V};
static const int kNodes = {T};

static mfspec::Config config() {{
  mfspec::Config c;
  c.vocab = kVocab;
  c.vocab_limit = {spec.vocab_limit};
  c.nodes = kNodes;
  c.fifo_depth = {spec.fifo_depth};
  c.widths = {{{widths}}};
  c.target = {spec.target.cxx()};
  c.draft = {spec.draft_state.cxx()};
  return c;
}}

template <class T> static bool load_into(const std::string& dir, const std::string& name, T* dst, std::size_t n) {{
  std::vector<T> tmp(n);
  if (!mf::load(dir, name, tmp)) return false;
  std::copy(tmp.begin(), tmp.end(), dst);
  return true;
}}

template <class T> static std::size_t elements_in(const std::string& dir, const std::string& name) {{
  // how many T <dir>/<name>.bin holds (the golden acceptance's length is the run's)
  std::FILE* f = std::fopen(mf::path(dir, name).c_str(), "rb");
  if (!f) return 0;
  std::fseek(f, 0, SEEK_END);
  const long n = std::ftell(f);
  std::fclose(f);
  return n > 0 ? static_cast<std::size_t>(n) / sizeof(T) : 0;
}}

#ifdef MF_HOST_CSIM
{vc}
{dc}
#else
{vx}
{dx}
#endif

// The loop's two kernel calls on the kernels' buffers; `stage` names the call for errors.
static mfspec::Kernels bind(DraftKernel& dk, VerifyKernel& vk, std::string& stage) {{
  mfspec::Kernels k;
  k.draft = [&dk, &stage](int64_t token, const mfspec::State& in, float* logits, mfspec::State& out) {{
    stage = "the draft kernel '{spec.draft.top}'";
    dk.{d['tokens']}[0] = token;
    std::copy(in.conv.begin(), in.conv.end(), dk.{d['conv_state']});
    std::copy(in.ssm.begin(), in.ssm.end(), dk.{d['ssm_state']});
    dk.run();
    std::copy(dk.{d['logits']}, dk.{d['logits']} + kVocab, logits);
    std::copy(dk.{d['conv_state_out']}, dk.{d['conv_state_out']} + out.conv.size(), out.conv.begin());
    std::copy(dk.{d['ssm_state_out']}, dk.{d['ssm_state_out']} + out.ssm.size(), out.ssm.begin());
  }};
  k.verify = [&vk, &stage](const mfspec::Tree& tree, const std::vector<int64_t>& windows, const mfspec::State& base,
                           float* logits, float* conv_in, float* node_states) {{
    stage = "the verify kernel '{spec.verify.top}'";
    std::copy(tree.tokens.begin(), tree.tokens.end(), vk.{v['tokens']});
    std::copy(windows.begin(), windows.end(), vk.{v['windows']});
    std::copy(tree.parents.begin(), tree.parents.end(), vk.{v['parents']});
    std::copy(base.conv.begin(), base.conv.end(), vk.{v['conv_state']});
    std::copy(base.ssm.begin(), base.ssm.end(), vk.{v['ssm_state']});
    vk.run();
    std::copy(vk.{v['logits']}, vk.{v['logits']} + {T * V}, logits);
    std::copy(vk.{v['conv_in']}, vk.{v['conv_in']} + {spec.target.layers * T * spec.target.conv_dim}, conv_in);
    std::copy(vk.{v['ssm_states']}, vk.{v['ssm_states']} + {spec.target.layers * T * spec.target.ssm}, node_states);
  }};
  return k;
}}

int main(int argc, char** argv) {{
#ifdef MF_HOST_CSIM
  if (argc < 2) {{
    std::fprintf(stderr, "usage: %s <hls-dir>\\n", argv[0]);
    return 2;
  }}
  const std::string dir = argv[1];
#else
  if (argc < 3) {{
    std::fprintf(stderr, "usage: %s <kernel.xclbin> <hls-dir>\\n", argv[0]);
    return 2;
  }}
  const std::string dir = argv[2];
#endif
  std::vector<int64_t> prompt(kPromptLen), golden(kTokens);
  std::vector<int64_t> golden_accepted(elements_in<int64_t>(dir, "{spec.run_dir}/accepted.golden"));
  if (!mf::load(dir, "{spec.run_dir}/prompt", prompt) || !mf::load(dir, "{spec.run_dir}/tokens.golden", golden) ||
      !mf::load(dir, "{spec.run_dir}/accepted.golden", golden_accepted))
    return 2;
  std::string stage = "set up";
  try {{
#ifdef MF_HOST_CSIM
    DraftKernel dk;
    VerifyKernel vk;
#else
    stage = "open device 0";
    xrt::device device(0);
    stage = std::string("load ") + argv[1];
    const xrt::uuid uuid = device.load_xclbin(argv[1]);
    stage = "open kernel '{spec.draft.top}' and allocate its buffers";
    DraftKernel dk(device, uuid);
    stage = "open kernel '{spec.verify.top}' and allocate its buffers";
    VerifyKernel vk(device, uuid);
#endif
    stage = "load the weights";
    if (!dk.load(dir) || !vk.load(dir)) return 2;
    mfspec::Loop loop(config(), bind(dk, vk, stage));
    const mfspec::Run run = loop.generate(prompt, kTokens);
    std::printf("MF_TOKENS");
    for (int64_t t : run.tokens) std::printf(" %lld", static_cast<long long>(t));
    std::printf("\\nMF_ACCEPTED");
    for (int a : run.accepted) std::printf(" %d", a);
    std::printf("\\nMF_CALLS draft %d verify %d\\n", run.draft_calls, run.verify_calls);
    int first_bad = -1;
    for (int i = 0; i < kTokens && first_bad < 0; ++i)
      if (run.tokens[i] != golden[i]) first_bad = i;
    const bool same_accepted =
        std::equal(run.accepted.begin(), run.accepted.end(), golden_accepted.begin(), golden_accepted.end());
    std::printf("speculative decoding: %d tokens, %zu verify passes (%.2f tokens per pass), %d draft calls\\n",
                kTokens, run.accepted.size(), static_cast<double>(kTokens - 1) / std::max<std::size_t>(run.accepted.size(), 1),
                run.draft_calls);
    if (first_bad >= 0)
      std::printf("token %d is %lld, PyTorch's is %lld\\n", first_bad, static_cast<long long>(run.tokens[first_bad]),
                  static_cast<long long>(golden[first_bad]));
    if (!same_accepted) std::printf("note: the accepted counts differ from PyTorch's run (a near-tie in a draft)\\n");
    std::printf("MF_RESULT %s\\n", first_bad < 0 ? "PASS" : "FAIL");
    return first_bad < 0 ? 0 : 1;
  }} catch (const std::exception& e) {{  // XRT reports failures as std::exception (std::system_error)
#ifdef MF_HOST_CSIM
    std::fprintf(stderr, "MF_ERROR host: %s failed: %s\\n", stage.c_str(), e.what());
    std::printf("MF_RESULT FAIL\\n");
    return 1;
#else
    std::fprintf(stderr, "MF_ERROR XRT: %s failed: %s\\n", stage.c_str(), e.what());
    return {EXIT_XRT};
#endif
  }}
}}
"""


# ----------------------------------------------------------------- data + csim


def write_host_data(run_dir: Path, prompt, tokens, accepted) -> Path:
    """The host's run files (int64): the prompt, PyTorch's tokens and accepted drafts per
    verify pass. The weights are the kernels' csim data, read where they are."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in (("prompt", prompt), ("tokens.golden", tokens), ("accepted.golden", accepted)):
        np.asarray(arr, dtype="<i8").tofile(run_dir / f"{name}.bin")
    return run_dir


@dataclass
class HostRun:
    """The host program's C simulation: generated tokens against PyTorch's."""

    ok: bool
    tokens: list[int]
    golden: list[int]
    accepted: list[int]
    golden_accepted: list[int]
    draft_calls: int = 0
    verify_calls: int = 0
    compile_s: float = 0.0
    run_s: float = 0.0
    log: str = field(default="", repr=False)

    @property
    def same_accepted(self) -> bool:
        return self.accepted == self.golden_accepted

    @property
    def tokens_per_pass(self) -> float:
        return (len(self.tokens) - 1) / len(self.accepted) if self.accepted else float("nan")

    def summary(self) -> str:
        head = (f"host loop in C simulation {'PASS' if self.ok else 'FAIL'} (compile {self.compile_s:.1f} s, run "
                f"{self.run_s:.2f} s): {len(self.tokens)} tokens "
                f"{'equal' if self.tokens == self.golden else 'DIFFER from'} PyTorch's; {len(self.accepted)} verify "
                f"passes, accepted per pass {self.accepted} ({self.tokens_per_pass:.2f} tokens per pass), "
                f"{self.draft_calls} draft calls")
        if not self.same_accepted:
            head += f"; PyTorch's run accepted {self.golden_accepted}"
        return head

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("log")
        return d


def _objcopy() -> str:
    for tool in (os.environ.get("OBJCOPY", ""), "objcopy", "llvm-objcopy"):
        if tool and shutil.which(tool):
            return tool
    raise CsimError("the host's C simulation links both kernels into one program and needs objcopy (binutils) to "
                    "keep their sub-functions apart: install binutils or set OBJCOPY")


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise CsimError(f"host csim: {what} failed: {' '.join(cmd)}\n{p.stderr.strip()[:8000]}")


def parse_host_output(text: str) -> dict:
    out = {"tokens": [], "accepted": [], "draft_calls": 0, "verify_calls": 0, "result": None}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "MF_TOKENS":
            out["tokens"] = [int(x) for x in parts[1:]]
        elif parts[0] == "MF_ACCEPTED":
            out["accepted"] = [int(x) for x in parts[1:]]
        elif parts[0] == "MF_CALLS" and len(parts) == 5:
            out["draft_calls"], out["verify_calls"] = int(parts[2]), int(parts[4])
        elif parts[0] == "MF_RESULT" and len(parts) == 2:
            out["result"] = parts[1]
    return out


def run_host_csim(out: Path, kernels: dict[str, tuple[Path, str]], hls_dir: Path, golden: list[int],
                  golden_accepted: list[int], timeout: float | None = 600) -> HostRun:
    """Compile host/host.cpp with -DMF_HOST_CSIM against the kernels' csim objects and run
    it on the project's `hls_dir`. `kernels`: kernel dir name -> (its compiled kernels.o, its top); each
    object keeps only its top global (objcopy), so the two kernels' sub-functions of the
    same names (in_proj, ssm, ...) do not clash (on the board each kernel is compiled by
    v++ on its own, where they cannot)."""
    host = out / "host"
    cxx = compiler()
    objcopy = _objcopy()
    t0 = time.perf_counter()
    objs = []
    for sub, (obj, top) in kernels.items():
        if not obj.is_file():
            raise CsimError(f"host csim: no compiled kernel object {obj} (the kernel's C simulation did not build)")
        local = host / f"{sub}_kernel_csim.o"
        # -R .group: the kernel's inline functions (hls::stream, std::deque, ...) leave
        # their COMDAT groups, so the linker keeps this kernel's (now local) copies
        # instead of discarding them for the other kernel's
        _run([objcopy, "-R", ".group", f"--keep-global-symbol={top}", str(obj), str(local)],
             f"localizing {sub}'s symbols")
        objs.append(str(local))
    main_obj = host / "host_csim.o"
    _run([cxx, *CXXFLAGS, "-DMF_HOST_CSIM", "-I", str(out / "hls"), "-I", str(host), "-c", str(host / "host.cpp"),
          "-o", str(main_obj)], "compiling host/host.cpp")
    exe = host / "host_csim"
    _run([cxx, str(main_obj), *objs, "-o", str(exe)], "linking the host with the kernels")
    compile_s = time.perf_counter() - t0
    p, run_s = run_program(exe, hls_dir, timeout)
    log = p.stdout + p.stderr
    (host / "host_csim.log").write_text(log)
    got = parse_host_output(p.stdout)
    if got["result"] is None or p.returncode not in (0, 1):
        raise CsimError(f"host csim exited with status {p.returncode}:\n{log.strip()[-4000:]}")
    ok = p.returncode == 0 and got["result"] == "PASS" and got["tokens"] == list(golden)
    return HostRun(ok, got["tokens"], list(golden), got["accepted"], list(golden_accepted), got["draft_calls"],
                   got["verify_calls"], compile_s, run_s, log)
