"""`mambaflow dse`: Optuna over the recipes' factors, resumable, local pool or Ray.

On tiny-mamba1 (a trial schedules and estimates its decode design in about a second).
The real estimator scores every trial; nothing is mocked."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from cli_run import cli, last_line

from mambaflow.dse import BudgetError, parse_budget, run_dse
from mambaflow.dse.space import schedule_of, space_for
from mambaflow.models.config import PRESETS
from mambaflow.targets.versal.boards import get_board

MODEL = "tiny-mamba1"
USAGE, TOOLS = 2, 3


def finished(result) -> list[dict]:
    return [t for t in result.trials if t["state"] in ("complete", "failed")]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A DSE interrupted (KeyboardInterrupt from its trial callback) after 3 finished
    trials, then rerun with the same --out: (records at the interrupt, the second run's
    callback records, the second run's result)."""
    out = tmp_path_factory.mktemp("dse") / "out"

    def stop_after_three(rec, seen=[]):
        seen.append(rec)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dse(MODEL, board="vck190", out=out, trials=6, workers=2, progress=False, on_trial=stop_after_three)
    first = json.loads((out / "results.json").read_text())["trials"]
    again = []
    result = run_dse(MODEL, board="vck190", out=out, trials=6, workers=2, progress=False, on_trial=again.append)
    return first, again, result


def test_resume_after_interrupt_keeps_finished_trials(resumed):
    first, again, result = resumed
    done1 = {t["number"]: t for t in first if t["state"] == "complete"}
    assert len(done1) == 3 and all(t["run"] == 1 for t in done1.values())
    # nothing finished before the interrupt is evaluated again, and it keeps its numbers
    assert not {r["number"] for r in again} & set(done1)
    now = {t["number"]: t for t in result.trials}
    for n, t in done1.items():
        assert now[n]["run"] == 1 and now[n]["tokens_per_s"] == t["tokens_per_s"] and now[n]["log"] == t["log"]
    assert len(finished(result)) == 6
    reused = [r for r in again if "reused_from" in r]
    assert result.evaluated + len(reused) == len(again) == 3
    # a trial the interrupt left running is recorded as such and its point asked again
    for t in result.trials:
        if t["state"] == "interrupted":
            assert any(u["point"] == t["point"] and u["run"] == 2 for u in result.trials if u["number"] > t["number"])
    # a third run with the same options has nothing left to do
    third = run_dse(MODEL, board="vck190", out=result.out, trials=6, workers=2, progress=False)
    assert third.evaluated == 0 and [t["number"] for t in third.pareto] == [t["number"] for t in result.pareto]


def test_store_pareto_and_outputs(resumed):
    _, _, result = resumed
    out = Path(result.out)
    doc = json.loads((out / "results.json").read_text())
    assert doc["pareto"] == [t["number"] for t in result.pareto] and doc["best"]["number"] == result.best["number"]
    # every estimated trial's schedule is stored under its hash, and it is what Schedule.save writes
    for t in result.trials:
        if t["state"] == "complete":
            log = json.loads((out / "logs" / f"{t['log']}.json").read_text())
            assert log["format"] == "mambaflow-schedule/1" and log["log"]
    # the front: within the budget, no member dominates another, every other design is dominated
    key = lambda t: (-t["tokens_per_s"], t["resources"]["dsp"], t["resources"]["lut"], t["resources"]["bram18k"])
    dominates = lambda a, b: all(x <= y for x, y in zip(key(a), key(b))) and key(a) != key(b)
    front = result.pareto
    assert front and all(t["feasible"] for t in front)
    assert not any(dominates(a, b) for a in front for b in front)
    for t in result.trials:
        if t["state"] == "complete" and t["number"] not in doc["pareto"]:
            assert any(dominates(f, t) or key(f) == key(t) for f in front)
    assert result.best["tokens_per_s"] == max(t["tokens_per_s"] for t in front)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "best_schedule.json").read_text() == (out / "logs" / f"{result.best['log']}.json").read_text()


def test_best_log_replays_through_build(resumed, tmp_path):
    from mambaflow.flow.capture import capture
    from mambaflow.schedules.schedule import customize, replay

    _, _, result = resumed
    best = Path(result.best["schedule"])
    assert result.best["build_command"].endswith(f"--schedule {best}")
    # the log is the schedule of the best point
    a = capture(PRESETS[MODEL], "decode", progress=False)
    schedule_of(result.best["point"])(customize(a))
    b = capture(PRESETS[MODEL], "decode", progress=False)
    replay(b, best)
    assert str(a.module) == str(b.module)
    p = cli("build", "--model", MODEL, "--steps", "1", "--schedule", best, "--out", tmp_path / "b")
    assert p.returncode in (0, TOOLS), p.stderr[-2000:]
    assert "C simulation matches PyTorch" in p.stdout
    assert (tmp_path / "b" / "schedule.json").read_text() == best.read_text()


def test_dse_on_local_ray(tmp_path):
    import ray

    r = run_dse(MODEL, board="vck190", out=tmp_path / "ray", trials=3, workers=2, ray="local", progress=False)
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert [t["state"] for t in r.trials] == ["complete"] * 3 and r.evaluated == 3
    assert len({t["log"] for t in r.trials}) == 3  # three schedules, each evaluated by a Ray task
    assert r.best is not None and Path(r.best["schedule"]).is_file()
    assert all(t["resources"]["dsp"] > 0 and t["tokens_per_s"] > 0 for t in r.trials)


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    # a clock the estimator refuses: every trial raises; each is recorded with its error
    r = run_dse(MODEL, board="vck190", out=tmp_path / "f", trials=3, workers=1, clock_mhz=-1.0, progress=False)
    assert len(r.failed) == 3 and r.pareto == [] and r.best is None
    for t in r.failed:
        assert t["error"].startswith("MambaflowError: estimate: the clock must be positive")
        assert t["log"] is not None  # the schedule was applied before the estimate refused it
    doc = json.loads((tmp_path / "f" / "results.json").read_text())
    assert [t["state"] for t in doc["trials"]] == ["failed"] * 3


def test_budget_no_design_meets(tmp_path):
    with pytest.raises(BudgetError) as e:
        run_dse(MODEL, board="vck190", out=tmp_path / "b", budget="dsp=10,lut=1k", trials=2, workers=1,
                progress=False)
    doc = json.loads((tmp_path / "b" / "results.json").read_text())  # written before the error
    done = [t for t in doc["trials"] if t["state"] == "complete"]
    assert len(done) == 2 and not any(t["feasible"] for t in done)
    msg = str(e.value)
    for r, limit in (("dsp", "10"), ("lut", "1,000")):
        least = min(done, key=lambda t: t["resources"][r])
        assert f"{r}: the smallest need is {least['resources'][r]:,} (trial {least['number']}) > {limit}" in msg
    assert "bram18k" not in msg and "raise --budget dsp and lut" in msg


def test_budget_syntax():
    b = parse_budget("dsp=228, lut=107k, bram=456", get_board("vck190"))
    assert (b.dsp, b.lut, b.bram18k) == (228, 107_000, 912) and (b.ff, b.uram) == (1_799_680, 463)
    assert b.given == ("dsp", "lut", "bram18k")
    for bad in ("dsp", "dsp=many", "dsps=4", "dsp=1,dsp=2", "lut=-3"):
        with pytest.raises(BudgetError, match="--budget"):
            parse_budget(bad, get_board("vck190"))


def test_cli_bad_budget_and_unreachable_ray(tmp_path):
    p = cli("dse", "--model", MODEL, "--budget", "dsp=lots", "--out", tmp_path / "x")
    assert p.returncode == USAGE and len(p.stderr.strip().splitlines()) == 1
    assert "--budget" in p.stderr and "dsp=lots" in p.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    p = cli("dse", "--model", MODEL, "--ray", addr, "--trials", "2", "--out", tmp_path / "r")
    assert p.returncode == USAGE, p.stderr[-2000:]
    line = last_line(p)
    assert line.startswith("mambaflow dse: error: cannot reach the Ray cluster at " + addr) and "drop --ray" in line
    assert "Traceback" not in p.stderr and not (tmp_path / "r").exists()


def test_space_follows_the_model():
    m1 = space_for(PRESETS["tiny-mamba1"]).names
    m2 = space_for(PRESETS["tiny-mamba2"], ("w8a8", "w4a4")).names
    assert "tile.x_proj" in m1 and "tile.x_proj" not in m2 and "quant" in m2 and "quant" not in m1
