"""The estimate beside Vitis' csynth report (targets.versal.vs_csynth), on report fixtures.

tests/fixtures/csynth_tiny_mamba1 is a csynth report directory of tiny-mamba1's decode
under `accelerator` (tile 8, lanes 4) in the layout Vitis HLS writes (see its README);
the estimate is the real one of that design."""

from __future__ import annotations

from pathlib import Path

import pytest

from mambaflow.schedules.recipes import accelerator_schedule
from mambaflow.targets.estimate import estimate_model
from mambaflow.targets.versal.build import BuildResult, read_csynth
from mambaflow.targets.versal.reports import ReportError, parse_csynth
from mambaflow.targets.versal.vs_csynth import Row, call_graph, side_by_side

FIXTURE = Path(__file__).parent / "fixtures" / "csynth_tiny_mamba1"


@pytest.fixture(scope="module")
def est():
    return estimate_model("tiny-mamba1", board="vck190",
                          schedule=lambda s: accelerator_schedule(s, tile=8, lanes=4, depth=2))


def test_error_is_relative_to_csynth():
    assert Row("k", "DSP", 45, 40).error_pct == pytest.approx(12.5)
    assert Row("k", "LUT", 900, 1000).error_pct == pytest.approx(-10.0)
    assert Row("k", "BRAM18K", 0, 0).error_pct == 0.0
    assert Row("k", "BRAM18K", 3, 0).error_pct is None   # no relative error against nothing
    assert Row("k", "latency", 100, None).error_pct is None  # Vitis: undef


def test_kernels_side_by_side(est):
    synth = parse_csynth(FIXTURE)
    sbs = side_by_side(est, synth)
    k = est.kernel("in_proj")
    lat = sbs.row("in_proj", "latency")
    assert (lat.estimate, lat.csynth) == (k.cycles, 6150)
    assert lat.error_pct == pytest.approx(100 * (k.cycles - 6150) / 6150)
    assert sbs.row("in_proj", "DSP").estimate == k.dsp and sbs.row("in_proj", "DSP").csynth == 40
    assert sbs.row("in_proj", "LUT").csynth == 5120 and sbs.row("in_proj", "BRAM18K").csynth == 4
    # II: the largest of the pipelined loops, nested ones included, on both sides
    ii = [l.ii for l in k.loops if l.ii_req is not None]
    assert sbs.row("in_proj", "II").estimate == max(ii)
    assert sbs.row("in_proj", "II").csynth == 1 and sbs.row("ssm", "II").csynth == 2
    # the top: cycles of one token and the whole design's resources
    top = sbs.row("decode", "latency")
    assert (top.estimate, top.csynth) == (est.cycles_per_token, 13400)
    assert sbs.row("decode", "DSP").estimate == est.resources["dsp"] and sbs.row("decode", "DSP").csynth == 171
    # undef latency: no error; Vitis' own sub-module and the kernels csynth did not report are named
    assert sbs.row("lm_head", "latency").csynth is None and sbs.row("lm_head", "latency").error_pct is None
    assert sbs.only_csynth == ["in_proj_Pipeline_S_i_j_j_outer"]
    assert "x_proj" in sbs.only_estimate and "in_proj" not in sbs.only_estimate
    assert {r.kernel for r in sbs.rows} == {"decode", "in_proj", "conv", "ssm", "lm_head", "layer_step"}
    # Vitis counts a module with the instances it holds: with the call graph, the dataflow
    # region's estimate is its own plus its processes'
    calls = call_graph(est.design.module)
    assert {"in_proj", "conv", "ssm", "out_proj"} <= calls["layer_step"] and not calls["in_proj"]
    held = side_by_side(est, synth, calls)
    want = est.kernel("layer_step").dsp + sum(est.kernel(c).dsp for c in calls["layer_step"])
    assert held.row("layer_step", "DSP").estimate == want > sbs.row("layer_step", "DSP").estimate
    assert held.row("in_proj", "DSP").estimate == k.dsp


def test_build_prints_the_estimate_next_to_the_report(est, tmp_path):
    r = BuildResult(out_dir=tmp_path, board="vck190", mode="csynth", top="decode", estimate=est,
                    calls=call_graph(est.design.module))
    read_csynth(r, FIXTURE)
    text = r.report()
    assert "csynth report:" in text and "estimate vs csynth" in text
    k = est.kernel("conv")
    e = 100 * (k.cycles - 290) / 290
    line = next(l for l in text.splitlines() if l.strip().startswith("conv") and "latency" in l)
    assert line.split() == ["conv", "latency", f"{k.cycles:,}", "290", f"{e:+.1f}%"]
    d = r.to_dict()["vs_csynth"]
    assert any(row["kernel"] == "conv" and row["metric"] == "latency" and row["error_pct"] == pytest.approx(e)
               for row in d["rows"])
    # without an estimate (or without reports) there is nothing to set beside
    bare = BuildResult(out_dir=tmp_path, board="vck190", mode="csynth", top="decode")
    read_csynth(bare, FIXTURE)
    assert bare.vs_csynth is None and "estimate vs csynth" not in bare.report()
    with pytest.raises(ReportError):
        read_csynth(BuildResult(out_dir=tmp_path, board="vck190", mode="csynth", top="decode", estimate=est),
                    tmp_path)
