"""Dataflow legality: the Vitis HLS rules that the CPU simulation cannot see.

The llvm JIT and csim run a dataflow region's processes one after the other, so a
buffer with two readers, a bundle shared by two processes or a partition on an m_axi
port all run "correctly" on the CPU and fail (or silently serialize) in Vitis. This
module checks the scheduled IR against those rules before any tool runs. It runs when
the `dataflow`, `to`, `outline` and `fork` primitives are applied (a violation rolls
the primitive back), when `partition` is applied, and again in `mambaflow build` with
the design's real m_axi bundles.

A dataflow region is a function or a loop carrying the `dataflow` directive. Its
processes are the calls and the loop nests of its body (UG1399, "Dataflow"); every
other op at that level must be a declaration (a buffer, a stream, a constant, a view).

| rule | what is rejected | Vitis says |
|---|---|---|
| `region-form` | a loop or conditional around process calls, a statement outside any process, a dataflow loop without constant bounds and step 1 | not a canonical dataflow region: the loop runs as one process, nothing overlaps |
| `single-reader-writer` | a non-scalar buffer or a stream with more than one writer or more than one reader process | HLS 200-779 |
| `no-feedback` | a buffer read by a process before the process that writes it | HLS 200-779 / feedback is not supported between processes |
| `one-bundle-per-process` | an m_axi bundle used by more than one process of a region | HLS 200-1013 |
| `no-partition-on-maxi` | `array_partition`/`reshape` on a top-level m_axi argument or on an argument bound to one | HLS 214-126 |
| `stream-order` | a stream read in an order other than the one it is written in (checked by `to`) | a FIFO has no random access |
| `bypass` (warning) | a value passed from a process to a later one over processes in between | HLS 200-989 (warning) |

The sources of each rule, and the schedule each one rejects, are in docs/VITIS_REFERENCE.md
("Dataflow rules").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch_mlir import ir

from ...dialects import directives as D
from ...dialects.stream import is_stream_type
from ...errors import ScheduleError
from ...flow.effects import Effects, bindings, callee
from ...flow.identity import TOP_ATTR, arg_names, buffer_label
from ...flow.mlir import funcs, str_attr, walk
from ...schedules.regions import process_name


@dataclass(frozen=True)
class Rule:
    key: str
    message_id: str      # the Vitis message this rule anticipates ("" when Vitis has none)
    source: str          # the document behind it
    fix: str             # what to do, in the schedule's words


RULES: dict[str, Rule] = {r.key: r for r in (
    Rule("region-form", "", "UG1399, Dataflow: canonical forms (a region is a sequence of process calls)",
         "outline the loop body into a function (s.outline('<top>:layer.layer', 'layer', keep=['resid'])) and "
         "make that function the dataflow region"),
    Rule("single-reader-writer", "HLS 200-779", "UG1399, Dataflow: single-producer-consumer violations",
         "give each reader its own copy (s.fork('<region>:<buffer>')), or keep the buffer out of the region"),
    Rule("no-feedback", "HLS 200-779", "UG1399, Dataflow: feedback between processes is not supported",
         "pass the value to the next region execution outside the region (outline with keep=[...])"),
    Rule("one-bundle-per-process", "HLS 200-1013", "UG1399, Dataflow: m_axi bundles shared by processes",
         "give each process's m_axi ports their own bundle (targets.hls.design.default_bundles does), or read "
         "the port in one process and pass the data on"),
    Rule("no-partition-on-maxi", "HLS 214-126", "UG1399 / UG1448, array_partition: not on m_axi parameters",
         "copy the tile the loop needs into a local buffer (s.buffer_at('<kernel>:<port>', '<kernel>:<loop>')) "
         "and partition that buffer"),
    Rule("stream-order", "", "UG1399, hls::stream: a FIFO is read in the order it is written",
         "keep the buffer (no stream), or let `to` add an adapter (adapt=True)"),
    Rule("bypass", "HLS 200-989", "UG1399, Dataflow: bypassing tasks (a warning; the channel needs more depth)",
         "none needed; reorder the calls so producer and consumer are adjacent to save buffering"),
)}


class DataflowRuleError(ScheduleError):
    """A design breaks a Vitis dataflow / interface rule (see `RULES`)."""

    def __init__(self, findings: list["Finding"], where: str = ""):
        self.findings = findings
        head = f"{where}: " if where else ""
        more = f" (and {len(findings) - 3} more)" if len(findings) > 3 else ""
        super().__init__(head + " | ".join(str(f) for f in findings[:3]) + more + "; the IR is unchanged")


@dataclass(frozen=True)
class Finding:
    rule: str
    region: str
    subject: str
    processes: tuple[str, ...] = ()
    severity: str = "error"
    detail: str = ""

    def __str__(self) -> str:
        r = RULES[self.rule]
        tag = f"{self.rule}{', ' + r.message_id if r.message_id else ''}"
        procs = f" (processes: {', '.join(self.processes)})" if self.processes else ""
        return f"{self.severity} [{tag}] in '{self.region}': {self.subject}{procs}{'; ' + self.detail if self.detail else ''}; fix: {r.fix} [{r.source}]"


# ------------------------------------------------------------------ regions


_DECLS = ("memref.alloc", "memref.alloca", "mf.stream_create", "memref.get_global", "memref.subview", "memref.cast",
          "memref.dealloc", "affine.apply", "func.return", "affine.yield", "scf.yield")
_PROCESS_LOOPS = ("affine.for", "scf.for")


def _op(x) -> ir.Operation:
    return x.operation if hasattr(x, "operation") else x


def _has_call(op: ir.Operation) -> bool:
    return any(o.name == "func.call" for o in walk(op))


@dataclass
class Region:
    name: str                 # "fn" or "fn:band.loop"
    owner: ir.Operation       # the func.func or the loop
    processes: list[ir.Operation] = field(default_factory=list)


def regions(module: ir.Module) -> list[Region]:
    out = []
    for name, fn in funcs(module).items():
        if not fn.regions[0].blocks:
            continue
        if D.is_dataflow(fn):
            out.append(Region(name, fn))
        for op in walk(fn):
            if op.name == "affine.for" and D.is_dataflow(op):
                out.append(Region(f"{name}:{process_name(op)}", op))
    return out


def _region_form(r: Region) -> list[Finding]:
    bad = []
    if r.owner.name == "affine.for":
        from ...schedules.deps import const_bounds

        cb = const_bounds(r.owner)
        if cb is None or cb[2] != 1:
            bad.append(Finding("region-form", r.name, "a dataflow loop needs constant bounds and step 1"))
    for op in r.owner.regions[0].blocks[0].operations:
        op = _op(op)
        n = op.name
        if n == "func.call" or (n in _PROCESS_LOOPS and not _has_call(op)):
            r.processes.append(op)
        elif n in _PROCESS_LOOPS:
            calls = sorted({callee(o) for o in walk(op) if o.name == "func.call"})
            bad.append(Finding("region-form", r.name, f"the loop '{process_name(op)}' calls {calls} inside the "
                               "region: Vitis runs the whole loop as one process, so those calls never overlap "
                               "and the channels between them are not dataflow channels"))
        elif n in ("scf.if", "affine.if") and (_has_call(op) or any(o.name.endswith("store") for o in walk(op))):
            bad.append(Finding("region-form", r.name, "a conditional around processes: a dataflow region runs "
                               "every process unconditionally (move the choice into a process)"))
        elif n in _DECLS or n.startswith("arith.") or n in ("scf.if", "affine.if"):
            continue
        else:
            bad.append(Finding("region-form", r.name, f"'{n}' sits between the processes, outside any of them"))
    return bad


# ------------------------------------------------------------------ naming


def _value_name(v: ir.Value, eff: Effects) -> str:
    """The name a message gives a region's buffer or stream."""
    o = v.owner
    if isinstance(o, ir.Block):
        fn = _op(o.owner)
        if fn.name == "func.func":
            i = list(fn.regions[0].blocks[0].arguments).index(v)
            return _port_names(fn)[i]
        return "a loop variable"
    op = _op(o)
    if op.name == "mf.stream_create":
        return f"stream {str_attr(op, 'name') or '?'}"
    return str_attr(op, "buffer_name") or buffer_label(v, eff) or "a buffer"


def _elements(t: ir.Type) -> int:
    if not isinstance(t, ir.MemRefType):
        return 1
    n = 1
    for d in ir.MemRefType(t).shape:
        n *= d
    return n


# ------------------------------------------------------------------ bundles


def _top(module: ir.Module) -> str | None:
    return next((n for n, f in funcs(module).items() if TOP_ATTR in f.attributes), None)


def _port_names(fn: ir.Operation) -> list[str]:
    n = len(fn.regions[0].blocks[0].arguments)
    return arg_names(fn) or [f"arg{i}" for i in range(n)]


def process_ports(module: ir.Module) -> list[tuple[str, ir.Operation, set[int]]]:
    """(process name, op, top argument positions it reads or writes) for every process of
    the design in program order: calls of kernels (descending into functions that call
    others, such as an outlined layer region) and loop nests of the top and of regions."""
    fs = funcs(module)
    top = _top(module)
    if top is None:
        return []
    eff = Effects(fs, streams=True)
    bind = bindings(fs, top)
    out = []

    def visit(fname: str, block: ir.Block) -> None:
        fn = fs[fname]
        args = list(fn.regions[0].blocks[0].arguments)
        pos = {a: bind[fname].get(i, set()) for i, a in enumerate(args)}
        for op in block.operations:
            op = _op(op)
            if op.name == "func.call" and callee(op) in fs and _has_call(fs[callee(op)]):
                visit(callee(op), fs[callee(op)].regions[0].blocks[0])
            elif op.name in _PROCESS_LOOPS and _has_call(op):
                visit(fname, op.regions[0].blocks[0])
            elif op.name == "func.call" or any(x.name in ("affine.load", "affine.store", "memref.load",
                                                           "memref.store") for x in walk(op)):
                r, w = eff.touched([op])
                ports = set().union(*[pos.get(v, set()) for v in r | w]) if (r | w) else set()
                out.append((process_name(op), op, ports))

    visit(top, fs[top].regions[0].blocks[0])
    return out


def default_bundles(module: ir.Module) -> dict[str, str]:
    """Design port -> m_axi bundle: the one the schedule chose (`Schedule.bundle`, the
    `mf.bundle` port attribute), else `gmem_<process>` of the first process that uses
    it, so every process of a dataflow region has bundles of its own (HLS 200-1013) and a
    sequential design still gets one AXI master per kernel (parallel memory channels)."""
    top = _top(module)
    if top is None:
        return {}
    fn = funcs(module)[top]
    names = _port_names(fn)
    out: dict[str, str] = {n: b for i, n in enumerate(names) if (b := D.bundle_of(fn, i))}
    for pname, _, ports in process_ports(module):
        for i in sorted(ports):
            if i < len(names):
                out.setdefault(names[i], f"gmem_{pname}")
    for i, n in enumerate(names):  # a port no process touches
        out.setdefault(n, "gmem_io")
    return out


# ------------------------------------------------------------------ check


def check(module: ir.Module, bundles: dict[str, str] | None = None) -> list[Finding]:
    """Every finding of the rules (errors and warnings) for `module`. `bundles`: design
    port name -> m_axi bundle (default: `default_bundles`)."""
    fs = funcs(module)
    top = _top(module)
    eff = Effects(fs, streams=True)
    found: list[Finding] = []
    bind = bindings(fs, top) if top else {}
    top_names = _port_names(fs[top]) if top else []

    # no-partition-on-maxi: everywhere, not only in regions
    for fname, fn in fs.items():
        if not fn.regions[0].blocks:
            continue
        for i in range(len(fn.regions[0].blocks[0].arguments)):
            t = fn.regions[0].blocks[0].arguments[i].type
            if not isinstance(t, ir.MemRefType):
                continue
            ports = {i} if fname == top else bind.get(fname, {}).get(i, set())
            parts = D.partitions_of(D.BufferRef(fn, arg=i))
            if ports and parts:
                pn = sorted(top_names[p] for p in ports if p < len(top_names))
                argn = (arg_names(fn) or [f"arg{i}"] * (i + 1))[i]
                found.append(Finding("no-partition-on-maxi", fname,
                                     f"argument '{argn}' is bound to the top-level m_axi port(s) {pn} and carries "
                                     f"{', '.join(f'{p.kind} partition dim {p.dim}' for p in parts)}"))

    for r in regions(module):
        found += _region_form(r)
        procs = r.processes
        touched = [eff.touched([p]) for p in procs]
        values = []
        for rd, wr in touched:
            for v in list(rd) + list(wr):
                if v not in values:
                    values.append(v)
        bypass = []
        for v in values:
            t = v.type
            if not (is_stream_type(t) or (isinstance(t, ir.MemRefType) and _elements(t) > 1)):
                continue  # scalars are copied into each process (not channels)
            writers = [k for k, (_, wr) in enumerate(touched) if v in wr]
            # a producer that reads back what it wrote is one producer, not a reader
            readers = [k for k, (rd, _) in enumerate(touched) if v in rd and k not in writers]
            name = _value_name(v, eff)
            pn = lambda ks: tuple(process_name(procs[k]) for k in ks)  # noqa: E731
            if len(writers) > 1:
                found.append(Finding("single-reader-writer", r.name, f"'{name}' has {len(writers)} writers",
                                     pn(writers)))
            if len(readers) > 1:
                found.append(Finding("single-reader-writer", r.name, f"'{name}' has {len(readers)} readers",
                                     pn(readers)))
            late = [k for k in readers if writers and k < min(writers)]
            if late:
                found.append(Finding("no-feedback", r.name, f"'{name}' is read before it is written in the region",
                                     pn(late + writers)))
            if len(writers) == 1 and len(readers) == 1 and readers[0] > writers[0] + 1:
                bypass.append(f"{name} ({process_name(procs[writers[0]])} -> {process_name(procs[readers[0]])})")
        if bypass:
            found.append(Finding("bypass", r.name, "values that skip processes: " + ", ".join(bypass),
                                 severity="warning"))
        # one-bundle-per-process: the top ports each process reaches, through the
        # arguments of the function that holds the region
        if top is not None:
            b = bundles or default_bundles(module)
            fname = r.name.split(":", 1)[0]
            fargs = list(fs[fname].regions[0].blocks[0].arguments)
            by_bundle: dict[str, list[str]] = {}
            for p, (rd, wr) in zip(procs, touched):
                ports = set()
                for v in rd | wr:
                    if v in fargs:
                        ports |= bind.get(fname, {}).get(fargs.index(v), set())
                for q in sorted(ports):
                    lst = by_bundle.setdefault(b.get(top_names[q], "gmem0"), [])
                    if process_name(p) not in lst:
                        lst.append(process_name(p))
            for bundle, ps in sorted(by_bundle.items()):
                if len(ps) > 1:
                    found.append(Finding("one-bundle-per-process", r.name, f"m_axi bundle '{bundle}' is used by "
                                         f"{len(ps)} processes", tuple(ps)))
    return found


def enforce(module: ir.Module, bundles: dict[str, str] | None = None, where: str = "") -> list[Finding]:
    """Raise DataflowRuleError for any error finding; return the warnings."""
    found = check(module, bundles)
    errors = [f for f in found if f.severity == "error"]
    if errors:
        raise DataflowRuleError(errors, where)
    return [f for f in found if f.severity != "error"]
