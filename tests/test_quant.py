"""Quantization: Hadamard rotation, approximations and their bounds, PTQ errors, the
integer reference's own invariants. (The flow's bit-exactness is in test_quant_flow.py.)"""

import math

import numpy as np
import pytest
import torch

from mambaflow.errors import MambaflowError
from mambaflow.models import MambaConfig, build_model, get_config
from mambaflow.quant import float_sim, hadamard
from mambaflow.quant.approx import _FUNCS, Fmt, RsqrtApprox, build, norm_consts, norm_int
from mambaflow.quant.integer_ref import dyn_thresholds, dynquant, exact_gemm_fast, gemm
from mambaflow.quant.ptq import QuantizedMamba, quant_weight, quantize
from mambaflow.quant.schemes import W4A4, W4A4_NOROT, W8A8, ApproxConfig, QuantConfig, QuantError



pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

def _model(name, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return build_model(get_config(name)).to(dtype)


def _calib(vocab=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (4, 48), generator=g)


# ------------------------------------------------------------------- Hadamard


@pytest.mark.parametrize("n", [1, 2, 8, 12, 20, 24, 28, 36, 40, 48, 96, 192, 384, 768, 1536])
def test_hadamard_orthogonal_and_fwht(n):
    H = hadamard.hadamard_matrix(n)
    assert set(H.unique().tolist()) <= {-1, 1}
    Hd = H.double()  # exact: entries ±1, sums below 2^53
    assert torch.equal(Hd @ Hd.T, n * torch.eye(n, dtype=torch.float64))
    x = torch.randint(-1000, 1000, (3, n))
    assert torch.equal(hadamard.fwht(x), x @ H.T)  # exact in integers


def test_hadamard_unknown_order_raises():
    with pytest.raises(MambaflowError, match="no Hadamard matrix of order 104"):
        hadamard.factor(104)  # 8 * 13: no known H_13, H_26, H_52, H_104 here


# ------------------------------------------------------------------- rotation


@pytest.mark.parametrize("name", ["tiny-mamba1", "tiny-mamba2"])
def test_rotation_alone_keeps_outputs(name):
    m = _model(name, dtype=torch.float64)
    toks = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    ref = m(toks)
    plain = float_sim.run(float_sim.prepare(m, rotation=False), toks)
    rot = float_sim.run(float_sim.prepare(m, rotation=True), toks)
    scale = ref.abs().max()
    assert (plain - ref).abs().max() <= 1e-12 * scale
    assert (rot - ref).abs().max() <= 1e-12 * scale
    # the rotation really rotated: the folded in_proj weights changed
    P0, P1 = float_sim.prepare(m, rotation=False), float_sim.prepare(m, rotation=True)
    assert (P0.layers[0]["in_proj"] - P1.layers[0]["in_proj"]).abs().max() > 1e-3
    # in float32 the same holds within float32 error
    m32 = m.float()
    r32 = float_sim.run(float_sim.prepare(m32, rotation=True, dtype=torch.float32), toks)
    assert (r32.double() - ref).abs().max() <= 1e-5 * scale


# ------------------------------------------------------------- approximations


@pytest.mark.parametrize("func", ["exp", "softplus", "silu", "rsqrt"])
@pytest.mark.parametrize("kind", ["pwl", "lut"])
def test_approximation_within_stated_bound(func, kind):
    segs = ApproxConfig().segments if kind == "pwl" else ApproxConfig().lut_segments
    outs = {"exp": Fmt(8, 8, False)}  # exp(ΔA) at the default 8 bits
    a = build(func, kind, segs[func], out=outs.get(func))
    x = torch.arange(a.domain[0], a.domain[1] + 1)  # every input of the domain
    y = a.apply(x).double().numpy() * a.fout.lsb
    f = _FUNCS[func][0]
    err = np.abs(y - f(x.double().numpy() * a.fin.lsb)).max()
    assert err <= a.bound, f"{a}: max error {err} above the stated bound"
    assert err >= 0.4 * a.bound, f"{a}: stated bound {a.bound} is loose (max error {err})"
    # float_eval is the same function seen from float code
    xf = x[:: max(1, x.numel() // 1000)].double() * a.fin.lsb
    assert torch.equal(a.float_eval(xf), torch.from_numpy(y[:: max(1, x.numel() // 1000)]))


@pytest.mark.parametrize("kind", ["pwl", "lut"])
def test_integer_rmsnorm_relative_error(kind):
    rs = build("rsqrt", kind, 64 if kind == "pwl" else 1024)
    assert isinstance(rs, RsqrtApprox)
    g = torch.Generator().manual_seed(0)
    L, frac = 96, 10
    v = (torch.randn(200, L, generator=g, dtype=torch.float64) * torch.logspace(-2, 3, 200, dtype=torch.float64)[:, None])
    vi = torch.round(v * 2**frac).to(torch.int64)
    c, eps_int = norm_consts(L, 1e-5, -frac)
    out = norm_int(vi, rs, rs.tables(), c, eps_int, 12).double() / 2**12
    vr = vi.double() / 2**frac
    ref = vr / torch.sqrt(vr.pow(2).mean(-1, keepdim=True) + 1e-5)
    rel = ((out - ref).abs() / ref.abs().amax(-1, keepdim=True)).max()
    # table + mantissa truncation (rel_bound) + the 14-bit √L constant + output rounding
    assert rel <= rs.rel_bound + 2**-14 + 2**-12
    assert rel >= 0.3 * rs.rel_bound


# ---------------------------------------------------------- integer primitives


def test_dynquant_picks_smallest_shift():
    for bits in (4, 8):
        qmax = 2 ** (bits - 1) - 1
        v = torch.arange(-5000, 5001, dtype=torch.int64)[:, None]
        q, s = dynquant(v, bits, 1)
        s = s.to(torch.int64)[:, 0]
        assert q.abs().max() <= qmax
        # round(|v| / 2^s) <= qmax, and s - 1 would not do
        r = lambda m, k: (m + ((1 << k) >> 1)) >> k  # noqa: E731
        m = v[:, 0].abs()
        assert all(r(int(mm), int(ss)) <= qmax for mm, ss in zip(m, s))
        assert all(ss == 0 or r(int(mm), int(ss) - 1) > qmax for mm, ss in zip(m, s))
        assert dyn_thresholds(bits)[0] == qmax + 1


def test_weight_scales_are_pot_or_two_pots():
    W = torch.randn(24, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = {}
    for sum2pot in (False, True):
        q, sh1, sh2, e_base = quant_weight(W, 4, 64, sum2pot)
        assert q.abs().max() <= 7 and (sh1 >= 0).all()
        scale = 2.0 ** (e_base[:, None] + sh1).double()
        if sum2pot:
            assert ((sh2 < sh1) | (sh2 < 0)).all()
            assert (sh2 >= 0).any(), "sum-of-two-powers scales never used"
            scale = scale + torch.where(sh2 >= 0, 2.0 ** (e_base[:, None] + sh2).double(), torch.zeros_like(scale))
        else:
            assert sh2 is None
        deq = q.double().reshape(24, 4, 64) * scale[..., None]
        errs[sum2pot] = float((deq.reshape(24, 256) - W).pow(2).mean().sqrt() / W.std())
    assert errs[False] < 0.16 and errs[True] < 0.9 * errs[False], errs


def test_fast_gemm_is_the_integer_gemm():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-7, 8, (3, 64), generator=g, dtype=torch.int8)
    s = torch.randint(0, 6, (3, 8), generator=g, dtype=torch.int8)
    w = torch.randint(-7, 8, (10, 64), generator=g, dtype=torch.int8)
    sh1 = torch.randint(0, 5, (10, 8), generator=g, dtype=torch.int8)
    sh2 = torch.randint(-1, 3, (10, 8), generator=g, dtype=torch.int8)
    assert torch.equal(gemm(q, s, w, sh1, sh2, 8), exact_gemm_fast(q, s, w, sh1, sh2, 8))


# ------------------------------------------------------------------------ PTQ


@pytest.fixture(scope="module", params=["tiny-mamba1", "tiny-mamba2"])
def float_model(request):
    return _model(request.param)


@pytest.mark.parametrize("qc", [W8A8, W4A4], ids=["w8a8", "w4a4"])
def test_quantized_decode_tracks_float(float_model, qc):
    qm = quantize(float_model, qc, _calib())
    toks = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(5))
    ref = torch.log_softmax(float_model(toks).double(), -1)
    st = qm.init_state(2)
    outs = []
    for t in range(toks.shape[1]):
        lg, st = qm.decode(toks[:, t], st)
        assert lg.dtype == torch.int32 and st.ssm.dtype == torch.int8 and st.conv.dtype == torch.int8
        outs.append(torch.log_softmax(qm.logits_float(lg), -1))
    out = torch.stack(outs, 1)
    kl = (ref.exp() * (ref - out)).sum(-1).mean()
    assert kl < (2e-4 if qc is W8A8 else 3e-3), f"KL(float || {qc.name}) = {kl}"
    # fast path = integer path, bit for bit
    st1, st2 = qm.init_state(2), qm.init_state(2)
    for t in range(4):
        a, st1 = qm.decode(toks[:, t], st1)
        b, st2 = qm.decode(toks[:, t], st2, fast=True)
        assert torch.equal(a, b) and torch.equal(st1.ssm, st2.ssm)


def test_quantization_is_deterministic(float_model):
    a = quantize(float_model, W4A4, _calib())
    b = quantize(float_model, W4A4, _calib())
    assert a.params.keys() == b.params.keys()
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def test_integer_step_uses_only_integers(float_model):
    qm = quantize(float_model, W4A4_NOROT, _calib())
    assert all(not t.is_floating_point() for t in qm.params.values())
    # every shift is an int8 vector within +-62
    for k, t in qm.params.items():
        if ".sh" in k or k.endswith((".l1", ".l2", ".ly", ".lD")):
            assert t.dtype == torch.int8 and t.abs().max() <= 62, k


def test_double_quantization_raises(float_model):
    qm = quantize(float_model, W8A8, _calib())
    assert isinstance(qm, QuantizedMamba)
    with pytest.raises(QuantError, match="already quantized"):
        quantize(qm, W8A8, _calib())


@pytest.mark.parametrize("kw,msg", [
    (dict(w_bits=3), "w_bits=3 is not supported"),
    (dict(a_bits=16), "a_bits=16 is not supported"),
    (dict(w_group=96), "power of two"),
    (dict(w_scale="float"), "w_scale='float'"),
    (dict(ssm_bits={"h": 1}), "ssm_bits"),
    (dict(ssm_bits={"q": 8}), "unknown tensors"),
    (dict(resid_bits=40), "resid_bits=40"),
    (dict(clip=0.5), "clip=0.5"),
])
def test_unsupported_config_raises(kw, msg):
    with pytest.raises(QuantError, match=msg):
        QuantConfig(**kw)
    with pytest.raises(QuantError, match="exp='taylor'"):
        ApproxConfig(exp="taylor")
    with pytest.raises(QuantError, match="power of two"):
        ApproxConfig(segments={"exp": 100})


def test_unsupported_model_raises():
    cfg = MambaConfig("mamba1", d_model=52, n_layer=1, vocab_size=64, d_state=4)  # d_inner 104
    torch.manual_seed(0)
    m = build_model(cfg)
    with pytest.raises(QuantError, match="rotation needs a Hadamard matrix"):
        quantize(m, W8A8, _calib())
    quantize(m, W8A8.with_(rotation=False), _calib())  # fine without rotation
    with pytest.raises(QuantError, match="unknown scheme"):
        quantize(m, "w2a2", _calib())
    with pytest.raises(QuantError, match="expected a mambaflow"):
        quantize(torch.nn.Linear(2, 2), W8A8, _calib())
