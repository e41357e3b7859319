"""mambaflow.targets.hls: Vitis HLS C++ from the scheduled IR, and C simulation with g++.

    from mambaflow.targets.hls import emit_design, run_csim, reference_data
    code = emit_design(design)                       # HlsCode: kernels.cpp / kernels.h / ports
    inputs, golden, spec = reference_data(model, design, steps=2)
    result = run_csim(code, "out/hls", inputs, golden, spec)

Exports are loaded lazily: importing the package does not load MLIR.
"""

_EXPORTS = {
    "emit_module": ".emitter", "HlsCode": ".emitter", "Port": ".emitter",
    "emit_design": ".design", "default_bundles": ".design",
    "HlsEmitError": ".cxx",
    "run_csim": ".csim", "CsimResult": ".csim", "CsimError": ".csim",
    "TestbenchSpec": ".testbench", "reference_data": ".reference",
    "ResourceEstimate": ".resources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
