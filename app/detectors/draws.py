"""Counter-based standard-normal draws: a window's random numbers depend on its seed alone.

Scoring draws latent samples per window; taking them from a generator shared across a
batch would make a window's score depend on what else is in the batch.  Here row ``i`` of
``window_normals(seeds, count)`` is a pure function of ``seeds[i]`` (splitmix64 over
``(seed, draw index)`` → two 24-bit uniforms → Box–Muller), computed with vectorised numpy
uint64/float32 ops, so it is the same bit for bit alone or in any batch.  Detectors XOR a
stream constant of their own into the seed so that they never share draws.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
#: XOR-ed into every seed (FCVAE's stream, kept so that its scores stay as they were).
_STREAM = np.uint64(0x46435641455F4E31)
_SHIFTS = tuple(np.uint64(k) for k in (8, 27, 30, 31, 40))
_MASK24 = np.uint64(0xFFFFFF)
_TWO_POW_M24 = np.float32(2.0**-24)


def splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic).

    Examples
    --------
    >>> hex(int(splitmix64(np.array([0x9E3779B97F4A7C15], dtype=np.uint64))[0]))
    '0xe220a8397b1dcdaf'
    """
    _, s27, s30, s31, _ = _SHIFTS
    x = (x ^ (x >> s30)) * _MIX1
    x = (x ^ (x >> s27)) * _MIX2
    return x ^ (x >> s31)


def window_normals(seeds: NDArray[np.int64], count: int) -> NDArray[np.float32]:
    """``(n, count)`` float32 standard-normal draws; row ``i`` depends only on ``seeds[i]``.

    Draw pair ``j`` of a row is ``splitmix64(key + (j + 1)·γ)`` with
    ``key = splitmix64(seed ⊕ stream)`` (a counter-based generator: no state shared between
    rows); two 24-bit halves of it give ``u1 ∈ (0, 1]`` and ``u2 ∈ [0, 1)`` exactly in
    float32, and Box–Muller gives ``√(−2 ln u1)·(cos 2πu2, sin 2πu2)``. Every element goes
    through the same vectorised numpy kernels, so a row is identical in any batch.

    Examples
    --------
    >>> a = window_normals(np.array([5, 6]), 4)
    >>> b = window_normals(np.array([6]), 4)
    >>> bool(np.array_equal(a[1], b[0])), a.shape, a.dtype.name
    (True, (2, 4), 'float32')
    """
    s8, _, _, _, s40 = _SHIFTS
    seeds = np.ascontiguousarray(seeds, dtype=np.int64)
    n_pairs = (count + 1) // 2
    key = splitmix64(seeds.view(np.uint64) ^ _STREAM)
    counters = np.arange(1, n_pairs + 1, dtype=np.uint64) * _GOLDEN
    bits = splitmix64(key[:, None] + counters[None, :])
    u1 = ((bits >> s40).astype(np.float32) + np.float32(1.0)) * _TWO_POW_M24
    u2 = ((bits >> s8) & _MASK24).astype(np.float32) * _TWO_POW_M24
    radius = np.sqrt(np.float32(-2.0) * np.log(u1))
    angle = np.float32(2.0 * math.pi) * u2
    pairs = np.stack((radius * np.cos(angle), radius * np.sin(angle)), axis=-1)
    return np.ascontiguousarray(pairs.reshape(seeds.shape[0], 2 * n_pairs)[:, :count])
