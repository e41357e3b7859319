"""Capture a Mamba model phase as one MLIR module of named affine kernels.

`capture(model, phase)` returns a `Design`: the module (one `func.func` per hardware
kernel plus a top function named after the phase that calls them in order), the ports
of the top function, and the names of the weights it takes as arguments. Weights are
never imported as constants: targets bind them at run time (see `Design.weights`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch_mlir import ir
from torch_mlir.dialects import func, memref
from tqdm import tqdm

from .. import cache as disk_cache
from ..errors import MambaflowError
from ..models.config import MambaConfig
from . import kernels as K
from .lowering import capture_function
from .mlir import affine_accesses_to_memref, funcs, new_context, run_pipeline
from .naming import name_loops
from .scan import build_scan

PHASES = ("decode", "prefill", "verify")

# Copies become loops; then views (row subviews of the scan, reshapes) are folded into
# the accesses, so every kernel indexes its arguments and local buffers directly.
_COPIES_TO_LOOPS = "func.func(refback-munge-memref-copy,convert-linalg-to-affine-loops),canonicalize"
# int-range-optimizations folds the delinearizing floordiv/rem of a reshaped index by
# the loop bounds (i floordiv 384 -> 0 for i < 384), so those accesses become affine too.
_FOLD_VIEWS = (
    "fold-memref-alias-ops,affine-expand-index-ops,canonicalize,"
    "func.func(int-range-optimizations,canonicalize,affine-raise-from-memref),"
    "func.func(affine-loop-normalize{promote-single-iter}),canonicalize,cse"
)


def _finish(mod: ir.Module, what: str) -> None:
    run_pipeline(mod, _COPIES_TO_LOOPS, what)
    affine_accesses_to_memref(mod.operation)
    run_pipeline(mod, _FOLD_VIEWS, what)


@dataclass(frozen=True)
class TopPort:
    """An argument of the top function. `role` is 'input', 'state', 'weight' or 'output'."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    role: str


@dataclass
class Design:
    """A captured (and possibly scheduled) Mamba phase: the one IR every target consumes."""

    module: ir.Module
    cfg: MambaConfig
    phase: str
    T: int
    ports: list[TopPort]
    kernels: list[str] = field(default_factory=list)
    # verify only: layers that leave their SSM inputs instead of every node's state (for
    # replay), and the depth of the FIFO tree buffer holding the live states (None: all T)
    replay_layers: tuple[int, ...] = ()
    fifo_depth: int | None = None

    @property
    def top(self) -> str:
        return self.phase

    @property
    def inputs(self) -> list[TopPort]:
        return [p for p in self.ports if p.role != "output"]

    @property
    def outputs(self) -> list[TopPort]:
        return [p for p in self.ports if p.role == "output"]

    @property
    def weight_names(self) -> list[str]:
        return [p.name for p in self.ports if p.role == "weight"]

    def weights(self, model: torch.nn.Module) -> list[np.ndarray]:
        """The model's weights as numpy arrays, in the top function's argument order."""
        sd = model.state_dict()
        out = []
        for p in self.ports:
            if p.role != "weight":
                continue
            t = _weight(sd, p.name)
            if t is None:
                raise MambaflowError(f"design '{self.phase}' needs weight '{p.name}', which the model lacks")
            t = t.detach().to(torch.float32).contiguous()
            if tuple(t.shape) != p.shape:
                raise MambaflowError(f"weight '{p.name}' has shape {tuple(t.shape)}, the design expects {p.shape}")
            out.append(t.numpy())
        return out

    def __str__(self) -> str:
        return str(self.module)


def _weight(sd: dict, name: str) -> torch.Tensor | None:
    """A checkpoint tensor by its full name, or a derived weight (K.DERIVED_WEIGHTS)
    computed from the checkpoint tensor it comes from."""
    if name in sd:
        return sd[name]
    for key, (source, derive) in K.DERIVED_WEIGHTS.items():
        if name == key or name.endswith("." + key):
            src = name[: len(name) - len(key)] + source
            return derive(sd[src].detach()) if src in sd else None
    return None


def _example(port: K.Port) -> torch.Tensor:
    if port.dtype == torch.int64:
        return torch.zeros(port.shape, dtype=torch.int64)
    return torch.randn(port.shape, dtype=port.dtype)


def _mlir_type(shape: Iterable[int], dtype: torch.dtype) -> ir.MemRefType:
    el = ir.IntegerType.get_signless(64) if dtype == torch.int64 else ir.F32Type.get()
    return ir.MemRefType.get(list(shape), el)


def _template(kernel: K.Kernel, T: int, tree: bool, ctx: ir.Context, fifo_depth: int | None = None,
              write_states: bool = True) -> ir.Module:
    """Capture one kernel as a module holding a single func named after its kind."""
    if not kernel.scan:
        mod = capture_function(kernel.fn, [_example(p) for p in kernel.inputs], kernel.kind, ctx)
        _finish(mod, kernel.kind)
        return mod
    step_name = kernel.kind + "_step"
    mod = capture_function(kernel.fn, [_example(p) for p in kernel.inputs], step_name, ctx, dynamic_layout=True)
    step = funcs(mod)[step_name]
    with ctx, ir.Location.unknown():
        step.attributes["sym_visibility"] = ir.StringAttr.get("private")
        per_token = [p.shape[0] == 1 and p.weight is None for p in kernel.inputs[1:]]
        build_scan(mod, step, kernel.kind, per_token, T, tree, fifo_depth, write_states)
    _finish(mod, kernel.kind)
    return mod


def _chain_windows(T: int, k: int) -> np.ndarray:
    return np.arange(T)[:, None] + np.arange(k)[None, :]


def _cache_inputs(cfg: MambaConfig, phase: str, T: int, opts: tuple = ()) -> dict:
    """The inputs of a capture's cache key: the config, the phase, T and everything that
    shapes the IR (this package's flow sources and the torch / torch-mlir versions)."""
    h = hashlib.sha256()
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    return {"config": repr(cfg), "phase": phase, "T": T, "opts": repr(opts), "flow_sha256": h.hexdigest(),
            **{dist: importlib.metadata.version(dist) for dist in ("torch", "torch-mlir")}}


def _load_cached(inputs: dict, cfg: MambaConfig, phase: str, T: int, opts: dict) -> Design | None:
    """The cached design for `inputs`, or None; a damaged entry is deleted (and recaptured)."""
    entry = disk_cache.lookup("capture", inputs, ("design.mlir",))
    if entry is None:
        return None
    try:
        ports = [TopPort(str(n), tuple(int(d) for d in s), _DTYPES[d], str(r)) for n, s, d, r in entry.info["ports"]]
        kernels = [str(k) for k in entry.info["kernels"]]
        with new_context():
            module = ir.Module.parse(entry.file("design.mlir").read_text())
    except (OSError, ValueError, TypeError, KeyError, ir.MLIRError) as e:
        disk_cache.discard(entry.path, f"its design does not read back ({type(e).__name__})")
        return None
    return Design(module=module, cfg=cfg, phase=phase, T=T, ports=ports, kernels=kernels, **opts)


_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _store_cached(inputs: dict, design: Design) -> None:
    ports = [[p.name, list(p.shape), str(p.dtype).removeprefix("torch."), p.role] for p in design.ports]
    disk_cache.store("capture", inputs, {"design.mlir": str(design.module).encode()},
                     {"ports": ports, "kernels": design.kernels})


def capture(model_or_cfg, phase: str = "decode", T: int | None = None, progress: bool = True,
            cache: bool = True, replay_layers=(), fifo_depth: int | None = None) -> Design:
    """Capture `phase` of a Mamba model (or config) for T tokens as a named affine design.

    decode: T = 1; prefill: T prompt tokens (default 16); verify: a tree of T nodes
    (default 8) given at run time by its parent indices. With `cache`, a capture made
    before by the same flow for the same config is read back from disk (a fresh module).

    Verify options (speculative decoding, see runtime.backtrack):
    - `fifo_depth` S: each layer's tree scan keeps its live states in a FIFO tree buffer
      of S slots (`state_fifo`) instead of reading parents back from the (T, ...) output;
      the tree must then have t - parents[t] < S for every node (BFS order keeps that
      below twice the tree's width).
    - `replay_layers`: these layers write no per-node SSM state; they output their SSM
      inputs instead (mamba1: `xc`, `delta`, `B`; mamba2: `xc`, `dt`), from which the
      accepted path is replayed. They need the FIFO (S defaults to T).
    """
    if phase not in PHASES:
        raise MambaflowError(f"unknown phase '{phase}': choose one of {', '.join(PHASES)}")
    cfg: MambaConfig = getattr(model_or_cfg, "config", model_or_cfg)
    if not isinstance(cfg, MambaConfig):
        raise MambaflowError("capture() takes a mambaflow Mamba model or a MambaConfig")
    T = 1 if phase == "decode" else (T or (16 if phase == "prefill" else 8))
    if phase == "decode" and T != 1:
        raise MambaflowError("the decode phase is one token: leave T unset")
    tree = phase == "verify"
    replay = _check_verify_options(cfg, phase, T, replay_layers, fifo_depth)
    if replay and fifo_depth is None:
        fifo_depth = T
    opts = dict(replay_layers=replay, fifo_depth=fifo_depth)
    cache_key = _cache_inputs(cfg, phase, T, (replay, fifo_depth) if (replay or fifo_depth) else ())
    if cache and (hit := _load_cached(cache_key, cfg, phase, T, opts)) is not None:
        return hit

    ctx = new_context()
    layer = K.layer_kernels(cfg, T)
    embed, norm_f, head = K.model_kernels(cfg, T)
    todo = [(kern, kern.kind, True) for kern in (embed, *layer, norm_f, head)]
    if tree and replay:  # the SSM scan of a replaying layer keeps no per-node states
        todo += [(kern, kern.kind + "/replay", False) for kern in layer if kern.scan]
    bar = tqdm(todo, desc=f"capture {phase}", unit="kernel", disable=not progress, leave=False)
    templates = {}
    keep = []  # the template modules own the funcs: keep them alive while cloning
    for kern, key, write in bar:
        bar.set_postfix_str(kern.kind)
        mod = _template(kern, T, tree, ctx, fifo_depth if kern.scan else None, write)
        keep.append(mod)
        fn = funcs(mod)[kern.kind]
        with ctx:
            name_loops(fn)
        templates[key] = fn

    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        names: list[str] = []

        def place(kind: str, name: str) -> None:
            fn = templates[kind].clone(ir.InsertionPoint(module.body))
            fn.attributes["sym_name"] = ir.StringAttr.get(name)
            names.append(name)

        place("embed", "embed")
        for i in range(cfg.n_layer):
            for kern in layer:
                key = kern.kind + "/replay" if (kern.scan and i in replay) else kern.kind
                place(key, f"layer{i}_{kern.kind}")
        place("norm_f", "norm_f")
        place("lm_head", "lm_head")
        ports = _build_top(module, cfg, phase, T, layer, (embed, norm_f, head), replay)
        try:
            module.operation.verify()
        except ir.MLIRError as e:
            diags = "; ".join(f"{d.location}: {d.message}" for d in e.error_diagnostics)
            raise MambaflowError(f"internal error: captured {phase} module does not verify: {diags}") from None
    design = Design(module=module, cfg=cfg, phase=phase, T=T, ports=ports, kernels=names, **opts)
    if cache:
        _store_cached(cache_key, design)
    return design


#: what a replaying layer of the verify phase leaves per node: the SSM inputs (the conv
#: inputs `conv_in` leave every layer). C and z do not change the state.
REPLAY_ACTIVATIONS = {"mamba1": ("xc", "delta", "B"), "mamba2": ("xc", "dt")}


def _check_verify_options(cfg: MambaConfig, phase: str, T: int, replay_layers, fifo_depth) -> tuple[int, ...]:
    """Validated replay layers (sorted tuple) for the verify-only capture options."""
    replay = tuple(sorted({int(i) for i in replay_layers}))
    if phase != "verify" and (replay or fifo_depth is not None):
        raise MambaflowError(f"replay_layers and fifo_depth are options of the verify phase, not of '{phase}'")
    bad = [i for i in replay if not 0 <= i < cfg.n_layer]
    if bad:
        raise MambaflowError(f"replay_layers {bad} out of range: the model has layers 0..{cfg.n_layer - 1}")
    if fifo_depth is not None and not (isinstance(fifo_depth, int) and 1 <= fifo_depth <= T):
        raise MambaflowError(f"fifo_depth must be an integer in [1, T={T}], got {fifo_depth!r}")
    return replay


def _build_top(module, cfg, phase, T, layer, outer, replay=()) -> list[TopPort]:
    """The top function: calls every kernel in order, wiring activations through buffers."""
    embed, norm_f, head = outer
    tree = phase == "verify"
    i64 = torch.int64
    ports: list[TopPort] = [TopPort("tokens", (T,), i64, "input")]
    if tree:
        ports += [TopPort("windows", (T, cfg.d_conv), i64, "input"), TopPort("parents", (T,), i64, "input")]
    conv_state_shape = next(k for k in layer if k.kind == "conv").inputs[1].shape
    ssm_state_shape = next(k for k in layer if k.scan).inputs[0].shape
    for i in range(cfg.n_layer):
        ports.append(TopPort(f"layer{i}.conv_state", conv_state_shape, torch.float32, "state"))
        ports.append(TopPort(f"layer{i}.ssm_state", ssm_state_shape, torch.float32, "state"))
    weights: list[TopPort] = []
    seen: set[str] = set()

    def weight(kernel: K.Kernel, p: K.Port, i: int | None) -> str:
        full = p.weight if i is None else f"backbone.layers.{i}.{p.weight}"
        if full not in seen:
            seen.add(full)
            weights.append(TopPort(full, p.shape, p.dtype, "weight"))
        return full

    # walk the kernel graph once to learn the weights' order
    plan: list[tuple[K.Kernel, int | None]] = [(embed, None)]
    plan += [(k, i) for i in range(cfg.n_layer) for k in layer]
    plan += [(norm_f, None), (head, None)]
    for kern, i in plan:
        for p in kern.inputs:
            if p.weight:
                weight(kern, p, i)
    ports += weights
    V = cfg.vocab_size
    outputs = [TopPort("logits", (T, V), torch.float32, "output")]
    produced = {p.name: p for k in layer for p in k.outputs}
    for i in range(cfg.n_layer):
        if tree:
            conv_in = next(p for p in layer if p.kind == "conv").inputs[0]
            outputs.append(TopPort(f"layer{i}.conv_in", conv_in.shape, torch.float32, "output"))
            if i in replay:
                for a in REPLAY_ACTIVATIONS[cfg.arch]:
                    outputs.append(TopPort(f"layer{i}.{a}", produced[a].shape, torch.float32, "output"))
            else:
                outputs.append(TopPort(f"layer{i}.ssm_states", (T, *ssm_state_shape), torch.float32, "output"))
        else:
            outputs.append(TopPort(f"layer{i}.conv_state_out", conv_state_shape, torch.float32, "output"))
            outputs.append(TopPort(f"layer{i}.ssm_state_out", ssm_state_shape, torch.float32, "output"))
    ports += outputs

    arg_types = [_mlir_type(p.shape, p.dtype) for p in ports]
    fn = func.FuncOp(phase, ir.FunctionType.get(arg_types, []), ip=ir.InsertionPoint(module.body))
    fn.attributes["mf.top"] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    by_name = {p.name: (p, v) for p, v in zip(ports, entry.arguments)}
    with ir.InsertionPoint(entry):
        if not tree:
            win = _chain_windows(T, cfg.d_conv)
            gname = f"chain_windows_{T}x{cfg.d_conv}"
            gtype = _mlir_type(win.shape, i64)
            with ir.InsertionPoint(fn.operation):
                memref.GlobalOp(
                    gname, gtype, sym_visibility="private", constant=True,
                    initial_value=ir.DenseElementsAttr.get(win.astype(np.int64), type=ir.RankedTensorType.get(list(win.shape), ir.IntegerType.get_signless(64))),
                )
            windows = memref.get_global(gtype, gname)
        else:
            windows = by_name["windows"][1]

        env: dict[str, ir.Value] = {"tokens": by_name["tokens"][1], "windows": windows}
        if tree:
            env["parents"] = by_name["parents"][1]

        def call(kern: K.Kernel, name: str, i: int | None, outs: dict[str, ir.Value], skip=()):
            args = []
            for p in kern.inputs:
                if p.weight:
                    args.append(by_name[p.weight if i is None else f"backbone.layers.{i}.{p.weight}"][1])
                elif p.name in ("conv_state", "ssm_state"):
                    args.append(by_name[f"layer{i}.{p.name}"][1])
                else:
                    args.append(env[p.name])
            if kern.scan and tree:
                args.append(env["parents"])
            results = []
            for p in kern.outputs:
                if p.name in skip:
                    continue
                if p.name in outs:
                    v = outs[p.name]
                else:
                    shape = (T, *p.shape[1:]) if kern.scan and p.shape[0] == 1 else p.shape
                    v = memref.alloc(_mlir_type(shape, p.dtype), [], [])
                results.append(v)
                env[p.name] = v
            func.CallOp([], ir.FlatSymbolRefAttr.get(name), args + results)

        call(embed, "embed", None, {})
        for i in range(cfg.n_layer):
            outs = {}
            if tree and i in replay:
                for a in REPLAY_ACTIVATIONS[cfg.arch]:
                    outs[a] = by_name[f"layer{i}.{a}"][1]
            elif tree:
                outs["ssm_state_out"] = by_name[f"layer{i}.ssm_states"][1]
            else:
                outs["conv_state_out"] = by_name[f"layer{i}.conv_state_out"][1]
                outs["ssm_state_out"] = by_name[f"layer{i}.ssm_state_out"][1]
            for kern in layer:
                if tree and kern.kind == "in_proj":
                    # the conv inputs leave the design: speculative decoding rebuilds the
                    # accepted node's conv state from them
                    outs["x"] = by_name[f"layer{i}.conv_in"][1]
                skip = ("ssm_state_out",) if (kern.scan and tree and i in replay) else ()
                call(kern, f"layer{i}_{kern.kind}", i, outs, skip)
            env["resid"] = env["resid_out"]
        call(norm_f, "norm_f", None, {})
        call(head, "lm_head", None, {"logits": by_name["logits"][1]})
        func.ReturnOp([])
    return ports

