"""The token loop around a one-token SSM step: the flow's own scan construct.

FX would unroll a Python loop over tokens, so the SSM kernel is captured as the update
of one token and the loop is built here, in MLIR: an `affine.for` named `t` that calls
the step on row views of the per-token buffers. The step is then inlined and its views
folded into plain loads, so the kernel is one loop nest like any other.

Two shapes of scan:
- chain (decode, prefill): one state, updated in place token after token;
- tree (verify): node t reads the state of `parents[t]` (the committed state for -1) and
  writes its own slot of a (T, ...) state buffer, nodes in topological order.

The tree scan can also keep its live states in a FIFO tree buffer (`fifo_depth` S): a
ring of S state slots named `state_fifo`, node t written to slot t mod S and its parent
read from slot parents[t] mod S. In breadth-first order a parent is never far behind its
children, so S is bounded by the tree's width, not its size: the buffer is valid for any
tree with t - parents[t] < S for every node (see `runtime.trees.fifo_depth`). Writing
every node's state out (`write_states`) is then a separate stream to the (T, ...)
output, which a replaying layer leaves out altogether.
"""

from __future__ import annotations

from torch_mlir import ir
from torch_mlir.dialects import affine, arith, func, memref, scf

from .mlir import dense_row_type
from .naming import LOOP_ATTR


def _dynamic(t: ir.MemRefType) -> ir.MemRefType:
    """The fully dynamic strided form of a memref type (what the step accepts)."""
    dyn = ir.ShapedType.get_dynamic_stride_or_offset()
    layout = ir.StridedLayoutAttr.get(dyn, [dyn] * t.rank)
    return ir.MemRefType.get(t.shape, t.element_type, layout)


def _cast(value: ir.Value, to: ir.MemRefType) -> ir.Value:
    return memref.cast(to, value) if value.type != to else value


def _row(buf: ir.Value, t: ir.Value, row_shape: list[int]) -> ir.Value:
    """buf[t] viewed with the step's row shape (1, X) or (X...)."""
    src = ir.MemRefType(buf.type)
    rank = src.rank
    dyn = ir.ShapedType.get_dynamic_stride_or_offset()
    strides = src.get_strides_and_offset()[0]
    sizes = [1] + list(src.shape[1:])
    reduced = len(row_shape) == rank - 1  # (T, E, N) -> (E, N)
    res_shape = list(src.shape[1:]) if reduced else sizes
    res_strides = strides[1:] if reduced else strides
    res = ir.MemRefType.get(res_shape, src.element_type, ir.StridedLayoutAttr.get(dyn, res_strides))
    return memref.subview(buf, [t] + [0] * (rank - 1), sizes, [1] * rank, result_type=res)


def build_scan(
    module: ir.Module,
    step: ir.Operation,
    name: str,
    per_token_in: list[bool],
    T: int,
    tree: bool,
    fifo_depth: int | None = None,
    write_states: bool = True,
) -> ir.Operation:
    """Build `func @name` looping `step` over T tokens; returns the new func op.

    `step` takes (state, inputs..., per-token outputs..., state_out), all with dynamic
    layouts; `per_token_in[k]` says whether input k (after the state) is a (1, X) row of
    a (T, X) buffer. The built function takes (state, inputs..., [parents],
    outputs..., state_out) with identity layouts; state_out is (T, ...) for a tree.
    A tree scan with `fifo_depth` keeps its live states in a ring of that many slots;
    without `write_states` it then has no state_out argument at all.
    """
    fifo = tree and fifo_depth is not None
    if not fifo:
        write_states = True
    ftype = ir.FunctionType(ir.TypeAttr(step.attributes["function_type"]).value)
    ins = [ir.MemRefType(t) for t in ftype.inputs]
    n_in = len(per_token_in) + 1
    state_t, arg_ts, out_ts = ins[0], ins[1:n_in], ins[n_in:-1]
    plain = lambda t, lead=None: ir.MemRefType.get(  # noqa: E731
        ([lead] if lead else []) + list(t.shape[1:] if lead else t.shape), t.element_type
    )
    sig = [plain(state_t)]
    sig += [plain(t, T) if tok else plain(t) for t, tok in zip(arg_ts, per_token_in)]
    if tree:
        sig.append(ir.MemRefType.get([T], ir.IntegerType.get_signless(64)))
    sig += [plain(t, T) for t in out_ts]
    if write_states:
        sig.append(ir.MemRefType.get([T] + list(state_t.shape), state_t.element_type) if tree else plain(state_t))

    with ir.InsertionPoint(module.body):
        fn = func.FuncOp(name, ir.FunctionType.get(sig, []))
    entry = fn.add_entry_block()
    a = list(entry.arguments)
    h0, args = a[0], a[1:n_in]
    parents = a[n_in] if tree else None
    outs = a[n_in + tree : -1] if write_states else a[n_in + tree :]
    state_out = a[-1] if write_states else None
    with ir.InsertionPoint(entry), ir.Location.unknown():
        if not tree:
            memref.copy(h0, state_out)
            tmp = memref.alloc(plain(state_t), [], [])
        ring = state_out
        if fifo:
            alloc = memref.alloc(ir.MemRefType.get([fifo_depth] + list(state_t.shape), state_t.element_type), [], [])
            alloc.owner.attributes["buffer_name"] = ir.StringAttr.get("state_fifo")
            ring = alloc
        loop = affine.AffineForOp(0, T, 1)
        loop.operation.attributes[LOOP_ATTR] = ir.StringAttr.get("t")
        with ir.InsertionPoint(loop.body):
            t = loop.induction_variable
            call_args = []
            if tree:
                p64 = memref.load(parents, [t])
                p = arith.index_cast(ir.IndexType.get(), p64)
                zero = arith.constant(ir.IntegerType.get_signless(64), 0)
                is_root = arith.cmpi(arith.CmpIPredicate.slt, p64, zero)
                # both candidates are dense rows: keep the static strides in the join type
                # (only the offset varies), so the step's loads stay unit-stride vectors
                dense = dense_row_type(state_t)
                pick = scf.IfOp(is_root, [dense], has_else=True)
                with ir.InsertionPoint(pick.then_block):
                    scf.yield_([_cast(h0, dense)])
                with ir.InsertionPoint(pick.else_block):
                    if fifo:  # the parent's slot of the ring
                        p = arith.remsi(p, arith.constant(ir.IndexType.get(), fifo_depth))
                    scf.yield_([_cast(_row(ring, p, list(state_t.shape)), dense)])
                call_args.append(_cast(pick.result, state_t))
            else:
                call_args.append(_cast(state_out, state_t))
            for buf, want, tok in zip(args, arg_ts, per_token_in):
                call_args.append(_cast(_row(buf, t, list(want.shape)) if tok else buf, want))
            for buf, want in zip(outs, out_ts):
                call_args.append(_cast(_row(buf, t, list(want.shape)), want))
            if fifo:
                slot_map = ir.AffineMap.get(1, 0, [ir.AffineDimExpr.get(0) % fifo_depth])
                slot = affine.AffineApplyOp(slot_map, [t]).result
                call_args.append(_cast(_row(ring, slot, list(state_t.shape)), state_t))
            elif tree:
                call_args.append(_cast(_row(state_out, t, list(state_t.shape)), state_t))
            else:
                call_args.append(_cast(tmp, state_t))
            yield_op = affine.AffineYieldOp([])
            _inline(step, call_args, yield_op.operation)
        with ir.InsertionPoint(loop.body.operations[len(loop.body.operations) - 1]):
            if not tree:
                memref.copy(tmp, state_out)
            elif fifo and write_states:  # stream the node's state out of the ring
                shape = list(state_t.shape)
                memref.copy(_row(ring, slot, shape), _row(state_out, t, shape))
        func.ReturnOp([])
    step.erase()
    return fn.operation


def _inline(step: ir.Operation, args: list[ir.Value], before: ir.Operation) -> None:
    """Move the body of `step` before `before`, its arguments replaced by `args`.

    MLIR's inliner refuses to inline into an affine.for body, and the step is used once,
    so moving its ops is all inlining takes here.
    """
    body = step.regions[0].blocks[0]
    for formal, actual in zip(body.arguments, args):
        formal.replace_all_uses_with(actual)
    for op in list(body.operations):
        op = op.operation
        if op.name == "func.return":
            break
        op.move_before(before)
