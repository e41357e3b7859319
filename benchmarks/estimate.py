"""The QoR estimate on the designs that matter, side by side.

(a) the LightMamba mirror (schedules/lightmamba.py) against LightMamba's published
    Mamba2-2.7B W4A4 design on the VCK190 at 400 MHz (7.21 tokens/s; 228 DSP, 107k LUT,
    456 BRAM);
(b) DSE's best Mamba2-2.7B W4A4 point on the VCK190 and on the VHK158 (`mambaflow dse`),
    when the dse package is installed: tokens/s, the bound, the share of the memory
    roofline, resources;
(c) the recipes on mamba2-130m and mamba-130m (float and W4A4);
(d) a SpecMamba-style design: the target's verify pass of T nodes plus the draft's
    decodes, at the accepted length benchmarks/speculative.py measured, as tokens/s of
    lossless generation.

    python benchmarks/estimate.py [--quick] [--trials N]

Prints the tables and writes benchmarks/results/estimate.json. Never asserts a number:
tests/test_estimate.py holds the calibration check.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _row(label: str, e, extra: dict | None = None) -> dict:
    r = {"design": label, "board": e.board, "clock_mhz": e.clock_mhz, "tokens_per_s": e.tokens_per_s,
         "bound": e.bound, "compute_tokens_per_s": e.compute_tokens_per_s,
         "memory_tokens_per_s": e.memory_tokens_per_s, "roofline_share": e.roofline_share,
         "MB_per_token": sum(m["bytes"] for m in e.memories.values()) / 1e6, **e.resources, "fits": e.fits}
    r.update(extra or {})
    return r


def _print(title: str, rows: list[dict], cols: list[str]) -> None:
    print(f"\n{title}")
    print("  " + "  ".join(f"{c:>{34 if c == 'design' else 12}}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            w = 34 if c == "design" else 12
            cells.append(f"{v:>{w},.3g}" if isinstance(v, float) else f"{str(v):>{w}}")
        print("  " + "  ".join(cells))


def lightmamba_point() -> dict:
    from mambaflow.schedules.lightmamba import LIGHTMAMBA
    from mambaflow.targets.estimate import estimate_model

    L = LIGHTMAMBA
    t0 = time.perf_counter()
    e = estimate_model(L["model"], board=L["board"], quant=L["quant"], schedule="lightmamba",
                       clock_mhz=L["clock_mhz"], beat_bits=L["beat_bits"])
    r = _row("lightmamba mirror", e, {"seconds": time.perf_counter() - t0})
    r["published"] = {"tokens_per_s": L["tokens_per_s"], "dsp": L["dsp"], "lut": L["lut"], "bram": L["bram"]}
    r["error_pct"] = {
        "tokens_per_s": 100 * (e.tokens_per_s / L["tokens_per_s"] - 1),
        "dsp": 100 * (e.resources["dsp"] / L["dsp"] - 1),
        "lut": 100 * (e.resources["lut"] / L["lut"] - 1),
        # LightMamba's "BRAM" read as 36 Kb blocks (two BRAM18K each)
        "bram": 100 * (e.resources["bram18k"] / 2 / L["bram"] - 1),
    }
    r["table"] = e.table()
    return r


def recipe_rows(models, quants, recipes, boards) -> list[dict]:
    from mambaflow.targets.estimate import estimate_model

    out = []
    for model in models:
        for q in quants:
            for rec in recipes:
                for b in boards:
                    t0 = time.perf_counter()
                    e = estimate_model(model, board=b, quant=q, schedule=None if rec == "none" else rec)
                    out.append(_row(f"{model} {q or 'fp32'} {rec}", e, {"seconds": time.perf_counter() - t0}))
    return out


def _verify_schedule(s):
    """The speculative build's first choice for the verify kernel (VERIFY_SCHEDULES)."""
    from mambaflow.schedules.registry import get_recipe
    from mambaflow.targets.versal.speculative_build import VERIFY_SCHEDULES

    for r in VERIFY_SCHEDULES[0]:
        get_recipe(r).fn(s)


def speculative_rows(boards) -> list[dict]:
    """Target verify (T = chain + 1 nodes) + draft decodes, at the measured acceptance."""
    from mambaflow.targets.estimate import estimate_model, speculative_tokens_per_s

    spec = RESULTS / "speculative.json"
    measured = json.loads(spec.read_text()) if spec.exists() else {}
    tpp = measured.get("tokens_per_target_pass")
    tpp = float(tpp) if isinstance(tpp, (int, float)) else 5.86
    chain = 7
    out = []
    pairs = (("mamba1-target", "mamba1-draft", None), ("mamba2-2.7b", "mamba2-130m", None))
    from mambaflow.models import zoo

    for target, draft, _ in pairs:
        for b in boards:
            tm = zoo.load_shipped(target) if target in zoo.SHIPPED else target
            dm = zoo.load_shipped(draft) if draft in zoo.SHIPPED else draft
            v = estimate_model(tm, board=b, phase="verify", T=chain + 1, schedule=_verify_schedule,
                               tokens_per_pass=tpp)
            d = estimate_model(dm, board=b, schedule="accelerator")
            plain = estimate_model(tm, board=b, schedule="accelerator")
            tps = speculative_tokens_per_s(v, d, chain, tpp)
            out.append({"design": f"{target} + {draft} chain:{chain}", "board": b, "accepted": tpp,
                        "verify_passes_per_s": v.tokens_per_s / tpp, "draft_tokens_per_s": d.tokens_per_s,
                        "tokens_per_s": tps, "plain_tokens_per_s": plain.tokens_per_s,
                        "speedup": tps / plain.tokens_per_s, "verify_bound": v.bound, "draft_bound": d.bound})
    return out


def dse_rows(trials: int, boards) -> list[dict]:
    """`mambaflow dse` on Mamba2-2.7B W4A4 at 400 MHz: the best point within each board."""
    from mambaflow.dse import run_dse

    out = []
    for b in boards:
        t0 = time.perf_counter()
        res = run_dse("mamba2-2.7b", quant="w4a4", board=b, trials=trials, out=RESULTS / "dse" / b,
                      clock_mhz=400.0, progress=True)
        best = res.best
        if best is None:
            out.append({"design": "dse best", "board": b, "tokens_per_s": 0.0, "note": res.summary()})
            continue
        out.append({"design": f"dse best of {len(res.trials)}", "board": b, "tokens_per_s": best["tokens_per_s"],
                    "bound": best.get("bound"), "roofline_share": best.get("roofline_share"),
                    **best["resources"], "point": best["point"], "seconds": time.perf_counter() - t0,
                    "pareto": len(res.pareto), "files": res.files})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="float designs of the 130m models only (no PTQ)")
    ap.add_argument("--trials", type=int, default=8, help="DSE trials per board for (b)")
    ap.add_argument("--parts", default="a,b,c,d", help="which tables to (re)make; the others stay in the JSON")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    boards = ["vck190", "vhk158"]
    out = RESULTS / "estimate.json"
    res: dict = json.loads(out.read_text()) if out.exists() and parts != {"a", "b", "c", "d"} else {}
    cols = ["design", "board", "tokens_per_s", "bound", "roofline_share", "MB_per_token", "dsp", "lut", "bram18k",
            "uram"]
    if "a" in parts and not args.quick:
        lm = lightmamba_point()
        res["lightmamba"] = lm
        print(lm["table"])
        _print("(a) LightMamba mirror against the published design (error %)",
               [{"what": k, "estimate": lm[k] if k != "bram" else lm["bram18k"] / 2,
                 "published": float(lm["published"][k]), "error_pct": lm["error_pct"][k]}
                for k in ("tokens_per_s", "dsp", "lut", "bram")], ["what", "estimate", "published", "error_pct"])
    if "b" in parts and not args.quick:
        res["dse"] = dse_rows(args.trials, boards)
        _print("(b) DSE best Mamba2-2.7B W4A4 at 400 MHz", res["dse"],
               ["design", "board", "tokens_per_s", "bound", "roofline_share", "dsp", "lut", "bram18k", "uram"])
    if "c" in parts:
        quants = [None] if args.quick else [None, "w4a4"]
        res["recipes"] = recipe_rows(["mamba2-130m", "mamba-130m"], quants, ["none", "accelerator", "lightmamba"],
                                     boards)
        _print("(c) recipes on the 130m models", res["recipes"], cols)
    if "d" in parts:
        res["speculative"] = speculative_rows(boards)
        _print("(d) SpecMamba-style speculative design", res["speculative"],
               ["design", "board", "accepted", "tokens_per_s", "plain_tokens_per_s", "speedup", "verify_bound"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, sort_keys=True, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
