"""What a DSE writes: results.json, pareto.png and best_schedule.json (see dse.store).

`best_schedule.json` is the schedule log of the fastest design on the Pareto front
within the budget (ties: fewer DSP, LUT, BRAM18K); `mambaflow build --schedule` takes it
(with the DSE's --model, --board and, for an integer design, --quant).
"""

from __future__ import annotations

import json
import shlex

from .budget import Budget
from .store import ResultsStore, write_atomic

RESULTS, PLOT, BEST = "results.json", "pareto.png", "best_schedule.json"


def record(t, bud: Budget) -> dict:
    """A trial (optuna FrozenTrial) as a plain record."""
    from optuna.trial import TrialState

    a = t.user_attrs
    state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed" if "run" in a else "interrupted",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}.get(t.state, t.state.name.lower())
    rec = {"number": t.number, "state": state, "point": dict(t.params), "log": a.get("log"), "run": a.get("run"),
           "quant": a.get("quant"), "seconds": a.get("seconds")}
    if state == "complete":
        res = dict(a["resources"])
        rec.update(tokens_per_s=t.values[0], resources=res, bound=a.get("bound"),
                   roofline_share=a.get("roofline_share"), cycles_per_token=a.get("cycles_per_token"),
                   clock_mhz=a.get("clock_mhz"), over=bud.over(res))
        rec["feasible"] = not rec["over"]
    elif state == "failed":
        rec["error"] = a.get("error")
    if "reused_from" in a:
        rec["reused_from"] = a["reused_from"]
    return rec


def _best(pareto: list[dict]) -> dict | None:
    if not pareto:
        return None
    return max(pareto, key=lambda t: (t["tokens_per_s"], *(-t["resources"][r] for r in ("dsp", "lut", "bram18k"))))


def build_command(setup: dict, best: dict, path) -> str:
    args = ["mambaflow", "build", "--model", setup["model"], "--board", setup["board"]]
    if best.get("quant"):
        args += ["--quant", best["quant"]]
    return shlex.join(args + ["--schedule", str(path)])


def write(store: ResultsStore, study, space, bud: Budget, setup: dict, evaluated: int):
    from .search import DseResult

    trials = [record(t, bud) for t in study.get_trials(deepcopy=False)]
    front = {t.number for t in study.best_trials}
    pareto = sorted((t for t in trials if t["number"] in front and t.get("feasible")),
                    key=lambda t: -t["tokens_per_s"])
    best = _best(pareto)
    files = {"results": str(store.path(RESULTS)), "study": str(store.journal)}
    if best is not None and best["log"]:
        dst = store.path(BEST)
        write_atomic(dst, store.log_path(best["log"]).read_text())
        best = dict(best, schedule=str(dst), build_command=build_command(setup, best, dst))
        files["best schedule"] = str(dst)
    if any(t["state"] == "complete" for t in trials):
        plot(store.path(PLOT), trials, pareto, best, bud)
        files["pareto plot"] = str(store.path(PLOT))
    doc = {"setup": setup, "budget": bud.to_dict(), "objectives": ["max tokens_per_s", "min dsp", "min lut",
                                                                   "min bram18k"],
           "trials": trials, "pareto": [t["number"] for t in pareto], "best": best}
    write_atomic(store.path(RESULTS), json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return DseResult(out=store.out, board=setup["board"], budget=bud, trials=trials, pareto=pareto, best=best,
                     evaluated=evaluated, files=files)


def plot(path, trials: list[dict], pareto: list[dict], best: dict | None, bud: Budget) -> None:
    """tokens/s against DSP, LUT and BRAM18K: every estimated design, the Pareto front
    joined, designs over the budget crossed, a budget the user gave a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t["state"] == "complete"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, r in zip(axes, ("dsp", "lut", "bram18k")):
        ok = [t for t in done if t["feasible"]]
        bad = [t for t in done if not t["feasible"]]
        ax.scatter([t["resources"][r] for t in ok], [t["tokens_per_s"] for t in ok], s=14, c="0.6",
                   label="within budget")
        if bad:
            ax.scatter([t["resources"][r] for t in bad], [t["tokens_per_s"] for t in bad], s=14, marker="x",
                       c="tab:red", label="over budget")
        front = sorted(pareto, key=lambda t: t["resources"][r])
        ax.plot([t["resources"][r] for t in front], [t["tokens_per_s"] for t in front], "o-", c="tab:blue",
                ms=4, label="Pareto front")
        if best is not None:
            ax.scatter([best["resources"][r]], [best["tokens_per_s"]], marker="*", s=160, c="tab:orange",
                       zorder=5, label="best")
        if r in bud.given:
            ax.axvline(bud.limit(r), ls="--", c="k", lw=0.8, label="budget")
        ax.set_xlabel({"dsp": "DSP58", "lut": "LUT", "bram18k": "BRAM18K"}[r])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("tokens/s (estimate)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"DSE on {bud.board}: {len(done)} designs, {len(pareto)} on the front")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
