"""Loop and band names: the addresses schedules use (`"kernel:band.loop"`).

A band is a top-level `affine.for` nest of a kernel function. Inside a band every loop
gets a unique `loop_name`: the letter of its depth (i, j, k, ...; the scan loop of an SSM
kernel is `t`), with a sibling number appended for the second, third, ... nest at the same
depth. The band's `op_name` is `S_` plus the names along its first-child chain, with a
suffix when two bands of one kernel would share a name. Names depend only on the loop
structure, so two captures of one model get the same names.
"""

from __future__ import annotations

from torch_mlir import ir

from .mlir import str_attr

LOOP_ATTR = "loop_name"
BAND_ATTR = "op_name"
_LETTERS = "ijklmnopqrsuvw"  # 't' is kept for token/node loops


def _for_ops(block: ir.Block) -> list[ir.Operation]:
    return [op.operation for op in block.operations if op.operation.name == "affine.for"]


def _name_loops(loop: ir.Operation, depth: int, sibling: int, used: set[str]) -> list[str]:
    """Name `loop` and its nested loops; return the names along the first-child chain."""
    name = str_attr(loop, LOOP_ATTR)
    if name is None or name in used:
        name = _LETTERS[depth % len(_LETTERS)] + (str(sibling) if sibling else "")
        while name in used:
            sibling += 1
            name = _LETTERS[depth % len(_LETTERS)] + str(sibling)
        loop.attributes[LOOP_ATTR] = ir.StringAttr.get(name)
    used.add(name)
    chain = [name]
    for k, child in enumerate(_for_ops(loop.regions[0].blocks[0])):
        # loops nested in a token loop `t` restart at `i`
        sub = _name_loops(child, depth + (name != "t"), k, used)
        if k == 0:
            chain += sub
    return chain


def name_loops(func: ir.Operation) -> list[str]:
    """(Re-)establish loop and band names in one kernel function; returns band names.

    Names already present are kept, so a rewrite that preserved them keeps user-visible
    addresses stable; loops that lost theirs (upstream passes drop discardable
    attributes) get fresh ones.
    """
    bands: list[str] = []
    with func.context:
        for band in _for_ops(func.regions[0].blocks[0]):
            chain = _name_loops(band, 0, 0, set())
            name = str_attr(band, BAND_ATTR) or "S_" + "_".join(chain)
            base, n = name, 1
            while name in bands:
                name = f"{base}_{n}"
                n += 1
            band.attributes[BAND_ATTR] = ir.StringAttr.get(name)
            bands.append(name)
    return bands


def loops_of(func: ir.Operation) -> dict[str, dict[str, ir.Operation]]:
    """band name -> loop name -> `affine.for` op, for one named kernel function."""
    out: dict[str, dict[str, ir.Operation]] = {}

    def collect(loop: ir.Operation, into: dict[str, ir.Operation]):
        into[str_attr(loop, LOOP_ATTR)] = loop
        for child in _for_ops(loop.regions[0].blocks[0]):
            collect(child, into)

    for band in _for_ops(func.regions[0].blocks[0]):
        loops: dict[str, ir.Operation] = {}
        collect(band, loops)
        out[str_attr(band, BAND_ATTR)] = loops
    return out
