"""A fast selective scan for training Mamba1 on the CPU (``Mamba1LM.prefill(scan="fused")``).

It is the same token-by-token recurrence as ``common.ssm_scan`` (the oracle), written as
one ``torch.autograd.Function`` with a hand-derived backward:

    h_t = exp(dt_t * A) * h_{t-1} + (dt_t * x_t) (x) B_t,      y_t = sum_n h_t[:, n] * C_t[n]

The time loop runs one in-place ``addcmul_`` per token into a preallocated (L, B, D, N)
buffer, forward and backward (the gradient of h obeys the reversed recurrence
g_t = dy_t (x) C_t + exp(dt_{t+1} A) * g_{t+1}). Everything else is a handful of whole-tensor
ops. Autograd through the reference loop instead records ~10 small ops per token and
allocates a fresh tensor for each (slow on CPU: page faults dominate) and, where the loop
indexes ``dt[:, t]``, zero-fills a full-size gradient per token (quadratic in L).

The forward is the reference's arithmetic in the reference's order (the update uses a
fused multiply-add, so results agree to float32 rounding, not bit for bit); tests check
outputs and all gradients against autograd through ``ssm_scan``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _time_major(t: Tensor) -> Tensor:
    return t.transpose(0, 1).contiguous()


class _FusedSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor, h0: Tensor):
        dt_t, x_t, B_t, C_t = (_time_major(v) for v in (dt, x, B, C))  # (L, B, D|N)
        dtx = dt_t * x_t
        hs = dt_t.new_empty(*dt_t.shape, A.shape[-1])              # (L, B, D, N)
        y = torch.empty_like(dt_t)
        dA, tmp = torch.empty_like(h0), torch.empty_like(h0)       # per-token scratch
        h = h0
        for t in range(hs.shape[0]):
            torch.mul(dt_t[t, :, :, None], A, out=dA).exp_()
            torch.mul(dA, h, out=hs[t])
            h = hs[t].addcmul_(dtx[t, :, :, None], B_t[t, :, None, :])
            torch.sum(torch.mul(h, C_t[t, :, None, :], out=tmp), -1, out=y[t])
        ctx.save_for_backward(dt_t, A, x_t, B_t, C_t, h0, hs)
        return y.transpose(0, 1), hs[-1].clone()

    @staticmethod
    def backward(ctx, gy: Tensor, gh_last: Tensor):
        dt_t, A, x_t, B_t, C_t, h0, hs = ctx.saved_tensors
        gy_t = _time_major(gy)
        dtx = dt_t * x_t
        length = hs.shape[0]
        grad_dtA = torch.empty_like(dt_t)       # dLoss/d(dt) through exp(dt A), (L, B, D)
        grad_dtx = torch.empty_like(dt_t)       # dLoss/d(dt x), (L, B, D)
        grad_B, grad_C = torch.empty_like(B_t), torch.empty_like(C_t)
        acc_A = torch.zeros_like(h0)            # sum over t of w_t * dt_t, (B, D, N)
        g = torch.zeros_like(h0) if gh_last is None else gh_last.clone()
        dA, dA_next = torch.empty_like(h0), torch.empty_like(h0)
        w, tmp = torch.empty_like(h0), torch.empty_like(h0)
        for t in range(length - 1, -1, -1):
            # g = dLoss/dh_t = dy_t (x) C_t + exp(dt_{t+1} A) * g_{t+1}
            if t < length - 1:
                g.mul_(dA_next)
            g.addcmul_(gy_t[t, :, :, None], C_t[t, :, None, :])
            torch.mul(dt_t[t, :, :, None], A, out=dA).exp_()
            # w = dLoss/d(dt_t A) = g * h_{t-1} * exp(dt_t A)
            torch.mul(g, hs[t - 1] if t > 0 else h0, out=w).mul_(dA)
            acc_A.addcmul_(w, dt_t[t, :, :, None])
            torch.sum(w.mul_(A), -1, out=grad_dtA[t])
            torch.sum(torch.mul(g, B_t[t, :, None, :], out=tmp), -1, out=grad_dtx[t])
            torch.sum(torch.mul(g, dtx[t, :, :, None], out=tmp), 1, out=grad_B[t])
            torch.sum(torch.mul(hs[t], gy_t[t, :, :, None], out=tmp), 1, out=grad_C[t])
            dA, dA_next = dA_next, dA
        grad_h0 = g.mul_(dA_next)
        grad_dt = grad_dtA.addcmul_(grad_dtx, x_t)
        grad_x = grad_dtx.mul_(dt_t)
        tr = lambda t: t.transpose(0, 1)  # noqa: E731
        return tr(grad_dt), acc_A.sum(0), tr(grad_x), tr(grad_B), tr(grad_C), grad_h0


def fused_selective_scan(dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor,
                         h0: Tensor) -> tuple[Tensor, Tensor]:
    """Mamba1's selective scan over a chain: dt, x (B, L, D); A (D, N); B, C (B, L, N);
    h0 (B, D, N). Returns y (B, L, D) (without the D skip) and the final state (B, D, N),
    equal to ``ssm_scan(dt, A, x, B[:, :, None], C[:, :, None], h0)`` up to float rounding."""
    return _FusedSelectiveScan.apply(dt, A, x, B, C, h0)
