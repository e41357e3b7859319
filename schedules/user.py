"""A schedule as a user names it (`mambaflow build --schedule ...`), applied to a design.

- a recipe name from `registry.RECIPES`;
- a `FILE.py` defining `schedule(s)`: a mistake in the file (a syntax error, an
  exception it raises, a primitive it calls that is rejected) is reported as the user's,
  with their file and line, without the flow's own frames;
- a saved log `FILE.json`: bad JSON, a log that is not a list of entries, an entry
  without its arguments or one that is rejected are reported with the file and the
  entry's index.

Every problem raises ScheduleError (a MambaflowError) with a one-line message.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any, Callable

from ..errors import MambaflowError, ScheduleError
from .schedule import Schedule, customize, load_log


def apply_user_schedule(design, schedule) -> Schedule | None:
    """Apply `schedule` (None, a recipe name, a .py or .json path, or a callable taking a
    Schedule) to `design` in place; returns the Schedule with its log (None for None)."""
    if schedule is None:
        return None
    if isinstance(schedule, (str, Path)) and str(schedule).endswith(".json"):
        return _replay_file(design, Path(schedule))
    if isinstance(schedule, (str, Path)) and str(schedule).endswith(".py"):
        return _run_file(design, Path(schedule))
    if isinstance(schedule, str):
        return _recipe(schedule)(design)
    if callable(schedule):
        s = customize(design)
        out = schedule(s)
        return out if isinstance(out, Schedule) else s
    raise ScheduleError(f"cannot use {type(schedule).__name__} as a schedule: give a recipe name, "
                        "a .py file, a .json log or a function of a Schedule")


def check_user_schedule(schedule) -> None:
    """The checks `apply_user_schedule` can make without a design (a known recipe, a
    readable log of entries, a schedule file that compiles), to fail before a capture."""
    if isinstance(schedule, (str, Path)) and str(schedule).endswith(".json"):
        _read_log(Path(schedule))
    elif isinstance(schedule, (str, Path)) and str(schedule).endswith(".py"):
        _compile_file(Path(schedule))
    elif isinstance(schedule, str):
        _recipe(schedule)


def _recipe(name: str) -> Callable:
    from .registry import RECIPES, apply_recipe

    if name not in RECIPES:
        raise ScheduleError(f"unknown schedule recipe '{name}': the recipes are {', '.join(sorted(RECIPES))}; "
                            "or give a FILE.py defining schedule(s) or a saved FILE.json log")
    return lambda design: apply_recipe(name, design)


def _read(p: Path, what: str) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ScheduleError(f"{what} {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScheduleError(f"cannot read {what} {p} ({getattr(e, 'strerror', None) or e})") from None


def _read_log(p: Path) -> list:
    text = _read(p, "schedule log")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleError(f"{p}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); a schedule log is what "
                            "Schedule.save writes") from None
    entries = None
    if isinstance(data, list) or (isinstance(data, dict) and data.get("format") == "mambaflow-schedule/1"):
        try:
            entries = load_log(data)
        except (KeyError, TypeError, AttributeError, ScheduleError):
            pass
    if not isinstance(entries, list):
        raise ScheduleError(f"{p}: a schedule log is a list of entries (or {{\"format\": "
                            f"\"mambaflow-schedule/1\", \"log\": [...]}}), not a JSON {_JSON_TYPES.get(type(data).__name__, type(data).__name__)}")
    for i, e in enumerate(entries):
        if not (isinstance(e, dict) and isinstance(e.get("op"), str)):
            raise ScheduleError(f"{p}: entry {i} is not an object with an \"op\": {json.dumps(e)[:80]}")
    return entries


_JSON_TYPES = {"dict": "object without that format", "str": "string", "int": "number", "float": "number",
               "bool": "boolean", "NoneType": "null"}


def _replay_file(design, p: Path) -> Schedule:
    entries = _read_log(p)
    s = customize(design)
    for i, e in enumerate(entries):
        where = f"{p}: entry {i}"
        try:
            s.apply(e)
        except KeyError as k:
            raise ScheduleError(f"{where} ({e['op']}) lacks the argument {k}; re-save the log with Schedule.save") from None
        except ScheduleError as err:
            raise ScheduleError(f"{where} ({e['op']}): {err}") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise ScheduleError(f"{where} ({e['op']}) has an argument of the wrong type ({err})") from None
    return s


def _compile_file(p: Path):
    text = _read(p, "schedule file")
    try:
        return compile(text, str(p), "exec")
    except SyntaxError as e:
        raise ScheduleError(f"{p}:{e.lineno}: {type(e).__name__}: {e.msg} (in your schedule file)") from None


def _run_file(design, p: Path) -> Schedule:
    code = _compile_file(p)
    ns: dict[str, Any] = {"__name__": "mambaflow_user_schedule", "__file__": str(p)}
    s = None
    try:
        exec(code, ns)
        fn = ns.get("schedule")
        if not callable(fn):
            raise ScheduleError(f"{p} must define a function `schedule(s)` taking a mambaflow Schedule")
        s = customize(design)
        out = fn(s)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: report it as theirs
        raise _as_users(e, p) from None
    return out if isinstance(out, Schedule) else s


def _as_users(e: BaseException, p: Path) -> MambaflowError:
    """`e` as one line at the innermost frame of the user's file `p`."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == p]
    msg = (str(e).strip().splitlines() or [""])[0]
    if not frames:
        return e if isinstance(e, MambaflowError) else ScheduleError(f"{p}: {type(e).__name__}: {msg}")
    f = frames[-1]
    what = "rejected" if isinstance(e, ScheduleError) else type(e).__name__
    return ScheduleError(f"{p}:{f.lineno}: in {f.name}: {what}: {msg} (in your schedule file: `{f.line}`)")
