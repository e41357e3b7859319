"""Emit a captured (and scheduled) Mamba `Design` as Vitis HLS C++.

Adds what only the design knows to the generic emitter: the top's port roles and the
grouping of its m_axi ports into bundles (memory channels). Argument names come from
the IR (`mf.name`, set by capture).
"""

from __future__ import annotations

from .emitter import HlsCode, emit_module


def default_bundles(design, weight_bundles: int = 1) -> dict[str, str]:
    """Design port -> m_axi bundle: activations and states in `gmem_io`, outputs in
    `gmem_out`, weights spread round-robin over `weight_bundles` bundles `gmem_w<k>`
    (port order: the embedding first), so boards with several memory channels (HBM
    pseudo-channels, DDR + LPDDR) stream different weights in parallel. Every weight
    port holds all layers, so the layer loop streams a layer's slice from each."""
    n = max(1, int(weight_bundles))
    out = {}
    k = 0
    for p in design.ports:
        if p.role == "weight":
            out[p.name] = f"gmem_w{k % n}"
            k += 1
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
        port_info=[(p.name, p.role) for p in design.ports],
        bundles=bundles or default_bundles(design, weight_bundles),
        title=design_title(design),
    )
