"""Accuracy of the quantized (integer) Mamba designs.

1. Held-out bits per byte of the shipped trained models (`models.zoo`), on windows of the
   corpus's held-out split (`mambaflow.data`, the accounting of `data.bits_per_byte`:
   code length of byte and EOS targets over the number of byte targets, BOS skipped),
   for: the float model ("fp32"), the float model after rotation and folding
   ("fp32_rotated", a check: it must equal fp32), each nonlinearity approximation alone
   in the float model ("approx_<func>_<pwl|lut>", and all four at once), and the bit-exact
   integer decode step ("w8a8", "w4a4", "w4a4_norot", plus a few ablations).
   Quantized models run the integer reference token by token (MACs done by the exact
   float64 fast path, identical to the integer-only one - see tests).
2. Output error of the integer decode step on mamba-130m-shaped random models (Mamba1
   and Mamba2): logits error relative to the float model, top-1 agreement, KL.

Calibration: 8 windows of 256 tokens of the training split (deterministic).

    python benchmarks/quant_accuracy.py [--windows 128] [--models mamba1-target mamba2-target]
                                        [--skip-random] [--threads 2]

Prints a table and writes benchmarks/results/quant_accuracy.json; the top-level
"bits_per_byte" holds the default model's (zoo.DEFAULT_MODEL) numbers, "models" every
model's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "quant_accuracy.json"
APPROX_FUNCS = ("exp", "softplus", "silu", "rsqrt")


def heldout_rows(window: int, n_windows: int | None) -> torch.Tensor:
    from mambaflow import data

    toks = data.load_corpus().tokens("heldout")
    n = toks.numel() // window
    rows = toks[: n * window].view(n, window)
    if n_windows and n_windows < n:
        idx = torch.linspace(0, n - 1, n_windows).round().long()
        rows = rows[idx]
    return rows


def bits(logits: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window: (bits, number of byte targets) of logits (B, L-1, V) predicting rows[:, 1:]."""
    from mambaflow.data import BOS

    targets = rows[:, 1:]
    lp = torch.log_softmax(logits.double(), -1)
    nll = -lp.gather(-1, targets[..., None])[..., 0]
    return _count(nll, targets)


def _count(nll, targets):
    from mambaflow.data import BOS

    keep = targets != BOS
    return (nll * keep).sum(-1) / math.log(2), (targets < 256).sum(-1)


class Score:
    """Per-window code lengths of one configuration (paired comparisons need them)."""

    def __init__(self, b: torch.Tensor, n: torch.Tensor):
        self.b, self.n = b.double(), n.double()

    @property
    def bpb(self) -> float:
        return float(self.b.sum() / self.n.sum())

    def diff(self, other: "Score") -> tuple[float, float]:
        """(bpb difference, its standard error over windows: paired, same windows)."""
        d = self.b - other.b
        N = self.n.sum()
        return float(d.sum() / N), float(d.std() * math.sqrt(d.numel()) / N)


def score_of(fn, rows, batch) -> Score:
    bs, ns = [], []
    for i in range(0, rows.shape[0], batch):
        r = rows[i:i + batch]
        b, n = bits(fn(r), r)
        bs.append(b)
        ns.append(n)
    return Score(torch.cat(bs), torch.cat(ns))


def score_quantized(qm, rows, batch) -> Score:
    """The integer decode step, token by token from the zero state."""
    bs, ns = [], []
    for i in range(0, rows.shape[0], batch):
        r = rows[i:i + batch]
        b, n = _count(qm.nll(r, fast=True), r[:, 1:])
        bs.append(b)
        ns.append(n)
    return Score(torch.cat(bs), torch.cat(ns))


@torch.no_grad()
def eval_shipped(name: str, rows, calib, batch: int, log) -> dict:
    from mambaflow.models.zoo import load_shipped
    from mambaflow.quant import float_sim
    from mambaflow.quant.approx import build
    from mambaflow.quant.ptq import quantize
    from mambaflow.quant.schemes import PRESETS, ApproxConfig

    model = load_shipped(name)
    sc: dict[str, Score] = {}
    t0 = time.time()
    sc["fp32"] = score_of(lambda r: model.prefill(r)[0][:, :-1], rows, batch)
    res = {"fp32": sc["fp32"].bpb}
    log(f"  {name} fp32 {res['fp32']:.4f} ({time.time() - t0:.0f}s)")
    Prot = float_sim.prepare(model, rotation=True, dtype=torch.float32)
    sc["fp32_rotated"] = score_of(lambda r: float_sim.run(Prot, r)[:, :-1], rows, batch)
    P = float_sim.prepare(model, rotation=False, dtype=torch.float32)
    ac = ApproxConfig()
    bounds = {}
    for kind in ("pwl", "lut"):
        segs = ac.segments if kind == "pwl" else ac.lut_segments
        all_ = {}
        for f in APPROX_FUNCS:
            from mambaflow.quant.approx import Fmt
            a = build(f, kind, segs[f], out=Fmt(8, 8, False) if f == "exp" else None)
            bounds[f"{f}_{kind}"] = {"bound": a.bound, "segments": a.S, "in": str(a.fin), "out": str(a.fout)}
            all_[f] = a
            sc[f"approx_{f}_{kind}"] = score_of(lambda r: float_sim.run(P, r, approx={f: a})[:, :-1], rows, batch)
        sc[f"approx_all_{kind}"] = score_of(lambda r: float_sim.run(P, r, approx=all_)[:, :-1], rows, batch)
        log(f"  {name} approx {kind}: all {sc[f'approx_all_{kind}'].bpb:.4f}")
    stats = {}
    configs = dict(PRESETS)
    w4 = PRESETS["w4a4"]
    configs["w8a8_norot"] = PRESETS["w8a8"].with_(name="w8a8_norot", rotation=False)
    configs["w4a4_pot"] = w4.with_(name="w4a4_pot", w_scale="pot")
    configs["w4a4_lut"] = w4.with_(name="w4a4_lut", approx=ApproxConfig(exp="lut", softplus="lut", silu="lut", rsqrt="lut"))
    configs["w4a4_ssm12"] = w4.with_(name="w4a4_ssm12", ssm_bits={"dA": 12, "h": 12, "delta": 12})
    for cname, qc in configs.items():
        t0 = time.time()
        rot = qc.rotation
        if rot not in stats:
            from mambaflow.quant import calibrate
            stats[rot] = calibrate.collect(float_sim.prepare(model, rotation=rot), calib)
        qm = quantize(model, qc, stats=stats[rot])
        sc[cname] = score_quantized(qm, rows, batch)
        log(f"  {name} {cname} {sc[cname].bpb:.4f} (+{sc[cname].bpb - sc['fp32'].bpb:.4f}) ({time.time() - t0:.0f}s)")
    res = {k: v.bpb for k, v in sc.items()}
    delta = {k: dict(zip(("delta", "stderr"), v.diff(sc["fp32"]))) for k, v in sc.items()}
    rot = {q: dict(zip(("norot_minus_rot", "stderr"), sc[q + "_norot"].diff(sc[q]))) for q in ("w8a8", "w4a4")}
    return {"bits_per_byte": res, "delta_vs_fp32": delta, "rotation_gain": rot,
            "approx": bounds,
            "targets": {"w8a8_within_0.02": res["w8a8"] - res["fp32"] <= 0.02,
                        "w4a4_within_0.15": res["w4a4"] - res["fp32"] <= 0.15,
                        "rotation_helps_w4a4": rot["w4a4"]["norot_minus_rot"] > 2 * rot["w4a4"]["stderr"],
                        "rotation_helps_w8a8": rot["w8a8"]["norot_minus_rot"] > 2 * rot["w8a8"]["stderr"]}}


@torch.no_grad()
def eval_random(name: str, calib, toks, log) -> dict:
    from mambaflow.models import build_model, get_config
    from mambaflow.quant import calibrate, float_sim
    from mambaflow.quant.ptq import quantize
    from mambaflow.quant.schemes import PRESETS

    torch.manual_seed(0)
    model = build_model(get_config(name)).eval()
    with torch.no_grad():
        ref = model.prefill(toks)[0].double()  # (B, L, V)
    out = {}
    stats = {}
    for cname in ("w8a8", "w4a4", "w4a4_norot"):
        qc = PRESETS[cname]
        t0 = time.time()
        if qc.rotation not in stats:
            stats[qc.rotation] = calibrate.collect(float_sim.prepare(model, rotation=qc.rotation), calib, batch=4)
        qm = quantize(model, qc, stats=stats[qc.rotation])
        st = qm.init_state(toks.shape[0])
        lg = []
        for t in range(toks.shape[1]):
            l, st = qm.decode(toks[:, t], st, fast=True)
            lg.append(qm.logits_float(l))
        q = torch.stack(lg, 1)
        rc = ref - ref.mean(-1, keepdim=True)
        qc_ = q - q.mean(-1, keepdim=True)
        rel = float((qc_ - rc).pow(2).mean().sqrt() / rc.pow(2).mean().sqrt())
        lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(q, -1)
        kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
        top1 = float((ref.argmax(-1) == q.argmax(-1)).double().mean())
        out[cname] = {"rel_logit_rms_err": rel, "kl_nats": kl, "top1_agree": top1,
                      "seconds": round(time.time() - t0, 1)}
        log(f"  {name} {cname}: rel logit err {rel:.4f}, KL {kl:.5f}, top-1 {top1:.3f} ({time.time() - t0:.0f}s)")
    return out


def _sha(name: str) -> str:
    import hashlib

    from mambaflow.models.zoo import checkpoint_dir

    return hashlib.sha256((checkpoint_dir(name) / "model.safetensors").read_bytes()).hexdigest()[:16]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=128, help="held-out windows (0 = all)")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", nargs="*", default=["mamba1-target", "mamba2-target"])
    ap.add_argument("--random", nargs="*", default=["mamba-130m", "mamba2-130m"])
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--random-tokens", type=int, default=16, help="decode steps per random-model sequence")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mambaflow import data
    from mambaflow.models.zoo import DEFAULT_MODEL
    from mambaflow.quant.calibrate import calibration_tokens

    t_start = time.time()
    log = lambda s: print(s, flush=True)  # noqa: E731
    rows = heldout_rows(args.window, args.windows)
    calib = calibration_tokens(8, 256)
    log(f"held-out: {rows.shape[0]} windows x {args.window} tokens; calibration: {tuple(calib.shape)} (train split)")
    models = {}
    for name in args.models:
        models[name] = eval_shipped(name, rows, calib, args.batch, log)
    random = {}
    if not args.skip_random:
        rc = calibration_tokens(4, 64)
        g = torch.Generator().manual_seed(0)
        held = data.load_corpus().tokens("heldout")
        L = args.random_tokens
        starts = torch.randint(0, held.numel() - L - 1, (2,), generator=g)
        toks = torch.stack([held[s:s + L] for s in starts.tolist()])
        for name in args.random:
            random[name] = eval_random(name, rc, toks, log)

    default = DEFAULT_MODEL if DEFAULT_MODEL in models else next(iter(models), None)
    result = {
        "bits_per_byte": models[default]["bits_per_byte"] if default else {},
        "model": default,
        "models": models,
        "random_models_output_error": random,
        "settings": {"heldout_windows": int(rows.shape[0]), "window": args.window,
                     "heldout_tokens": int(rows.numel()), "calibration": list(calib.shape),
                     "corpus_fingerprint": data.load_corpus().fingerprint, "threads": args.threads,
                     "checkpoints": {n: _sha(n) for n in models},
                     "seconds": round(time.time() - t_start, 1)},
    }
    # table
    names = list(models)
    keys = list(models[names[0]]["bits_per_byte"]) if names else []
    print()
    print(f"{'config':<20}" + "".join(f"{n:>24}" for n in names))
    for k in keys:
        row = f"{k:<20}"
        for n in names:
            v = models[n]["bits_per_byte"][k]
            row += f"{v:>12.4f} ({v - models[n]['bits_per_byte']['fp32']:+.4f})"
        print(row)
    for n in names:
        for q, g in models[n]["rotation_gain"].items():
            print(f"{n}: rotation gain for {q}: {g['norot_minus_rot']:+.4f} ± {g['stderr']:.4f} bits/byte (paired s.e.)")
        print(f"{n}: targets {models[n]['targets']}")
    for n, r in random.items():
        for c, m in r.items():
            print(f"{n:<12} {c:<11} rel logit err {m['rel_logit_rms_err']:.4f}  KL {m['kl_nats']:.5f}  top-1 {m['top1_agree']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
