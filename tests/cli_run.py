"""Running the `mambaflow` command line in a subprocess, for the tests of its exit codes
and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(*args, timeout=900):
    """`python -m mambaflow.cli ARGS` with unbuffered output and no debug tracebacks."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MAMBAFLOW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "mambaflow.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_line(p) -> str:
    """The last non-empty line of stderr, after progress bars' carriage returns."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in p.stderr.splitlines()]
    return [ln for ln in lines if ln][-1] if any(lines) else ""
