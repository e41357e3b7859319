"""Property: any sequence of schedule primitives keeps a decode kernel equal to PyTorch.

Hypothesis draws primitives against the current IR (a loop that exists, a factor up to
its trip count, a pair of loops, a buffer, ...). A primitive the schedule accepts must
keep the kernel's outputs equal to the PyTorch function the flow captured; one it
rejects must raise ScheduleError and leave the IR byte-identical. The tiny Mamba1
decode design is captured once; each example JITs only the scheduled kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mambaflow.errors import ScheduleError
from mambaflow.flow.capture import capture
from mambaflow.flow.mlir import funcs
from mambaflow.models import get_config
from mambaflow.schedules import customize
from mambaflow.schedules.deps import trip_count
from mambaflow.schedules.testing import kernel_case, kernel_module, run_kernel

KERNELS = ["in_proj", "x_proj", "ssm", "conv", "norm", "out_proj"]


@pytest.fixture(scope="module")
def cases():
    design = capture(get_config("tiny-mamba1"), "decode", progress=False)
    out = {}
    for k in KERNELS:
        out[k] = (kernel_module(design.module, k), kernel_case(design, k, seed=1))
    return design, out


def _loops(s, kernel):
    return [(b, ln, h) for b, ls in s.get_loops(kernel).items() for ln, h in ls.items()]


def _step(s, kernel, data):
    loops = _loops(s, kernel)
    if not loops:  # a full materialized unroll can remove every loop of a small kernel
        return None
    prim = data.draw(st.sampled_from(["split", "split", "reorder", "reorder", "fuse", "unroll", "pipeline",
                                      "partition", "compute_at", "buffer_at", "unroll_now", "vectorize"]))
    if prim == "split":
        _, _, h = data.draw(st.sampled_from(loops))
        tc = trip_count(h.op, bound=True) or 4
        return lambda: s.split(h, data.draw(st.integers(1, max(1, tc))))
    if prim == "reorder":
        band = data.draw(st.sampled_from(sorted({b for b, _, _ in loops})))
        hs = [h for b, _, h in loops if b == band]
        if len(hs) < 2:
            return None
        pick = data.draw(st.permutations(hs))[: data.draw(st.integers(2, len(hs)))]
        return lambda: s.reorder(*pick)
    if prim == "fuse":
        a = data.draw(st.sampled_from(loops))[2]
        A = a.op
        kids = [h for _, _, h in loops if h.op.parent == A]
        sibs = [h for _, _, h in loops if h.op.parent == A.parent and h.op != A]
        pool = kids + sibs
        b = data.draw(st.sampled_from(pool)) if pool else data.draw(st.sampled_from(loops))[2]
        return lambda: s.fuse(a, b)
    if prim == "unroll":
        _, _, h = data.draw(st.sampled_from(loops))
        return lambda: s.unroll(h, data.draw(st.integers(0, 8)))
    if prim == "unroll_now":
        _, _, h = data.draw(st.sampled_from(loops))
        return lambda: s.unroll(h, data.draw(st.integers(0, 4)), materialize=True)
    if prim == "vectorize":
        return lambda: s.vectorize(kernel)
    if prim == "buffer_at":
        bufs = list(s.get_buffers(kernel).values())
        b = data.draw(st.sampled_from(bufs))
        _, _, h = data.draw(st.sampled_from(loops))
        return lambda: s.buffer_at(b, h)
    if prim == "pipeline":
        _, _, h = data.draw(st.sampled_from(loops))
        return lambda: s.pipeline(h, ii=data.draw(st.integers(1, 3)))
    if prim == "partition":
        n = len(funcs(s.module)[kernel].regions[0].blocks[0].arguments)
        arg = data.draw(st.integers(0, n - 1))
        kind = data.draw(st.sampled_from(["complete", "block", "cyclic"]))
        return lambda: s.partition(f"{kernel}:arg{arg}", kind, data.draw(st.integers(0, 2)), data.draw(st.integers(1, 4)))
    if prim == "compute_at":
        bands = sorted({b for b, _, _ in loops})
        if len(bands) < 2:
            return None
        pb = data.draw(st.sampled_from(bands))
        prod = next(h for b, _, h in loops if b == pb)
        cons = data.draw(st.sampled_from([h for b, _, h in loops if b != pb]))
        return lambda: s.compute_at(prod, cons)
    return None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(data=st.data())
def test_random_schedules_keep_kernels_equal_to_pytorch(cases, data):
    design, per_kernel = cases
    kernel = data.draw(st.sampled_from(KERNELS))
    template, (ins, exp) = per_kernel[kernel]
    with template.context:
        from torch_mlir import ir

        mod = ir.Module.parse(str(template))
    s = customize(mod)
    n = data.draw(st.integers(1, 6))
    for _ in range(n):
        call = _step(s, kernel, data)
        if call is None:
            continue
        before, n_log = str(mod), len(s.log)
        try:
            call()
            event(f"applied {s.log[-1]['op'] if len(s.log) > n_log else '?'}")
        except ScheduleError as e:
            event(f"rejected {str(e).split(' ')[0]}")
            assert "internal error" not in str(e) and "invalid IR" not in str(e), str(e)
            assert str(mod) == before, "a rejected primitive changed the IR"
    got = run_kernel(mod, kernel, ins, [e.shape for e in exp])
    for g, e in zip(got, exp):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5, err_msg=f"{kernel} after:\n{s}")
