"""Packing of odd-width m_axi ports into byte-aligned AXI words (pure numpy).

Why: an m_axi port's element type should be a power-of-two number of bits, or Vitis
pads it ("DataType allocated space contains padding is unsupported", UG1448 214-233)
and disables bursts; ap_int/ap_uint elements are not widened automatically either
(UG1399 "Automatic Port Width Resizing": standard C types only; size AP ports by hand).
So the emitter gives every top-level m_axi port whose element is iW with W not in
{1, 8, 16, 32, 64} a port of `ap_uint<beat_bits>` beats and unpacks in the kernel.

Layout (the contract shared by the emitter, testbenches and host code):

    w = elem_bits, B = beat_bits, E = B // w elements per beat (no element straddles
    two beats; the top B - E*w bits of every beat are zero), beats = ceil(n / E)
    for the n elements of the port in row-major (C) order.
    Element k is bits [(k % E) * w, (k % E + 1) * w) of beat k // E, two's complement
    (the kernel sign-extends it: MLIR's iW is read as signed).

`pack` returns the beats as little-endian 64-bit words, shape (beats, B // 64): word j
of a beat holds its bits [64 j, 64 j + 64). `pack(...).tobytes()` on a little-endian
host is the exact off-chip image of the port (beat b at byte offset b * B / 8), what the
host writes into the buffer object. In C++ a testbench fills beat b of an `ap_uint<B>`
array with `buf[b].range(64 * j + 63, 64 * j) = words[b][j]` (AMD's headers
accept it) and reads an output back with `.to_uint64()` of the same range.

Default B = 512: the user width of the memory controllers' AXI ports (UG1393 "Memory
Interface Width Considerations", "Using Full AXI Data Width": 512 bits, ap_int<512>),
so one beat is one full DDR/HBM data beat; LightMamba's weight port is 256 bits, which
`beat_bits=256` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import MambaflowError

BEAT_BITS = 512
BEAT_CHOICES = (64, 128, 256, 512)   # powers of two bytes, 64..512 bits (UG1393: 512 max)
NATIVE_BITS = (1, 8, 16, 32, 64)     # bool and intN_t: byte-aligned already, never packed


@dataclass(frozen=True)
class Layout:
    elem_bits: int        # w
    beat_bits: int        # B
    elems_per_beat: int   # E = B // w
    beats: int            # ceil(n / E)


def needs_packing(elem_bits: int) -> bool:
    return elem_bits not in NATIVE_BITS


def layout(elem_bits: int, n: int, beat_bits: int = BEAT_BITS) -> Layout:
    """The packing of `n` elements of `elem_bits` bits into `beat_bits`-bit beats."""
    if beat_bits not in BEAT_CHOICES:
        raise MambaflowError(f"packed m_axi beats: beat_bits={beat_bits}; use one of {BEAT_CHOICES}")
    if not 1 <= elem_bits < 64:
        raise MambaflowError(f"packed m_axi beats: element width {elem_bits} bits is not 1..63")
    e = beat_bits // elem_bits
    return Layout(elem_bits, beat_bits, e, max(1, -(-n // e)))


def _layout_of(port) -> Layout:
    if not getattr(port, "beats", 0):
        raise MambaflowError(f"port '{getattr(port, 'name', port)}' is not packed (its elements are byte-aligned)")
    return Layout(port.elem_bits, port.beat_bits, port.elems_per_beat, port.beats)


def pack(port, array) -> np.ndarray:
    """The beats of a packed port (an `HlsPort` with `beats > 0`) holding `array`
    (any integer dtype, `port.shape`, values in the signed or unsigned w-bit range):
    uint64 of shape (beats, beat_bits // 64), little-endian words (see the module doc)."""
    lay = _layout_of(port)
    a = np.asarray(array)
    if tuple(a.shape) != tuple(port.shape):
        raise MambaflowError(f"pack: port '{port.name}' has shape {tuple(port.shape)}, got {tuple(a.shape)}")
    v = a.reshape(-1).astype(np.int64)
    w = lay.elem_bits
    if v.size and (v.min() < -(1 << (w - 1)) or v.max() >= (1 << w)):
        raise MambaflowError(f"pack: port '{port.name}' holds {w}-bit values; got values in [{v.min()}, {v.max()}]")
    bits = np.zeros((lay.beats * lay.elems_per_beat, w), np.uint8)
    u = v.astype(np.uint64)
    bits[: v.size] = (u[:, None] >> np.arange(w, dtype=np.uint64)) & np.uint64(1)
    beat = np.zeros((lay.beats, lay.beat_bits), np.uint8)
    beat[:, : lay.elems_per_beat * w] = bits.reshape(lay.beats, -1)
    return np.packbits(beat.reshape(lay.beats, -1, 64), axis=-1, bitorder="little").view("<u8")[..., 0]


def unpack(port, words) -> np.ndarray:
    """Inverse of `pack`: int64 values of `port.shape`, sign-extended from w bits."""
    lay = _layout_of(port)
    wd = np.ascontiguousarray(np.asarray(words, dtype="<u8")).reshape(lay.beats, lay.beat_bits // 64)
    beat = np.unpackbits(wd.view(np.uint8), axis=-1, bitorder="little")
    w = lay.elem_bits
    bits = beat[:, : lay.elems_per_beat * w].reshape(-1, w)[: _size(port.shape)].astype(np.int64)
    weight = np.int64(1) << np.arange(w, dtype=np.int64)
    weight[-1] = -weight[-1]  # two's complement: the top bit weighs -2^(w-1)
    return (bits * weight).sum(axis=1).reshape(port.shape)


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
