"""`estimate_model`: capture a model's phase, schedule it and estimate it, in one call.

The layer engine's IR does not depend on the model's depth (one function per kernel
kind, a `layer` loop in the top), so a quantized model is calibrated and captured with
ONE layer of its real width and estimated with the layer loop running `n_layer` times:
PTQ of a 64-layer Mamba2-2.7B would need its 2.7 B weights in memory, the estimate
needs only the shapes. Float designs are captured at full depth (capture needs no
weights). Captures are kept per process, and each call schedules a fresh copy.
"""

from __future__ import annotations

import dataclasses

from torch_mlir import ir

from ...errors import MambaflowError
from ..hls import packing as PK

_CAPTURED: dict = {}


def _fresh(design):
    """A copy of `design` with its own module (schedules rewrite the module in place)."""
    ctx = design.module.context
    return dataclasses.replace(design, module=ir.Module.parse(str(design.module), context=ctx))


def captured_design(model, phase: str = "decode", quant: str | None = None, T: int | None = None, seed: int = 0,
                    progress: bool = False):
    """A fresh captured (unscheduled) design of `model` (a preset name, MambaConfig or
    nn.Module), and the number of layers it stands for."""
    from ...flow.capture import capture
    from ...models.config import MambaConfig
    from ..versal.build import calibration_set, resolve_config, resolve_model

    cfg = resolve_config(model)
    if quant is not None and phase != "decode":
        raise MambaflowError(f"estimate: quantized designs are decode only (got --phase {phase}); drop --quant "
                             "or use --phase decode")
    key = (repr(cfg), phase, quant, T, seed, id(model) if not isinstance(model, (str, MambaConfig)) else None)
    if key not in _CAPTURED:
        if quant is None:
            design = capture(cfg if not hasattr(model, "config") else model, phase, T=T, progress=progress)
        else:
            from ...quant.flow import capture_quantized
            from ...quant.ptq import quantize

            one = dataclasses.replace(cfg, n_layer=1) if not hasattr(model, "config") else cfg
            m = resolve_model(model if hasattr(model, "config") else one, seed)
            calib, _ = calibration_set(m, seed)
            # the design's structure and widths do not depend on the calibrated values:
            # one short window keeps PTQ of a wide layer quick
            design = capture_quantized(quantize(m, quant, calib[:1, :64]), "model")
        _CAPTURED[key] = design
    return _fresh(_CAPTURED[key]), cfg.n_layer


def estimate_model(model, *, board="vck190", quant: str | None = None, schedule=None, phase: str = "decode",
                   layers: int | None = None, clock_mhz: float | None = None, T: int | None = None,
                   beat_bits: int = PK.BEAT_BITS, tokens_per_pass: float | None = None, seed: int = 0,
                   bundles=None, progress: bool = False):
    """Capture `phase` of `model`, apply `schedule` (anything `build --schedule` takes:
    a recipe name, a callable of a Schedule, a .py file, a .json log) and estimate it.
    bundles: port -> m_axi bundle, or a function of the scheduled design giving it
    (default: one bundle per process, `targets.versal.dataflow.default_bundles`).
    Returns the `Estimate`; `est.schedule` is the Schedule (its log replays the design)."""
    from ...schedules.user import apply_user_schedule, check_user_schedule
    from .estimate import estimate

    check_user_schedule(schedule)
    design, n_layer = captured_design(model, phase, quant, T, seed, progress)
    sched = apply_user_schedule(design, schedule)
    if callable(bundles):
        bundles = bundles(design)
    est = estimate(design, board, clock_mhz=clock_mhz, layers=layers or n_layer, beat_bits=beat_bits,
                   tokens_per_pass=tokens_per_pass, bundles=bundles)
    est.schedule = sched
    est.design = design
    return est
