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
from torch_mlir.dialects import affine, arith, func, memref, scf
from tqdm import tqdm

from .. import cache as disk_cache
from ..errors import MambaflowError
from ..models.config import MambaConfig
from . import kernels as K
from .lowering import capture_function
from .mlir import affine_accesses_to_memref, funcs, new_context, run_pipeline
from .identity import LAYER_ARG, TOP_ATTR, set_identity, stack_by_layer
from .naming import LOOP_ATTR, BAND_ATTR, name_loops
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


def _fold_views(mod: ir.Module, what: str) -> None:
    affine_accesses_to_memref(mod.operation)
    run_pipeline(mod, _FOLD_VIEWS, what)


def _finish(mod: ir.Module, what: str) -> None:
    run_pipeline(mod, _COPIES_TO_LOOPS, what)
    _fold_views(mod, what)


@dataclass(frozen=True)
class TopPort:
    """An argument of the top function. `role` is 'input', 'state', 'weight' or 'output'.

    A `stacked` port has the layers as its leading dimension (weights and states of the
    layer engine: `in_proj_w[n_layer][2E][D]`). `key` names a weight in the checkpoint:
    the Hugging Face name, with `{i}` standing for the layer of a stacked one."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    role: str
    stacked: bool = False
    key: str | None = None
    bits: int | None = None  # an integer port's width in the IR when narrower than dtype's

    @property
    def width(self) -> int:
        """The element width in the IR, in bits."""
        return self.bits or _DTYPE_BITS[self.dtype]

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy storage of one element as the compiled code lays it out (LLVM stores
        an iN in the next power-of-two number of bytes)."""
        if self.dtype.is_floating_point or self.bits is None:
            return np.dtype(torch.empty(0, dtype=self.dtype).numpy().dtype)
        nbytes = 1
        while nbytes * 8 < self.bits:
            nbytes *= 2
        return np.dtype({1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}[nbytes])


_DTYPE_BITS = {torch.float32: 32, torch.float64: 64, torch.int64: 64, torch.int32: 32, torch.int16: 16,
               torch.int8: 8, torch.uint8: 8, torch.bool: 1}


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
    # an integer design (quant.flow): its scheme's name, the top's name when it is not
    # the phase's (one layer: `decode_layer`), and the layers its stacked ports hold
    quant: str | None = None
    top_name: str | None = None
    layers: tuple[int, ...] | None = None

    @property
    def top(self) -> str:
        return self.top_name or self.phase

    @property
    def stacked_layers(self) -> tuple[int, ...]:
        """The layers a stacked port holds, in order (all of the model's by default)."""
        return self.layers if self.layers is not None else tuple(range(self.cfg.n_layer))

    @property
    def inputs(self) -> list[TopPort]:
        return [p for p in self.ports if p.role != "output"]

    @property
    def outputs(self) -> list[TopPort]:
        return [p for p in self.ports if p.role == "output"]

    @property
    def weight_names(self) -> list[str]:
        return [p.name for p in self.ports if p.role == "weight"]

    def weights(self, model) -> list[np.ndarray]:
        """The model's weights as numpy arrays, in the top function's argument order
        (stacked ports: every layer's tensor, stacked along a leading axis). `model` is
        a float Mamba (its state dict) or, for an integer design, a QuantizedMamba (its
        integer `params`), stored as the port's `np_dtype`."""
        sd = model.params if self.quant else model.state_dict()
        out = []
        for p in self.ports:
            if p.role != "weight":
                continue
            keys = [p.key.format(i=i) for i in self.stacked_layers] if p.stacked else [p.key]
            parts = []
            for key in keys:
                t = _weight(sd, key)
                if t is None:
                    raise MambaflowError(f"design '{self.top}' needs weight '{key}' (port {p.name}), "
                                         "which the model lacks")
                parts.append(t.detach() if self.quant else t.detach().to(torch.float32))
            t = torch.stack(parts) if p.stacked else parts[0]
            if tuple(t.shape) != p.shape:
                raise MambaflowError(f"weight '{p.key}' has shape {tuple(t.shape)}, the design expects {p.shape} "
                                     f"(port {p.name})")
            out.append(np.ascontiguousarray(t.numpy().astype(p.np_dtype, copy=False)))
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


def _stacked(port: K.Port, tree: bool) -> bool:
    """Whether a layer kernel's port is stacked by layer: its weights and states. In
    verify, a node's conv state is rebuilt from the conv inputs, so the conv's state
    output is a scratch buffer; the SSM's output is every node's state."""
    if port.weight is not None or port.name in ("conv_state", "ssm_state"):
        return True
    if port.name == "conv_state_out":
        return not tree
    return port.name == "ssm_state_out"


def _role(port: K.Port) -> str:
    if port.weight is not None:
        return "weight"
    return "state" if "state" in port.name else "activation"


def _template(kernel: K.Kernel, T: int, tree: bool, ctx: ir.Context, n_layer: int | None,
              fifo_depth: int | None = None, write_states: bool = True) -> ir.Module:
    """Capture one kernel as a module holding a single func named after its kind; a layer
    kernel (`n_layer` given) is made layer-generic (`identity.stack_by_layer`)."""
    if not kernel.scan:
        mod = capture_function(kernel.fn, [_example(p) for p in kernel.inputs], kernel.kind, ctx)
    else:
        step_name = kernel.kind + "_step"
        mod = capture_function(kernel.fn, [_example(p) for p in kernel.inputs], step_name, ctx, dynamic_layout=True)
        step = funcs(mod)[step_name]
        with ctx, ir.Location.unknown():
            step.attributes["sym_visibility"] = ir.StringAttr.get("private")
            per_token = [p.shape[0] == 1 and p.weight is None for p in kernel.inputs[1:]]
            build_scan(mod, step, kernel.kind, per_token, T, tree, fifo_depth, write_states)
    ports = list(kernel.inputs)
    outs = [p for p in kernel.outputs if write_states or p.name != "ssm_state_out"]
    parents = [("parents", "parents", False)] if kernel.scan and tree else []
    args = [(p.name, _role(p), _stacked(p, tree)) for p in ports] + parents
    args += [(p.name, _role(p), _stacked(p, tree)) for p in outs]
    finish_kernel(mod, kernel.kind, args, n_layer)
    return mod


def finish_kernel(mod: ir.Module, kind: str, args: list[tuple[str, str, bool]], n_layer: int | None) -> None:
    """The common end of every kernel capture (float and integer): copies become loops
    and views fold into the accesses; a layer kernel (`n_layer` given) is made
    layer-generic (`identity.stack_by_layer`) on the arguments `args` marks stacked;
    the kind and the arguments' (name, role, stacked) are recorded on the func.

    Stacking comes after the first folding: the views torch-mlir leaves on arguments
    (expand_shape, ...) have result types computed from the argument's type, so they
    must be folded away before the argument is retyped; the second folding then folds
    the layer subview into the accesses."""
    _finish(mod, kind)
    fn = funcs(mod)[kind]
    names, roles, stacked = (list(x) for x in zip(*args))
    if n_layer is not None:
        with mod.context:
            stack_by_layer(fn, [k for k, s in enumerate(stacked) if s], n_layer)
        names.append(LAYER_ARG)
        roles.append("layer")
        stacked.append(False)
        _fold_views(mod, kind)
    else:
        stacked = [False] * len(names)
    with mod.context:
        set_identity(fn, kind, names, roles, stacked)


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
        ports = [TopPort(str(n), tuple(int(d) for d in s), _DTYPES[d], str(r), bool(st), k)
                 for n, s, d, r, st, k in entry.info["ports"]]
        kernels = [str(k) for k in entry.info["kernels"]]
        with new_context():
            module = ir.Module.parse(entry.file("design.mlir").read_text())
    except (OSError, ValueError, TypeError, KeyError, ir.MLIRError) as e:
        disk_cache.discard(entry.path, f"its design does not read back ({type(e).__name__})")
        return None
    return Design(module=module, cfg=cfg, phase=phase, T=T, ports=ports, kernels=kernels, **opts)


_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _store_cached(inputs: dict, design: Design) -> None:
    ports = [[p.name, list(p.shape), str(p.dtype).removeprefix("torch."), p.role, p.stacked, p.key]
             for p in design.ports]
    disk_cache.store("capture", inputs, {"design.mlir": str(design.module).encode()},
                     {"ports": ports, "kernels": design.kernels})


#: the function of the SSM kernel of a replaying verify layer (kind `ssm`, no state out)
SSM_REPLAY = "ssm_replay"


def capture(model_or_cfg, phase: str = "decode", T: int | None = None, progress: bool = True,
            cache: bool = True, replay_layers=(), fifo_depth: int | None = None) -> Design:
    """Capture `phase` of a Mamba model (or config) for T tokens as a named affine design.

    The design has one function per kernel kind (`embed`, `norm`, `in_proj`, `conv`,
    [`x_proj`], `ssm`, [`gated_norm`], `out_proj`, `norm_f`, `lm_head`): the layer
    kernels take their weights and states stacked by layer plus the layer index, and
    the top runs them in an `affine.for` named `layer`, so the hardware has each kernel
    once whatever the depth of the model.

    decode: T = 1; prefill: T prompt tokens (default 16); verify: a tree of T nodes
    (default 8) given at run time by its parent indices. With `cache`, a capture made
    before by the same flow for the same config is read back from disk (a fresh module).

    Verify options (speculative decoding, see runtime.backtrack):
    - `fifo_depth` S: each layer's tree scan keeps its live states in a FIFO tree buffer
      of S slots (`state_fifo`) instead of reading parents back from the (T, ...) output;
      the tree must then have t - parents[t] < S for every node (BFS order keeps that
      below twice the tree's width).
    - `replay_layers`: these layers write no per-node SSM state (their SSM runs as
      `ssm_replay`); they output their SSM inputs instead (mamba1: `xc`, `delta`, `B`;
      mamba2: `xc`, `dt`), from which the accepted path is replayed. They need the FIFO
      (S defaults to T).
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
    L = cfg.n_layer
    layer = K.layer_kernels(cfg, T)
    embed, norm_f, head = K.model_kernels(cfg, T)
    todo = [(kern, kern.kind, None, True) for kern in (embed, norm_f, head)]
    todo += [(kern, kern.kind, L, True) for kern in layer if not (kern.scan and len(replay) == L)]
    if tree and replay:  # the SSM scan of a replaying layer keeps no per-node states
        todo += [(kern, SSM_REPLAY, L, False) for kern in layer if kern.scan]
    bar = tqdm(todo, desc=f"capture {phase}", unit="kernel", disable=not progress, leave=False)
    templates = {}
    keep = []  # the template modules own the funcs: keep them alive while cloning
    for kern, name, n_layer, write in bar:
        bar.set_postfix_str(name)
        mod = _template(kern, T, tree, ctx, n_layer, fifo_depth if kern.scan else None, write)
        keep.append(mod)
        fn = funcs(mod)[kern.kind]
        with ctx:
            name_loops(fn)
        templates[name] = fn

    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        names = ["embed"] + [k.kind for k in layer] + ([SSM_REPLAY] if replay else []) + ["norm_f", "lm_head"]
        names = [n for n in names if n in templates]
        for name in names:
            fn = templates[name].clone(ir.InsertionPoint(module.body))
            fn.attributes["sym_name"] = ir.StringAttr.get(name)
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


def _const_table(fn: func.FuncOp, name: str, values: np.ndarray) -> ir.Value:
    """A private constant i64 memref.global (inserted before `fn`) and its get_global at
    the insertion point."""
    i64 = ir.IntegerType.get_signless(64)
    gtype = _mlir_type(values.shape, torch.int64)
    with ir.InsertionPoint(fn.operation):
        memref.GlobalOp(name, gtype, sym_visibility="private", constant=True,
                        initial_value=ir.DenseElementsAttr.get(
                            values.astype(np.int64), type=ir.RankedTensorType.get(list(values.shape), i64)))
    return memref.get_global(gtype, name)


def copy_nest(src: ir.Value, dst, lead: ir.Value | None, name: str) -> None:
    """dst[lead, ...] = src[...] (dst[...] without `lead`) as an affine nest whose loops
    are named `name`, `name`_1, ... (a copy the top makes between kernels). `dst` may be
    a list: every element read once, stored to each (a fork)."""
    dsts = dst if isinstance(dst, (list, tuple)) else [dst]
    shape = ir.MemRefType(src.type).shape
    loops, ivs = [], []
    ip = ir.InsertionPoint.current
    for d, n in enumerate(shape):
        with ip:
            loop = affine.AffineForOp(0, n, 1)
        loop.operation.attributes[LOOP_ATTR] = ir.StringAttr.get(name if d == 0 else f"{name}_{d}")
        loops.append(loop)
        ivs.append(loop.induction_variable)
        ip = ir.InsertionPoint(loop.body)
    loops[0].operation.attributes[BAND_ATTR] = ir.StringAttr.get(name)
    with ip:
        v = affine.AffineLoadOp(ir.MemRefType(src.type).element_type, src, ivs,
                                map=ir.AffineMapAttr.get(ir.AffineMap.get_identity(len(ivs)))).result
        idx = ([lead] if lead is not None else []) + ivs
        for d in dsts:
            affine.AffineStoreOp(v, d, idx, map=ir.AffineMapAttr.get(ir.AffineMap.get_identity(len(idx))))
        affine.AffineYieldOp([])
    for loop in loops[:-1]:
        with ir.InsertionPoint(loop.body):
            affine.AffineYieldOp([])


def _build_top(module, cfg, phase, T, layer, outer, replay=()) -> list[TopPort]:
    """The top function: embed, the `layer` loop over the layer kernels, final norm and
    head; activations pass through buffers allocated once, weights and states are
    stacked ports indexed by the loop."""
    embed, norm_f, head = outer
    tree = phase == "verify"
    L = cfg.n_layer
    i64, f32 = torch.int64, torch.float32
    ports: list[TopPort] = [TopPort("tokens", (T,), i64, "input")]
    if tree:
        ports += [TopPort("windows", (T, cfg.d_conv), i64, "input"), TopPort("parents", (T,), i64, "input")]
    by_kind = {k.kind: k for k in layer}
    conv_state = by_kind["conv"].inputs[1].shape
    ssm_state = next(k for k in layer if k.scan).inputs[0].shape
    ports += [TopPort("conv_state", (L, *conv_state), f32, "state", True),
              TopPort("ssm_state", (L, *ssm_state), f32, "state", True)]
    seen: set[str] = set()
    for kern in (embed, *layer, norm_f, head):
        for p in kern.inputs:
            if p.weight and p.name not in seen:
                seen.add(p.name)
                if kern in layer:
                    ports.append(TopPort(p.name, (L, *p.shape), p.dtype, "weight", True, "backbone.layers.{i}." + p.weight))
                else:
                    ports.append(TopPort(p.name, p.shape, p.dtype, "weight", False, p.weight))
    ports.append(TopPort("logits", (T, cfg.vocab_size), f32, "output"))
    produced = {p.name: p for k in layer for p in k.outputs}
    acts = REPLAY_ACTIVATIONS[cfg.arch] if replay else ()
    if tree:
        ports.append(TopPort("conv_in", (L, *by_kind["conv"].inputs[0].shape), f32, "output", True))
        if len(replay) < L:
            ports.append(TopPort("ssm_states", (L, T, *ssm_state), f32, "output", True))
        ports += [TopPort(a, (L, *produced[a].shape), f32, "output", True) for a in acts]
    else:
        ports += [TopPort("conv_state_out", (L, *conv_state), f32, "output", True),
                  TopPort("ssm_state_out", (L, *ssm_state), f32, "output", True)]

    arg_types = [_mlir_type(p.shape, p.dtype) for p in ports]
    fn = func.FuncOp(phase, ir.FunctionType.get(arg_types, []), ip=ir.InsertionPoint(module.body))
    fn.attributes[TOP_ATTR] = ir.UnitAttr.get()
    entry = fn.add_entry_block()
    set_identity(fn.operation, None, [p.name for p in ports], [p.role for p in ports], [p.stacked for p in ports])
    arg = {p.name: v for p, v in zip(ports, entry.arguments)}
    with ir.InsertionPoint(entry):
        if tree:
            windows = arg["windows"]
        else:
            windows = _const_table(fn, f"chain_windows_{T}x{cfg.d_conv}", _chain_windows(T, cfg.d_conv))
        env: dict[str, ir.Value] = {"tokens": arg["tokens"], "windows": windows}
        if tree:
            env["parents"] = arg["parents"]
        # the state inputs and outputs of the conv and SSM are the stacked ports
        bound = {"conv_state": arg["conv_state"], "ssm_state": arg["ssm_state"]}
        if tree:
            if "ssm_states" in arg:
                bound["ssm_state_out"] = arg["ssm_states"]
        else:
            bound["conv_state_out"] = arg["conv_state_out"]
            bound["ssm_state_out"] = arg["ssm_state_out"]

        def buffer(p: K.Port, kern: K.Kernel) -> ir.Value:
            shape = (T, *p.shape[1:]) if kern.scan and p.shape[0] == 1 else p.shape
            return memref.alloc(_mlir_type(shape, p.dtype), [], [])

        # every activation buffer is allocated once, before the layer loop
        for kern in (embed, *layer, norm_f):
            for p in kern.outputs:
                if p.name not in bound and p.name not in env:
                    env[p.name] = buffer(p, kern)
        env["xn_f"] = buffer(norm_f.outputs[0], norm_f)

        def call(kern: K.Kernel, callee: str, li: ir.Value | None = None, over: dict | None = None, write=True):
            """Call `callee` on kern's ports: `over` first, then the weight and state
            ports, then the activation buffers."""
            over = over or {}

            def value(p: K.Port) -> ir.Value:
                if p.name in over:
                    return over[p.name]
                return arg[p.name] if p.weight else bound[p.name] if p.name in bound else env[p.name]

            args = [value(p) for p in kern.inputs] + ([env["parents"]] if kern.scan and tree else [])
            args += [value(p) for p in kern.outputs if write or p.name != "ssm_state_out"]
            func.CallOp([], ir.FlatSymbolRefAttr.get(callee), args + ([li] if li is not None else []))

        mixed = tree and 0 < len(replay) < L
        if mixed:
            mask = _const_table(fn, f"replay_layers_{L}", np.array([int(i in replay) for i in range(L)]))
        resid = env["resid"]
        call(embed, "embed")
        loop = affine.AffineForOp(0, L, 1)
        loop.operation.attributes[LOOP_ATTR] = ir.StringAttr.get("layer")
        loop.operation.attributes[BAND_ATTR] = ir.StringAttr.get("layer")
        with ir.InsertionPoint(loop.body):
            li = loop.induction_variable
            if mixed:
                flag = memref.load(mask, [li])
                is_replay = arith.cmpi(arith.CmpIPredicate.ne, flag, arith.constant(ir.IntegerType.get_signless(64), 0))

            def when_replaying(then, otherwise=None) -> None:
                """`then()` for replaying layers (`otherwise()` for the others): inline
                when every layer replays, else under an scf.if on the layer's mask."""
                if not mixed:
                    then()
                    return
                pick = scf.IfOp(is_replay, [], has_else=otherwise is not None)
                for block, body in ((pick.then_block, then), (pick.else_block if otherwise else None, otherwise)):
                    if block is not None:
                        with ir.InsertionPoint(block):
                            body()
                            scf.yield_([])

            for kern in layer:
                if kern.scan and tree and replay:
                    when_replaying(lambda: call(kern, SSM_REPLAY, li, write=False), lambda: call(kern, kern.kind, li))
                else:
                    call(kern, kern.kind, li)
                if tree and kern.kind == "in_proj":
                    # the conv inputs leave the design: speculative decoding rebuilds the
                    # accepted node's conv state from them
                    copy_nest(env["x"], arg["conv_in"], li, "conv_in")
            for a in acts:  # a replaying layer's SSM inputs leave the design
                when_replaying(lambda a=a: copy_nest(env[a], arg[a], li, f"keep_{a}"))
            copy_nest(env["resid_out"], resid, None, "resid")  # the next layer's input
            affine.AffineYieldOp([])
        call(norm_f, "norm_f", over={"xn": env["xn_f"]})
        call(head, "lm_head", over={"xn": env["xn_f"], "logits": arg["logits"]})
        func.ReturnOp([])
    return ports
