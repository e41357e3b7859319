"""HLS emission and the resource fit of Mamba decode designs on the Versal boards.

One row per model x precision x schedule x board: the emitter's resource count (DSP,
LUT, FF, BRAM18K, URAM, each used and as % of the board, `targets.versal.check_fit`),
whether it fits, the capture time (float: `flow.capture` of the preset's config;
W4A4: seeded random weights, `quant.quantize` (reported apart) and
`quant.flow.capture_quantized`), the schedule time, the emission time, the bytes held
as IR constants (weights must be ports, never constants) and the peak resident memory
of the process that built the design. Every (model, precision, schedule) is built in
a child process of its own under an address-space limit, so a design that cannot be
built yet (an unsupported path, too much memory, a time-out) is a row saying so, not
a missing row or a machine out of memory.

    python benchmarks/hls_emit.py [--models M,..] [--quant float,w4a4] [--schedules none,accelerator]
                                  [--boards vck190,vhk158] [--quick] [--cache] [--mem-gib N] [--timeout S]

--quick is the 130M models only. The design is the layer engine (one function per kernel
kind, the top looping over layers), so its on-chip resources do not depend on the depth
(tests/test_flow.py checks it): W4A4 designs are built with `--quant-layers` layers
(default 2; the quantization of a whole 2.7B model does not fit this machine's memory)
and their rows say so; only the off-chip bytes, not counted here, grow with the depth.
Prints the fit table and writes benchmarks/results/hls_emit.json. Benchmarks never assert
a time; tests assert the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hls_emit.json"
MODELS = ("mamba-130m", "mamba2-130m", "mamba-2.8b", "mamba2-2.7b")
QUANTS = ("float", "w4a4")
SCHEDULES = ("none", "accelerator")
BOARDS = ("vck190", "vhk158")
RESOURCES = ("DSP", "LUT", "FF", "BRAM18K", "URAM")


def _constant_bytes(module) -> int:
    """Bytes held as IR constants (memref.global): weights must be ports instead."""
    from torch_mlir import ir

    from mambaflow.targets.hls.cxx import element_bits

    n = 0
    for op in module.body.operations:
        op = op.operation
        if op.name == "memref.global":
            t = ir.MemRefType(ir.TypeAttr(op.attributes["type"]).value)
            n += math.prod(t.shape) * element_bits(t.element_type) // 8
    return n


def _float_design(model: str, cache: bool):
    from mambaflow.flow.capture import capture
    from mambaflow.models import get_config

    t0 = time.perf_counter()
    d = capture(get_config(model), "decode", progress=False, cache=cache)
    return d, {"capture_s": time.perf_counter() - t0}


def _w4a4_design(model: str, layers: int):
    import dataclasses

    import torch

    from mambaflow.models import build_model, get_config
    from mambaflow.quant.flow import capture_quantized
    from mambaflow.quant.ptq import quantize
    from mambaflow.quant.schemes import W4A4

    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = get_config(model)
    m = build_model(dataclasses.replace(cfg, n_layer=min(cfg.n_layer, layers)) if layers else cfg).eval()
    calib = torch.randint(0, 64, (1, 16), generator=torch.Generator().manual_seed(1))
    qm = quantize(m, W4A4, calib)
    del m
    t1 = time.perf_counter()
    d = capture_quantized(qm, "model")
    return d, {"quantize_s": t1 - t0, "capture_s": time.perf_counter() - t1}


def _emit(design, board):
    """Emit with the board's weight bundles (float and integer designs alike)."""
    from mambaflow.targets.hls.design import default_bundles, emit_design

    return emit_design(design, bundles=default_bundles(design))


def build_group(model: str, quant: str, schedule: str, boards: list[str], cache: bool, layers: int = 0) -> list[dict]:
    """Capture, schedule and emit one design; one row per board (runs in the child)."""
    from mambaflow.targets.versal import check_fit, get_board

    design, times = _float_design(model, cache) if quant == "float" else _w4a4_design(model, layers)
    t0 = time.perf_counter()
    if schedule != "none":
        from mambaflow.schedules.registry import apply_recipe

        apply_recipe(schedule, design)  # schedules the design in place
    times["schedule_s"] = time.perf_counter() - t0
    const = _constant_bytes(design.module)
    rows = []
    for name in boards:
        board = get_board(name)
        t0 = time.perf_counter()
        code = _emit(design, board)
        emit_s = time.perf_counter() - t0
        fit = check_fit(code.resources, board, ports=code.ports)
        rows.append({
            "used": {r: fit.item(r).used for r in RESOURCES},
            "available": {r: fit.item(r).available for r in RESOURCES},
            "util_pct": {r: round(100 * fit.item(r).utilization, 2) for r in RESOURCES},
            "fits": fit.fits, "advice": fit.advice, "emit_s": round(emit_s, 3),
            "kernels": len(code.resources.kernels), "cpp_lines": len(code.source.splitlines()),
            "top_users": code.resources.table(top_n=5),
            **{k: round(v, 3) for k, v in times.items()},
            "ir_constant_bytes": const, "layers_built": design.cfg.n_layer,
        })
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    for r in rows:
        r["peak_rss_mib"] = round(peak, 1)
    return rows


def _child(conn, args, mem_gib):
    if mem_gib:
        lim = int(mem_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    try:
        conn.send(("ok", build_group(*args)))
    except BaseException as e:  # reported as a row, whatever it was
        tb = traceback.extract_tb(e.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        conn.send(("error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}{where}"))


def run_group(model, quant, schedule, boards, cache, mem_gib, timeout, layers=0) -> list[dict]:
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send, (model, quant, schedule, boards, cache, layers), mem_gib))
    t0 = time.perf_counter()
    p.start()
    send.close()
    status, payload = "error", f"no result within {timeout:.0f} s"
    try:
        if recv.poll(timeout):
            status, payload = recv.recv()
    except EOFError:
        p.join(5)
        payload = f"the builder died (exit {p.exitcode})"
    if p.is_alive():
        p.terminate()
    p.join()
    wall = time.perf_counter() - t0
    key = {"model": model, "quant": quant, "schedule": schedule}
    if status == "ok":
        return [key | {"board": b, "built": True, "wall_s": round(wall, 2)} | r for b, r in zip(boards, payload)]
    return [key | {"board": b, "built": False, "error": payload, "wall_s": round(wall, 2)} for b in boards]


def table(rows: list[dict]) -> str:
    hdr = (f"{'model':<12} {'quant':<6} {'schedule':<12} {'board':<7} "
           + " ".join(f"{r:>15}" for r in RESOURCES)
           + f" {'fit':>4} {'capt s':>7} {'emit s':>7} {'peak MiB':>9} {'layers':>7}")
    out = [hdr]
    for r in rows:
        head = f"{r['model']:<12} {r['quant']:<6} {r['schedule']:<12} {r['board']:<7} "
        if not r["built"]:
            out.append(head + f"not built: {r['error']}")
            continue
        cells = " ".join(f"{r['used'][k]:>8,} {r['util_pct'][k]:>5.1f}%" for k in RESOURCES)
        out.append(head + cells + f" {'yes' if r['fits'] else 'NO':>4} {r['capture_s']:>7.1f} {r['emit_s']:>7.2f}"
                   f" {r['peak_rss_mib']:>9,.0f} {r['layers_built']:>7}")
        if r["ir_constant_bytes"] > 2**20:
            out.append(f"{'':<40}WARNING: {r['ir_constant_bytes']:,} bytes held as IR constants")
    return "\n".join(out)


def _list(s: str, known: tuple[str, ...], what: str) -> list[str]:
    xs = [x.strip() for x in s.split(",") if x.strip()]
    bad = [x for x in xs if x not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return xs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quant", default=",".join(QUANTS), help="float, w4a4 or both")
    ap.add_argument("--schedules", default=",".join(SCHEDULES), help="none and/or recipe names")
    ap.add_argument("--boards", default=",".join(BOARDS))
    ap.add_argument("--quick", action="store_true", help="only the 130M models")
    ap.add_argument("--cache", action="store_true", help="let the float capture read the flow's disk cache")
    ap.add_argument("--mem-gib", type=float, default=16.0, help="address-space limit of each builder (0 = none)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per (model, quant, schedule)")
    ap.add_argument("--quant-layers", type=int, default=2,
                    help="layers of the W4A4 builds (the hardware does not depend on it; 0 = the model's)")
    args = ap.parse_args()
    models = _list(args.models, MODELS, "model")
    if args.quick:
        models = [m for m in models if m.endswith("130m")]
    quants = _list(args.quant, QUANTS, "precision")
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    boards = _list(args.boards, BOARDS, "board")
    rows = []
    for model in models:
        for quant in quants:
            for sched in schedules:
                print(f"... {model} {quant} {sched}", file=sys.stderr, flush=True)
                rows += run_group(model, quant, sched, boards, args.cache, args.mem_gib, args.timeout,
                                  args.quant_layers)
    print(table(rows))
    for r in rows:
        if r["built"] and not r["fits"]:
            print(f"{r['model']} {r['quant']} {r['schedule']} on {r['board']} does not fit:")
            print("\n".join(f"  {a}" for a in r["advice"]))
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "argv": sys.argv[1:],
            "note": "resources are the emitter's estimate (targets/hls/resources.py), not synthesis; "
                    "peak_rss_mib is the builder process's ru_maxrss (capture + schedule + emission); "
                    "capture_s reads the flow's disk cache only with --cache"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
