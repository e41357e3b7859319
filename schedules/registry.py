"""The one registry of schedule recipes: a name, a function of a `Schedule`, a line of text.

    from mambaflow.schedules.registry import RECIPES, apply_recipe
    s = apply_recipe("accelerator", design)   # a Design or a Schedule; returns the Schedule
    s.save("schedule.json")                   # replays to the same IR: replay(fresh, path)

`mambaflow build --schedule NAME`, the benchmarks and the tests look recipes up here. A
recipe schedules *into* the Schedule it is given (its primitives land in that log), so
the saved log is the whole schedule. Parameterized variants are the functions of
`schedules.recipes` (`accelerator_schedule(s, tile=8)`), which take a Schedule too.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable

from ..errors import ScheduleError
from . import recipes as R
from .schedule import Schedule, customize
from .lightmamba import lightmamba_schedule
from .tree_buffer import tree_buffer
from .verify_cpu import verify_cpu_schedule


@dataclass(frozen=True)
class Recipe:
    name: str
    fn: Callable[[Schedule], object]
    description: str


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("cpu", R.cpu_schedule,
           "the llvm build: linear rows unrolled-and-jammed with register accumulators, the SSM update "
           "fused into y = h.C, exp and log1p expanded so LLVM vectorizes"),
    Recipe("linear_parallel", R.linear_parallel_schedule,
           "linear layers as MAC arrays: reduction split by 16 and unrolled, weights partitioned "
           "cyclically along it, pipelined at II=1"),
    Recipe("ssm_serial", R.ssm_serial_schedule,
           "conv and SSM update as serial pipelines at II=1, 16 state lanes per cycle (the split's outer "
           "loop pipelined), state and A partitioned to feed them"),
    Recipe("layer_pipeline", R.layer_pipeline_schedule,
           "each layer a dataflow region Vitis accepts: the layer body outlined into `layer_step`, a fork "
           "for every buffer two processes read, FIFO streams between the processes (depth 2, or the whole "
           "buffer where the Kahn check needs it), one m_axi bundle per process"),
    Recipe("accelerator", R.accelerator_schedule,
           "linear_parallel + ssm_serial + layer_pipeline, weight rows and state tiles copied on chip a beat "
           "wide before they are partitioned, local buffers partitioned to feed every pipeline, buffers of 64 KiB "
           "or more in URAM: the LightMamba / SpecMamba structure"),
    Recipe("lightmamba", lightmamba_schedule,
           "LightMamba's published architecture (the estimate's calibration point): 64 4-bit MACs per cycle "
           "on weights read straight from m_axi (one 256-bit beat), SSM 8 lanes, layer_pipeline, URAM"),
    Recipe("tree_buffer", tree_buffer,
           "verify designs captured with a FIFO: the state ring on-chip (BRAM/URAM), partitioned and "
           "pipelined; other designs unchanged"),
    Recipe("verify_cpu", verify_cpu_schedule,
           "speculative verify on llvm: node loops of the linear layers unrolled-and-jammed, then cpu"),
)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ScheduleError(f"unknown schedule recipe '{name}'; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_recipe(name: str, design) -> Schedule:
    """Apply recipe `name` to a Design (or into a Schedule); returns the Schedule."""
    recipe = get_recipe(name)
    s = customize(design)
    recipe.fn(s)
    return s


def describe(columns: int = 79) -> str:
    """The recipes and their descriptions, as a wrapped two-column list (for --help)."""
    width = max(map(len, RECIPES)) + 4
    return "\n".join(textwrap.fill(r.description, columns, initial_indent=f"  {r.name:{width - 2}}",
                                   subsequent_indent=" " * width) for r in RECIPES.values())
