"""The trainer and the fused Mamba1 training scan (models/scan.py).

Scan tolerances: float64 comparisons with autograd through the reference loop hold to
1e-12 (observed ~1e-15); float32 to 1e-5 (atol = rtol; observed ~2e-7 relative)."""

import json
import math

import pytest
import torch

from mambaflow.data import Corpus, Document, is_heldout
from mambaflow.errors import MambaflowError
from mambaflow.models import MambaConfig, build_model, load_checkpoint
from mambaflow.models.common import ssm_scan
from mambaflow.models.scan import fused_selective_scan
from mambaflow.train import lr_at, main_train, train


def _scan_inputs(b, l, d, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    dt = torch.nn.functional.softplus(r(b, l, d) - 1)
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 16
    return [t.requires_grad_() for t in (dt, A, r(b, l, d), r(b, l, n), r(b, l, n), r(b, d, n))]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fused_scan_matches_reference_values_and_gradients(dtype, tol):
    ins = _scan_inputs(2, 37, 12, 5, dtype)
    y1, h1 = fused_selective_scan(*ins)
    dt, A, x, B, C, h0 = ins
    y2, h2 = ssm_scan(dt, A, x, B[:, :, None], C[:, :, None], h0)
    torch.testing.assert_close(y1, y2, atol=tol, rtol=tol)
    torch.testing.assert_close(h1, h2, atol=tol, rtol=tol)
    w, wh = torch.randn_like(y1), torch.randn_like(h1)
    g1 = torch.autograd.grad((y1 * w).sum() + (h1 * wh).sum(), ins)
    g2 = torch.autograd.grad((y2 * w).sum() + (h2 * wh).sum(), ins)
    for name, a, b in zip(("dt", "A", "x", "B", "C", "h0"), g1, g2):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=f"grad {name}")


def test_fused_scan_gradcheck():
    ins = tuple(t.detach().requires_grad_() for t in _scan_inputs(1, 6, 3, 2, torch.float64))
    assert torch.autograd.gradcheck(fused_selective_scan, ins)


def test_fused_scan_in_model_matches_sequential_gradients():
    cfg = MambaConfig("mamba1", d_model=32, n_layer=2, vocab_size=264, d_state=8)
    torch.manual_seed(0)
    m = build_model(cfg).double()
    with torch.no_grad():
        for layer in m.backbone.layers:
            layer.mixer.dt_proj.bias.uniform_(-3, 1)
    tok = torch.randint(0, 259, (2, 40), generator=torch.Generator().manual_seed(1))
    grads = {}
    for scan in ("fused", "sequential"):
        m.zero_grad()
        logits = m.prefill(tok, scan=scan)[0]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tok.roll(-1, 1).flatten()).backward()
        grads[scan] = {n: p.grad.clone() for n, p in m.named_parameters()}
    for n in grads["fused"]:
        torch.testing.assert_close(grads["fused"][n], grads["sequential"][n],
                                   atol=1e-12, rtol=1e-12, msg=n)


def _tiny_corpus():
    text = ("The quick brown fox jumps over the lazy dog. Python is a programming "
            "language; it reads like English. ") * 6
    names = [f"doc{i}" for i in range(200)]
    held = next(n for n in names if is_heldout(n))
    train_names = [n for n in names if not is_heldout(n)][:3]
    return Corpus(tuple(sorted([Document(n, text) for n in train_names] + [Document(held, text)],
                               key=lambda d: d.name)))


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_train_is_deterministic_and_writes_outputs(arch, tmp_path):
    kw = dict(d_state=8) if arch == "mamba1" else dict(d_state=16, headdim=16, chunk_size=16)
    cfg = MambaConfig(arch, d_model=32, n_layer=1, vocab_size=272, **kw)
    corpus = _tiny_corpus()
    args = dict(steps=4, seq_len=32, batch=2, lr=1e-2, seed=3, progress=False, threads=None,
                eval_windows=2, corpus=corpus)
    a = train(cfg, out_dir=tmp_path / "a", **args)
    b = train(cfg, **args)
    for (n, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), n
    assert len(a.losses) == 4 and all(math.isfinite(v) for v in a.losses)
    assert a.heldout and a.heldout[-1][0] == 4
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert log["args"]["steps"] == 4 and len(log["train_bits_per_token"]) == 4
    assert (tmp_path / "a" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    # The compact checkpoint loads through the HF loader; matrices were rounded to fp16.
    loaded = load_checkpoint(tmp_path / "a")
    for n, p in loaded.state_dict().items():
        ref = a.model.state_dict()[n]
        if n.endswith(("proj.weight", "embeddings.weight", "lm_head.weight")):
            torch.testing.assert_close(p, ref.half().float(), atol=0, rtol=0)
        else:
            assert torch.equal(p, ref), n


def test_train_rejects_bad_arguments():
    with pytest.raises(MambaflowError, match="cannot hold"):
        train(MambaConfig("mamba1", 32, 1, vocab_size=64, d_state=8), steps=1)
    with pytest.raises(MambaflowError, match="unknown model"):
        train("no-such-model", steps=1)
    with pytest.raises(MambaflowError, match="steps must be"):
        train(MambaConfig("mamba1", 32, 1, vocab_size=264, d_state=8), steps=0)


def test_lr_schedule():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_main_train_cli(tmp_path, monkeypatch, capsys):
    import mambaflow.train as t

    monkeypatch.setattr(t, "load_corpus", _tiny_corpus)
    cfg = MambaConfig("mamba1", d_model=16, n_layer=1, vocab_size=264, d_state=4)
    monkeypatch.setitem(t.PRESETS, "test-tiny", cfg)
    assert main_train(["test-tiny", "--steps", "2", "--seq-len", "16", "--batch", "2",
                       "--out", str(tmp_path / "ck"), "--no-progress", "--threads", "1"]) == 0
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    assert "bits/byte" in capsys.readouterr().out
