"""One DSE trial, as a worker runs it: a point of the search space -> its estimate and log.

`evaluate(job)` takes a plain dict (it crosses process and Ray boundaries):
`{"model", "quant", "board", "clock_mhz", "seed", "point"}`. It schedules the model's
decode design with `space.schedule_of(point)` through the estimator
(`targets.estimate.estimate_model`, which captures once per process) and returns a
plain dict: `ok`, the saved schedule log (`log`, the JSON `Schedule.save` writes), the
estimate's numbers, or `error` (one line: the exception's type and message) when the
schedule or the estimate raised. It never raises for a trial's own failure, so the
search records it and goes on.
"""

from __future__ import annotations

import functools
import time

from .space import schedule_of


@functools.lru_cache(maxsize=4)
def _model(spec: str, seed: int):
    """A preset name stays a name (the estimator builds and caches it); a shipped model or a
    checkpoint directory is loaded once per process."""
    from pathlib import Path

    from ..errors import MambaflowError
    from ..models import load_checkpoint, zoo
    from ..models.config import PRESETS

    if spec in PRESETS:
        return spec
    if spec in zoo.SHIPPED:
        return zoo.load_shipped(spec)
    if Path(spec).is_dir():
        return load_checkpoint(spec).eval()
    raise MambaflowError(f"unknown model '{spec}': give a shipped model ({', '.join(zoo.SHIPPED)}), a preset "
                         f"({', '.join(PRESETS)}) or a directory holding config.json and model.safetensors")


def model_config(spec: str, seed: int = 0):
    """The MambaConfig of a model spec (for the search space), without a capture."""
    from ..targets.versal.build import resolve_config

    return resolve_config(_model(spec, seed))


def evaluate(job: dict) -> dict:
    t0 = time.perf_counter()
    point = dict(job["point"])
    quant = point.pop("quant", job.get("quant"))
    saved = {}

    def schedule(s):
        out = schedule_of(point)(s)
        saved["log"] = s.to_json()
        return out

    try:
        from ..targets.estimate import estimate_model

        est = estimate_model(_model(job["model"], job.get("seed", 0)), board=job["board"], quant=quant,
                             schedule=schedule, phase="decode", clock_mhz=job.get("clock_mhz"))
        res = {r: int(v) for r, v in est.resources.items()}
        return {"ok": True, "log": saved.get("log"), "quant": quant, "tokens_per_s": float(est.tokens_per_s),
                "bound": est.bound, "roofline_share": float(est.roofline_share),
                "cycles_per_token": float(est.cycles_per_token), "clock_mhz": float(est.clock_mhz),
                "fits": bool(est.fits), "resources": res, "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - a trial's failure is data: recorded, the search goes on
        first = (str(e).strip().splitlines() or [""])[0]
        return {"ok": False, "log": saved.get("log"), "quant": quant, "error": f"{type(e).__name__}: {first}",
                "seconds": time.perf_counter() - t0}
