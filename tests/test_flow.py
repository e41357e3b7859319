"""capture -> named affine IR -> llvm JIT equals PyTorch, for Mamba1 and Mamba2.

Tolerance: float32 end to end; the flow reorders reductions (fast-math reassoc), so
logits and states agree to a few ulps of their magnitude. atol 2e-5 with values of
order 1 leaves headroom over the ~3e-7 observed while still catching any wrong index.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch_mlir import ir

from mambaflow.errors import UnsupportedOpError
from mambaflow.flow.capture import capture
from mambaflow.flow.lowering import capture_function
from mambaflow.flow.identity import arg_names, kernel_kind, stacked_args
from mambaflow.flow.mlir import funcs, new_context, str_attr, walk
from mambaflow.flow.naming import loops_of
from mambaflow.models import build_model
from mambaflow.models.common import MambaState
from mambaflow.models.config import get_config
from mambaflow.runtime.backends import LLVMBackend, TorchBackend
from mambaflow.targets.llvm.jit import JitFunction

ATOL = 2e-5
ARCHS = ["tiny-mamba1", "tiny-mamba2"]


def _model(name: str):
    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    # push the parameters off their init so every term of the equations carries signal
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=ARCHS)
def pair(request):
    model = _model(request.param)
    return model, TorchBackend(model), LLVMBackend(model, prefill_chunk=4, progress=False)


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL, rtol=1e-5)


def _tokens(model, n, seed=1):
    return torch.randint(0, model.config.vocab_size, (n,), generator=torch.Generator().manual_seed(seed))


def test_prefill_decode_verify_match_torch(pair):
    model, ref, jit = pair
    toks = _tokens(model, 7)  # one compiled prefill chunk of 4, then 3 decode steps
    l_ref, s_ref = ref.prefill(toks)
    l_jit, s_jit = jit.prefill(toks)
    _close(l_jit, l_ref)
    _close(s_jit.conv, s_ref.conv)
    _close(s_jit.ssm, s_ref.ssm)
    d_ref, n_ref = ref.decode(3, s_ref)
    d_jit, n_jit = jit.decode(3, s_ref)
    _close(d_jit, d_ref)
    _close(n_jit.ssm, n_ref.ssm)
    parents = [-1, 0, 0, 1, 2, 1, 5]
    v_ref, nodes_ref = ref.verify(toks, parents, s_ref)
    v_jit, nodes_jit = jit.verify(toks, parents, s_ref)
    _close(v_jit, v_ref)
    _close(nodes_jit.ssm, nodes_ref.ssm)
    _close(nodes_jit.conv, nodes_ref.conv)


def test_prefill_then_decode_equals_longer_prefill(pair):
    model, _, jit = pair
    toks = _tokens(model, 10, seed=2)
    full, s_full = jit.prefill(toks)
    part, s = jit.prefill(toks[:8])
    steps = []
    for t in toks[8:]:
        logits, s = jit.decode(int(t), s)
        steps.append(logits)
    _close(torch.cat([part, torch.stack(steps)]), full)
    _close(s.ssm, s_full.ssm)
    _close(s.conv, s_full.conv)


def test_verify_chain_equals_decode_steps(pair):
    model, _, jit = pair
    _, s0 = jit.prefill(_tokens(model, 5, seed=3))
    toks = _tokens(model, 6, seed=4)
    chain, nodes = jit.verify(toks, list(range(-1, 5)), s0)
    s = s0
    for k, t in enumerate(toks):
        logits, s = jit.decode(int(t), s)
        _close(chain[k], logits)
        _close(nodes.select(k).ssm, s.ssm)


def test_kernels_are_named_funcs_with_named_loops():
    cfg = get_config("tiny-mamba2")
    d = capture(cfg, "prefill", T=4, progress=False)
    names = set(funcs(d.module))
    # one function per kernel kind, whatever the depth; kind and port names as attributes
    kinds = ("embed", "norm", "in_proj", "conv", "ssm", "gated_norm", "out_proj", "norm_f", "lm_head")
    assert names == set(kinds) | {"prefill"}
    assert {k: kernel_kind(funcs(d.module)[k]) for k in kinds} == {k: k for k in kinds}
    assert arg_names(funcs(d.module)["in_proj"]) == ["xn", "in_proj_w", "z", "x", "dt", "layer"]
    assert stacked_args(funcs(d.module)["in_proj"]) == [False, True, False, False, False, False]
    # the top loops over the layers; stacked weights are indexed by the loop
    top = funcs(d.module)["prefill"]
    layer_loops = [op for op in walk(top) if op.name == "affine.for" and str_attr(op, "loop_name") == "layer"]
    assert len(layer_loops) == 1
    assert str(ir.AffineMapAttr(layer_loops[0].attributes["upperBoundMap"]).value) == f"() -> ({cfg.n_layer})"
    calls = [ir.FlatSymbolRefAttr(o.attributes["callee"]).value for o in walk(layer_loops[0]) if o.name == "func.call"]
    assert calls == ["norm", "in_proj", "conv", "ssm", "gated_norm", "out_proj"]
    for name in d.kernels:
        for op in walk(funcs(d.module)[name]):
            if op.name == "affine.for":
                assert "loop_name" in op.attributes, name
    # the prefill scan reaches MLIR as a loop named t over the 4 tokens, not unrolled
    t_loops = [loops for loops in loops_of(funcs(d.module)["ssm"]).values() if "t" in loops]
    assert len(t_loops) == 1
    upper = ir.AffineMapAttr(t_loops[0]["t"].attributes["upperBoundMap"]).value
    assert str(upper) == "() -> (4)"


def test_loop_names_stable_across_captures():
    cfg = get_config("tiny-mamba1")
    a = capture(cfg, "decode", progress=False, cache=False)
    b = capture(cfg, "decode", progress=False, cache=False)
    names = lambda d: {k: {band: sorted(loops) for band, loops in loops_of(funcs(d.module)[k]).items()} for k in d.kernels}  # noqa: E731
    assert names(a) == names(b)
    assert names(a)["in_proj"]  # there is something to compare
    assert str(a.module) == str(b.module)


def test_weights_are_arguments_not_constants():
    d = capture(get_config("tiny-mamba1"), "decode", progress=False)
    weights = [p for p in d.ports if p.role == "weight"]
    by_name = {p.name: p for p in weights}
    assert by_name["embed_w"].key == "backbone.embeddings.weight" and not by_name["embed_w"].stacked
    assert by_name["A"].key == "backbone.layers.{i}.mixer.A" and by_name["A"].stacked
    assert by_name["A"].shape == (2, 64, 8)  # (n_layer, d_inner, d_state)
    sizes = [
        int(np.prod(ir.ShapedType(op.attributes[key].type).shape))
        for op in walk(d.module.operation)
        for key in ("value", "initial_value")
        if key in op.attributes and isinstance(op.attributes[key], ir.DenseElementsAttr)
    ]
    assert sizes and max(sizes) <= 4  # only the conv-window table (1x4), never a weight


def test_unsupported_op_names_op_and_module_path():
    class Spectral(torch.nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.spectral = Spectral()

        def forward(self, x):
            return self.spectral(x) * 2

    with pytest.raises(UnsupportedOpError) as e:
        capture_function(Net(), [torch.randn(8)], "net", new_context())
    msg = str(e.value)
    assert "aten.fft_fft" in msg and "spectral" in msg and "Spectral" in msg


def test_capture_cache_gives_identical_design(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAFLOW_CACHE", str(tmp_path))
    cfg = get_config("tiny-mamba2")
    fresh = capture(cfg, "verify", T=3, progress=False)
    again = capture(cfg, "verify", T=3, progress=False)
    assert list((tmp_path / "capture").glob("*/design.mlir"))
    assert again.module is not fresh.module
    assert str(again.module) == str(fresh.module)
    assert again.ports == fresh.ports and again.kernels == fresh.kernels


def test_jit_disk_cache_reloads_same_code(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAFLOW_CACHE", str(tmp_path))
    model = _model("tiny-mamba1")
    d = capture(model, "decode", progress=False)
    first = JitFunction(d.module, d.top)
    second = JitFunction(d.module, d.top)
    assert not first.cached and second.cached
    assert list((tmp_path / "llvm").glob("*/lib.so"))
    outs = []
    for fn in (first, second):
        L = model.config.n_layer
        args = [np.array([7], np.int64), np.zeros((L, model.config.conv_dim, 4), np.float32),
                np.zeros((L, *model.config.ssm_state_shape(1)[1:]), np.float32)]
        args += d.weights(model)
        out = [np.zeros(p.shape, np.float32) for p in d.outputs]
        fn(*args, *out)
        outs.append(out[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    ref, _ = model.decode(torch.tensor([7]), MambaState.zeros(model.config, 1))
    _close(outs[0], ref.detach())


def test_hardware_does_not_grow_with_depth():
    """A 2-layer and a 6-layer model of one width have the same kernel functions (the
    same IR), and only the top's layer loop and the stacked ports' leading dim differ."""
    two = get_config("tiny-mamba1")
    six = dataclasses.replace(two, n_layer=6)
    a = capture(two, "decode", progress=False, cache=False)
    b = capture(six, "decode", progress=False, cache=False)
    assert a.kernels == b.kernels
    for k in a.kernels:
        ka, kb = str(funcs(a.module)[k]), str(funcs(b.module)[k])
        assert ka.replace("memref<2x", "memref<L x") == kb.replace("memref<6x", "memref<L x"), k
    assert [p.shape[1:] if p.stacked else p.shape for p in a.ports] == \
           [p.shape[1:] if p.stacked else p.shape for p in b.ports]
    # the HLS C++: as many hardware functions, the same on-chip resources
    from mambaflow.targets.hls import emit_design

    ca, cb = emit_design(a), emit_design(b)
    assert len(ca.functions) == len(cb.functions) == len(a.kernels) + 1
    ra, rb = ca.resources, cb.resources
    assert (ra.dsp, ra.bram18k, ra.uram, ra.lutram_bits, ra.register_bits) == \
           (rb.dsp, rb.bram18k, rb.uram, rb.lutram_bits, rb.register_bits)
    assert ra.dsp > 0 and ra.bram18k > 0
