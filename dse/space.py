"""What the DSE searches: the factors of the registry's accelerator recipes, per kernel kind.

A point is a dict of knob -> value. `schedule_of(point)` is a function of a Schedule that
applies the recipe functions of `schedules.recipes` (those the registry's `accelerator`
composes) with the point's factors, so every trial's schedule is a replayable log:

- `tile.<kind>` for each linear kernel (in_proj, x_proj, out_proj, lm_head): the MAC
  array width of `linear_parallel_schedule` (reduction split, unrolled, the weight row
  partitioned cyclically by the same factor);
- `ii.linear`: the II the linear tile loops are pipelined at;
- `lanes.<kind>` for conv and ssm: the state lanes of `ssm_serial_schedule` (split,
  unrolled, the state tile partitioned by the lanes); `ii.ssm` their II;
- `dataflow`: the layers as a dataflow pipeline (`layer_pipeline_schedule`) or not, and
  `depth` its FIFO depth;
- `uram_kib`: buffers of at least this many KiB go to URAM (`large_buffers_to_uram`);
- `widen`: copy loops between m_axi and local tiles move one AXI beat a cycle
  (`widen_copies`); `feed`: buffers a pipelined iteration reads at several addresses
  partitioned to feed it (`feed_pipelines`, capped by the largest tile or lanes), both
  as the registry's `accelerator` applies them;
- `bundles`: one m_axi bundle per process (`default_bundles`) or per weight port
  (`weight_bundles`: a weight and its group scales on parallel AXI masters);
- `structure`: `accelerator` (the knobs above) or `lightmamba` (the registry's
  `lightmamba_schedule`, with `macs` = `tile.in_proj`, `ssm_lanes` = `lanes.ssm` and
  `depth`; the other knobs do not apply, and its points share their schedule log);
- `quant`: the integer scheme, when the DSE is given several (`--quant w8a8,w4a4`).

The kinds come from the model's config (flow.kernels), so the space is known before any
capture; Optuna suggests every knob as a categorical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..schedules import recipes as R
from ..schedules.lightmamba import lightmamba_schedule, weight_bundles

TILES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LANES = (1, 2, 4, 8, 16, 32)
II_LINEAR = (1, 2, 4)
II_SSM = (1, 2)
DEPTHS = (2, 4, 8, 16)
URAM_KIB = (16, 64, 256)
SSM_KINDS = ("conv", "ssm")
STRUCTURES = ("accelerator", "lightmamba")
BUNDLES = ("process", "weight")


@dataclass(frozen=True)
class Knob:
    name: str
    choices: tuple
    smallest: Any   # the value of the least parallel design (the baseline trial)


@dataclass(frozen=True)
class SearchSpace:
    knobs: tuple[Knob, ...]

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def suggest(self, trial) -> dict:
        """The point an Optuna trial asks for (every knob categorical)."""
        return {k.name: trial.suggest_categorical(k.name, list(k.choices)) for k in self.knobs}

    def smallest(self) -> dict:
        return {k.name: k.smallest for k in self.knobs}

    def recipes(self) -> list[dict]:
        """The registry's own design points: `accelerator` with its default factors,
        `lightmamba` (64 MACs, 8 SSM lanes) and `lightmamba` widened to one 512-bit AXI
        beat of weights a cycle (128 MACs, 16 lanes). The search starts from them, so a
        short run is never worse than the recipes a user would try first."""
        acc = {"ii.linear": 1, "ii.ssm": 1, "dataflow": True, "depth": 2, "uram_kib": 64, "widen": True,
               "feed": True, "structure": "accelerator"}
        lm = dict(acc, structure="lightmamba", bundles="weight")
        out = []
        # and LightMamba's structure at the widest MAC array one 512-bit beat of 4-bit
        # weights feeds (128 MACs), with 16 SSM lanes
        for extra, tile, lanes in ((acc, 16, 16), (lm, 64, 8), (lm, 128, 16)):
            p = self.smallest()
            for k in self.knobs:
                if k.name.startswith("tile."):
                    p[k.name] = tile
                elif k.name.startswith("lanes."):
                    p[k.name] = lanes
                elif k.name in extra:
                    p[k.name] = extra[k.name]
            out.append({k: v for k, v in p.items()})
        return [p for p in out if all(p[k.name] in k.choices for k in self.knobs)]

    def to_dict(self) -> dict:
        return {k.name: list(k.choices) for k in self.knobs}


def kernel_kinds(cfg) -> list[str]:
    """The kernel kinds of a model's design, from its config alone (flow.kernels)."""
    from ..flow import kernels as K

    return [k.kind for k in K.layer_kernels(cfg, 1)] + [k.kind for k in K.model_kernels(cfg, 1)]


def space_for(cfg, quants: tuple[str, ...] = ()) -> SearchSpace:
    kinds = kernel_kinds(cfg)
    knobs = [Knob(f"tile.{k}", TILES, TILES[0]) for k in R.LINEAR_KINDS if k in kinds]
    knobs.append(Knob("ii.linear", II_LINEAR, II_LINEAR[-1]))
    knobs += [Knob(f"lanes.{k}", LANES, LANES[0]) for k in SSM_KINDS if k in kinds]
    knobs += [Knob("ii.ssm", II_SSM, II_SSM[-1]), Knob("dataflow", (True, False), False),
              Knob("depth", DEPTHS, DEPTHS[0]), Knob("uram_kib", URAM_KIB, URAM_KIB[0]),
              Knob("widen", (True, False), False), Knob("feed", (True, False), False),
              Knob("bundles", BUNDLES, BUNDLES[0]), Knob("structure", STRUCTURES, STRUCTURES[0])]
    if len(quants) > 1:
        knobs.append(Knob("quant", tuple(quants), quants[-1]))
    return SearchSpace(tuple(knobs))


def schedule_of(point: dict) -> Callable:
    """The function of a Schedule that applies `point`'s factors (see the module doc)."""
    tiles = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("tile.")}
    lanes = {k.split(".", 1)[1]: v for k, v in point.items() if k.startswith("lanes.")}

    def schedule(s):
        if point.get("structure") == "lightmamba":
            return lightmamba_schedule(s, macs=tiles.get("in_proj", 64), ssm_lanes=lanes.get("ssm", 8),
                                       depth=point["depth"])
        R.linear_parallel_schedule(s, tile=tiles, ii=point["ii.linear"])
        R.ssm_serial_schedule(s, ii=point["ii.ssm"], lanes=lanes)
        if point.get("widen"):
            R.widen_copies(s, ii=point["ii.linear"])
        if point["dataflow"]:
            R.layer_pipeline_schedule(s, depth=point["depth"])
        if point.get("feed"):
            R.feed_pipelines(s, cap=max([*tiles.values(), *lanes.values()], default=64))
        R.large_buffers_to_uram(s, min_bytes=point["uram_kib"] * 1024)
        if point.get("bundles") == "weight":
            weight_bundles(s)
        return s

    return schedule


def describe(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())
