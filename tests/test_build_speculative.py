"""`mambaflow build --speculative`: SpecMamba's accelerator as one project.

The target's verify kernel and the draft's decode kernel are each checked by csim
against PyTorch, the verify kernel on the real trees of a PyTorch speculative run; the
host's draft -> verify -> accept loop (host/spec_loop.h) is checked three ways: run over
both kernels' C simulation it must generate PyTorch's greedy tokens; its acceptance,
conv windows and state commit must equal the Python runtime's on real trees; and its
XRT calls must name the emitted kernels' arguments in their order.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_run import cli, last_line
import torch

from mambaflow.errors import ScheduleError
from mambaflow.models import zoo

OK, CHECK, USAGE, TOOLS = 0, 1, 2, 3
HAS_VITIS = shutil.which("vitis_hls") is not None
SPEC_LOOP = Path(__file__).resolve().parents[1] / "targets" / "versal" / "host" / "spec_loop.h"


@pytest.fixture(scope="module")
def mamba1_build(tmp_path_factory):
    """The default speculative build from the command line: the shipped Mamba1 pair, a
    chain of 7, VCK190."""
    out = tmp_path_factory.mktemp("spec") / "m1"
    p = cli("build", "--speculative", "--board", "vck190", "--tokens", "24", "--out", out)
    return p, out, json.loads((out / "build.json").read_text()) if (out / "build.json").exists() else None


def _plain_greedy(target: str, prompt: list[int], n: int, limit: int | None) -> list[int]:
    from mambaflow.runtime.backends import TorchBackend
    from mambaflow.runtime.generate import Sampling, generate

    return generate(TorchBackend(zoo.load_shipped(target)), prompt, n, Sampling(vocab_limit=limit)).tokens


def test_cli_build_runs_both_kernels_and_the_host_against_pytorch(mamba1_build):
    p, out, info = mamba1_build
    assert info is not None, p.stderr[-3000:]
    if HAS_VITIS:
        pytest.skip("vitis_hls is on PATH: the build goes on into the vendor flow")
    assert p.returncode == TOOLS, p.stderr[-3000:]
    assert "build: incomplete (vendor tools missing)" in p.stdout
    assert info["missing_tools"] == ["vitis_hls"] and info["exit_code"] == TOOLS
    assert not (out / "BUILD_INCOMPLETE").exists()
    k = info["kernels"]
    assert (k["verify"]["top"], k["draft"]["top"]) == ("verify", "decode")
    assert info["nodes"] == 8 and info["fifo_depth"] == 2  # chain:7 -> T = 8, a chain's ring holds 2
    for role in ("verify", "draft"):
        c = k[role]["csim"]
        assert c["ok"] and c["compares"], c
        assert {x["port"] for x in c["compares"]} >= ({"logits", "conv_in", "ssm_states"} if role == "verify"
                                                     else {"logits", "conv_state_out", "ssm_state_out"})
    # the verify csim ran on the first real trees of the PyTorch speculative run: one
    # comparison of every output per tree, and the draft's proposals were accepted on some
    cases = k["verify"]["cases"]
    assert len(cases) == 3 and len([x for x in k["verify"]["csim"]["compares"] if x["port"] == "logits"]) == 3
    assert [c["accepted"] for c in cases] == info["golden_accepted"][:3]
    assert any(c["accepted"] > 0 for c in cases)
    for c in cases:
        assert c["parents"] == list(range(-1, c["nodes"] - 1))  # chains, breadth-first
    # the host loop over both kernels' C simulation generated the target's own greedy tokens
    host = info["host"]
    assert host["ok"] and host["tokens"] == info["golden_tokens"] and len(host["tokens"]) == 24
    assert host["accepted"] == info["golden_accepted"] and sum(host["accepted"]) > 0
    prompt = np.fromfile(out / "hls" / "spec" / "prompt.bin", dtype="<i8").tolist()
    assert prompt == list(b"The Python language")  # the byte tokenizer of the shipped models
    from mambaflow.models.tokenizer import text_codec

    limit = text_codec(None, 264, shipped=True).vocab_limit
    assert host["tokens"] == _plain_greedy("mamba1-target", prompt, 24, limit)
    for f in ("host/host.cpp", "host/spec_loop.h", "hls/verify/kernels.cpp", "hls/draft/kernels.cpp",
              "hls/verify/data/embed_w.bin", "hls/draft/data/embed_w.bin", "hls/spec/tokens.golden.bin",
              "schedule_verify.json",
              "schedule_draft.json"):
        assert (out / f).is_file(), f
    # the two sources are separate: each defines its own sub-functions of the same names
    for role in ("verify", "draft"):
        assert re.search(r"^void in_proj\(", (out / "hls" / role / "kernels.cpp").read_text(), re.M)


def _prototype(header: str) -> tuple[str, list[tuple[str, int]]]:
    """(top, [(argument, elements)]) of the extern "C" top in an emitted kernels.h."""
    m = re.search(r'extern "C" void (\w+)\((.*?)\);', header, re.S)
    args = []
    for a in m.group(2).split(","):
        a = a.strip()
        name, dims = re.fullmatch(r"(?:const )?[\w:<>]+ (\w+)((?:\[\d+\])*)", a).groups()
        n = 1
        for d in re.findall(r"\d+", dims):
            n *= int(d)
        args.append((name, n))
    return m.group(1), args


# The XRT native API the host uses, with XRT's signatures (Xilinx/XRT src/runtime_src/core/
# include/xrt/xrt_device.h, xrt_bo.h, xrt_kernel.h). Each call throws std::system_error, as
# XRT does, when it is the one named by STUB_FAIL (0 device, 1 load_xclbin, 2 kernel), so the
# host's handling of a failing step can run here.
XRT_DEVICE = """#pragma once
#include <string>
#include <system_error>
namespace xrt {
inline void stub_fail(int at, const char* what) {
  if (at == STUB_FAIL) throw std::system_error(std::make_error_code(std::errc::no_such_device), what);
}
struct uuid {};
class device {
 public:
  explicit device(unsigned int) { stub_fail(0, "stub: no device"); }
  uuid load_xclbin(const std::string&) { stub_fail(1, "stub: bad xclbin"); return {}; }
};
}
"""
XRT_BO = """#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>
#include "xrt/xrt_device.h"
enum xclBOSyncDirection { XCL_BO_SYNC_BO_TO_DEVICE = 0, XCL_BO_SYNC_BO_FROM_DEVICE };
namespace xrt {
using memory_group = uint32_t;
class bo {
  std::vector<char> mem_;
 public:
  bo(const device&, size_t sz, memory_group) : mem_(sz) {}
  template <typename MapType> MapType map() { return reinterpret_cast<MapType>(mem_.data()); }
  void sync(xclBOSyncDirection) {}
};
}
"""
XRT_KERNEL = """#pragma once
#include <string>
#include "xrt/xrt_bo.h"
namespace xrt {
class run {
 public:
  int wait() { return 0; }
};
class kernel {
 public:
  kernel(const device&, const uuid&, const std::string& name) { stub_fail(2, ("stub: no kernel " + name).c_str()); }
  int group_id(int) const { return 0; }
  template <typename... Args> run operator()(Args&&...) { return {}; }
};
}
"""


def test_host_drives_the_emitted_kernels_argument_by_argument(mamba1_build):
    _, out, info = mamba1_build
    host = (out / "host" / "host.cpp").read_text()
    sizes = {"int64_t": 8, "float": 4}
    for role, cls in (("verify", "VerifyKernel"), ("draft", "DraftKernel")):
        header = (out / "hls" / role / "kernels.h").read_text()
        top, args = _prototype(header)
        assert top == info["kernels"][role]["top"]
        xrt = host[host.index("#else", host.index("#ifdef MF_HOST_CSIM\n// kernel")):]
        body = xrt[xrt.index(f"struct {cls} {{"):]
        body = body[:body.index("\n};")]
        assert f'kernel(device, uuid, "{top}")' in body
        # one buffer object per argument, in argument order, on the argument's memory bank
        bos = re.findall(r"(\w+)_bo\(device, (\d+), kernel\.group_id\((\d+)\)\)", body)
        elems = {n: e for n, e in args}
        decl = re.findall(r"^  (\w+)\* (\w+);", body, re.M)
        assert [b[0] for b in bos] == [a for a, _ in args]
        assert [int(b[2]) for b in bos] == list(range(len(args)))
        for (name, nbytes, _), (elem, ptr) in zip(bos, decl):
            assert ptr == name and int(nbytes) == elems[name] * sizes[elem]
        call = re.search(r"xrt::run r = kernel\((.*?)\);", body).group(1).split(", ")
        assert call == [f"{a}_bo" for a, _ in args]
        # the C simulation calls the function with the same arguments in the same order
        csim = host[host.index(f"struct {cls} {{"):]
        csim = csim[:csim.index("\n};")]
        called = re.search(rf"    {top}\((.*?)\);", csim, re.S).group(1)
        names = [re.sub(r"reinterpret_cast<[^>]*>\((\w+)\)", r"\1", x.strip()) for x in called.split(",")]
        assert names == [a for a, _ in args]
    # every XRT step is guarded and says which step failed
    assert "catch (const std::exception& e)" in host and '"MF_ERROR XRT: %s failed: %s\\n"' in host
    assert re.search(r'MF_ERROR XRT: %s failed: %s\\n", stage.c_str\(\), e.what\(\)\);\n    return 3;', host)
    for stage in ("open device 0", "open kernel 'decode'", "open kernel 'verify'", "the verify kernel 'verify'",
                  "the draft kernel 'decode'"):
        assert stage in host, stage
    # the XRT side compiles against XRT's signatures, and a failing XRT call is reported
    # with the step it failed in, exit 3
    stubs = out.parent / "xrt_stubs" / "xrt"
    stubs.mkdir(parents=True, exist_ok=True)
    (stubs / "xrt_device.h").write_text(XRT_DEVICE)
    (stubs / "xrt_bo.h").write_text(XRT_BO)
    (stubs / "xrt_kernel.h").write_text(XRT_KERNEL)
    for fail, step in ((0, "open device 0"), (1, "load spec.xclbin"), (2, "open kernel 'decode'")):
        exe = stubs.parent / f"host_fail{fail}"
        p = subprocess.run(["g++", "-std=c++17", "-O0", "-Wall", "-Werror", f"-DSTUB_FAIL={fail}", "-I",
                            str(stubs.parent), "-I", str(out / "hls"), "-I", str(out / "host"),
                            str(out / "host" / "host.cpp"), "-o", str(exe)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        r = subprocess.run([str(exe), "spec.xclbin", str(out / "hls")], capture_output=True, text=True)
        assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
        assert r.stderr.startswith(f"MF_ERROR XRT: {step}") and "failed: stub:" in r.stderr, r.stderr
    # the v++ link configuration instantiates both kernels
    link = (out / "link.cfg").read_text()
    assert "nk=verify:1:verify_1" in link and "nk=decode:1:decode_1" in link


def test_host_csim_fails_when_a_token_differs(mamba1_build, tmp_path):
    _, out, info = mamba1_build
    from mambaflow.targets.hls.csim import run_program

    hls = tmp_path / "hls"
    shutil.copytree(out / "hls", hls)
    golden = np.fromfile(hls / "spec" / "tokens.golden.bin", dtype="<i8")
    golden[5] = (golden[5] + 1) % 256
    golden.tofile(hls / "spec" / "tokens.golden.bin")
    p, _ = run_program(out / "host" / "host_csim", hls)
    assert p.returncode == 1 and "MF_RESULT FAIL" in p.stdout
    assert f"token 5 is {info['golden_tokens'][5]}" in p.stdout


# ------------------------------------------------------------ the host's logic

HARNESS = r"""
#include <cstdio>
#include <fstream>
#include <iostream>
#include "spec_loop.h"
// usage: harness <dir>: case.txt "T V limit n K L C S node width" + tokens + parents;
// logits.bin, base_conv.bin, base_ssm.bin, conv_in.bin, states.bin (float32)
template <class T> static std::vector<T> read(const std::string& p, std::size_t n) {
  std::vector<T> v(n);
  std::ifstream f(p, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), n * sizeof(T));
  if (!f) throw std::runtime_error("short file " + p);
  return v;
}
int main(int, char** argv) {
  const std::string d = argv[1];
  std::ifstream meta(d + "/case.txt");
  int T, V, limit, n, K, L, C, S, node, width;
  meta >> T >> V >> limit >> n >> K >> L >> C >> S >> node >> width;
  mfspec::Tree tree;
  tree.tokens.resize(T);
  tree.parents.resize(T);
  for (auto& t : tree.tokens) meta >> t;
  for (auto& p : tree.parents) meta >> p;
  const auto logits = read<float>(d + "/logits.bin", std::size_t(T) * V);
  const auto a = mfspec::accept_greedy(tree, n, logits.data(), V, limit);
  std::printf("PATH");
  for (int x : a.path) std::printf(" %d", x);
  std::printf("\nBONUS %lld\nWINDOWS", static_cast<long long>(a.bonus));
  const auto w = mfspec::conv_windows(tree.parents, K);
  for (auto x : w) std::printf(" %lld", static_cast<long long>(x));
  std::printf("\nFIFO %d\nTOPK", mfspec::fifo_need(tree.parents));
  for (int x : mfspec::top_k(logits.data(), limit, width)) std::printf(" %d", x);
  std::printf("\n");
  mfspec::StateShape s{L, C, K, S};
  mfspec::State base{read<float>(d + "/base_conv.bin", s.conv_size()), read<float>(d + "/base_ssm.bin", s.ssm_size())};
  const auto conv_in = read<float>(d + "/conv_in.bin", std::size_t(L) * T * C);
  const auto states = read<float>(d + "/states.bin", std::size_t(L) * T * S);
  const auto st = mfspec::commit(s, base, w, T, conv_in.data(), states.data(), node);
  std::ofstream(d + "/commit_conv.bin", std::ios::binary).write(reinterpret_cast<const char*>(st.conv.data()), st.conv.size() * 4);
  std::ofstream(d + "/commit_ssm.bin", std::ios::binary).write(reinterpret_cast<const char*>(st.ssm.data()), st.ssm.size() * 4);
  return 0;
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    (d / "harness.cpp").write_text(HARNESS)
    exe = d / "harness"
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Werror", "-I", str(SPEC_LOOP.parent),
                    str(d / "harness.cpp"), "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def _run_harness(exe, d: Path, tokens, parents, n, logits, K, base, conv_in, states, node, width, limit):
    L, T, C = conv_in.shape
    S = states[0, 0].numel()
    V = logits.shape[1]
    d.mkdir(parents=True, exist_ok=True)
    (d / "case.txt").write_text(" ".join(map(str, [T, V, limit, n, K, L, C, S, node, width, *tokens, *parents])))
    for name, t in (("logits", logits), ("base_conv", base.conv[:, 0]), ("base_ssm", base.ssm[:, 0]),
                    ("conv_in", conv_in), ("states", states)):
        t.detach().float().contiguous().numpy().tofile(d / f"{name}.bin")
    p = subprocess.run([str(exe), str(d)], capture_output=True, text=True, check=True)
    out = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in p.stdout.splitlines()}
    conv = np.fromfile(d / "commit_conv.bin", np.float32).reshape(tuple(base.conv[:, 0].shape))
    ssm = np.fromfile(d / "commit_ssm.bin", np.float32).reshape(tuple(base.ssm[:, 0].shape))
    return out, conv, ssm


@pytest.mark.parametrize("tree", ["chain:4", "2,2,1"])
def test_host_acceptance_and_commit_equal_the_python_runtime(harness, tmp_path, tree):
    """On the real trees of a PyTorch speculative run (shipped Mamba2 pair): the C++
    accept path and bonus equal runtime.speculative.accept_greedy, its conv windows
    models.common.tree_conv_windows, its FIFO need runtime.backtrack.fifo_need, its
    state after the accepted node runtime.backtrack.state_at (bit for bit), and its
    top-k the draft's children (torch.topk)."""
    from mambaflow.models.common import tree_conv_windows
    from mambaflow.models.tokenizer import text_codec
    from mambaflow.runtime.backends import TorchBackend
    from mambaflow.runtime.backtrack import fifo_need
    from mambaflow.runtime.generate import Sampling
    from mambaflow.runtime.speculative import accept_greedy
    from mambaflow.runtime.trees import DraftTree
    from mambaflow.targets.hls.reference import speculative_cases

    torch.set_num_threads(1)
    target, draft = zoo.load_shipped("mamba2-target"), zoo.load_shipped("mamba2-draft")
    codec = text_codec(None, target.config.vocab_size, shipped=True)
    prompt = codec.encode("def speculative(tree):")
    cases, gen = speculative_cases(target, draft, tree, prompt, 20, codec.vocab_limit)
    tb = TorchBackend(target)
    K = target.config.d_conv
    accepted = []
    for i, c in enumerate(cases):
        logits, cache = tb.verify_tree(c.tokens, c.parents, c.state)
        want_path, want_bonus = accept_greedy(DraftTree(c.tokens[:c.nodes], c.parents[:c.nodes], [0] * c.nodes),
                                              logits, Sampling(vocab_limit=codec.vocab_limit))
        node = want_path[-1]
        states = torch.stack(cache.ssm)  # (L, T, *ssm)
        got, conv, ssm = _run_harness(harness, tmp_path / f"c{i}", c.tokens, c.parents, c.nodes, logits, K, c.state,
                                      cache.conv_in, states.flatten(2), node, 3, codec.vocab_limit)
        assert got["PATH"] == want_path and got["BONUS"] == [want_bonus]
        assert got["WINDOWS"] == tree_conv_windows(c.parents, K).flatten().tolist()
        assert got["FIFO"] == [fifo_need(c.parents)]
        assert got["TOPK"] == torch.topk(logits[0, :codec.vocab_limit], 3).indices.tolist()
        want = tb.state_at(cache, node)
        assert np.array_equal(conv, want.conv[:, 0].numpy()) and np.array_equal(ssm, want.ssm[:, 0].numpy())
        accepted.append(len(got["PATH"]) - 1)
    assert accepted == gen.accepted and sum(accepted) > 0  # real trees: the draft's tokens were accepted


def test_host_acceptance_on_branching_trees_with_planted_paths(harness, tmp_path):
    """Static trees of random widths whose logits plant an accepted path two or three
    deep (every step's token made its parent's argmax, tied with the next token id, so
    the first index must win), two padding nodes behind the tree that must never be
    accepted: the C++ acceptance equals runtime.speculative.accept_greedy."""
    from mambaflow.models.common import MambaState
    from mambaflow.runtime.generate import Sampling
    from mambaflow.runtime.speculative import accept_greedy
    from mambaflow.runtime.trees import DraftTree, static_parents

    g = torch.Generator().manual_seed(7)
    V, K, L, C, S = 12, 4, 2, 3, 5
    deep = 0
    for trial in range(8):
        widths = [int(w) for w in torch.randint(1, 4, (3,), generator=g)]
        parents = static_parents(widths)
        n = len(parents)
        tokens = torch.randint(0, V - 1, (n,), generator=g).tolist()
        logits = torch.randn(n + 2, V, generator=g)
        node = 0
        for _ in range(int(torch.randint(2, 4, (1,), generator=g))):
            kids = [c for c in range(n) if parents[c] == node]
            if not kids:
                break
            c = kids[int(torch.randint(0, len(kids), (1,), generator=g))]
            logits[node] = -5.0
            logits[node, tokens[c]] = logits[node, tokens[c] + 1] = 3.0
            node = c
        logits[n:, :] = 9.0  # padding rows: never reached
        want_path, bonus = accept_greedy(DraftTree(tokens, parents, [0] * n), logits, Sampling())
        deep += len(want_path) >= 3
        base = MambaState(torch.randn(L, 1, C, K, generator=g), torch.randn(L, 1, S, generator=g))
        got, _, _ = _run_harness(harness, tmp_path / f"t{trial}", tokens + [0, 0], parents + [-1, -1], n, logits, K,
                                 base, torch.randn(L, n + 2, C, generator=g), torch.randn(L, n + 2, S, generator=g),
                                 0, 2, V)
        assert got["PATH"] == want_path and got["BONUS"] == [bonus], (widths, tokens)
        assert max(got["PATH"]) < n
    assert deep >= 4  # the planted paths were followed


# ----------------------------------------------------------------- bad input


def test_a_draft_with_another_vocabulary_is_refused_in_one_line(tmp_path):
    out = tmp_path / "never"
    p = cli("build", "--speculative", "--draft", "tiny-mamba1", "--out", out)
    assert p.returncode == USAGE, p.stderr[-2000:]
    line = last_line(p)
    assert "Traceback" not in p.stderr
    assert line.startswith("mambaflow build: error:") and "vocabulary 64" in line and "264" in line, line
    assert not out.exists()  # refused before the directory is touched


@pytest.mark.parametrize("flags", [("--draft", "mamba1-draft"), ("--tree", "4,2"), ("--tokens", "8"),
                                   ("--speculative", "--quant", "w4a4")])
def test_speculative_flags_need_speculative(tmp_path, capsys, flags):
    from mambaflow.cli import main

    assert main(["build", *flags, "--out", str(tmp_path / "x")]) == USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mambaflow build: error: ")
    assert ("--speculative" in err[0]) and ("only appl" in err[0] or "float design" in err[0]), err
    assert not (tmp_path / "x").exists()


def test_dynamic_trees_and_saved_logs_are_refused(tmp_path):
    from mambaflow.errors import MambaflowError
    from mambaflow.targets.versal.speculative_build import build_speculative

    t, d = zoo.load_shipped("mamba1-target"), zoo.load_shipped("mamba1-draft")
    with pytest.raises(MambaflowError, match="dynamic tree"):
        build_speculative(t, d, "dyn:8", out_dir=tmp_path / "a")
    with pytest.raises(MambaflowError, match="saved log replays on the design"):
        build_speculative(t, d, "chain:2", schedule=str(tmp_path / "s.json"), out_dir=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------- Mamba2, a static tree, the VHK158


def test_mamba2_static_tree_on_vhk158_with_a_platform(tmp_path):
    """`mambaflow build --speculative --board vhk158 --platform PATH` (the Mamba2 pair, a
    static tree): both csims and the host pass and it exits 3, Vitis being missing; the
    verify schedules the flow could not use are named with the reason."""
    xpfm = tmp_path / "platforms" / "my_vhk158" / "my_vhk158.xpfm"
    xpfm.parent.mkdir(parents=True)
    xpfm.write_text("<xpfm/>")
    out = tmp_path / "m2"
    p = cli("build", "--speculative", "--model", "mamba2-target", "--tree", "2,1", "--board", "vhk158",
            "--platform", xpfm, "--tokens", "16", "--prompt", "import os", "--out", out)
    info = json.loads((out / "build.json").read_text())
    assert not info["errors"], info["errors"]
    if not HAS_VITIS:
        assert p.returncode == TOOLS and info["missing_tools"], p.stderr[-3000:]
    v, d, h = info["kernels"]["verify"], info["kernels"]["draft"], info["host"]
    assert info["draft"] == "mamba2-draft" and (info["nodes"], info["fifo_depth"]) == (5, 3)
    assert v["csim"]["ok"] and d["csim"]["ok"] and h["ok"] and h["tokens"] == info["golden_tokens"]
    assert h["accepted"] == info["golden_accepted"]
    assert [c["parents"] for c in v["cases"] if c["nodes"] == 5][:1] == [[-1, 0, 0, 1, 2]]
    # the FIFO tree buffer is on chip, partitioned along the state lanes, whatever schedule won
    entries = json.loads((out / "schedule_verify.json").read_text())["log"]
    assert {"op": "partition", "buffer": "ssm:state_fifo", "kind": "cyclic", "dim": 4, "factor": 16} in entries
    assert "tree_buffer" in v["schedule"]
    if v["schedule"] != "accelerator + tree_buffer":
        assert v["schedule_notes"][0].startswith("accelerator + tree_buffer on the verify design: ")
    assert f"PLATFORM ?= {xpfm.resolve()}" in (out / "Makefile").read_text()


def test_vhk158_without_a_platform_is_refused_before_any_work(tmp_path):
    p = cli("build", "--speculative", "--board", "vhk158", "--out", tmp_path / "x")
    assert p.returncode == USAGE and "vhk158" in last_line(p) and "--platform" in last_line(p), p.stderr[-2000:]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ bounds


def _module(src: str):
    from torch_mlir import ir

    from mambaflow.flow.mlir import new_context

    with new_context():
        return ir.Module.parse(src)


@pytest.mark.parametrize("inner, bad", [(4, False), (5, True)])
def test_bounds_check_finds_a_tile_past_its_buffer(inner, bad):
    """A split loop `j = i to i + inner` with i = 0, 4, 8, 12 reads x[0..15] (inner 4) or
    x[0..16] (inner 5: one past the end)."""
    from mambaflow.targets.versal.bounds import out_of_bounds
    from mambaflow.targets.versal.build import check_bounds

    m = _module(f"""
func.func @k(%x: memref<16xf32>, %y: memref<16xf32>) {{
  affine.for %i = 0 to 16 step 4 {{
    affine.for %j = affine_map<(d0) -> (d0)>(%i) to affine_map<(d0) -> (d0 + {inner})>(%i) {{
      %v = affine.load %x[%j] : memref<16xf32>
      affine.store %v, %y[%j - %i] : memref<16xf32>
    }} {{loop_name = "j"}}
  }} {{loop_name = "i"}}
  return
}}""")
    found = out_of_bounds(m)
    assert bool(found) == bad, found
    if bad:
        assert found == ["k: reads dim 0 of a 16 buffer at [0, 16] in loop i.j"]
        design = type("D", (), {"module": m})()
        with pytest.raises(ScheduleError, match="indexes outside a buffer: k: reads dim 0"):
            check_bounds(design)


# ------------------------------------------------------- verify reference data


def test_verify_reference_data_needs_trees_that_fit_the_design():
    from mambaflow.errors import MambaflowError
    from mambaflow.flow.capture import capture
    from mambaflow.models import build_model, get_config
    from mambaflow.targets.hls.reference import VerifyCase, random_state, reference_data

    torch.manual_seed(0)
    m = build_model(get_config("tiny-mamba1")).eval()
    d = capture(m, "verify", T=4, fifo_depth=2, progress=False)
    st = random_state(m.config, 1)
    with pytest.raises(MambaflowError, match="needs token trees"):
        reference_data(m, d)
    with pytest.raises(MambaflowError, match="verifies T=4 nodes"):
        reference_data(m, d, trees=[VerifyCase([1, 2, 3], [-1, 0, 1], st)])
    with pytest.raises(MambaflowError, match="FIFO tree buffer of 3 slots"):
        reference_data(m, d, trees=[VerifyCase([1, 2, 3, 4], [-1, 0, 0, 1], st)])  # node 3's parent is 2 back
    tree = VerifyCase([5, 6, 7, 0], [-1, 0, 1, -1], st)  # a chain of 3 and one padding node
    inputs, golden, spec = reference_data(m, d, trees=[tree, tree])
    L, V = m.config.n_layer, m.config.vocab_size
    assert spec.steps == 2 and spec.per_step == {"tokens", "windows", "parents", "conv_state", "ssm_state"}
    assert inputs["windows"].shape == (2, 4, m.config.d_conv) and golden["logits"].shape == (2, 4, V)
    assert golden["conv_in"].shape == (2, L, 4, m.config.conv_dim)
    with torch.no_grad():
        logits, nodes = m.verify(torch.tensor([tree.tokens]), tree.parents, st, return_states=True)
    assert np.array_equal(golden["logits"][1], logits[0].numpy())
    assert np.array_equal(golden["ssm_states"][0], nodes.ssm[:, 0].numpy())
