"""schedules/cpu.py: the inline exp and log1p that let LLVM vectorize the SSM, conv and
softplus loops are within 2 ulp of PyTorch's (libm's) functions over sweeps of their
ranges, edge cases (0, -1, +-inf, NaN, subnormals) included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_mlir import ir
from torch_mlir.dialects import affine, func, math as math_d, memref

from mambaflow.flow.mlir import new_context, walk
from mambaflow.schedules.cpu import EXPANSIONS, LO
from mambaflow.targets.llvm.jit import JitFunction


def _elementwise(op: str, n: int) -> ir.Module:
    ctx = new_context()
    with ctx, ir.Location.unknown():
        module = ir.Module.create()
        f32 = ir.F32Type.get()
        t = ir.MemRefType.get([n], f32)
        with ir.InsertionPoint(module.body):
            f = func.FuncOp("f", ([t, t], []))
        block = f.add_entry_block()
        with ir.InsertionPoint(block):
            loop = affine.AffineForOp(0, n, 1)
            with ir.InsertionPoint(loop.body):
                i = loop.induction_variable
                y = getattr(math_d, op)(memref.load(block.arguments[0], [i]))
                memref.store(y, block.arguments[1], [i])
                affine.AffineYieldOp([])
            func.ReturnOp([])
        for o in [o for o in walk(module.operation) if o.name in EXPANSIONS]:
            EXPANSIONS[o.name](o)
        assert not any(o.name.startswith("math.") and o.name != "math.floor" for o in walk(module.operation))
    return module


def _ulp_error(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want| in units of the last place of want (float32); equal specials count 0."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: counted by `same`
        spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - want.astype(np.float64)) / spacing
    return np.where(same, 0.0, np.nan_to_num(err, nan=np.inf))


SWEEPS = {  # exp: from its stated lower limit LO up (below LO it flushes to 0, tested apart)
    "exp": np.concatenate([np.linspace(LO, 89, 20001), [-1e-30, 0.0, 1e-30, np.inf, np.nan, 200]]),
    "log1p": np.concatenate([
        np.geomspace(1e-38, 3e38, 20001), -np.geomspace(1e-38, 1 - 6e-8, 5001), np.linspace(-0.99, 20, 5001),
        [0.0, -0.0, -1.0, -1.5, np.inf, -np.inf, np.nan, 1e-45, -1 + 2**-24]]),
}


@pytest.mark.parametrize("op", ["exp", "log1p"])
def test_inline_math_within_two_ulp(op):
    x, y, want = _run(op, SWEEPS[op])
    err = _ulp_error(y, want)
    worst = int(err.argmax())
    assert err.max() <= 2.0, f"{op}({x[worst]!r}) = {y[worst]!r}, torch gives {want[worst]!r} ({err.max():.1f} ulp)"


def test_inline_exp_flushes_below_its_range():
    """Below LO (-87.34) expf is subnormal (< 1.2e-38); the inline exp returns 0."""
    x, y, want = _run("exp", np.concatenate([np.linspace(-120, LO, 1001)[:-1], [-np.inf]]))
    assert np.all(y == 0) and np.all(want < np.finfo(np.float32).tiny)


def _run(op: str, values: np.ndarray):
    x = values.astype(np.float32)
    fn = JitFunction(_elementwise(op, x.size), "f", cache=False)
    y = np.empty_like(x)
    fn(x, y)
    return x, y, getattr(torch, op)(torch.from_numpy(x)).numpy()
