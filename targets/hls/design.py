"""Emit a captured (and scheduled) Mamba `Design` as Vitis HLS C++.

Adds what only the design knows to the generic emitter: the top's port roles and the
grouping of its m_axi ports into bundles (memory channels). Argument names come from
the IR (`mf.name`, set by capture).
"""

from __future__ import annotations

from .emitter import HlsCode, emit_module


def default_bundles(design) -> dict[str, str]:
    """Design port -> m_axi bundle: one bundle per process that uses the port
    (`gmem_in_proj`, `gmem_ssm`, ...), so no bundle serves two processes of a dataflow
    region (Vitis HLS 200-1013) and the kernels stream their weights over parallel AXI
    masters; the project maps the bundles onto the board's memory channels."""
    from ..versal.dataflow import default_bundles as by_process

    return by_process(design.module)


def design_title(design) -> str:
    cfg = design.cfg
    return (f"{cfg.arch} d_model={cfg.d_model} n_layer={cfg.n_layer} vocab={cfg.vocab_size}, "
            f"phase {design.phase} T={design.T}")


def emit_design(design, bundles: dict[str, str] | None = None) -> HlsCode:
    """Vitis HLS C++ for a captured design (its `module` as scheduled)."""
    return emit_module(
        design.module,
        design.top,
        port_info=[(p.name, p.role) for p in design.ports],
        bundles=bundles or default_bundles(design),
        title=design_title(design),
    )
