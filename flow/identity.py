"""Kernel identity as IR attributes, and the layer engine's stacked ports.

Capture sets, on every kernel `func.func`:
- `mf.kind`: the kernel kind (`in_proj`, `ssm`, ...); the top carries `mf.top`;
- per argument (`arg_attrs`): `mf.name` (the port name of `flow.kernels`), `mf.role`
  (`activation`, `weight`, `state`, `parents` or `layer`) and, on ports stacked by layer,
  `mf.stacked`.

Everything downstream (schedules, recipes, the HLS emitter, resources) reads identity
from here, never from symbol names.

A layer kernel is captured once for one layer and then made layer-generic by
`stack_by_layer`: its weight and state arguments become `memref<L x ...>` and it takes
the layer index as a trailing `index` argument; every access of the old argument reads
the layer's slice (a subview folded into the accesses by the flow's view folding).
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import memref

from .mlir import dense_row_type, funcs, str_attr

KIND_ATTR = "mf.kind"
TOP_ATTR = "mf.top"
NAME_ATTR = "mf.name"
ROLE_ATTR = "mf.role"
STACKED_ATTR = "mf.stacked"
LAYER_ARG = "layer"  # the name of a layer kernel's layer-index argument


def kernel_kind(fn: ir.Operation) -> str | None:
    """The kind of a kernel func (None for the top and for helpers)."""
    return str_attr(fn, KIND_ATTR)


def _arg_dicts(fn: ir.Operation) -> list[dict]:
    n = len(fn.regions[0].blocks[0].arguments)
    if "arg_attrs" not in fn.attributes:
        return [{} for _ in range(n)]
    out = []
    for d in ir.ArrayAttr(fn.attributes["arg_attrs"]):
        d = ir.DictAttr(d)
        out.append({d[i].name: d[i].attr for i in range(len(d))})
    return out


def arg_names(fn: ir.Operation) -> list[str] | None:
    """The `mf.name` of every argument, or None when capture did not name them."""
    dicts = _arg_dicts(fn)
    if not dicts or any(NAME_ATTR not in d for d in dicts):
        return None
    return [ir.StringAttr(d[NAME_ATTR]).value for d in dicts]


def stacked_args(fn: ir.Operation) -> list[bool]:
    return [STACKED_ATTR in d for d in _arg_dicts(fn)]


def arg_roles(fn: ir.Operation) -> list[str | None]:
    return [ir.StringAttr(d[ROLE_ATTR]).value if ROLE_ATTR in d else None for d in _arg_dicts(fn)]


def buffer_label(v: ir.Value, effects) -> str | None:
    """A readable name for a buffer passed between kernels: `<kernel>_<port>` of the
    first call that writes it (its producer), else of the first call that takes it;
    `effects` is a `flow.effects.Effects` of the module."""
    first = None
    for use in v.uses:
        owner = use.owner.operation if hasattr(use.owner, "operation") else use.owner
        if owner.name != "func.call":
            continue
        callee = ir.FlatSymbolRefAttr(owner.attributes["callee"]).value
        fn = effects.funcs.get(callee)
        names = arg_names(fn) if fn is not None else None
        idx = use.operand_number
        cand = f"{callee}_{names[idx] if names and idx < len(names) else f'arg{idx}'}"
        if idx in effects.written.get(callee, set()):
            return cand
        first = first or cand
    return first


def set_identity(fn: ir.Operation, kind: str | None, names: list[str], roles: list[str],
                 stacked: list[bool] | None = None) -> None:
    """Record a kernel's kind and its arguments' names, roles and stacking."""
    if kind is not None:
        fn.attributes[KIND_ATTR] = ir.StringAttr.get(kind)
    stacked = stacked or [False] * len(names)
    dicts = []
    for n, r, s in zip(names, roles, stacked):
        d = {NAME_ATTR: ir.StringAttr.get(n), ROLE_ATTR: ir.StringAttr.get(r)}
        if s:
            d[STACKED_ATTR] = ir.UnitAttr.get()
        dicts.append(ir.DictAttr.get(d))
    fn.attributes["arg_attrs"] = ir.ArrayAttr.get(dicts)


def stack_by_layer(fn: ir.Operation, positions: list[int], n_layer: int) -> None:
    """Make a one-layer kernel layer-generic (see the module doc).

    The arguments at `positions` become stacked `memref<n_layer x ...>`; a trailing
    `index` argument selects the layer. Every old use reads a rank-reduced subview at
    the layer index, which the flow's view folding then folds into the accesses
    (`w[i, j]` becomes `w[layer, i, j]`)."""
    block = fn.regions[0].blocks[0]
    with fn.context, ir.Location.unknown():
        layer = block.add_argument(ir.IndexType.get(), ir.Location.unknown())
        first = block.operations[0]
        for k in positions:
            arg = block.arguments[k]
            one = ir.MemRefType(arg.type)
            arg.set_type(ir.MemRefType.get([n_layer, *one.shape], one.element_type))
            with ir.InsertionPoint(first):
                rank = one.rank + 1
                view = memref.subview(arg, [layer] + [0] * one.rank, [1, *one.shape], [1] * rank,
                                      result_type=dense_row_type(one))
            arg.replace_all_uses_except(view, view.owner.operation)
        ftype = ir.FunctionType(ir.TypeAttr(fn.attributes["function_type"]).value)
        fn.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([a.type for a in block.arguments], list(ftype.results)))
