"""The integer decode step through the flow: the PyTorch integer reference, the llvm run
and the HLS C simulation agree bit for bit (Mamba1 / Mamba2, W8A8 / W4A4)."""

import shutil

import numpy as np
import pytest
import torch

from mambaflow.models import MambaConfig, build_model, get_config
from mambaflow.flow.identity import kernel_kind
from mambaflow.flow.mlir import funcs
from mambaflow.quant.flow import capture_quantized, example_env, layer_values, run_csim, run_llvm
from mambaflow.targets.hls import emit_design
from mambaflow.quant.ptq import quantize
from mambaflow.quant.schemes import W4A4, W8A8

HAVE_GXX = shutil.which("g++") is not None



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

def _quantized(name, qc):
    torch.manual_seed(0)
    m = build_model(get_config(name))
    calib = torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(1))
    return quantize(m, qc, calib)


def _same(out: dict, ref: dict):
    for k, v in ref.items():
        want = v.numpy().astype(np.int64)
        got = out[k].astype(np.int64)
        assert got.shape == want.shape, k
        diff = np.abs(got - want)
        assert diff.max() == 0, f"{k}: {int((diff > 0).sum())} of {diff.size} differ (max {diff.max()})"


def _nontrivial(ref: dict):
    for k, v in ref.items():
        assert v.unique().numel() > 3, f"reference output {k} is (nearly) constant: the check would be weak"


@pytest.mark.parametrize("qc", [W8A8, W4A4], ids=["w8a8", "w4a4"])
@pytest.mark.parametrize("name", ["tiny-mamba1", "tiny-mamba2"])
def test_integer_layer_reference_llvm_csim_bit_exact(name, qc, tmp_path):
    qm = _quantized(name, qc)
    d = capture_quantized(qm, "layer", layer=1)
    assert d.top == "decode_layer"
    text = str(d.module)
    assert "f32" not in text and "f64" not in text, "the integer design has a float type"
    bits = {p.name: p.width for p in d.ports}
    assert bits["in_proj.w"] == (4 if qc is W4A4 else 8)
    # one function per kernel kind, stacked ports holding the one layer of this scope
    assert d.quant == qc.name and d.stacked_layers == (1,)
    assert {k: kernel_kind(funcs(d.module)[k]) for k in d.kernels} == {k: k for k in d.kernels}
    assert next(p for p in d.ports if p.name == "in_proj.w").shape[0] == 1
    assert "memref<1x32xi32>" in text or "memref<1x64xi32>" in text  # resid stays i32

    tok, st = example_env(qm)
    # two steps from different states: a few tokens in, then one step further
    vals, ref = layer_values(qm, d, tok, st)
    _nontrivial(ref)
    _same(run_llvm(d, vals), ref)
    _, st2 = qm.decode(tok, st)
    vals2, ref2 = layer_values(qm, d, (tok + 7) % 64, st2)
    _same(run_llvm(d, vals2), ref2)

    # the comparison catches a changed weight row (one output channel differs)
    bad = dict(vals)
    w = vals["out_proj.w"].clone()
    j = int((ref["resid_out"].to(torch.int64) - vals["resid"].to(torch.int64)).abs().argmax())
    w[0, j] = -w[0, j]
    bad["out_proj.w"] = w
    got = run_llvm(d, bad)["resid_out"]
    want = ref["resid_out"].numpy()
    assert got[0, j] != want[0, j] and np.array_equal(np.delete(got, j, 1), np.delete(want, j, 1))

    if not HAVE_GXX:
        pytest.skip("g++ is not on PATH: HLS csim not run")
    code = emit_design(d)
    if qc is W4A4:  # the 4-bit weight ports: packed into 512-bit AXI beats, unpacked per access
        w = next(p for p in code.ports if p.source == "in_proj.w")
        assert w.packed and w.elem_bits == 4 and w.arg_type == "ap_uint<512>" and "mf_unpack<4, 512>" in code.source
    r = run_csim(d, vals, ref, tmp_path / "csim")
    assert r.ok, r.summary()
    _same(r.outputs, ref)

    if name == "tiny-mamba2" and qc is W4A4:
        # the integer design takes the schedule language like the float one: pipelining,
        # unrolling and splitting the MAC loops keeps llvm and csim equal to the reference
        from mambaflow.schedules import customize

        s = customize(d)
        assert s.kind("in_proj") == "in_proj"
        mac = {k: _mac_band(s, k) for k in ("in_proj", "out_proj")}
        s.pipeline(f"in_proj:{mac['in_proj']}.i", ii=1)
        s.unroll(f"in_proj:{mac['in_proj']}.j", 0)
        jo, ji = s.split(f"out_proj:{mac['out_proj']}.j", 2)
        s.pipeline(ji, ii=1)
        _same(run_llvm(d, vals2), ref2)
        code = emit_design(d)
        assert "pipeline II=1" in code.pragmas["in_proj"] and "unroll" in code.pragmas["in_proj"]
        r = run_csim(d, vals2, ref2, tmp_path / "csim_scheduled")
        assert r.ok, r.summary()
        _same(r.outputs, ref2)


def _mac_band(s, kernel: str) -> str:
    """The gemm's MAC band (rows i, blocks j): the 2-deep band whose inner loop holds
    quant.integer_ref.DOT multiplies an iteration."""
    from mambaflow.flow.mlir import walk
    from mambaflow.quant.integer_ref import DOT

    for band, loops in s.get_loops(kernel).items():
        names = list(loops)
        if len(names) == 2:
            inner = s.loop(f"{kernel}:{band}.{names[1]}").op
            if sum(o.name == "arith.muli" for o in walk(inner)) == DOT:
                return band
    raise AssertionError(f"{kernel} has no MAC band")


def test_integer_decode_model_llvm_csim_bit_exact(tmp_path):
    """The whole decode step (embedding, every layer, final norm, head) of a tiny Mamba1
    in W4A4, two steps with the state fed back. d_model = 24, d_inner = 48: the rotations
    are Kronecker products with the Paley H_12 (offline H_12 ⊗ H_2, online H_12 ⊗ H_4,
    whose signs are a ROM port of the design)."""
    cfg = MambaConfig("mamba1", d_model=24, n_layer=2, vocab_size=64, d_state=8)
    torch.manual_seed(0)
    qm = quantize(build_model(cfg), W4A4, torch.randint(0, 64, (4, 48), generator=torch.Generator().manual_seed(1)))
    assert "hadamard.sign" in qm.params
    d = capture_quantized(qm, "model")
    assert "hadamard.sign" in [p.name for p in d.ports]
    tok, st = example_env(qm)
    vals, ref = layer_values(qm, d, tok, st)
    _nontrivial({"logits": ref["logits"]})
    out = run_llvm(d, vals)
    _same(out, ref)
    # the layer engine: one function per kind, the top's layer loop over both layers
    assert d.kernels == ["embed", "norm", "in_proj", "conv", "x_proj", "ssm", "out_proj", "norm_f", "lm_head"]
    assert next(p for p in d.ports if p.name == "in_proj.w").shape[0] == 2
    # feed the llvm states back for a second step
    st2 = type(st)(torch.from_numpy(out["conv_state_out"]), torch.from_numpy(out["ssm_state_out"]))
    vals2, ref2 = layer_values(qm, d, (tok + 1) % 64, st2)
    _same(run_llvm(d, vals2), ref2)
    if not HAVE_GXX:
        pytest.skip("g++ is not on PATH: HLS csim not run")
    r = run_csim(d, vals2, ref2, tmp_path / "csim")
    assert r.ok, r.summary()
    _same(r.outputs, ref2)

