"""The DSE's results store under --out: the Optuna study and every trial's schedule log.

    OUT/dse.json            what this DSE searches (model, quant, board, budget, space);
                            a rerun with other options is refused, the same ones resume
    OUT/study.journal       the Optuna study (JournalStorage, append-only: a killed run
                            loses no finished trial; Optuna's own resume format)
    OUT/logs/<hash>.json    each trial's schedule, as `Schedule.save` writes it, named by
                            the sha256 of that text (trials with one schedule share it)
    OUT/results.json, OUT/pareto.png, OUT/best_schedule.json   written by `report`

Every file is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import MambaflowError

SETUP = "dse.json"
JOURNAL = "study.journal"
LOGS = "logs"
STUDY = "mambaflow-dse"


class StoreError(MambaflowError):
    """--out cannot hold this DSE's results."""


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def log_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultsStore:
    def __init__(self, out: str | Path, setup: dict):
        self.out = Path(out).expanduser().resolve()
        self.setup = json.loads(json.dumps(setup))  # as it reads back (tuples are lists)
        self._claim()

    def _claim(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise StoreError(f"--out {out} is a file; give a directory")
        mine = out / SETUP
        if out.is_dir() and any(out.iterdir()) and not mine.is_file():
            raise StoreError(f"--out {out} is not empty and holds no DSE ({SETUP}); give a new or empty directory, "
                             "or the --out of the DSE to resume")
        if mine.is_file():
            try:
                old = json.loads(mine.read_text())
            except (OSError, ValueError) as e:
                raise StoreError(f"{mine} is unreadable ({type(e).__name__}); give another --out") from None
            diff = [k for k in sorted(set(old) | set(self.setup)) if old.get(k) != self.setup.get(k)]
            if diff:
                k = diff[0]
                raise StoreError(f"--out {out} holds a DSE with other options ({k}: {old.get(k)!r} there, "
                                 f"{self.setup.get(k)!r} now); rerun with its options to resume it, or give "
                                 "another --out")
            return
        try:
            write_atomic(mine, json.dumps(self.setup, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            raise StoreError(f"cannot write --out {out} ({e.strerror or e}); give a writable directory") from None

    @property
    def journal(self) -> Path:
        return self.out / JOURNAL

    def path(self, name: str) -> Path:
        return self.out / name

    def log_path(self, h: str) -> Path:
        return self.out / LOGS / f"{h}.json"

    def save_log(self, text: str) -> str:
        """Store a schedule log; returns its hash (its file name)."""
        h = log_hash(text)
        p = self.log_path(h)
        if not (p.is_file() and p.read_text() == text):
            write_atomic(p, text)
        return h

    def study(self, directions: list[str], sampler):
        """The study in OUT/study.journal, created or loaded (resume)."""
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(self.journal)))
        return optuna.create_study(study_name=STUDY, storage=storage, directions=directions, sampler=sampler,
                                   load_if_exists=True)
