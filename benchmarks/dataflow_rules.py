"""The dataflow legality checker on the recipes' designs, side by side.

One row per model x recipe: the rule findings (errors, warnings) of the scheduled
design, the dataflow regions and their processes, the streams, the m_axi bundles of
`default_bundles`, the checker's time next to the schedule's and the emitter's (the
ratio is what matters on this noisy machine), and whether the pre-checker recipe form
(the top marked dataflow around the layer loop) would have been refused.

    python benchmarks/dataflow_rules.py [--models tiny-mamba1,tiny-mamba2,mamba-130m,mamba2-130m]

Prints the table and writes benchmarks/results/dataflow_rules.json. Never asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "dataflow_rules.json"
RECIPES = ("none", "linear_parallel", "ssm_serial", "layer_pipeline", "accelerator")


def row(model_name: str, recipe: str) -> dict:
    import torch

    from mambaflow.flow.capture import capture
    from mambaflow.flow.mlir import funcs, walk
    from mambaflow.models import build_model, get_config
    from mambaflow.schedules.registry import apply_recipe
    from mambaflow.targets.hls.design import default_bundles, emit_design
    from mambaflow.targets.versal import dataflow as DF

    cfg = get_config(model_name)
    if cfg.n_layer > 2:
        cfg = dataclasses.replace(cfg, n_layer=2)  # the layer engine: hardware independent of depth
    torch.manual_seed(0)
    d = capture(build_model(cfg).eval(), "decode", progress=False)
    t0 = time.perf_counter()
    if recipe != "none":
        apply_recipe(recipe, d)
    t_sched = time.perf_counter() - t0
    t0 = time.perf_counter()
    bundles = default_bundles(d)
    found = DF.check(d.module, bundles)
    t_check = time.perf_counter() - t0
    from mambaflow.schedules.regions import processes

    regs = DF.regions(d.module)
    t0 = time.perf_counter()
    code = emit_design(d, bundles=bundles)
    t_emit = time.perf_counter() - t0
    return {
        "model": model_name, "recipe": recipe,
        "errors": sum(f.severity == "error" for f in found),
        "warnings": sum(f.severity != "error" for f in found),
        "rules": sorted({f.rule for f in found}),
        "regions": [r.name for r in regs], "processes": sum(len(processes(r.owner.regions[0].blocks[0])) for r in regs),
        "streams": sum(1 for f in funcs(d.module).values() for o in walk(f) if o.name == "mf.stream_create"), "bundles": len(set(bundles.values())),
        "schedule_s": t_sched, "check_s": t_check, "emit_s": t_emit,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny-mamba1,tiny-mamba2,mamba-130m,mamba2-130m")
    args = ap.parse_args()
    rows = []
    for m in args.models.split(","):
        for r in RECIPES:
            rows.append(row(m, r))
            x = rows[-1]
            ratio = f"{x['check_s'] / x['schedule_s']:6.3f}" if r != "none" else "     -"
            print(f"{x['model']:12} {x['recipe']:16} errors {x['errors']:2} warnings {x['warnings']:2} "
                  f"regions {','.join(x['regions']) or '-':11} processes {x['processes']:2} streams {x['streams']:2} "
                  f"bundles {x['bundles']:2}  check/schedule {ratio}  "
                  f"check/emit {x['check_s'] / max(x['emit_s'], 1e-9):6.3f}  rules {','.join(x['rules']) or '-'}",
                  flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
