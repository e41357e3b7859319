"""Emit a captured (and scheduled) Mamba `Design` as Vitis HLS C++.

Adds what only the design knows to the generic emitter: readable argument names for
every kernel (the port names of `flow.kernels`), the top's port names and roles, and the
grouping of the top's m_axi ports into bundles (memory channels).
"""

from __future__ import annotations

from ...flow import kernels as K
from .emitter import HlsCode, emit_module


def kernel_arg_names(design) -> dict[str, list[str]]:
    """function name -> argument names, from the kernel definitions the flow captured."""
    cfg, T = design.cfg, design.T
    tree = design.phase == "verify"
    layer = {k.kind: k for k in K.layer_kernels(cfg, T)}
    outer = {k.kind: k for k in K.model_kernels(cfg, T)}
    out: dict[str, list[str]] = {}
    for fname in design.kernels:
        if fname in outer:
            kern = outer[fname]
        else:
            kind = fname.split("_", 1)[1] if fname.startswith("layer") and "_" in fname else fname
            kern = layer.get(kind)
            if kern is None:
                continue
        names = [p.name for p in kern.inputs]
        if kern.scan and tree:
            names.append("parents")
        names += [p.name for p in kern.outputs]
        out[fname] = names
    out[design.top] = [p.name for p in design.ports]
    return out


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "backbone" and parts[1] == "layers" and parts[2].isdigit():
        return int(parts[2])
    return None


def default_bundles(design, weight_bundles: int = 1) -> dict[str, str]:
    """Design port -> m_axi bundle: activations and states in `gmem_io`, outputs in
    `gmem_out`, weights spread over `weight_bundles` bundles `gmem_w<k>` by layer (the
    embedding and final norm in `gmem_w0`), so boards with several memory channels
    (HBM pseudo-channels, DDR + LPDDR) stream weights of different layers in parallel."""
    n = max(1, int(weight_bundles))
    out = {}
    for p in design.ports:
        if p.role == "weight":
            layer = _layer_of(p.name)
            k = 0 if layer is None or n == 1 else (layer % (n - 1)) + 1 if n > 1 else 0
            out[p.name] = f"gmem_w{k}"
        elif p.role == "output":
            out[p.name] = "gmem_out"
        else:
            out[p.name] = "gmem_io"
    return out


def design_title(design) -> str:
    cfg = design.cfg
    return (f"{cfg.arch} d_model={cfg.d_model} n_layer={cfg.n_layer} vocab={cfg.vocab_size}, "
            f"phase {design.phase} T={design.T}")


def emit_design(design, weight_bundles: int = 1, bundles: dict[str, str] | None = None) -> HlsCode:
    """Vitis HLS C++ for a captured design (its `module` as scheduled)."""
    return emit_module(
        design.module,
        design.top,
        arg_names=kernel_arg_names(design),
        port_info=[(p.name, p.role) for p in design.ports],
        bundles=bundles or default_bundles(design, weight_bundles),
        title=design_title(design),
    )
