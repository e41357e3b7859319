"""The build directory of `mambaflow build`: whose it is, and whether it is finished.

`claim(out, force)` makes `out` ready for a build: it must be new, empty, or made by an
earlier build (it then holds `.mambaflow-build`); another non-empty folder is refused
unless `force`. The folder is emptied (nothing stale from an earlier build stays) and
marked unfinished: `BUILD_INCOMPLETE` is written first and removed by `finish` only
after `build.json`, so a build that stops anywhere (an error, Ctrl-C, a crash) never
looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...errors import MambaflowError

MARKER = ".mambaflow-build"
INCOMPLETE = "BUILD_INCOMPLETE"


def claim(out: Path, force: bool = False) -> Path:
    """Resolve, check, empty and mark the build directory `out` (see the module doc)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise MambaflowError(f"--out {out} is an existing file, not a directory; give a directory path")
    if out.is_dir():
        try:
            entries = list(out.iterdir())
        except OSError as e:
            raise MambaflowError(f"cannot read the build directory {out} ({e.strerror}); choose another --out") from None
        if entries and not (out / MARKER).is_file() and not force:
            raise MambaflowError(
                f"--out {out} is not empty and was not made by mambaflow build; choose a new or empty "
                "directory, or pass --force to empty it first")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p in out.iterdir():
            p.unlink() if (p.is_file() or p.is_symlink()) else shutil.rmtree(p)
        (out / INCOMPLETE).write_text("a mambaflow build is running here, or stopped before it finished; "
                                      "rerun `mambaflow build` with this --out\n")
        (out / MARKER).write_text(json.dumps({"made_by": "mambaflow build", "finished": False}) + "\n")
    except OSError as e:
        raise MambaflowError(f"cannot write the build directory {out} ({e.strerror or e}); "
                             "choose a writable --out") from None
    return out


def finish(out: Path) -> None:
    """Mark a build finished (after its build.json is written)."""
    (out / MARKER).write_text(json.dumps({"made_by": "mambaflow build", "finished": True}) + "\n")
    (out / INCOMPLETE).unlink(missing_ok=True)
