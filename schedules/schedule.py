"""The schedule language: Allo's primitives as checked, transactional MLIR rewrites.

    s = mambaflow.customize(design)          # a Design from flow.capture, or an ir.Module
    loops = s.get_loops("in_proj")
    jo, ji = s.split(loops["S_i_j"]["j"], 8)  # or s.split("in_proj:S_i_j.j", 8)
    s.reorder(ji, "in_proj:S_i_j.i")
    s.pipeline(ji, ii=1)
    s.partition("in_proj:alloc0", "cyclic", dim=2, factor=8)  # an on-chip buffer
    s.save("sched.json");  replay(fresh_design, "sched.json")

Addresses. Loops are `"kernel:band.loop"` (band = the `op_name` of the band's outermost
loop, loop = a `loop_name`, see `flow.naming`); `"kernel:loop"` works when the loop name
is unique in the kernel. Buffers are `"kernel:name"`, where name is a port name of the
kernel (`xn`, `in_proj_w`, `x`, ... from `flow.kernels`; `argN` always works) or a local
buffer `allocN` (the N-th `memref.alloc` of the kernel in program order that has no
`buffer_name`; buffers made by buffer_at / reuse_at are named `<buffer>.buf` /
`<buffer>.reuse`). Handles (`LoopHandle`, `BufferHandle`) carry the same address and
are re-resolved on every use, so they stay valid across rewrites that keep the names.

Every primitive (1) resolves and validates its arguments, (2) works on the live IR only
after validation, inside a transaction that restores the touched functions byte for
byte if anything fails (the failure is raised as `ScheduleError` naming the primitive,
the target and the reason), (3) verifies the touched functions, (4) re-establishes loop
and band names (`flow.naming.name_loops`), and (5) appends a JSON-able entry to
`s.log`. `replay(design, log)` applies a log to a fresh capture and gives byte-identical
IR.

Maintainers: the Python bindings do not track op liveness, so an `ir.Operation` object
whose op was erased (directly or as part of an erased parent) dangles and touching it
crashes the process. Primitives therefore validate on the live IR, then rewrite, and
never use an op object obtained before a rewrite afterwards: handles are names and are
re-resolved, results are computed before the rewrite.

Legality: reorder, fuse (sibling fusion) and compute_at are checked against memory
dependences by `schedules.deps` (a Fourier-Motzkin test written for this project:
MLIR's C++ affine dependence analysis is not reachable from the Python bindings). Fuse
of loops nested in each other is Allo's flattening (`i_j_fused`), which keeps the
execution order and needs no dependence test.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Union

from torch_mlir import ir

from ..dialects import directives as D
from ..errors import ScheduleError
from ..flow.identity import TOP_ATTR, arg_names, kernel_kind
from ..flow.mlir import funcs, str_attr, walk
from ..flow.naming import BAND_ATTR, LOOP_ATTR, loops_of, name_loops
from . import deps as dp
from . import rewrite as rw

BUFFER_NAME = "buffer_name"


# ------------------------------------------------------------------- handles


@dataclass(frozen=True)
class LoopHandle:
    """A loop address `kernel:band.loop`; resolved against the IR at each use."""

    schedule: "Schedule"
    kernel: str
    band: str
    loop: str

    @property
    def path(self) -> str:
        return f"{self.kernel}:{self.band}.{self.loop}"

    @property
    def outer(self) -> "LoopHandle":
        return LoopHandle(self.schedule, self.kernel, self.band, self.loop + ".outer")

    @property
    def inner(self) -> "LoopHandle":
        return LoopHandle(self.schedule, self.kernel, self.band, self.loop + ".inner")

    @property
    def op(self) -> ir.Operation:
        return self.schedule._loop_op(self, "loop")

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"LoopHandle({self.path!r})"


@dataclass(frozen=True)
class BufferHandle:
    """A buffer address `kernel:name`."""

    schedule: "Schedule"
    kernel: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.kernel}:{self.name}"

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"BufferHandle({self.path!r})"


class Split(tuple):
    """(outer, inner) handles of a split; also `.outer` / `.inner`."""

    def __new__(cls, outer: LoopHandle, inner: LoopHandle):
        return super().__new__(cls, (outer, inner))

    @property
    def outer(self) -> LoopHandle:
        return self[0]

    @property
    def inner(self) -> LoopHandle:
        return self[1]


class _Names(dict):
    """A dict that also allows attribute access (`loops.S_i_j.j`)."""

    def __init__(self, what: str, *a, **kw):
        super().__init__(*a, **kw)
        self._what = what

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None

    def __getitem__(self, k):
        try:
            return super().__getitem__(k)
        except KeyError:
            raise ScheduleError(f"{self._what} has no '{k}'; it has: {', '.join(self.keys())}") from None


LoopLike = Union[str, LoopHandle]
BufferLike = Union[str, BufferHandle]


# ------------------------------------------------------------------ schedule


def _primitive(f):
    """Any non-ScheduleError escaping a primitive's validation becomes a ScheduleError
    (validation never touches the IR; rewrites run inside `_transact`)."""
    import functools

    @functools.wraps(f)
    def wrapper(self, *a, **kw):
        try:
            return f(self, *a, **kw)
        except ScheduleError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ScheduleError(f"{f.__name__}: internal error ({type(e).__name__}: {e}); the IR is unchanged. "
                                "Please report this with the schedule log.") from e

    return wrapper


class Schedule:
    """Allo-style primitives over one captured design (or any module of named kernels)."""

    def __init__(self, design):
        if isinstance(design, Schedule):
            raise ScheduleError("Schedule() of a Schedule would log into a second, empty schedule; "
                                "use customize(s), which returns s")
        if isinstance(design, ir.Module):
            self.design, self.module = None, design
        elif hasattr(design, "module"):
            self.design, self.module = design, design.module
        else:
            raise ScheduleError("customize() takes a Design (from mambaflow.flow.capture) or an ir.Module")
        self.log: list[dict[str, Any]] = []
        self._versions: dict[str, int] = {}  # kernel -> edits (keys the dataflow trace cache)
        self._dataflow_cache: dict = {}

    # ------------------------------------------------------------- lookups

    @property
    def top(self) -> str | None:
        for name, fn in funcs(self.module).items():
            if TOP_ATTR in fn.attributes:
                return name
        return None

    def kind(self, kernel: str) -> str | None:
        """The kind of a kernel (`in_proj`, `ssm`, ...: the `mf.kind` capture sets)."""
        return kernel_kind(self._func(kernel, "kind"))

    def kernels(self) -> list[str]:
        return [n for n, f in funcs(self.module).items() if TOP_ATTR not in f.attributes
                and str_attr(f, "sym_visibility") != "private" and f.regions[0].blocks]

    def _func(self, kernel: str, prim: str, rest: str | None = None) -> ir.Operation:
        """The kernel's func; `rest` (what followed 'kernel:' in an address) lets the
        error for an old per-layer address spell out the new one."""
        fn = funcs(self.module).get(kernel)
        if fn is None:
            legacy = _LAYER_CLONE.fullmatch(kernel)
            if legacy and legacy.group(1) in funcs(self.module):
                k = legacy.group(1)
                new = f"{k}:{rest}" if rest is not None else k
                raise ScheduleError(
                    f"{prim}: '{kernel}' names a per-layer clone, but kernels are per kind now (the hardware "
                    f"has one '{k}' that every layer reuses): write '{new}' instead")
            near = [k for k in funcs(self.module) if kernel in k or k in kernel][:5]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ScheduleError(f"{prim}: unknown kernel '{kernel}'{hint}")
        return fn

    def get_loops(self, kernel: str) -> _Names:
        """band -> loop -> LoopHandle for one kernel (Allo's `s.get_loops(func)`)."""
        fn = self._func(kernel, "get_loops")
        out = _Names(f"kernel '{kernel}'")
        for band, loops in loops_of(fn).items():
            out[band] = _Names(f"band '{kernel}:{band}'", {ln: LoopHandle(self, kernel, band, ln) for ln in loops})
        return out

    def loop(self, address: LoopLike) -> LoopHandle:
        return self._loop_handle(address, "loop")

    def _loop_handle(self, x: LoopLike, prim: str) -> LoopHandle:
        if isinstance(x, LoopHandle):
            return x
        if not isinstance(x, str) or ":" not in x:
            raise ScheduleError(f"{prim}: a loop is addressed as 'kernel:band.loop' or by a LoopHandle, got {x!r}")
        kernel, rest = x.split(":", 1)
        fn = self._func(kernel, prim, rest)
        bands = loops_of(fn)
        if "." in rest:
            band, loop = rest.split(".", 1)
            if band in bands:
                return LoopHandle(self, kernel, band, loop)
        hits = [(b, rest) for b, ls in bands.items() if rest in ls]
        if len(hits) == 1:
            return LoopHandle(self, kernel, hits[0][0], rest)
        if len(hits) > 1:
            raise ScheduleError(f"{prim}: loop '{rest}' is ambiguous in '{kernel}' (bands {', '.join(b for b, _ in hits)}); "
                                "write 'kernel:band.loop'")
        raise ScheduleError(f"{prim}: no loop '{rest}' in kernel '{kernel}'; bands: "
                            + "; ".join(f"{b}: {', '.join(ls)}" for b, ls in bands.items()))

    def _loop_op(self, h: LoopHandle, prim: str) -> ir.Operation:
        fn = self._func(h.kernel, prim)
        bands = loops_of(fn)
        if h.band not in bands:
            raise ScheduleError(f"{prim}: no band '{h.band}' in kernel '{h.kernel}'; bands: {', '.join(bands)}")
        loops = bands[h.band]
        if h.loop not in loops:
            raise ScheduleError(f"{prim}: no loop '{h.loop}' in band '{h.kernel}:{h.band}'; loops: {', '.join(loops)}")
        return loops[h.loop]

    def _resolve(self, x: LoopLike, prim: str) -> tuple[LoopHandle, ir.Operation]:
        h = self._loop_handle(x, prim)
        return h, self._loop_op(h, prim)

    # buffers

    def get_buffers(self, kernel: str) -> _Names:
        fn = self._func(kernel, "get_buffers")
        return _Names(f"kernel '{kernel}' buffers", {n: BufferHandle(self, kernel, n) for n in self._buffers(fn, kernel)})

    def _buffers(self, fn: ir.Operation, kernel: str) -> dict[str, D.BufferRef]:
        out: dict[str, D.BufferRef] = {}
        args = fn.regions[0].blocks[0].arguments
        ports = arg_names(fn) or []
        for i, a in enumerate(args):
            if isinstance(a.type, (ir.IndexType, ir.IntegerType, ir.FloatType)):
                continue  # a scalar (the layer index of a layer kernel), not a buffer
            ref = D.BufferRef(fn, arg=i)
            if i < len(ports):
                out.setdefault(ports[i], ref)
            out[f"arg{i}"] = ref
        k = 0
        for op in walk(fn):
            if op.name in ("memref.alloc", "memref.alloca"):
                nm = str_attr(op, BUFFER_NAME)
                if nm is None:
                    nm = f"alloc{k}"
                    k += 1
                out[nm] = D.BufferRef(fn, alloc_op=op)
        return out

    def _buffer(self, x: BufferLike, prim: str) -> tuple[BufferHandle, D.BufferRef]:
        if isinstance(x, BufferHandle):
            h = x
        elif isinstance(x, str) and ":" in x:
            k, n = x.split(":", 1)
            h = BufferHandle(self, k, n)
        else:
            raise ScheduleError(f"{prim}: a buffer is addressed as 'kernel:name' or by a BufferHandle, got {x!r}")
        fn = self._func(h.kernel, prim, h.name)
        bufs = self._buffers(fn, h.kernel)
        if h.name not in bufs:
            raise ScheduleError(f"{prim}: kernel '{h.kernel}' has no buffer '{h.name}'; buffers: {', '.join(bufs)}")
        return h, bufs[h.name]

    # ---------------------------------------------------------- transactions

    def _transact(self, prim: str, target: str, kernels: Iterable[str] | None, entry: dict, work: Callable):
        """Run `work()` on the live IR; restore the touched funcs exactly on any failure."""
        all_funcs = funcs(self.module)
        names = list(all_funcs) if kernels is None else list(dict.fromkeys(kernels))
        with self.module.context, ir.Location.unknown():
            scratch = ir.Module.create()
            saved = {}
            for n in names:
                saved[n] = all_funcs[n].clone(ir.InsertionPoint(scratch.body))
        for n in names:
            self._versions[n] = self._versions.get(n, 0) + 1
        try:
            result = work()
            if prim in _DATAFLOW_PRIMS:
                from ..targets.versal.dataflow import enforce

                enforce(self.module, where=f"{prim} on {target}")
            live = funcs(self.module)
            for n in names:
                if n in live:
                    live[n].verify()
                    with self.module.context:
                        name_loops(live[n])
        except Exception as e:  # noqa: BLE001 - every failure must roll back
            live = funcs(self.module)
            with self.module.context:
                for n in names:
                    if n in live:
                        saved[n].move_before(live[n])
                        live[n].erase()
                    else:
                        self.module.body.append(saved[n])
                for n, f in live.items():  # functions the failed primitive created
                    if n not in all_funcs:
                        f.erase()
            for n in names:  # the restored copies: new op objects, so new keys
                self._versions[n] = self._versions.get(n, 0) + 1
            if isinstance(e, ScheduleError):
                raise
            if isinstance(e, ir.MLIRError):
                diags = "; ".join(str(d.message) for d in e.error_diagnostics)
                raise ScheduleError(f"{prim} on {target}: the rewrite produced invalid IR ({diags}); "
                                    "the IR is unchanged. Please report this with the schedule log.") from None
            raise ScheduleError(f"{prim} on {target}: internal error ({type(e).__name__}: {e}); "
                                "the IR is unchanged. Please report this with the schedule log.") from e
        self.log.append(entry)
        return result

    # ------------------------------------------------------------ primitives

    @_primitive
    def split(self, loop: LoopLike, factor: int) -> Split:
        """Tile `loop` by `factor` into `<loop>.outer` and `<loop>.inner`."""
        h, L = self._resolve(loop, "split")
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise ScheduleError(f"split of {h.path}: factor must be a positive integer, got {factor!r}")
        tc = dp.trip_count(L)
        if tc is not None and factor > tc:
            raise ScheduleError(f"split of {h.path}: factor {factor} exceeds the trip count {tc}")
        if len(L.results):
            raise ScheduleError(f"split of {h.path}: loops with iter_args are not supported")
        for suffix in (".outer", ".inner"):
            if h.loop + suffix in loops_of(self._func(h.kernel, "split"))[h.band]:
                raise ScheduleError(f"split of {h.path}: band already has a loop '{h.loop + suffix}'")
        cb = dp.const_bounds(L)
        divisible = cb is not None and (cb[1] - cb[0]) % (cb[2] * factor) == 0

        def work():
            rw.split(self._loop_op(h, "split"), factor, divisible)

        self._transact("split", h.path, [h.kernel], {"op": "split", "loop": h.path, "factor": factor}, work)
        return Split(h.outer, h.inner)

    @_primitive
    def reorder(self, *loops: LoopLike) -> None:
        """Permute loops of one perfect nest: the first given becomes the outermost."""
        if len(loops) < 2:
            raise ScheduleError("reorder needs at least two loops")
        hs = [self._resolve(x, "reorder") for x in loops]
        paths = [h.path for h, _ in hs]
        target = ", ".join(paths)
        if len({(h.kernel, h.band) for h, _ in hs}) != 1:
            raise ScheduleError(f"reorder of {target}: the loops must belong to one band")
        if len(set(paths)) != len(paths):
            raise ScheduleError(f"reorder of {target}: a loop is named twice")
        ops = [L for _, L in hs]
        depth = {id(L): len(dp._iv_loops(L)) for L in ops}
        by_depth = sorted(ops, key=lambda L: depth[id(L)])
        chain = rw.perfect_chain(by_depth[0], by_depth[-1])
        if chain is None:
            raise ScheduleError(f"reorder of {target}: the loops do not form a perfect nest "
                                "(an outer loop's body holds more than the next loop)")
        if any(L not in chain for L in ops):
            raise ScheduleError(f"reorder of {target}: the loops are not nested in one another")
        pos = sorted(chain.index(L) for L in ops)
        perm = list(range(len(chain)))
        for p, L in zip(pos, ops):
            perm[p] = chain.index(L)
        if perm == list(range(len(chain))):
            self.log.append({"op": "reorder", "loops": paths})
            return
        # bounds: a loop whose bounds use another chain loop's IV must stay inside it
        ivs = [dp.loop_iv(L) for L in chain]
        for newpos, src in enumerate(perm):
            lbm, lbo, ubm, ubo, _ = dp.loop_bounds(chain[src])
            for v in list(lbo) + list(ubo):
                for k, iv in enumerate(ivs):
                    if iv == v and perm.index(k) > newpos:
                        raise ScheduleError(
                            f"reorder of {target}: the bounds of '{_lname(chain[src])}' depend on "
                            f"'{_lname(chain[k])}', which would move inside it")
        bad = dp.permutation_violations(chain, perm)
        if bad:
            s, t = bad[0]
            raise ScheduleError(f"reorder of {target}: would reverse a dependence on "
                                f"{_mem_name(s)} ({_acc_str(s)} -> {_acc_str(t)}); the order is illegal")
        h0 = hs[0][0]

        def work():
            ch = [self._loop_op(LoopHandle(self, h0.kernel, h0.band, _lname(L)), "reorder") for L in chain]
            rw.permute(ch, perm)

        self._transact("reorder", target, [h0.kernel], {"op": "reorder", "loops": paths}, work)

    @_primitive
    def fuse(self, *loops: LoopLike) -> LoopHandle:
        """Allo's fuse: flatten nested loops (i, j) into `i_j_fused`; or, for sibling loops
        (e.g. two bands), fuse their bodies into the first one after a dependence check.
        Two nested loops with ops around the inner one (a register accumulator's set-up
        and drain) flatten too: those ops run under `scf.if` on the first and the last
        inner iteration, so one pipeline covers the whole nest."""
        if len(loops) < 2:
            raise ScheduleError("fuse needs at least two loops")
        hs = [self._resolve(x, "fuse") for x in loops]
        paths = [h.path for h, _ in hs]
        target = ", ".join(paths)
        if len({h.kernel for h, _ in hs}) != 1:
            raise ScheduleError(f"fuse of {target}: the loops must belong to one kernel")
        ops = [L for _, L in hs]
        if all(ops[k].parent == ops[k + 1] for k in range(len(ops) - 1)) or all(
                ops[k + 1].parent == ops[k] for k in range(len(ops) - 1)):
            return self._coalesce(hs, target, paths)
        if all(o.parent == ops[0].parent for o in ops):
            return self._fuse_siblings(hs, target, paths, depth=1, prim="fuse")
        raise ScheduleError(f"fuse of {target}: the loops are neither directly nested nor siblings")

    def _coalesce(self, hs, target, paths) -> LoopHandle:
        ops = [L for _, L in hs]
        if ops[1].parent != ops[0]:  # given innermost first: flatten from the outermost
            hs, ops = hs[::-1], ops[::-1]
        chain = rw.perfect_chain(ops[0], ops[-1])
        guarded = chain is None and len(ops) == 2 and rw.guarded_parts(ops[0], ops[1]) is not None
        if guarded:
            chain = ops
        if chain is None:
            raise ScheduleError(f"fuse of {target}: the loops are not perfectly nested, and the ops around "
                                "the inner loop cannot run under guards (a value they define is used "
                                "outside them, or the inner loop is not a direct child)")
        bounds = [dp.const_bounds(L) for L in chain]
        if any(b is None for b in bounds):
            raise ScheduleError(f"fuse of {target}: only loops with constant bounds can be flattened "
                                "(split inner loops depend on their outer loop)")
        h0 = hs[0][0]
        names = [_lname(L) for L in chain]
        name = "_".join(names) + "_fused"

        def work():
            ch = [self._loop_op(LoopHandle(self, h0.kernel, h0.band, n), "fuse") for n in names]
            if guarded:
                rw.coalesce_guarded(*ch, bounds, name)
            else:
                rw.coalesce(ch, bounds, name)

        self._transact("fuse", target, [h0.kernel], {"op": "fuse", "loops": paths}, work)
        return LoopHandle(self, h0.kernel, h0.band, name)

    def _fuse_siblings(self, hs, target, paths, depth: int, prim: str, entry=None) -> LoopHandle:
        """Fuse sibling nests hs[0], hs[1], ... level by level down to `depth` levels."""
        kernel = hs[0][0].kernel
        first = hs[0]
        for other in hs[1:]:
            self._check_sibling_fusion(first[1], other[1], depth, target, prim)
        entry = entry or {"op": prim, "loops": paths}
        addrs = [(h.band, h.loop) for h, _ in hs]

        def work():
            fn = self._func(kernel, prim)
            a = loops_of(fn)[addrs[0][0]][addrs[0][1]]
            for band, ln in addrs[1:]:
                b = loops_of(fn)[band][ln]
                self._bring_adjacent(a, b, target, prim)
                la, lb = a, b
                for _ in range(depth):
                    na = rw.body_ops(la)
                    nb = rw.body_ops(lb)
                    rw.fuse_siblings(la, lb)
                    if _ == depth - 1:
                        break
                    la = [o for o in na if o.name == "affine.for"][-1]
                    lb = [o for o in nb if o.name == "affine.for"][0]

        self._transact(prim, target, [kernel], entry, work)
        return hs[0][0]

    def _check_sibling_fusion(self, a: ir.Operation, b: ir.Operation, depth: int, target: str, prim: str):
        if a.parent != b.parent:
            raise ScheduleError(f"{prim} of {target}: the loops are not in the same block")
        if not a.is_before_in_block(b):
            raise ScheduleError(f"{prim} of {target}: the first loop must come before the second "
                                "(the producer runs first)")
        la, lb = [a], [b]
        for d in range(depth):
            A, B = la[-1], lb[-1]
            ca, cb = dp.const_bounds(A), dp.const_bounds(B)
            if ca is None or cb is None or ca != cb:
                raise ScheduleError(f"{prim} of {target}: loops '{_lname(A)}' and '{_lname(B)}' have different "
                                    f"or non-constant bounds ({_bstr(A)} vs {_bstr(B)})")
            if d < depth - 1:
                na = [o for o in rw.body_ops(A) if o.name == "affine.for"]
                nb = [o for o in rw.body_ops(B) if o.name == "affine.for"]
                if not na or not nb:
                    raise ScheduleError(f"{prim} of {target}: level {d + 2} does not exist in both nests")
                # the last loop of A's body meets the first loop of B's body
                ba = rw.body_ops(A)
                bb = rw.body_ops(B)
                if ba[-1] != na[-1] or bb[0] != nb[0]:
                    raise ScheduleError(f"{prim} of {target}: at level {d + 1} other operations sit between "
                                        "the loops to fuse")
                la.append(na[-1])
                lb.append(nb[0])
        # the ops between a and b must commute with the one that moves
        between = _between(a, b)
        movable_a = all(not dp.conflict(a, o) for o in between)
        movable_b = all(not dp.conflict(b, o) or _pure_def(o) for o in between)
        if between and not (movable_a or movable_b):
            raise ScheduleError(f"{prim} of {target}: operations between the loops touch the same buffers; "
                                "they cannot be brought together")
        bad = dp.fusion_violations(la, lb)
        if bad:
            s, t = bad[0]
            raise ScheduleError(f"{prim} of {target}: fusing would make {_acc_str(t)} run before {_acc_str(s)} "
                                f"on {_mem_name(s)}, breaking a dependence")

    @staticmethod
    def _bring_adjacent(a: ir.Operation, b: ir.Operation, target: str, prim: str):
        between = _between(a, b)
        if not between:
            return
        if all(not dp.conflict(a, o) for o in between) and all(
                _defined_before(v, a) or _defined_in(v, a) for v in _used_values(a)):
            a.move_before(b)
            return
        for o in between:  # move b (and pure definitions it needs) up next to a
            if _pure_def(o):
                o.move_before(a)
        b.move_after(a)

    @_primitive
    def unroll(self, loop: LoopLike, factor: int = 0, materialize: bool = False) -> None:
        """Annotate `loop` to unroll by `factor` (0 = fully): `#pragma HLS unroll`.

        With `materialize=True` the IR itself is unrolled (upstream `transform.loop.unroll`,
        MLIR's loop unroller, through the transform interpreter), so every target, the CPU
        included, executes the unrolled code; a full unroll removes the loop."""
        h, L = self._resolve(loop, "unroll")
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 0:
            raise ScheduleError(f"unroll of {h.path}: factor must be an integer >= 0 (0 = full), got {factor!r}")
        tc = dp.trip_count(L, bound=True)
        if tc is not None and factor > tc:
            raise ScheduleError(f"unroll of {h.path}: factor {factor} exceeds the trip count {tc}")
        if factor == 0 and tc is None:
            raise ScheduleError(f"unroll of {h.path}: a full unroll needs a constant trip count")
        if not materialize:
            self._transact("unroll", h.path, [h.kernel], {"op": "unroll", "loop": h.path, "factor": factor},
                           lambda: D.set_unroll(self._loop_op(h, "unroll"), factor))
            return
        exact = dp.trip_count(L)
        if exact is None:
            raise ScheduleError(f"unroll of {h.path}: materializing needs a constant trip count")
        if len(L.results):
            raise ScheduleError(f"unroll of {h.path}: loops with iter_args are not supported")
        f = exact if factor == 0 else factor
        if f <= 1:
            self.log.append({"op": "unroll", "loop": h.path, "factor": factor, "materialize": True})
            return

        def work():
            rw.unroll(self.module, self._loop_op(h, "unroll"), f)

        self._transact("unroll", h.path, [h.kernel],
                       {"op": "unroll", "loop": h.path, "factor": factor, "materialize": True}, work)

    @_primitive
    def pipeline(self, loop: LoopLike, ii: int = 1, rewind: bool = False) -> None:
        """Annotate `loop` to be pipelined with initiation interval `ii`."""
        h, L = self._resolve(loop, "pipeline")
        if not isinstance(ii, int) or isinstance(ii, bool) or ii < 1:
            raise ScheduleError(f"pipeline of {h.path}: ii must be an integer >= 1, got {ii!r}")
        for o in walk(L):
            if o.name == "affine.for" and D.get_pipeline(o) is not None:
                raise ScheduleError(f"pipeline of {h.path}: inner loop '{_lname(o)}' is already pipelined; "
                                    "pipelining the outer loop would fully unroll it")
        self._transact("pipeline", h.path, [h.kernel],
                       {"op": "pipeline", "loop": h.path, "ii": ii, "rewind": bool(rewind)},
                       lambda: D.set_pipeline(self._loop_op(h, "pipeline"), ii, rewind))

    @_primitive
    def parallel(self, loop: LoopLike) -> None:
        """Allo's parallel: on hardware a full unroll of a dependence-free loop."""
        h, L = self._resolve(loop, "parallel")
        carried = dp.carried_dependences(L)
        if carried:
            s, t = carried[0]
            raise ScheduleError(f"parallel of {h.path}: iterations depend on each other through "
                                f"{_mem_name(s)} ({_acc_str(s)} -> {_acc_str(t)})")
        self.unroll(h, 0)
        self.log[-1] = {"op": "parallel", "loop": h.path}

    @_primitive
    def partition(self, buffer: BufferLike, kind: str = "complete", dim: int = 0, factor: int = 0) -> None:
        """`#pragma HLS array_partition` on a kernel buffer (argument or local)."""
        kind = getattr(kind, "value", kind)
        kind = str(kind).lower()
        h, ref = self._buffer(buffer, "partition")
        if kind not in D.PARTITION_KINDS:
            raise ScheduleError(f"partition of {h.path}: kind must be one of {', '.join(D.PARTITION_KINDS)}, got '{kind}'")
        shape = ref.type.shape
        if not isinstance(dim, int) or not 0 <= dim <= len(shape):
            raise ScheduleError(f"partition of {h.path}: dim {dim!r} is out of range for shape {list(shape)} "
                                f"(1..{len(shape)}, 0 = all)")
        if kind != "complete":
            if not isinstance(factor, int) or factor < 1:
                raise ScheduleError(f"partition of {h.path}: a {kind} partition needs a factor >= 1, got {factor!r}")
            sizes = shape if dim == 0 else [shape[dim - 1]]
            if any(factor > s for s in sizes):
                raise ScheduleError(f"partition of {h.path}: factor {factor} exceeds the dimension size {min(sizes)}")
        if ref.arg is not None:
            ports = self._top_ports_of(h.kernel, ref.arg)
            if ports:
                from ..targets.versal.dataflow import RULES

                r = RULES["no-partition-on-maxi"]
                raise ScheduleError(
                    f"partition of {h.path}: [{r.key}, {r.message_id}] the argument is bound to the top-level "
                    f"m_axi port(s) {ports} (off chip), which Vitis cannot partition; fix: {r.fix} [{r.source}]")
        self._transact("partition", h.path, [h.kernel],
                       {"op": "partition", "buffer": h.path, "kind": kind, "dim": dim, "factor": factor},
                       lambda: D.set_partition(self._buffer(h, "partition")[1], kind, dim, factor))

    def _top_ports_of(self, kernel: str, arg: int) -> list[str]:
        """The top-level ports (m_axi) that argument `arg` of `kernel` is bound to."""
        from ..flow.effects import bindings

        top = self.top
        if top is None:
            return []
        fs = funcs(self.module)
        names = arg_names(fs[top]) or []
        pos = {arg} if kernel == top else bindings(fs, top).get(kernel, {}).get(arg, set())
        return sorted(names[p] if p < len(names) else f"arg{p}" for p in pos)

    @_primitive
    def bundle(self, port: str, bundle: str) -> None:
        """Put top-level port `port` on the m_axi bundle `bundle` (`#pragma HLS interface
        m_axi bundle=`): a bundle of its own is its own AXI master, e.g. a weight and its
        group scales streaming in parallel. The build, the dataflow checks and the
        estimate all read it; a bundle that two processes of a dataflow region share is
        the checker's error (HLS 200-1013)."""
        top = self.top
        if top is None:
            raise ScheduleError(f"bundle of '{port}': the design has no top function")
        fn = funcs(self.module)[top]
        names = arg_names(fn) or []
        if port not in names:
            near = [n for n in names if port in n or n in port][:5]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ScheduleError(f"bundle of '{port}': no such top-level port{hint}")
        i = names.index(port)
        if not isinstance(fn.regions[0].blocks[0].arguments[i].type, ir.MemRefType):
            raise ScheduleError(f"bundle of '{port}': only array ports are m_axi (this one is a scalar)")
        if not isinstance(bundle, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", bundle):
            raise ScheduleError(f"bundle of '{port}': the bundle name must be a C identifier, got {bundle!r}")
        self._transact("bundle", port, [top], {"op": "bundle", "port": port, "bundle": bundle},
                       lambda: D.set_bundle(funcs(self.module)[top], i, bundle))

    @_primitive
    def storage(self, buffer: BufferLike, impl: str) -> None:
        """Bind a buffer to 'bram', 'uram' or 'lutram'."""
        h, ref = self._buffer(buffer, "storage")
        if impl not in D.STORAGE_KINDS:
            raise ScheduleError(f"storage of {h.path}: impl must be one of {', '.join(D.STORAGE_KINDS)}, got '{impl}'")
        self._transact("storage", h.path, [h.kernel], {"op": "storage", "buffer": h.path, "impl": impl},
                       lambda: D.set_storage(self._buffer(h, "storage")[1], impl))

    @_primitive
    def dataflow(self, target: str | LoopHandle | None = None) -> None:
        """Mark a kernel (or the top function, the default) or a loop as a dataflow region."""
        if target is None:
            target = self.top
            if target is None:
                raise ScheduleError("dataflow: the module has no top function; name a kernel or a loop")
        if isinstance(target, LoopHandle) or (isinstance(target, str) and ":" in target):
            h, L = self._resolve(target, "dataflow")
            self._transact("dataflow", h.path, [h.kernel], {"op": "dataflow", "target": h.path},
                           lambda: D.set_dataflow(self._loop_op(h, "dataflow")))
            return
        fn = self._func(target, "dataflow")
        self._transact("dataflow", target, [target], {"op": "dataflow", "target": target},
                       lambda: D.set_dataflow(funcs(self.module)[target]))

    @_primitive
    def inline(self, kernel: str) -> None:
        """Mark a kernel to be inlined into its caller (`#pragma HLS inline`)."""
        fn = self._func(kernel, "inline")
        if TOP_ATTR in fn.attributes:
            raise ScheduleError(f"inline of {kernel}: the top function cannot be inlined")
        self._transact("inline", kernel, [kernel], {"op": "inline", "kernel": kernel},
                       lambda: D.set_inline(funcs(self.module)[kernel]))

    @_primitive
    def compute_at(self, producer: LoopLike, consumer: LoopLike) -> LoopHandle:
        """Allo's compute_at: fuse the producer's nest into the consumer's, level by level
        down to the consumer loop, the producer's body running first at each iteration."""
        hp, P = self._resolve(producer, "compute_at")
        hc, C = self._resolve(consumer, "compute_at")
        target = f"{hp.path} -> {hc.path}"
        if hp.kernel != hc.kernel:
            raise ScheduleError(f"compute_at of {target}: producer and consumer must be in one kernel "
                                "(use to() between kernels)")
        cchain = dp._iv_loops(C) + [C]
        fn_depth = len(cchain)
        croot = cchain[0]
        # the producer's band root; the consumer loop's depth decides how deep to fuse
        proot = (dp._iv_loops(P) + [P])[0]
        if proot == croot:
            raise ScheduleError(f"compute_at of {target}: producer and consumer are the same band")
        if croot.parent != proot.parent:
            raise ScheduleError(f"compute_at of {target}: producer and consumer bands are not siblings")
        pband = str_attr(proot, BAND_ATTR) or hp.band
        cband = str_attr(croot, BAND_ATTR) or hc.band
        hs = [(LoopHandle(self, hp.kernel, pband, _lname(proot)), proot),
              (LoopHandle(self, hc.kernel, cband, _lname(croot)), croot)]
        cname = _lname(C)  # C is erased by the fusion: take its name first
        self._fuse_siblings(hs, target, None, depth=fn_depth, prim="compute_at",
                            entry={"op": "compute_at", "producer": hp.path, "consumer": hc.path})
        return LoopHandle(self, hp.kernel, pband, cname)

    @_primitive
    def vectorize(self, target: str | LoopHandle) -> int:
        """CPU: make a kernel's (or one loop's) arithmetic vectorizable by LLVM's loop
        vectorizer. The llvm target has no vector math library, so each f32 `math.exp`
        and `math.log1p` becomes a libm call that blocks vectorization; they are expanded
        into inline arith ops (`schedules.cpu`, within 2 ulp of libm). Returns how many
        ops were expanded. Meant for the CPU build; an HLS build gets correct, slower code."""
        from .cpu import EXPANSIONS

        if isinstance(target, LoopHandle) or (isinstance(target, str) and ":" in target):
            h, L = self._resolve(target, "vectorize")
            kernel, path = h.kernel, h.path
            root = lambda: self._loop_op(h, "vectorize")  # noqa: E731
        else:
            self._func(target, "vectorize")
            kernel, path = target, target
            root = lambda: funcs(self.module)[target]  # noqa: E731

        def todo():
            return [o for o in walk(root()) if o.name in EXPANSIONS and str(o.operands[0].type) == "f32"]

        n = len(todo())
        if not n:
            raise ScheduleError(f"vectorize of {path}: nothing to expand (no f32 math.exp or math.log1p)")

        def work():
            with self.module.context:
                for o in todo():
                    EXPANSIONS[o.name](o)

        self._transact("vectorize", path, [kernel], {"op": "vectorize", "target": path}, work)
        return n

    @_primitive
    def buffer_at(self, buffer: BufferLike, loop: LoopLike) -> BufferHandle:
        """Allo's buffer_at: a local copy of the part of `buffer` one iteration of `loop`
        uses (copied in at the start of each iteration, back at the end if written)."""
        return self._local_buffer("buffer_at", buffer, loop, ".buf")

    @_primitive
    def reuse_at(self, buffer: BufferLike, loop: LoopLike) -> BufferHandle:
        """Allo's reuse_at: a sliding-window buffer for a read-only stencil access along
        `loop` (each element is loaded from `buffer` once)."""
        return self._local_buffer("reuse_at", buffer, loop, ".reuse")

    def _local_buffer(self, prim, buffer, loop, suffix) -> BufferHandle:
        from . import buffers as B

        hb, ref = self._buffer(buffer, prim)
        hl, L = self._resolve(loop, prim)
        target = f"{hb.path} at {hl.path}"
        if hb.kernel != hl.kernel:
            raise ScheduleError(f"{prim} of {target}: the buffer and the loop are in different kernels")
        taken = self._buffers(self._func(hb.kernel, prim), hb.kernel)
        name, n = hb.name + suffix, 1
        while name in taken:  # a second local copy of one buffer (another loop's tile)
            n += 1
            name = f"{hb.name}{suffix}{n}"
        why = B.precheck(prim, ref.value, L)
        if why:
            raise ScheduleError(f"{prim} of {target}: {why}")

        def work():
            fn = self._func(hb.kernel, prim)
            r = self._buffer(hb, prim)[1]
            try:
                B.check_and_apply(prim, fn, r.value, self._loop_op(hl, prim), name)
            except ScheduleError as e:
                raise ScheduleError(f"{prim} of {target}: {e}") from None

        self._transact(prim, target, [hb.kernel], {"op": prim, "buffer": hb.path, "loop": hl.path}, work)
        return BufferHandle(self, hb.kernel, name)

    @_primitive
    def to(self, buffer: BufferLike, dst: str, depth: int = 2, adapt: bool = True) -> dict:
        """Stream `buffer` (an output argument of its kernel, `"kernel:port"`) to kernel `dst`
        through a FIFO of `depth` elements; marks the top function dataflow. See
        `schedules.streams`. Returns what was built (adapters, FIFO peak occupancy)."""
        from .streams import apply_to

        return apply_to(self, buffer, dst, depth, adapt)

    @_primitive
    def outline(self, loop: LoopLike, name: str = "layer", keep: Iterable[str] = ()) -> str:
        """Allo's outline: the body of `loop` becomes function `name`, called from the
        loop; the nests named in `keep` (at the start or end of the body) stay. Outlining
        the top's `layer` loop makes each layer a function Vitis can run as a dataflow
        region (see `schedules.regions`). Returns the new function's name."""
        from . import regions as RG

        h, L = self._resolve(loop, "outline")
        keep = list(keep)
        if not isinstance(name, str) or not name.isidentifier():
            raise ScheduleError(f"outline of {h.path}: the function name must be an identifier, got {name!r}")
        RG.plan_outline(self.module, L, name, keep)
        entry = {"op": "outline", "loop": h.path, "name": name}
        if keep:
            entry["keep"] = keep

        def work():
            _, L2 = self._resolve(h, "outline")
            RG.apply_outline(self.module, self._func(h.kernel, "outline"), L2, name, keep)

        self._transact("outline", h.path, [h.kernel], entry, work)
        return name

    @_primitive
    def fork(self, buffer: BufferLike) -> str:
        """Give a buffer read by several processes of a region (`"layer:embed_resid"`) a
        fork process that reads it once and writes one copy per reader, so each buffer
        has one writer and one reader (Vitis HLS 200-779). Returns the fork's name."""
        from ..flow.effects import Effects
        from . import regions as RG

        h, ref = self._buffer(buffer, "fork")
        fn = self._func(h.kernel, "fork")
        try:
            RG.plan_fork(fn, ref.value, Effects(funcs(self.module), streams=True))
        except ScheduleError as e:
            raise ScheduleError(f"fork of {h.path}: {e}") from None
        made = []

        def work():
            f = RG.apply_fork(self.module, self._func(h.kernel, "fork"), self._buffer(h, "fork")[1].value,
                              h.name.replace(".", "_"))
            made.append(str_attr(f, "sym_name"))

        self._transact("fork", h.path, [h.kernel], {"op": "fork", "buffer": h.path}, work)
        return made[0]

    @_primitive
    def compose(self, other: "Schedule", id: str | None = None) -> None:
        """Replay another schedule's log here. With `id`, kernel names in that log are
        mapped to this design's instance: kernel `x` -> `<id>_x`."""
        entries = other.log if isinstance(other, Schedule) else list(other)
        if id is not None:
            entries = [_rename_entry(e, id) for e in entries]
        for e in entries:
            self.apply(e)

    # --------------------------------------------------------------- log

    def apply(self, entry: dict) -> Any:
        """Apply one log entry (as produced by a primitive)."""
        e = dict(entry)
        op = e.pop("op", None)
        if op not in _REPLAY:
            raise ScheduleError(f"replay: unknown primitive {op!r} in entry {entry!r}")
        return _REPLAY[op](self, e)

    def to_json(self) -> str:
        return json.dumps({"format": "mambaflow-schedule/1", "log": self.log}, indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    def __str__(self) -> str:
        lines = []
        for e in self.log:
            args = ", ".join(f"{k}={v!r}" for k, v in e.items() if k != "op")
            lines.append(f"{e['op']}({args})")
        return "\n".join(lines)


# ----------------------------------------------------------------- helpers


def _lname(op: ir.Operation) -> str:
    return str_attr(op, LOOP_ATTR) or "?"


def _bstr(op: ir.Operation) -> str:
    cb = dp.const_bounds(op)
    if cb is None:
        return "non-constant"
    lb, ub, st = cb
    return f"{lb}..{ub}" + (f" step {st}" if st != 1 else "")


def _mem_name(a: dp.Access) -> str:
    if a.memref is None:
        return "an op with unknown memory effects"
    v = a.memref
    owner = v.owner
    if isinstance(owner, ir.Block):
        return f"argument {v.arg_number}" if hasattr(v, "arg_number") else "an argument"
    op = owner.operation if hasattr(owner, "operation") else owner
    return str_attr(op, BUFFER_NAME) or "a local buffer"


def _acc_str(a: dp.Access) -> str:
    kind = "store" if a.write else "load"
    where = ".".join(_lname(L) for L in a.loops) or "top level"
    return f"{a.op.name} ({kind} in {where})"


def _between(a: ir.Operation, b: ir.Operation) -> list[ir.Operation]:
    out, started = [], False
    for o in _block_ops(a):
        if o == a:
            started = True
            continue
        if o == b:
            break
        if started:
            out.append(o)
    return out


def _block_ops(a: ir.Operation) -> list[ir.Operation]:
    blk = a.block
    return [o.operation for o in blk.operations]


def _pure_def(o: ir.Operation) -> bool:
    return o.name in ("memref.alloc", "memref.alloca", "arith.constant", "memref.get_global")


def _used_values(op: ir.Operation) -> list[ir.Value]:
    vals = list(op.operands)
    for o in walk(op):
        vals += list(o.operands)
    return vals


def _defined_in(v: ir.Value, op: ir.Operation) -> bool:
    owner = v.owner
    o = owner.owner if isinstance(owner, ir.Block) else (owner.operation if hasattr(owner, "operation") else owner)
    while o is not None:
        if o == op:
            return True
        o = o.parent
    return False


def _defined_before(v: ir.Value, op: ir.Operation) -> bool:
    owner = v.owner
    if isinstance(owner, ir.Block):
        return True  # block arguments dominate the block
    d = owner.operation if hasattr(owner, "operation") else owner
    if d.block == op.block:
        return d.is_before_in_block(op)
    return True


def _rename(addr: str, id: str) -> str:
    return f"{id}_{addr}"


def _rename_entry(e: dict, id: str) -> dict:
    out = dict(e)
    for key in ("loop", "buffer", "producer", "consumer", "kernel", "target"):
        if key in out and isinstance(out[key], str):
            out[key] = _rename(out[key], id)
    for key in ("loops",):
        if key in out:
            out[key] = [_rename(x, id) for x in out[key]]
    if "dst" in out:
        out["dst"] = _rename(out["dst"], id)
    return out


#: an address written for the per-layer clones of earlier designs (`layer3_in_proj`),
#: recognized only to say what to write instead
_LAYER_CLONE = re.compile(r"layer\d+_(\w+)")


#: primitives after which the dataflow rules are checked (targets.versal.dataflow)
_DATAFLOW_PRIMS = frozenset({"dataflow", "to", "outline", "fork"})

_REPLAY: dict[str, Callable[[Schedule, dict], Any]] = {
    "split": lambda s, e: s.split(e["loop"], e["factor"]),
    "reorder": lambda s, e: s.reorder(*e["loops"]),
    "fuse": lambda s, e: s.fuse(*e["loops"]),
    "unroll": lambda s, e: s.unroll(e["loop"], e["factor"], e.get("materialize", False)),
    "pipeline": lambda s, e: s.pipeline(e["loop"], e["ii"], e.get("rewind", False)),
    "parallel": lambda s, e: s.parallel(e["loop"]),
    "partition": lambda s, e: s.partition(e["buffer"], e["kind"], e["dim"], e["factor"]),
    "storage": lambda s, e: s.storage(e["buffer"], e["impl"]),
    "bundle": lambda s, e: s.bundle(e["port"], e["bundle"]),
    "dataflow": lambda s, e: s.dataflow(e["target"]),
    "inline": lambda s, e: s.inline(e["kernel"]),
    "compute_at": lambda s, e: s.compute_at(e["producer"], e["consumer"]),
    "vectorize": lambda s, e: s.vectorize(e["target"]),
    "buffer_at": lambda s, e: s.buffer_at(e["buffer"], e["loop"]),
    "reuse_at": lambda s, e: s.reuse_at(e["buffer"], e["loop"]),
    "to": lambda s, e: s.to(e["buffer"], e["dst"], e["depth"], e.get("adapt", True)),
    "outline": lambda s, e: s.outline(e["loop"], e["name"], e.get("keep", ())),
    "fork": lambda s, e: s.fork(e["buffer"]),
}


def register_primitive(name: str, replay: Callable[[Schedule, dict], Any]) -> None:
    """Make a primitive (defined in another module) replayable from a log."""
    _REPLAY[name] = replay


def customize(design) -> Schedule:
    """Start a schedule on a captured Design (or an ir.Module of named kernels). Given a
    Schedule, returns it: a recipe called on one schedules, and logs, into it."""
    return design if isinstance(design, Schedule) else Schedule(design)


def load_log(log) -> list[dict]:
    if isinstance(log, Schedule):
        return list(log.log)
    if isinstance(log, (str, Path)):
        p = Path(log)
        text = p.read_text() if (isinstance(log, Path) or (len(str(log)) < 4096 and p.exists())) else str(log)
        data = json.loads(text)
    else:
        data = log
    if isinstance(data, dict):
        if data.get("format") != "mambaflow-schedule/1":
            raise ScheduleError(f"replay: not a mambaflow schedule (format {data.get('format')!r})")
        data = data["log"]
    if not isinstance(data, list):
        raise ScheduleError("replay: a schedule log is a list of entries")
    return data


def replay(design, log) -> Schedule:
    """Apply a saved schedule (path, JSON text, list of entries or a Schedule) to `design`."""
    s = Schedule(design)
    for e in load_log(log):
        s.apply(e)
    return s
