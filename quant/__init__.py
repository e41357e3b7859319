"""Post-training quantization of Mamba1 / Mamba2 for integer hardware (FastMamba,
LightMamba), a bit-exact integer decode step, and that step through the flow.

    from mambaflow.quant import quantize, W8A8, W4A4, W4A4_NOROT, QuantConfig
    qm = quantize(model, W4A4, calib_tokens)          # QuantizedMamba
    logits_int, state = qm.decode(tokens, qm.init_state(batch))

    from mambaflow.quant.flow import capture_quantized
    design = capture_quantized(qm, "layer")           # or "model"
    outs = design.run_llvm(values); outs = design.run_csim(values)

Modules: hadamard (H_m ⊗ H_2^k, FWHT), schemes (configs and errors), approx (integer
exp / softplus / SiLU / rsqrt with stated bounds), float_sim (rotated float model,
calibration observer), calibrate, ptq (quantize, QuantizedMamba), integer_ref (the
integer kernels: the oracle), flow (capture, llvm, HLS csim).
"""

from .ptq import QState, QuantizedMamba, quantize
from .schemes import PRESETS, W4A4, W4A4_NOROT, W8A8, ApproxConfig, QuantConfig, QuantError

__all__ = ["quantize", "QuantizedMamba", "QState", "QuantConfig", "ApproxConfig", "QuantError",
           "W8A8", "W4A4", "W4A4_NOROT", "PRESETS"]
