"""`mambaflow build --speculative`: SpecMamba's accelerator as one Versal project.

    r = build_speculative(target, draft, tree="chain:7", board="vck190", out_dir="build/spec")
    print(r.report()); sys.exit(r.exit_code)

The project holds two kernels, each emitted to a source of its own (hls/verify/,
hls/draft/), so their sub-functions of the same names (in_proj, ssm, ...) never meet:

- `verify`: the target's tree verification of T nodes (T = the tree shape's size),
  captured with the FIFO tree buffer (`fifo_depth` = runtime.trees.fifo_bound of the
  shape) and every node's state as an output (the target checkpoints: the host commits
  the accepted node's state from them). Scheduled linear-parallel / SSM-serial with the
  tree buffer on chip: the first of `VERIFY_SCHEDULES` that applies and leaves the ring
  partitioned along the state lanes (see there for why there is more than one).
- `decode`: the draft's decode step, scheduled with `accelerator`. A decode kernel rather
  than a draft chain (flow.chain): the host needs single decode steps anyway (the
  accepted tokens the draft has not run, the bonus token, the prompt), a static tree
  needs one decode per node from that node's parent, which a chain cannot do, and a
  chain's k copies of the state outputs would multiply the kernel's m_axi ports by k.
  It costs k kernel launches per round instead of one.

Steps (each printed with its time when `progress`):
 1. capture and schedule the target's verify;  2. the draft's decode;
 3. emit both (the Vitis dataflow rules checked on each first);
 4. the resource fit of each kernel and of both together (they share the chip);
 5. the reference: greedy speculative decoding of `tokens` tokens after the prompt in
    PyTorch (targets.hls.reference.speculative_cases), checked against the target's
    plain greedy tokens; the trees the target verified in the first `csim_trees` rounds
    are the verify kernel's csim cases;
 6. C simulation of both kernels against PyTorch: verify on those real trees (logits of
    every node, every node's conv input and SSM state), decode with `reference_data`;
 7. the host (host/host.cpp over host/spec_loop.h) and its data, then the host's C
    simulation: the draft -> verify -> accept loop over the two kernels' C++ generates
    the tokens, which must equal PyTorch's;
 8. the Vitis project (both kernels); 9. the vendor steps (as `build`).

Exit codes as `build`: 0, 1 (a check failed), 3 (only the vendor tools are missing).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import MambaflowError, ScheduleError
from ..hls.csim import CsimError, CsimResult
from ..hls.reference import reference_data, speculative_cases
from ..hls.resources import ResourceEstimate
from . import outdir
from .boards import Board, get_board
from .build import (BuildResult, BuildSteps, check_mode, csim_kernel, emit_kernel, finish_build, fit_kernel,
                    platform_notes, resolve_model, vendor_flow, vitis_and_platform)
from .fit import FitReport
from .project import KernelSpec, ProjectSpec, write_project
from .spec_host import SPEC_LOOP, HostRun, HostSpec, StateShape, host_source, run_host_csim, write_host_data

#: the verify kernel's schedules, tried in order on a fresh capture until one applies and
#: leaves the FIFO tree buffer partitioned along the state lanes (its last axis). The
#: first is the structure asked for (accelerator, then the tree buffer, which finds its
#: ring by name); the others are fallbacks for designs a recipe refuses: the tree buffer
#: before layer_pipeline, then without the dataflow, then the tree buffer alone.
VERIFY_SCHEDULES: tuple[tuple[str, ...], ...] = (
    ("accelerator", "tree_buffer"),
    ("linear_parallel", "ssm_serial", "tree_buffer", "layer_pipeline"),
    ("tree_buffer", "linear_parallel", "layer_pipeline"),
    ("linear_parallel", "ssm_serial", "tree_buffer"),
    ("tree_buffer",),
)
#: the draft's: accelerator, else without the SSM pipelines, else the MAC arrays alone.
#: (Before buffer_at's fix ddfa4e5, ssm_serial's state tiles indexed past the Mamba2 state
#: when d_state exceeds its 16 lanes, which targets.versal.bounds refused.)
DRAFT_SCHEDULES: tuple[tuple[str, ...], ...] = (("accelerator",), ("linear_parallel", "layer_pipeline"),
                                               ("linear_parallel",), ())
FIFO = "state_fifo"


class SpeculativeBuildError(MambaflowError):
    """A speculative build asked for something it cannot do (models, tree, options)."""


@dataclass
class KernelBuild:
    """One kernel of the speculative project."""

    role: str                  # 'verify' | 'draft'
    top: str
    source: str                # hls/<role>/kernels.cpp
    schedule: str              # the recipes applied, in order
    lines: int = 0
    ports: int = 0
    fit: FitReport | None = None
    csim: CsimResult | None = None
    csim_s: float = 0.0
    cases: list[dict] = field(default_factory=list)  # verify: the csim trees (nodes, accepted)
    schedule_notes: list[str] = field(default_factory=list)  # schedules tried that did not apply

    def to_dict(self) -> dict:
        return {"role": self.role, "top": self.top, "source": self.source, "schedule": self.schedule,
                "lines": self.lines, "ports": self.ports, "fit": self.fit.to_dict() if self.fit else None,
                "csim": self.csim.to_dict() if self.csim else None, "csim_s": self.csim_s, "cases": self.cases,
                "schedule_notes": self.schedule_notes}


@dataclass
class SpeculativeBuildResult(BuildResult):
    target: str = ""
    draft: str = ""
    tree: str = ""
    nodes: int = 0
    fifo_depth: int = 0
    kernels: dict[str, KernelBuild] = field(default_factory=dict)
    host: HostRun | None = None
    golden_tokens: list[int] = field(default_factory=list)
    golden_accepted: list[int] = field(default_factory=list)

    def failed_checks(self) -> list[str]:
        bad = []
        for k in self.kernels.values():
            if k.csim is not None and not k.csim.ok:
                bad.append(f"the {k.role} kernel's C simulation failed")
            if k.fit is not None and not k.fit.fits:
                bad.append(f"the {k.role} kernel does not fit the board")
        if self.fit is not None and not self.fit.fits:
            bad.append("the two kernels together do not fit the board")
        if self.host is not None and not self.host.ok:
            bad.append("the host loop's C simulation failed")
        return bad

    def vendor_blockers(self) -> list[str]:
        missing = [f"the {k.role} kernel's C simulation did not run" for k in self.kernels.values() if k.csim is None]
        return self.failed_checks() + missing + (["the host's C simulation did not run"] if self.host is None else [])

    def check_lines(self) -> list[str]:
        L = []
        for k in self.kernels.values():
            if k.csim is not None:
                L.append(f"{k.role} kernel '{k.top}' ({k.schedule}): " + k.csim.summary())
                L.append(f"C simulation of '{k.top}' " + ("matches" if k.csim.ok else "DOES NOT match") + " PyTorch"
                         + (f" on {len(k.cases)} real tree(s), accepted {[c['accepted'] for c in k.cases]}"
                            if k.cases else ""))
            if k.fit is not None and not k.fit.fits:
                L.append(f"the {k.role} kernel does not fit {self.board}: see its resource table above")
        if self.fit is not None and not self.fit.fits:
            L.append(f"the two kernels together do not fit {self.board}: see the resource table above")
        if self.host is not None:
            L.append(self.host.summary())
        return L

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(target=self.target, draft=self.draft, tree=self.tree, nodes=self.nodes, fifo_depth=self.fifo_depth,
                 kernels={k: v.to_dict() for k, v in self.kernels.items()},
                 host=self.host.to_dict() if self.host else None, golden_tokens=self.golden_tokens,
                 golden_accepted=self.golden_accepted)
        return d


# ------------------------------------------------------------------- schedules


def _fresh(design):
    """A copy of a captured design to schedule (a recipe that fails part-way leaves the
    primitives it applied before in place)."""
    from torch_mlir import ir

    with design.module.context:
        return dataclasses.replace(design, module=ir.Module.parse(str(design.module)))


def _fifo_problem(s) -> str | None:
    """Why the scheduled FIFO tree buffer is not what tree_buffer promises (None: it is):
    partitioned cyclically along its last axis, the state lanes."""
    from ...flow.mlir import funcs, walk

    rank = {}
    for k in s.kernels():
        for o in walk(funcs(s.module)[k]):
            if o.name == "memref.alloc" and "buffer_name" in o.attributes and \
                    str(o.attributes["buffer_name"]).strip('"') == FIFO:
                rank[k] = len(o.results[0].type.shape)
    parts = [e for e in s.log if e.get("op") == "partition" and str(e.get("buffer", "")).endswith(":" + FIFO)]
    if not rank:
        return None
    if not parts:
        return f"the {FIFO} ring is not partitioned"
    for e in parts:
        k = e["buffer"].split(":")[0]
        if e.get("dim") != rank.get(k):
            return (f"{e['buffer']} is partitioned along dim {e.get('dim')}, not its last (dim {rank.get(k)}, the "
                    "state lanes)")
    return None


def unscheduled_linear(s) -> list[str]:
    """The linear kernels (in_proj, x_proj, out_proj, lm_head) no loop primitive touched.
    linear_parallel schedules 2-deep matvec bands (row, reduction); a verify design's are
    3-deep (node, row, reduction), which it leaves as they are."""
    from ...schedules.recipes import LINEAR_KINDS

    touched = {str(e.get("loop", "")).split(":")[0] for e in s.log if e.get("op") in ("split", "unroll", "pipeline")}
    return [k for k in s.kernels() if s.kind(k) in LINEAR_KINDS and k not in touched]


def _schedule(design, candidates, check_fifo: bool):
    """Apply the first candidate (a tuple of registry recipes) that works to a fresh copy
    of `design`: it applies, (`check_fifo`) leaves the FIFO ring partitioned along the
    lanes, passes the dataflow rules and indexes inside every buffer (targets.versal.
    bounds). Returns (design, schedule, name, notes: why the candidates before failed)."""
    from ...schedules.registry import get_recipe
    from ...schedules.schedule import customize
    from ..hls.design import default_bundles
    from .bounds import out_of_bounds
    from .dataflow import enforce

    notes = []
    for recipes in candidates:
        d = _fresh(design)
        s = customize(d)
        name = " + ".join(recipes) or "none"
        try:
            for r in recipes:
                get_recipe(r).fn(s)
            problem = _fifo_problem(s) if check_fifo else None
            if problem is None:
                enforce(d.module, default_bundles(d), where=f"the {design.top} design scheduled {name}")
                bad = out_of_bounds(d.module)
                problem = f"indexes outside a buffer: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1
                                                                   else "") if bad else None
        except ScheduleError as e:
            problem = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if problem is None:
            return d, s, name, notes
        notes.append(f"{name} on the {design.top} design: {problem}")
    raise ScheduleError(f"no schedule applies to the {design.top} design: " + "; ".join(notes))


def _user_schedule(design, schedule, verify: bool):
    """A user's schedule (recipe name, FILE.py or callable) on a fresh copy, then, on the
    verify design, tree_buffer unless the user's schedule placed the ring already."""
    from ...schedules.tree_buffer import tree_buffer_schedule
    from ...schedules.user import apply_user_schedule

    d = _fresh(design)
    s = apply_user_schedule(d, schedule)
    name = str(schedule)
    if verify and not any(e.get("op") == "storage" and str(e.get("buffer", "")).endswith(":" + FIFO) for e in s.log):
        tree_buffer_schedule(s)
        name += " + tree_buffer"
    problem = _fifo_problem(s) if verify else None
    return d, s, name, [f"{name} on the verify design: {problem}"] if problem else []


# ------------------------------------------------------------------------ fit


class _Together(ResourceEstimate):
    """The resources of several emitted kernels on one chip: every kernel's processes and
    its own m_axi / s_axilite interface, under the kernel's name."""

    def __init__(self, parts: dict[str, ResourceEstimate]):
        super().__init__(kernels=[dataclasses.replace(k, name=f"{role}/{k.name}")
                                  for role, est in parts.items() for k in est.kernels])
        self._interfaces = [dataclasses.replace(est.interface, name=f"{role}/{est.interface.name}")
                            for role, est in parts.items()]
        self.maxi_bundles = sum(est.maxi_bundles for est in parts.values())
        self.top_args = sum(est.top_args for est in parts.values())

    @property
    def all_kernels(self):
        return [*self.kernels, *self._interfaces]


# ---------------------------------------------------------------------- build


def _shape(tree):
    from ...runtime.trees import Chain, Static, parse_shape

    shape = parse_shape(tree)
    if not isinstance(shape, (Chain, Static)):  # dyn / search trees
        raise SpeculativeBuildError(
            f"--tree {tree}: a {'dynamic' if str(shape).startswith('dyn') else 'searched'} tree is grown by the "
            "draft's confidence at run time, which the generated host does not do; give a chain (chain:4) or static "
            "widths (4,2,1,1)")
    return shape


def check_pair(target, draft, names: tuple[str, str] = ("target", "draft")) -> None:
    """A draft must share its target's vocabulary (and both be float Mamba models)."""
    vt, vd = target.config.vocab_size, draft.config.vocab_size
    if vt != vd:
        raise SpeculativeBuildError(
            f"draft '{names[1]}' has vocabulary {vd}, the target '{names[0]}' {vt}: a draft must share its target's "
            "tokens; pick a draft trained with the target's tokenizer")


def build_speculative(target, draft, tree="chain:7", board: str | Board = "vck190", schedule=None,
                      mode: str = "csim", out_dir: str | Path = "build", progress: bool = True, *,
                      prompt: list[int] | None = None, tokens: int = 32, csim_trees: int = 3, draft_steps: int = 2,
                      vocab_limit: int | None = None, names: tuple[str, str] = ("target", "draft"), seed: int = 0,
                      rtol: float = 1e-4, atol: float = 1e-4, clock_mhz: float | None = None,
                      platform: str | None = None, run_vendor_tools: bool = True,
                      force: bool = False) -> SpeculativeBuildResult:
    """SpecMamba's accelerator as one Versal project; see the module docstring.

    target, draft: nn.Modules (mambaflow Mamba LMs), MambaConfigs or preset names; the
    draft must share the target's vocabulary. tree: 'chain:K' or static widths
    ('4,2,1,1'); the verify kernel has the shape's node count. schedule: None (the
    default schedules above) or a recipe name / FILE.py / callable applied to both
    kernels (the verify kernel then gets tree_buffer after it). prompt: token ids
    (default [0]); tokens: tokens the host generates and checks; csim_trees: verify
    passes of the PyTorch run the verify kernel's csim replays; draft_steps: decode
    steps of the draft's csim; vocab_limit: ids at or above it are never drafted or
    emitted (the byte tokenizer's limit for the shipped models). platform: a platform
    name or .xpfm path for the project (default: the board's).
    """
    from ...flow.capture import capture
    from ...runtime.backends import TorchBackend
    from ...runtime.generate import Sampling, generate
    from ...runtime.trees import fifo_bound
    from ...schedules.user import check_user_schedule

    # every check that needs no capture comes before the output directory is touched
    check_mode(mode)
    b = get_board(board)
    vitis, plat = vitis_and_platform(b, platform)
    shape = _shape(tree)
    target, draft = resolve_model(target, seed), resolve_model(draft, seed + 1)
    check_pair(target, draft, names)
    if isinstance(schedule, (str, Path)) and str(schedule).endswith(".json"):
        raise SpeculativeBuildError(
            f"--schedule {schedule}: a saved log replays on the design it was made on, and a speculative build has "
            "two; give a recipe name or a FILE.py (its schedule(s) can tell the kernels apart by s.design.phase)")
    check_user_schedule(schedule)
    prompt = [0] if prompt is None else [int(t) for t in prompt]
    V = target.config.vocab_size
    limit = V if vocab_limit is None else int(vocab_limit)
    if not prompt or not all(0 <= t < V for t in prompt):
        raise SpeculativeBuildError(f"the prompt must be at least one token id in [0, {V}), got {prompt}")
    if not 1 <= limit <= V:
        raise SpeculativeBuildError(f"vocab_limit {vocab_limit} is outside 1..{V}")
    for nm, v, lo in (("tokens", tokens, 2), ("csim_trees", csim_trees, 1), ("draft_steps", draft_steps, 1)):
        if not (isinstance(v, int) and v >= lo):
            raise SpeculativeBuildError(f"{nm} must be an integer >= {lo}, got {v!r}")
    T = shape.nodes
    S = min(fifo_bound(shape.widths), T)

    out = outdir.claim(Path(out_dir), force)
    result = SpeculativeBuildResult(out_dir=out, board=b.name, mode=mode, top="verify + decode", target=names[0],
                                    draft=names[1], tree=str(shape), nodes=T, fifo_depth=S)
    result.notes += platform_notes(vitis, plat)
    st = BuildSteps(result, progress, 9)
    hls = out / "hls"

    # 1-2. capture + schedule
    designs = {}
    for role, model, what in (("verify", target, f"the target's verify ({T} nodes, FIFO tree buffer {S})"),
                              ("draft", draft, "the draft's decode")):
        t0 = st.start(f"capture {what} and schedule it")
        if role == "verify":
            d = capture(model, "verify", T=T, fifo_depth=S, progress=progress)
        else:
            d = capture(model, "decode", progress=progress)
        if schedule is None:
            d, s, name, notes = _schedule(d, VERIFY_SCHEDULES if role == "verify" else DRAFT_SCHEDULES,
                                          check_fifo=role == "verify")
        else:
            d, s, name, notes = _user_schedule(d, schedule, role == "verify")
        s.save(out / f"schedule_{role}.json")
        designs[role] = d
        result.kernels[role] = KernelBuild(role, d.top, f"hls/{role}/kernels.cpp", name, schedule_notes=notes)
        for n in notes:
            st.warn([f"schedule {n}" + ("" if schedule is not None else f"; using {name}")])
        idle = unscheduled_linear(s) if any(r in name for r in ("linear_parallel", "accelerator")) else []
        if idle:
            st.warn([f"the {role} kernel's linear layers {', '.join(idle)} are not MAC arrays: linear_parallel "
                     "schedules 2-deep (row, reduction) matvec bands and leaves deeper ones, as the verify "
                     "design's (node, row, reduction), as they are"])
        st.done(f"capture {role}", t0, detail=f"{len(d.kernels)} kernels, schedule {name}")

    # 3. emit
    t0 = st.start("emit Vitis HLS C++ of both kernels")
    codes = {}
    for role, d in designs.items():
        codes[role] = emit_kernel(d, hls / role, st, label=f"the {role} kernel '{d.top}'")
        kb = result.kernels[role]
        kb.lines, kb.ports = len(codes[role].source.splitlines()), len(codes[role].ports)
    st.done("emit", t0, detail=", ".join(f"{r} {k.lines} lines" for r, k in result.kernels.items()))

    # 4. fit: each kernel, and both on one chip
    t0 = st.start(f"check resources against {b.name}")
    for role, code in codes.items():
        st.note(f"      the {role} kernel '{code.top}':")
        result.kernels[role].fit = fit_kernel(code.resources, code.ports, b, st)
    both = _Together({role: code.resources for role, code in codes.items()})
    st.note("      both kernels on one chip:")
    result.fit = fit_kernel(both, [p for c in codes.values() for p in c.ports], b, st)
    st.done("fit", t0, "ok" if not [k for k in result.kernels.values() if not k.fit.fits] and result.fit.fits
            else "failed")

    # 5. the reference: a PyTorch speculative run, its trees, its tokens
    t0 = st.start(f"PyTorch speculative decoding of {tokens} tokens (tree {shape}): the golden trees and tokens")
    cases, gen = speculative_cases(target, draft, shape, prompt, tokens, limit, verify_size=T, fifo_depth=S)
    plain = generate(TorchBackend(target), prompt, tokens, Sampling(vocab_limit=limit)).tokens
    if plain != gen.tokens:  # greedy speculative decoding is the target's greedy decoding, up to float order
        at = next(i for i, (a, c) in enumerate(zip(plain, gen.tokens)) if a != c)
        st.warn([f"PyTorch's speculative tokens differ from its plain greedy ones at token {at} ({gen.tokens[at]} vs "
                 f"{plain[at]}: a near-tie the prefill's and the tree's summation orders break apart); the host is "
                 "checked against the speculative run"])
    result.golden_tokens, result.golden_accepted = list(gen.tokens), list(gen.accepted)
    st.done("reference", t0, detail=f"{len(cases)} verify passes, accepted per pass {gen.accepted}")

    # 6. csim of both kernels against PyTorch
    trees = cases[:csim_trees]
    t0 = st.start(f"C simulation of the verify kernel on {len(trees)} real tree(s) and of {draft_steps} draft "
                  "decode step(s), against PyTorch")
    data = {"verify": reference_data(target, designs["verify"], trees=trees, rtol=rtol, atol=atol),
            "draft": reference_data(draft, designs["draft"], steps=draft_steps, seed=seed, rtol=rtol, atol=atol)}
    result.kernels["verify"].cases = [{"nodes": c.nodes, "accepted": c.accepted, "path": c.path,
                                       "tokens": c.tokens[:c.nodes], "parents": c.parents[:c.nodes]} for c in trees]
    for role, (inputs, golden, spec) in data.items():
        t1 = time.perf_counter()
        kb = result.kernels[role]
        kb.csim = csim_kernel(codes[role], hls / role, inputs, golden, spec, st)
        kb.csim_s = time.perf_counter() - t1
    ok = all(k.csim is not None and k.csim.ok for k in result.kernels.values())
    st.done("csim", t0, "ok" if ok else "failed",
            "; ".join(f"{r} max |err| {k.csim.max_abs_err:.3g}" if k.csim else f"{r} did not run"
                      for r, k in result.kernels.items()))
    tb_spec = data["verify"][2]
    del data

    # 7. host + its C simulation
    t0 = st.start("write the host (draft -> verify -> accept) and run it over the kernels' C simulation")
    hspec = HostSpec(codes["verify"], codes["draft"], V, limit, T, S, tuple(shape.widths),
                     StateShape.of(target.config), StateShape.of(draft.config), len(prompt), tokens, b.name)
    host_text = host_source(hspec)
    (out / "host").mkdir(parents=True, exist_ok=True)
    (out / "host" / "spec_loop.h").write_text(SPEC_LOOP.read_text())
    from ..hls.testbench import DATA_HELPERS

    (hls / "mf_data.h").write_text(DATA_HELPERS)  # the host's include path is hls/ (the Makefile's host rule)
    (out / "host" / "host.cpp").write_text(host_text)
    write_host_data(hls / "spec", prompt, gen.tokens, gen.accepted)
    if all(k.csim is not None for k in result.kernels.values()):
        try:
            result.host = run_host_csim(out, {r: (hls / r / "kernels.o", codes[r].top) for r in codes}, hls,
                                        gen.tokens, gen.accepted)
            st.note("      " + result.host.summary())
            st.done("host", t0, "ok" if result.host.ok else "failed")
        except CsimError as e:
            result.errors.append(str(e))
            st.done("host", t0, "failed", "see errors")
    else:
        st.done("host", t0, "skipped", "a kernel's C simulation did not run")

    # 8. project
    t0 = st.start("write the Vitis project")
    kernels = [KernelSpec(codes[r].top, codes[r].ports, source=f"hls/{r}/kernels.cpp") for r in ("verify", "draft")]
    pspec = ProjectSpec(board=b, kernels=kernels, tb=tb_spec, clock_mhz=clock_mhz,
                        platform=plat.value if plat.explicit else None,
                        title=f"SpecMamba: {names[0]} verify ({T} nodes, tree {shape}) + {names[1]} decode",
                        vitis_release=vitis.release if vitis else None, platform_note=plat.note)
    write_project(out, pspec, readme_extra=_readme(result, hspec), host=host_text)
    (out / "resources.json").write_text(json.dumps({r: c.resources.to_dict() for r, c in codes.items()},
                                                   indent=1, sort_keys=True))
    st.done("project", t0)

    # 9. vendor tools
    vendor_flow(out, mode, st, vitis, run_vendor_tools)
    finish_build(out, result)
    return result


def _readme(r: SpeculativeBuildResult, h: HostSpec) -> str:
    k = r.kernels
    return f"""
## Speculative decoding (SpecMamba)

| kernel | source | what | schedule |
|---|---|---|---|
| `{k['verify'].top}` | `{k['verify'].source}` | {r.target}: tree verify of {r.nodes} nodes (tree {r.tree}), FIFO tree buffer of {r.fifo_depth} states on chip, every node's state out | {k['verify'].schedule} |
| `{k['draft'].top}` | `{k['draft'].source}` | {r.draft}: one decode step | {k['draft'].schedule} |

`host/host.cpp` (over `host/spec_loop.h`) runs the loop on the board: the draft decodes the
tree's nodes, `verify` scores the tree in one pass, the longest path whose every token is the
target's argmax is accepted, the target's state moves to the accepted node (its conv window
and its SSM state, from `conv_in` and `ssm_states`), and the target's own next token starts
the next round. It generates {h.tokens} tokens after the {h.prompt_len}-token prompt in
`hls/spec/prompt.bin` and compares them with `hls/spec/tokens.golden.bin` (PyTorch's greedy
tokens); it reads the weights from each kernel's reference data (`hls/verify/data`,
`hls/draft/data`): on the board `./host.exe {k['verify'].top}.xclbin hls`.

The same host.cpp built with `-DMF_HOST_CSIM` calls the kernels' C++ instead of XRT (the
build ran it: `host/host_csim hls`). To rebuild it by hand, from this directory:

    objcopy -R .group --keep-global-symbol={k['verify'].top} hls/verify/kernels.o host/verify_kernel_csim.o
    objcopy -R .group --keep-global-symbol={k['draft'].top} hls/draft/kernels.o host/draft_kernel_csim.o
    g++ -std=c++17 -O2 -DMF_HOST_CSIM -I hls -I host host/host.cpp host/*_kernel_csim.o -o host/host_csim
"""
