"""Schedule recipes: parameterized schedules for any captured Mamba1/Mamba2 design.

Every recipe is written with the public primitives only, so its log replays on a fresh
capture and every step is checked. Each `*_schedule(x, ...)` takes a Design or a
Schedule (then it schedules into that Schedule and its log) and returns the Schedule;
the plain names return the Design, scheduled (LLVMBackend's `schedule=` contract).
`schedules.registry` names them for `mambaflow build --schedule NAME`.

- `cpu`: the llvm backend. Linear layers: rows unrolled-and-jammed by `rows` (split,
  reorder, materialized unroll) with register accumulators (buffer_at), so several
  weight rows stream per pass; other reductions get register accumulators too; the
  SSM state update is fused into the y = h.C reduction (compute_at); inside the token
  loop of a scan (prefill, verify) like nests fuse (`fuse_nests`: the state update and
  the copy of each node's state out become one pass); `vectorize` expands exp so LLVM
  vectorizes the SSM, conv and softplus loops.
- `linear_parallel`: in_proj / x_proj (+dt_proj) / out_proj / lm_head as MAC arrays:
  the reduction loop split by `tile`, the tile unrolled, the weight partitioned
  cyclically along the reduction dim by `tile`, the row loop pipelined at `ii`.
- `ssm_serial`: the conv and the SSM update pipelined in series (state loop pipelined
  at II `ii`, its inner state dimension unrolled).
- `layer_pipeline`: every layer's kernels become dataflow stages connected by
  streams where the dataflow is single-producer/single-consumer (in_proj -> conv,
  in_proj -> ssm (z), ssm -> out_proj, x_proj -> ssm (B, C, delta) when legal), with
  FIFO depths from `depth` (and the full width where the producer's write order
  demands it; the Kahn check proves each choice).
- `accelerator`: linear_parallel + ssm_serial + layer_pipeline, the LightMamba /
  SpecMamba structure (linear layers parallel, SSM serial, layers as a dataflow
  pipeline).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch_mlir import ir

from ..errors import ScheduleError
from ..flow.identity import arg_names, stacked_args
from ..flow.mlir import funcs, str_attr, walk
from . import deps as dp
from . import rewrite as rw
from .cpu import EXPANSIONS
from .schedule import Schedule, customize

LINEAR_KINDS = ("in_proj", "x_proj", "out_proj", "lm_head")


def _path(s: Schedule, kernel: str, loop_op: ir.Operation) -> str:
    """The 'kernel:band.loop' address of an affine.for op."""
    outer = (dp._iv_loops(loop_op) + [loop_op])[0]
    return f"{kernel}:{str_attr(outer, 'op_name')}.{str_attr(loop_op, 'loop_name')}"


def _buffer_name(s: Schedule, kernel: str, value: ir.Value) -> str | None:
    fn = funcs(s.module)[kernel]
    for name, ref in s._buffers(fn, kernel).items():
        if ref.value == value and not name.startswith("arg"):
            return name
    for name, ref in s._buffers(fn, kernel).items():
        if ref.value == value:
            return name
    return None


def accumulators(s: Schedule, kernel: str) -> list[tuple[str, str]]:
    """(buffer, loop) pairs where `loop`'s body reduces into one element of `buffer`
    across an inner loop: the candidates for a register accumulator (buffer_at)."""
    fn = funcs(s.module)[kernel]
    out = []
    seen = set()
    for L in [o for o in walk(fn) if o.name == "affine.for"]:
        P = L.parent
        if P is None or P.name != "affine.for":
            continue
        iv = dp.loop_iv(L)
        body = [o.operation for o in L.regions[0].blocks[0].operations]
        for st in body:
            if st.name != "affine.store":
                continue
            idx = list(st.operands)[2:]
            if any(v == iv for v in idx):
                continue
            mem = st.operands[1]
            same = [o for o in body if o.name == "affine.load" and o.operands[0] == mem
                    and str(o.attributes["map"]) == str(st.attributes["map"])
                    and all(a == b for a, b in zip(list(o.operands)[1:], idx))]
            if not same:
                continue
            name = _buffer_name(s, kernel, mem)
            key = (name, _path(s, kernel, P))
            if name and key not in seen:
                seen.add(key)
                out.append(key)
    return out


def _row_loop(s: Schedule, kernel: str):
    """(band, row loop, reduction loop) of a kernel's matvec band: a 2-deep perfect
    nest whose inner loop accumulates into an element indexed by the outer loop."""
    for buf, loop in accumulators(s, kernel):
        band, ln = loop.split(":", 1)[1].split(".", 1)
        loops = s.get_loops(kernel)[band]
        names = list(loops)
        if names[0] == ln and len(names) == 2:
            return band, ln, names[1], buf
    return None


def _shape(s: Schedule, kernel: str, band: str):
    """Constant (lb, ub, step) of each loop down the band's first-child chain."""
    root = next(iter(s.get_loops(kernel)[band].values())).op
    out, L = [], root
    while L is not None:
        cb = dp.const_bounds(L)
        if cb is None:
            return None
        out.append(cb)
        kids = [o.operation for o in L.regions[0].blocks[0].operations if o.operation.name == "affine.for"]
        L = kids[0] if len(kids) == 1 else None
    return tuple(out)


def _loops_in(loop: ir.Operation) -> list[ir.Operation]:
    return [o for o in rw.body_ops(loop) if o.name == "affine.for"]


def _depth(loop: ir.Operation) -> int:
    return 1 + max((_depth(c) for c in _loops_in(loop)), default=0)


def _reduces(loop: ir.Operation) -> bool:
    """Whether an innermost loop under `loop` accumulates (stores to an element that does
    not move with it)."""
    inner = _loops_in(loop)
    if inner:
        return any(_reduces(c) for c in inner)
    iv = dp.loop_iv(loop)
    return any(o.name == "affine.store" and not any(v == iv for v in list(o.operands)[2:])
               for o in rw.body_ops(loop))


def _fuse_one_pair(s: Schedule, kernel: str, band: str, nests: list[ir.Operation]) -> bool:
    """Fuse the first pair of `nests` that is alike and legal to fuse; False if none is."""
    for ai, a in enumerate(nests):
        for b in nests[ai + 1:]:
            if dp.const_bounds(a) != dp.const_bounds(b) or _depth(a) != _depth(b) or _reduces(a) != _reduces(b):
                continue
            try:
                s.fuse(f"{kernel}:{band}.{str_attr(a, 'loop_name')}", f"{kernel}:{band}.{str_attr(b, 'loop_name')}")
            except ScheduleError:
                continue
            return True
    return False


def fuse_nests(s: Schedule, kernel: str, loop: str) -> int:
    """Greedily fuse the sibling nests inside `loop` ('band.name'), then inside each
    resulting child, wherever `fuse`'s dependence check allows; returns the fusions.

    Only nests of one depth and one kind fuse: an elementwise nest takes another
    elementwise nest (the state update and the copy of the state out: one pass over the
    state instead of two), never a reduction, whose innermost loop would then end in a
    horizontal sum per element of the vectorized loop. This is `fuse_bands` for the
    nests a token scan puts inside its `t` loop (prefill, verify)."""
    band = loop.split(".", 1)[0]
    n = 0
    while _fuse_one_pair(s, kernel, band, _loops_in(s.loop(f"{kernel}:{loop}").op)):
        n += 1
    for c in _loops_in(s.loop(f"{kernel}:{loop}").op):
        n += fuse_nests(s, kernel, f"{band}.{str_attr(c, 'loop_name')}")
    return n


def fuse_bands(s: Schedule, kernel: str, max_rounds: int = 32) -> int:
    """Greedily fuse later bands into earlier ones of the same loop shape (compute_at
    down to the innermost level) wherever the dependence check allows; returns how
    many fusions were applied. Saves passes over the state-sized arrays."""
    n = 0
    for _ in range(max_rounds):
        bands = list(s.get_loops(kernel))
        shapes = {b: _shape(s, kernel, b) for b in bands}
        hit = False
        for ai, a in enumerate(bands):
            for b in bands[ai + 1:]:
                if shapes[a] is None or shapes[a] != shapes[b] or len(shapes[a]) < 1:
                    continue
                a_root = next(iter(s.get_loops(kernel)[a]))
                b_inner = list(s.get_loops(kernel)[b])[len(shapes[b]) - 1]
                try:
                    s.compute_at(f"{kernel}:{a}.{a_root}", f"{kernel}:{b}.{b_inner}")
                except ScheduleError:
                    continue
                n += 1
                hit = True
                break
            if hit:
                break
        if not hit:
            return n
    return n


def cpu_schedule(design, rows: int = 4, fuse: bool = True, vectorize: bool = True) -> Schedule:
    s = customize(design)
    for k in s.kernels():
        done = set()
        if s.kind(k) in LINEAR_KINDS and rows > 1:
            rl = _row_loop(s, k)
            if rl is not None:
                band, i, j, buf = rl
                tc = dp.trip_count(s.loop(f"{k}:{band}.{i}").op)
                if tc and tc % rows == 0:
                    # unroll-and-jam the rows: `rows` weight rows stream per pass over x,
                    # each with its own register accumulator
                    o, inner = s.split(f"{k}:{band}.{i}", rows)
                    s.reorder(o, f"{k}:{band}.{j}", inner)
                    s.unroll(inner, 0, materialize=True)
                    s.buffer_at(f"{k}:{buf}", o)
                    done.add(band)
        if fuse and s.kind(k) in ("ssm", "conv"):
            fuse_bands(s, k)
            for band, loops in s.get_loops(k).items():
                if next(iter(loops)) == "t":  # a token scan (prefill, verify): its nests
                    fuse_nests(s, k, f"{band}.t")
        if vectorize and s.kind(k) in ("ssm", "conv", "x_proj") and any(
                o.name in EXPANSIONS for o in walk(funcs(s.module)[k])):
            s.vectorize(k)
        for buf, loop in accumulators(s, k):
            if loop.split(":", 1)[1].split(".", 1)[0] in done:
                continue
            try:
                s.buffer_at(f"{k}:{buf}", loop)
            except ScheduleError:
                pass  # not every candidate has a box footprint; the rest still applies
    return s


def cpu(design):
    """The CPU recipe (see module doc); returns the design, scheduled."""
    cpu_schedule(design)
    return design


# --------------------------------------------------------------- HLS recipes


def _divisor_at_most(n: int, cap: int) -> int:
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


def _matvec_bands(s: Schedule, kernel: str):
    """(band, row loop, reduction loop, accumulator buffer, weight arg) of each matvec
    band: a 2-deep nest reducing into an element indexed by the row loop."""
    out = []
    fn = funcs(s.module)[kernel]
    args = list(fn.regions[0].blocks[0].arguments)
    stacked = stacked_args(fn)
    for buf, loop in accumulators(s, kernel):
        band, ln = loop.split(":", 1)[1].split(".", 1)
        names = list(s.get_loops(kernel)[band])
        if len(names) != 2 or names[0] != ln:
            continue
        j = s.loop(f"{kernel}:{band}.{names[1]}").op
        weight = None  # (buffer, the rank of the weight: its last dim is the reduction)
        for o in walk(j):
            if o.name == "affine.load":
                m = ir.AffineMapAttr(o.attributes["map"]).value
                hit = [k for k, a in enumerate(args) if a == o.operands[0]]
                if m.n_dims == 2 and hit and (len(m.results) == 2 or stacked[hit[0]]):
                    ports = arg_names(fn) or []
                    label = ports[hit[0]] if hit[0] < len(ports) and ports.count(ports[hit[0]]) == 1 else f"arg{hit[0]}"
                    weight = (label, len(m.results))
        out.append((band, names[0], names[1], buf, weight))
    return out


def _per_kind(value, kind: str, default: int) -> int:
    """A recipe factor given for every kernel (an int) or per kernel kind (a mapping
    kind -> int; a kind it does not name takes `default`)."""
    return int(value.get(kind, default)) if isinstance(value, Mapping) else int(value)


def linear_parallel_schedule(design, tile: int | Mapping[str, int] = 16, ii: int = 1) -> Schedule:
    """Linear layers as MAC arrays: reduction split by `tile` (the largest divisor of the
    reduction length not above it), the tile unrolled (`tile` parallel MACs), the weight
    partitioned cyclically along the reduction by the same factor, the accumulator a
    register (buffer_at), the tile loop pipelined at `ii`. `tile` may be a mapping
    kernel kind -> tile (`{"in_proj": 32, "lm_head": 8}`; kinds it omits take 16)."""
    s = customize(design)
    for k in s.kernels():
        if s.kind(k) not in LINEAR_KINDS:
            continue
        for band, i, j, buf, weight in _matvec_bands(s, k):
            n = dp.trip_count(s.loop(f"{k}:{band}.{j}").op)
            t = _divisor_at_most(n or 1, _per_kind(tile, s.kind(k), 16))
            s.buffer_at(f"{k}:{buf}", f"{k}:{band}.{i}")
            if t > 1:
                if weight is not None:
                    # the row's weights copied on chip and partitioned to feed `t` MACs a
                    # cycle: the m_axi port itself cannot be partitioned (HLS 214-126)
                    row = s.buffer_at(f"{k}:{weight[0]}", f"{k}:{band}.{i}")
                    s.partition(row, "cyclic", dim=weight[1], factor=t)
                jo, ji = s.split(f"{k}:{band}.{j}", t)
                s.unroll(ji, 0)
                s.pipeline(jo, ii=ii)
            else:
                s.pipeline(f"{k}:{band}.{j}", ii=ii)
    return s


def ssm_serial_schedule(design, ii: int = 1, lanes: int | Mapping[str, int] = 16) -> Schedule:
    """The conv and the SSM update as serial pipelines: in every band of the conv and
    SSM kernels the innermost loop runs `lanes` elements per cycle (split by `lanes`,
    the split's inner loop unrolled and its outer loop pipelined at `ii`; an innermost
    loop of at most `lanes` iterations, the conv taps, is unrolled and the loop above
    it pipelined), the state tiles copied on chip and partitioned to feed the lanes.
    `lanes` may be a mapping kernel kind -> lanes (`{"conv": 4, "ssm": 16}`)."""
    s = customize(design)
    per_kind = lanes
    for k in s.kernels():
        if s.kind(k) not in ("conv", "ssm"):
            continue
        lanes = _per_kind(per_kind, s.kind(k), 16)
        for band, loops in s.get_loops(k).items():
            _serial_band(s, k, band, loops, ii, lanes)
        _feed_lanes(s, k, lanes)
    return s


def _serial_band(s: Schedule, k: str, band: str, loops, ii: int, lanes: int) -> None:
    """One band as a serial pipeline of `lanes` elements a cycle (see ssm_serial_schedule)."""
    names = list(loops)
    chain = [loops[n].op for n in names]
    depth = len(chain)
    inner = chain[-1]
    if inner.parent not in chain and depth > 1:
        return  # not a simple nest (e.g. the prefill token loop's body)
    tc = dp.trip_count(inner)
    if depth == 1:
        s.pipeline(loops[names[0]], ii=ii)
        return
    lanes_here = _divisor_at_most(tc or 1, lanes)
    if 1 < lanes_here < (tc or 0):
        # `lanes` elements per cycle: pipeline the outer half of the split, not
        # the loop above it (a pipelined loop unrolls everything inside it)
        jo, ji = s.split(loops[names[-1]], lanes_here)
        s.unroll(ji, 0)
        s.pipeline(jo, ii=ii)
        return
    if lanes_here == tc:
        s.unroll(loops[names[-1]], 0)
    s.pipeline(s.loop(f"{k}:{band}.{names[-2]}"), ii=ii)


def pipeline_rest(design, ii: int = 1, lanes: int = 8) -> Schedule:
    """Every band no primitive has scheduled yet (no loop of it pipelined or unrolled)
    as a serial pipeline of `lanes` elements a cycle, like the SSM's: the rotations,
    requantization and norms between the MAC arrays, which Vitis would otherwise run
    loop iteration by loop iteration (it pipelines only innermost loops of more than 64
    iterations by itself)."""
    from ..dialects import directives as D

    s = customize(design)
    for k in s.kernels():
        for band, loops in list(s.get_loops(k).items()):
            ops = [h.op for h in loops.values()]
            if any(D.get_pipeline(o) is not None or D.get_unroll(o) is not None
                   for L in ops for o in [L, *walk(L)] if o.name == "affine.for"):
                continue
            if any(o.name == "func.call" for L in ops[:1] for o in walk(L)):
                continue
            try:
                _serial_band(s, k, band, loops, ii, lanes)
            except ScheduleError:
                continue  # a band the primitives refuse stays as it is
    return s


def _feed_lanes(s: Schedule, k: str, lanes: int) -> None:
    """Feed the lanes from a partitioned state: the state ports are m_axi, which Vitis
    cannot partition (HLS 214-126), so each band's outer loop gets a local copy of the
    state tile it uses (buffer_at), partitioned along the lanes."""
    for port in ("ssm_state", "ssm_state_out"):
        for band in list(s.get_loops(k)):
            fn = funcs(s.module)[k]  # fresh: a rolled-back primitive replaces the function
            names = arg_names(fn) or []
            if port not in names:
                break
            arg = fn.regions[0].blocks[0].arguments[names.index(port)]
            loops = s.get_loops(k)[band]
            outer = loops[list(loops)[0]]
            if not any(o.name in ("affine.load", "affine.store") and arg in list(o.operands)
                       for o in walk(outer.op)):
                continue
            try:
                tile = s.buffer_at(f"{k}:{port}", outer)
            except ScheduleError:
                continue  # not an affine tile (the tree scan's parent pointers): left unpartitioned
            shape = s._buffer(tile, "partition")[1].type.shape
            f = _divisor_at_most(shape[-1], lanes)
            if f > 1:
                s.partition(tile, "cyclic", dim=len(shape), factor=f)


def layer_pipeline_schedule(design, depth: int = 2) -> Schedule:
    """Each layer a dataflow region Vitis accepts: the top's `layer` loop body outlined
    into a function `layer` (the residual copy to the next layer stays in the loop, so
    the region has no feedback), a `fork` for every buffer that several processes read,
    the function marked dataflow, and every buffer passed from one process to one
    other a stream of `depth` (or of the buffer's full size where the Kahn check says
    `depth` deadlocks: the consumer waits for all of it). A layer body the rules refuse
    as a region (a conditional choosing a layer's SSM kernel) stays sequential."""
    from ..dialects.stream import DeadlockError
    from ..flow.effects import Effects
    from .regions import readers_writers

    s = customize(design)
    top = s.top
    if top is None:
        raise ScheduleError("layer_pipeline: the design has no top function")
    if "layer" not in s.get_loops(top):
        raise ScheduleError(f"layer_pipeline: the top '{top}' has no loop named 'layer' over the layer kernels")
    region = s.outline(f"{top}:layer.layer", "layer_step", keep=["resid"])
    # one reader per buffer: fork what several processes read
    while True:
        fn = funcs(s.module)[region]
        block = fn.regions[0].blocks[0]
        eff = Effects(funcs(s.module), streams=True)
        bufs = {ref.value: name for name, ref in s._buffers(fn, region).items() if not name.startswith(("arg", "alloc"))}
        multi = [bufs[v] for v in bufs if isinstance(v.type, ir.MemRefType)
                 and len(readers_writers(block, v, eff)[0]) > 1]
        if not multi:
            break
        s.fork(f"{region}:{multi[0]}")
    try:
        s.dataflow(region)
    except ScheduleError:
        return s  # not a canonical region (see the docstring): no streams either
    fn = funcs(s.module)[region]
    block = fn.regions[0].blocks[0]
    eff = Effects(funcs(s.module))
    pairs = []
    for v in [o.results[0] for o in block.operations if o.operation.name == "memref.alloc"]:
        rs, ws = readers_writers(block, v, eff)
        if len(rs) != 1 or len(ws) != 1 or rs[0] == ws[0] or not all(p.name == "func.call" for p in rs + ws):
            continue
        if sum(1 for u in v.uses if _user(u).name == "func.call") != 2:
            continue
        producer = ws[0]
        pos = next(i for i, x in enumerate(producer.operands) if x == v)
        pname = ir.FlatSymbolRefAttr(producer.attributes["callee"]).value
        ports = arg_names(funcs(s.module)[pname]) or []
        port = ports[pos] if pos < len(ports) and ports.count(ports[pos]) == 1 else f"arg{pos}"
        n = 1
        for d in ir.MemRefType(v.type).shape:
            n *= d
        pairs.append((pname, port, ir.FlatSymbolRefAttr(rs[0].attributes["callee"]).value, n))
    for producer, arg, dst, n in pairs:
        for dep in (depth, n):
            try:
                s.to(f"{producer}:{arg}", dst, depth=dep)
                break
            except DeadlockError:
                continue
            except ScheduleError:
                break
    return s


def _user(u):
    return u.owner.operation if hasattr(u.owner, "operation") else u.owner


def accelerator_schedule(design, tile: int = 16, ii: int = 1, lanes: int = 16, depth: int = 2) -> Schedule:
    """LightMamba / SpecMamba structure: linear layers parallel (MAC arrays), the conv
    and SSM serial (pipelined), the layers a dataflow pipeline over streams; the on-chip
    tile copies a beat wide and every local buffer a pipeline reads at several
    addresses partitioned to feed it (without, the MAC arrays wait on the two ports of
    their activation buffer: II 8 instead of 1, the estimate's 'ports' reason)."""
    s = customize(design)
    linear_parallel_schedule(s, tile=tile, ii=ii)
    ssm_serial_schedule(s, ii=ii, lanes=lanes)
    widen_copies(s, ii=ii)
    layer_pipeline_schedule(s, depth=depth)
    feed_pipelines(s, cap=max(tile, lanes))
    large_buffers_to_uram(s)
    return s


#: on-chip buffers at least this large are bound to UltraRAM (one URAM is 4K x 72 bits,
#: 36 KiB; BRAM18K blocks are 2.25 KiB: large buffers use URAM's density, as LightMamba)
URAM_MIN_BYTES = 64 * 1024


def large_buffers_to_uram(design, min_bytes: int = URAM_MIN_BYTES) -> Schedule:
    """Bind every local buffer of at least `min_bytes` (not completely partitioned) to
    URAM (`storage`); returns the Schedule."""
    from ..dialects import directives as D

    s = customize(design)
    for k in s.kernels():
        for name, h in s.get_buffers(k).items():
            ref = s._buffer(h, "storage")[1]
            if ref.arg is not None or not ref.type.has_static_shape:
                continue  # ports are off chip; streams are not buffers
            n = 1
            for d in ref.type.shape:
                n *= d
            el = ref.type.element_type
            bits = el.width if isinstance(el, (ir.IntegerType, ir.FloatType)) else 64  # index: 64
            complete = any(p.kind == "complete" for p in D.partitions_of(ref))
            if n * bits // 8 >= min_bytes and not complete:
                s.storage(f"{k}:{name}", "uram")
    return s


def feed_pipelines(design, cap: int = 64) -> Schedule:
    """Partition every local buffer that one iteration of a pipelined loop reads or
    writes at several addresses (the copies of the loops it unrolls), cyclically along
    the dimensions those copies spread over, by their number times the accesses' distinct
    constant offsets there (the largest any pipeline needs, at most `cap` banks in all): each access gets a bank of its own, so the loops reach their
    II instead of waiting for the two ports of one BRAM (the 'ports' reason of the
    estimate). Ports stay unpartitioned (HLS 214-126) and a buffer already partitioned
    keeps its partitioning."""
    from ..dialects import directives as D

    s = customize(design)
    for k in s.kernels():
        fn = funcs(s.module)[k]
        bufs = {ref.value: (name, ref) for name, ref in s._buffers(fn, k).items() if ref.alloc_op is not None}
        need: dict = {}  # buffer name -> (copies, dim)
        for L in [o for o in walk(fn) if o.name == "affine.for" and D.get_pipeline(o) is not None]:
            inner = {dp.loop_iv(o): dp.trip_count(o, bound=True) or 1 for o in walk(L) if o.name == "affine.for"}
            fixed = [dp.loop_iv(o) for o in dp._iv_loops(L) + [L]]  # constant within one iteration
            for iv in fixed:
                inner.setdefault(iv, 1)
            names = {iv: f"v{i}" for i, iv in enumerate(inner)}
            space = dp.Space("feed", names, fixed={names[iv] for iv in fixed})
            for o in walk(L):
                if o.name not in ("affine.load", "affine.store", "memref.load", "memref.store"):
                    continue
                load = o.name.endswith("load")
                v = o.operands[0] if load else o.operands[1]
                if v not in bufs or D.partitions_of(bufs[v][1]):
                    continue
                idx = list(o.operands)[1:] if load else list(o.operands)[2:]
                if o.name.startswith("affine."):
                    lins = space.lin_map(ir.AffineMapAttr(o.attributes["map"]).value, idx)
                else:
                    lins = [dp.spread_lin(x, space) for x in idx]
                for d, lin in enumerate(lins):
                    if lin is None:
                        continue
                    n = 1
                    for iv, var in names.items():
                        if lin.get(var):
                            n *= inner[iv]
                    # per dim: the most copies one access spreads over, and the distinct
                    # constant offsets of the accesses (a dot product written out)
                    entry = need.setdefault(bufs[v][0], {}).setdefault(d, [1, set()])
                    entry[0] = max(entry[0], n)
                    entry[1].add(lin.get(None, 0))
        for name, dims in need.items():
            shape = s._buffers(funcs(s.module)[k], k)[name].type.shape
            left = cap
            for d, (n, offsets) in sorted(dims.items(), key=lambda e: -e[1][0] * len(e[1][1])):
                f = _divisor_at_most(shape[d], min(n * len(offsets), left))
                if f > 1:
                    s.partition(f"{k}:{name}", "cyclic", dim=d + 1, factor=f)
                    left //= f
    return s


def widen_copies(design, beat_bits: int = 512, ii: int = 1) -> Schedule:
    """Copy loops between an m_axi port and a local buffer (buffer_at's tiles) move as
    many elements a cycle as the local buffer's banks take (two ports each), up to one
    AXI beat: the innermost copy loop split by that width, the inner part unrolled and
    the outer pipelined. Unwidened, a copy moves one element a cycle: the 'm_axi one
    element per cycle' the estimate reports for on-chip tiles."""
    from ..dialects import directives as D
    from ..flow.effects import bindings
    from ..targets.hls.cxx import element_bits

    s = customize(design)
    top = s.top
    for k in s.kernels():
        fn = funcs(s.module)[k]
        bound = bindings(funcs(s.module), top).get(k, {}) if top else {}
        args = list(fn.regions[0].blocks[0].arguments)
        ports = {a for i, a in enumerate(args) if bound.get(i)}
        todo = []
        for L in [o for o in walk(fn) if o.name == "affine.for"]:
            body = [o.operation for o in L.regions[0].blocks[0].operations]
            if D.get_pipeline(L) is not None or D.get_unroll(L) is not None or len(body) != 3:
                continue
            ld, st = body[0], body[1]
            if ld.name != "affine.load" or st.name != "affine.store" or st.operands[0] != ld.results[0]:
                continue
            src, dst = ld.operands[0], st.operands[1]
            local = dst if src in ports else src if dst in ports else None
            owner = getattr(local, "owner", None) if local is not None else None
            if owner is None or not hasattr(owner, "name") or owner.name not in ("memref.alloc", "memref.alloca"):
                continue
            ref = D.BufferRef(fn, alloc_op=owner.operation)
            rank = len(ref.type.shape)
            banks = max([p.factor for p in D.partitions_of(ref) if p.dim in (0, rank) and p.kind == "cyclic"],
                        default=1)
            per_beat = max(1, beat_bits // element_bits(ref.type.element_type))
            n = dp.trip_count(L) or 1
            w = _divisor_at_most(n, min(2 * banks, per_beat))
            if w > 1:
                todo.append(_path(s, k, L))
                todo.append(w)
        for path, w in zip(todo[::2], todo[1::2]):
            lo, li = s.split(path, w)
            s.unroll(li, 0)
            s.pipeline(lo, ii=ii)
    return s


def linear_parallel(design, **kw):
    linear_parallel_schedule(design, **kw)
    return design


def ssm_serial(design, **kw):
    ssm_serial_schedule(design, **kw)
    return design


def layer_pipeline(design, **kw):
    layer_pipeline_schedule(design, **kw)
    return design


def accelerator(design, **kw):
    accelerator_schedule(design, **kw)
    return design
