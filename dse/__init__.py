"""Design-space exploration: schedules searched under a board's resources (DESIGN.md, "dse").

    from mambaflow.dse import run_dse
    r = run_dse("mamba2-130m", board="vck190", budget="dsp=400", trials=64, out="dse/out")
    print(r.summary()); r.best["schedule"]      # a log `mambaflow build --schedule` takes

Modules: `space` (the knobs, a point -> a schedule from the recipes), `budget` (--budget),
`evaluate` (one trial, in a worker), `executors` (a local process pool or Ray),
`store` (the Optuna journal and the logs under --out), `search` (the ask-and-tell loop,
resume), `report` (results.json, pareto.png, best_schedule.json).
"""

from .budget import Budget, BudgetError, parse_budget
from .executors import RayUnreachable
from .search import DseResult, run_dse
from .space import SearchSpace, schedule_of, space_for

__all__ = ["Budget", "BudgetError", "DseResult", "RayUnreachable", "SearchSpace", "parse_budget", "run_dse",
           "schedule_of", "space_for"]
