"""Hadamard matrices and the fast Walsh–Hadamard transform (FWHT).

A Hadamard matrix H of order n has entries ±1 and H Hᵀ = n I, so H/√n is orthonormal.
Rotating a linear layer's input by an orthonormal Q and its weight by Qᵀ leaves the product
unchanged and spreads outliers over all channels (QuaRot, FastMamba, LightMamba).

Orders that are not a power of two are handled as the literature does: n = m · 2^k with a
small known Hadamard matrix H_m (Paley constructions: m = 12, 20, 24, 28, 36, 44, 48, 60,
...), and H_n = H_m ⊗ H_{2^k}. Applied online, that is a radix-2 FWHT over the 2^k blocks
followed by an m×m ±1 mixing of the blocks: additions and subtractions only.

`fwht` is written with plain torch ops (slices, adds, selects, reductions), so an integer
tensor goes through it exactly and torch-mlir captures it as integer add/sub loops.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from mambaflow.errors import MambaflowError


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _primes_upto(n: int) -> list[int]:
    return [p for p in range(2, n + 1) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _legendre(a: int, q: int) -> int:
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> list[list[int]]:
    return [[_legendre(j - i, q) for j in range(q)] for i in range(q)]


def _paley1(q: int) -> list[list[int]]:
    """Paley construction I, q prime ≡ 3 (mod 4): order q + 1."""
    Q = _jacobsthal(q)
    n = q + 1
    S = [[0] * n for _ in range(n)]
    for j in range(1, n):
        S[0][j] = 1
        S[j][0] = -1
    for i in range(q):
        for j in range(q):
            S[i + 1][j + 1] = Q[i][j]
    return [[S[i][j] + (1 if i == j else 0) for j in range(n)] for i in range(n)]


def _paley2(q: int) -> list[list[int]]:
    """Paley construction II, q prime ≡ 1 (mod 4): order 2(q + 1)."""
    Q = _jacobsthal(q)
    n = q + 1
    C = [[0] * n for _ in range(n)]
    for j in range(1, n):
        C[0][j] = 1
        C[j][0] = 1
    for i in range(q):
        for j in range(q):
            C[i + 1][j + 1] = Q[i][j]
    A = [[1, -1], [-1, -1]]  # replaces a 0 entry
    B = [[1, 1], [1, -1]]    # multiplies a ±1 entry
    H = [[0] * (2 * n) for _ in range(2 * n)]
    for i in range(n):
        for j in range(n):
            blk = A if C[i][j] == 0 else [[C[i][j] * b for b in row] for row in B]
            for a in range(2):
                for b in range(2):
                    H[2 * i + a][2 * j + b] = blk[a][b]
    return H


@lru_cache(maxsize=None)
def _known_small() -> dict[int, tuple[tuple[int, ...], ...]]:
    """Small non-power-of-two Hadamard matrices (orders 4·odd up to 100)."""
    out: dict[int, list[list[int]]] = {}
    for q in _primes_upto(99):
        if q % 4 == 3 and q + 1 <= 100:
            out.setdefault(q + 1, _paley1(q))
        if q % 4 == 1 and 2 * (q + 1) <= 100:
            out.setdefault(2 * (q + 1), _paley2(q))
    return {m: tuple(tuple(r) for r in h) for m, h in out.items() if not _is_pow2(m)}


def factor(n: int) -> tuple[int, int]:
    """(m, p) with n = m · p, p a power of two as large as possible and H_m known
    (m = 1 when n is a power of two). Raises MambaflowError when no such split exists."""
    if not isinstance(n, int) or n < 1:
        raise MambaflowError(f"Hadamard: order must be a positive integer, got {n!r}")
    if _is_pow2(n):
        return 1, n
    known = _known_small()
    p = n & -n  # largest power of two dividing n
    while p >= 1:
        m = n // p
        if m in known:
            return m, p
        p //= 2
    raise MambaflowError(
        f"Hadamard: no Hadamard matrix of order {n} is known to mambaflow (orders 2^k, and "
        f"m·2^k for m in {sorted(known)}). Rotation needs one for every rotated width: "
        "choose d_model / d_inner accordingly, or quantize with rotation=False."
    )


def is_supported(n: int) -> bool:
    try:
        factor(n)
        return True
    except MambaflowError:
        return False


@lru_cache(maxsize=None)
def _sylvester(p: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.int64)
    while h.shape[0] < p:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def small_matrix(m: int) -> Tensor:
    """The ±1 Hadamard matrix H_m used for the non-power-of-two factor (int64)."""
    if m == 1:
        return torch.ones(1, 1, dtype=torch.int64)
    return torch.tensor(_known_small()[m], dtype=torch.int64)


@lru_cache(maxsize=None)
def _matrix(n: int) -> Tensor:
    m, p = factor(n)
    return torch.kron(small_matrix(m), _sylvester(p))


def hadamard_matrix(n: int) -> Tensor:
    """H_n = H_m ⊗ H_{2^k} as an int64 ±1 matrix with H Hᵀ = n I."""
    return _matrix(n).clone()


def orthonormal(n: int, dtype=torch.float64) -> Tensor:
    """H_n / √n (orthonormal)."""
    return hadamard_matrix(n).to(dtype) / math.sqrt(n)


def fwht(x: Tensor, n: int | None = None, sign: Tensor | None = None) -> Tensor:
    """x @ H_nᵀ (= H_n x per row; H_n is symmetric only for powers of two) along the last
    dim, unnormalized, with O(n log n) additions for the 2^k part and an m×m ±1 mixing
    for the small factor (`sign`: H_m as a tensor, default the built-in one). Exact for
    integer tensors; use int64 (it grows by log2(n) bits).
    """
    n = x.shape[-1] if n is None else n
    if x.shape[-1] != n:
        raise MambaflowError(f"fwht: last dim {x.shape[-1]} != {n}")
    m, p = factor(n)
    lead = x.shape[:-1]
    y = x.reshape(*lead, m, p)
    h = 1
    while h < p:
        # butterflies of span h: index bits (.., hi, b, lo) with b the current bit
        y = y.reshape(*lead, m, p // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack([a + b, a - b], dim=-2).reshape(*lead, m, p)
        h *= 2
    if m > 1:
        # out[i] = sum_j H_m[i, j] * y[j]: a signed sum, written as a select of ±y; `sign`
        # (H_m itself) may come in as a tensor so captured code reads it from a port
        sign = (small_matrix(m) if sign is None else sign) > 0  # (m, m) bool
        yy = y[..., None, :, :]  # (.., 1, m, p)
        neg = torch.zeros_like(yy) - yy
        y = torch.where(sign[:, :, None], yy, neg).sum(-2)
    return y.reshape(*lead, n)
