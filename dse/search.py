"""The DSE loop: Optuna asks for points, workers estimate them, Optuna is told.

    result = run_dse("mamba2-130m", board="vck190", out="dse/vck190", trials=64)
    result = run_dse("mamba2-2.7b", quant="w4a4", board="vck190", budget="dsp=400,lut=200k",
                     ray="local", out="dse/ray")          # or ray="HEAD:6379" for a cluster

The study is multi-objective (Optuna's NSGA-II by default, or TPE): maximize tokens/s,
minimize DSP, LUT and BRAM18K, with one constraint per resource (used - budget <= 0,
`trial.set_constraint`), so Optuna's Pareto front (`study.best_trials`) holds only designs
within the budget. Optuna's ask-and-tell interface lets several trials run at once; only
this process talks to the study.

Resume: the study and the logs live in the results store (dse.store). A rerun with the
same options and --out continues the study up to `trials` finished trials; trials that
finished are never evaluated again, and trials an interrupt left running are recorded as
failed ("interrupted") and their points asked again. A point equal to one already
evaluated takes that trial's result instead of running again.

The first trial of a new study is the least parallel point of the space (every factor 1,
the largest II, no dataflow), a baseline. Resources are not monotone in the factors (a
row buffer can let narrow multipliers go to LUTs, say), so that point is not assumed to
be the smallest design: when no trial meets the budget, the BudgetError is raised after
the search (its results written) and names, per resource, the smallest need any design
had. A trial that raises is recorded as failed with its error (a user attribute of the
trial) and the search goes on.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import MambaflowError
from .budget import Budget, BudgetError, parse_budget
from .space import describe, space_for
from .store import ResultsStore

FORMAT = "mambaflow-dse/1"
OBJECTIVES = ("tokens_per_s", "dsp", "lut", "bram18k")
DIRECTIONS = ["maximize", "minimize", "minimize", "minimize"]
SAMPLERS = ("nsga2", "tpe")


@dataclass
class DseResult:
    out: Path
    board: str
    budget: Budget
    trials: list[dict]                       # every trial's record (report.record)
    pareto: list[dict]                       # the feasible Pareto front, by tokens/s
    best: dict | None
    evaluated: int = 0                       # trials this run evaluated (not resumed, not reused)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.trials if t["state"] == "failed"]

    def summary(self) -> str:
        done = [t for t in self.trials if t["state"] == "complete"]
        cut = sum(t["state"] == "interrupted" for t in self.trials)
        L = [f"dse on {self.board}: {len(self.trials)} trials ({len(done)} estimated, {len(self.failed)} failed"
             + (f", {cut} interrupted and asked again" if cut else "")
             + f"; {self.evaluated} evaluated in this run); budget: {self.budget.describe()}"]
        if self.pareto:
            L.append(f"pareto front ({len(self.pareto)} designs within the budget):")
            L.append(f"  {'trial':>5} {'tokens/s':>10} {'bound':>7} {'DSP':>7} {'LUT':>9} {'BRAM18K':>8}")
            for t in self.pareto:
                r = t["resources"]
                L.append(f"  {t['number']:>5} {t['tokens_per_s']:>10.4g} {t['bound']:>7} {r['dsp']:>7,} "
                         f"{r['lut']:>9,} {r['bram18k']:>8,}")
        if self.best:
            L.append(f"best: trial {self.best['number']}, {self.best['tokens_per_s']:.4g} tokens/s "
                     f"({self.best['bound']} bound): {describe(self.best['point'])}")
            L.append(f"  build it: {self.best['build_command']}")
        for t in self.failed[:3]:
            L.append(f"failed: trial {t['number']}: {t.get('error') or 'interrupted'}")
        L += [f"{k}: {v}" for k, v in self.files.items()]
        return "\n".join(L)


def _sampler(name: str, seed: int):
    import optuna

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    raise MambaflowError(f"unknown sampler '{name}': choose {' or '.join(SAMPLERS)}")


def _quants(quant) -> tuple[str, ...]:
    if quant is None or quant == "":
        return ()
    qs = tuple(q.strip() for q in (quant.split(",") if isinstance(quant, str) else quant) if q.strip())
    from ..quant.schemes import PRESETS as QPRESETS

    bad = [q for q in qs if q not in QPRESETS]
    if bad:
        raise MambaflowError(f"--quant: unknown scheme {bad[0]!r}: use {', '.join(QPRESETS)} (several separated by "
                             "commas to search over them)")
    return qs


def _executor(ray, workers: int):
    from .executors import LocalExecutor, RayExecutor

    return LocalExecutor(workers) if ray is None else RayExecutor(ray, workers)


def run_dse(model: str, *, board: str = "vck190", out: str | Path, quant=None, budget: str | Budget | None = None,
            trials: int = 32, workers: int | None = None, ray: str | None = None, sampler: str = "nsga2",
            seed: int = 0, clock_mhz: float | None = None, progress: bool = True,
            on_trial: Callable[[dict], None] | None = None) -> DseResult:
    """Search schedules of `model`'s decode design on `board` (see the module doc).

    model: a preset name, shipped model or checkpoint directory (workers load it by name).
    quant: None (float), a scheme ('w4a4') or several ('w8a8,w4a4': a searched knob).
    budget: `dsp=…,lut=…,bram=…` (dse.budget) or a Budget; None: the board's resources.
    trials: finished trials the study should hold (a rerun continues up to it).
    workers: trials at once (default: the CPUs here; with Ray, the tasks in flight).
    ray: None (a local process pool), 'local' (a Ray started here) or a cluster address.
    on_trial: called in this process with each finished trial's record.
    """
    import optuna

    from ..targets.versal.boards import get_board
    from . import report
    from .evaluate import model_config

    b = get_board(board)
    bud = budget if isinstance(budget, Budget) else parse_budget(budget, b)
    if not (isinstance(trials, int) and trials >= 1):
        raise MambaflowError(f"trials must be a positive number, got {trials!r}")
    qs = _quants(quant)
    space = space_for(model_config(model, seed), qs)
    setup = {"format": FORMAT, "model": model, "quant": list(qs), "board": b.name, "budget": bud.to_dict(),
             "space": space.to_dict(), "clock_mhz": clock_mhz, "sampler": sampler, "seed": seed, "phase": "decode"}
    workers = workers or _default_workers()
    ex = _executor(ray, workers)  # first: an unreachable Ray fails before --out is touched
    try:
        store = ResultsStore(out, setup)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = store.study(DIRECTIONS, _sampler(sampler, seed))
        run = int(study.user_attrs.get("runs", 0)) + 1
        study.set_user_attr("runs", run)
        # a resumed run draws on from a seed of its own: with the first run's seed, the sampler would
        # propose that run's first points again (taken from the store, but they would fill the trials)
        study.sampler = _sampler(sampler, seed + run - 1)
        _requeue_interrupted(study)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(space.smallest(), user_attrs={"baseline": True})
            # the registry's recipes: the points to beat (as many as the trials leave room for)
            for point in space.recipes()[:max(0, trials - 1)]:
                study.enqueue_trial(point, user_attrs={"recipe": point["structure"]})
        job = {"model": model, "quant": qs[0] if len(qs) == 1 else None, "board": b.name, "clock_mhz": clock_mhz,
               "seed": seed}
        evaluated = [0]
        try:
            _loop(study, space, ex, job, store, bud, b.name, run, trials, workers, progress, on_trial, evaluated)
        finally:
            result = report.write(store, study, space, bud, setup, evaluated[0])
    finally:
        ex.close()
    _check_any_feasible(result, bud)
    return result


def _loop(study, space, ex, job0, store, bud, board, run, trials, workers, progress, on_trial, evaluated) -> None:
    """Ask, evaluate `workers` trials at once, tell, until the study holds `trials` finished ones."""
    from optuna.trial import TrialState
    from tqdm import tqdm

    def finished():
        return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.FAIL)
                and t.user_attrs.get("run") is not None]

    bar = tqdm(total=trials, initial=min(len(finished()), trials), desc="dse", unit="trial", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        pending: dict[int, object] = {}
        while len(finished()) + len(pending) < trials or pending:
            while len(finished()) + len(pending) < trials and len(pending) < workers:
                trial = study.ask()
                point = space.suggest(trial)
                same = _same_point(study, point, trial.number)
                if same is None:
                    ex.submit(trial.number, dict(job0, point=point))
                    pending[trial.number] = trial
                    continue
                rec = _reuse(study, trial, same, bud, run)
                bar.update(1)
                if on_trial:
                    on_trial(rec)
            if not pending:
                break
            number, result = ex.next_done()
            trial = pending.pop(number)
            rec = _record_result(study, trial, result, store, bud, run)
            evaluated[0] += 1
            bar.update(1)
            if rec["state"] == "complete":
                bar.set_postfix_str(f"last {rec['tokens_per_s']:.3g} tok/s")
            if on_trial:
                on_trial(rec)
    finally:
        bar.close()


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _requeue_interrupted(study) -> None:
    """Trials an earlier run left RUNNING (it was interrupted or killed): failed, their points asked again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={k: v for k, v in t.user_attrs.items() if k == "baseline"})


def _same_point(study, point: dict, number: int):
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.params == point:
            return t
    return None


def _constrain(trial, resources: dict, bud: Budget) -> None:
    for r, x in bud.excess(resources).items():
        trial.set_constraint(r, float(x))


def _reuse(study, trial, same, bud: Budget, run: int) -> dict:
    from . import report

    for k, v in same.user_attrs.items():
        if k not in ("baseline", "run"):
            trial.set_user_attr(k, v)
    trial.set_user_attr("reused_from", same.number)
    trial.set_user_attr("run", run)
    _constrain(trial, same.user_attrs["resources"], bud)
    study.tell(trial, list(same.values))
    return report.record(study.get_trials(deepcopy=False)[trial.number], bud)


def _record_result(study, trial, result: dict, store: ResultsStore, bud: Budget, run: int) -> dict:
    from optuna.trial import TrialState

    from . import report

    trial.set_user_attr("run", run)
    if result.get("log"):
        trial.set_user_attr("log", store.save_log(result["log"]))
    if result.get("quant"):
        trial.set_user_attr("quant", result["quant"])
    if result.get("seconds") is not None:
        trial.set_user_attr("seconds", round(result["seconds"], 3))
    if result["ok"]:
        res = result["resources"]
        for k in ("resources", "bound", "roofline_share", "cycles_per_token", "clock_mhz", "fits"):
            trial.set_user_attr(k, result[k])
        _constrain(trial, res, bud)
        study.tell(trial, [result["tokens_per_s"], res["dsp"], res["lut"], res["bram18k"]])
    else:
        trial.set_user_attr("error", result["error"])
        study.tell(trial, state=TrialState.FAIL)
    return report.record(study.get_trials(deepcopy=False)[trial.number], bud)


_BRAM_UNITS = " (bram= counts BRAM36 blocks, two BRAM18K each; bram18k= counts BRAM18K)"


def _check_any_feasible(result: DseResult, bud: Budget) -> None:
    """No estimated design within the budget: which resources, and the smallest need of each."""
    done = [t for t in result.trials if t["state"] == "complete"]
    if not done or any(t["feasible"] for t in done):
        return
    over = sorted({r for t in done for r in t["over"]}, key=list(bud.excess({})).index)
    need = {r: min(done, key=lambda t: t["resources"][r]) for r in over}
    short = [r for r in over if need[r]["resources"][r] > bud.limit(r)]  # over in every design
    if short:
        what = "; ".join(f"{r}: the smallest need is {need[r]['resources'][r]:,} (trial {need[r]['number']}) > "
                         f"{bud.limit(r):,}" for r in short)
        fix = f"raise --budget {' and '.join(short)} at least to that"
    else:  # each design is over in one resource or another
        close = min(done, key=lambda t: max(t["resources"][r] / max(bud.limit(r), 1) for r in over))
        what = (f"every design is over in one of {', '.join(over)}; the closest, trial {close['number']}, needs "
                + ", ".join(f"{r} {close['resources'][r]:,} (budget {bud.limit(r):,})" for r in over))
        fix = f"raise --budget for {' or '.join(over)}"
        short = over
    units = _BRAM_UNITS if "bram18k" in short else ""
    raise BudgetError(f"none of the {len(done)} designs estimated meets the budget on {result.board}: {what}; "
                      f"{fix}{units}, or drop --budget to use the board's resources")
