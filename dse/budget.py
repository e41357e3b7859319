"""The resources a DSE may spend: `--budget dsp=400,lut=200000,bram=500` against a board.

Keys (case-insensitive): `dsp` (DSP58), `lut`, `ff`, `bram` (BRAM36 blocks, the unit of
the board tables, AMD DS950), `bram18k` (BRAM18K, the unit of csynth reports and the
estimator; one BRAM36 is two), `uram`. A resource the budget does not name is limited by
the board (targets.versal.boards). Values are whole numbers; `k` / `m` suffixes
multiply by 1,000 / 1,000,000 (`lut=107k`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import MambaflowError

#: the estimator's resource keys (Estimate.resources), in table order
RESOURCES = ("dsp", "lut", "ff", "bram18k", "uram")
_KEYS = {"dsp": "dsp", "lut": "lut", "ff": "ff", "bram": "bram18k", "bram18k": "bram18k", "uram": "uram"}
_SCALE = {"": 1, "k": 1_000, "m": 1_000_000}


class BudgetError(MambaflowError):
    """A --budget that cannot be read, or one that no design of the search space meets."""


@dataclass(frozen=True)
class Budget:
    dsp: int
    lut: int
    ff: int
    bram18k: int
    uram: int
    board: str = ""
    given: tuple[str, ...] = ()   # the resources the user limited (the rest are the board's)

    def limit(self, resource: str) -> int:
        return getattr(self, resource)

    def excess(self, resources: dict) -> dict[str, int]:
        """resource -> amount over the budget (negative or zero: within it), for the
        estimator's `resources` dict."""
        return {r: int(resources.get(r, 0)) - self.limit(r) for r in RESOURCES}

    def over(self, resources: dict) -> list[str]:
        return [r for r, x in self.excess(resources).items() if x > 0]

    def describe(self) -> str:
        return ", ".join(f"{r} {self.limit(r):,}{'' if r in self.given else ' (board)'}" for r in RESOURCES)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_budget(text: str | None, board) -> Budget:
    """`dsp=…,lut=…,bram=…` (see the module doc) on `board` (a Board) -> Budget.
    None or '' is the board's whole programmable logic."""
    limits = {"dsp": board.dsp, "lut": board.lut, "ff": board.ff, "bram18k": board.bram18k, "uram": board.uram}
    given = []
    for item in [x.strip() for x in (text or "").split(",") if x.strip()]:
        m = re.fullmatch(r"([A-Za-z0-9_]+)\s*=\s*(\d+)\s*([kKmM]?)", item)
        if not m:
            raise BudgetError(f"--budget: cannot read {item!r}: write RESOURCE=NUMBER items separated by commas, "
                              "e.g. dsp=400,lut=200k,bram=500")
        key, num, unit = m.group(1).lower(), int(m.group(2)), m.group(3).lower()
        if key not in _KEYS:
            raise BudgetError(f"--budget: unknown resource {m.group(1)!r}: use {', '.join(_KEYS)}")
        value = num * _SCALE[unit] * (2 if key == "bram" else 1)
        r = _KEYS[key]
        if r in given:
            raise BudgetError(f"--budget: {r} is given twice")
        limits[r] = value
        given.append(r)
    return Budget(**limits, board=board.name, given=tuple(given))
