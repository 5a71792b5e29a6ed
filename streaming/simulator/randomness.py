"""Counter-based randomness: every random number is a hash of (seed, purpose, coordinates).

Why not a stateful generator: a value drawn as `hash(seed, machine, seq)` is the same whether the
fleet is generated in one block or in a thousand, in fast-forward or in real time, so "same seed,
same readings" holds by construction and any tick can be computed without replaying the past.
The hash is SplitMix64's finaliser, vectorised over numpy uint64 arrays (wrap-around is intended).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_MINUS_53 = 1.0 / float(1 << 53)
_TWO_POW_MINUS_32 = 1.0 / float(1 << 32)

Keys = npt.ArrayLike


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash64(seed: int, salt: int, *keys: Keys) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of the seed, a purpose tag and any number of broadcastable integer keys."""
    with np.errstate(over="ignore"):
        h = _mix(np.asarray(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ (np.uint64(salt) * _GOLDEN)))
        for key in keys:
            k = np.asarray(key).astype(np.int64).astype(np.uint64)
            h = _mix(h ^ (k * _GOLDEN + np.uint64(0x632BE59BD9B4E019)))
    return h


def uniform(seed: int, salt: int, *keys: Keys) -> npt.NDArray[np.float64]:
    """Uniform floats in [0, 1), one per broadcast key combination."""
    return (hash64(seed, salt, *keys) >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_53


def normal(seed: int, salt: int, *keys: Keys) -> npt.NDArray[np.float64]:
    """Standard normal floats (Box-Muller on the two 32-bit halves of one hash)."""
    h = hash64(seed, salt, *keys)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * _TWO_POW_MINUS_32
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * _TWO_POW_MINUS_32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A numpy Generator for one-off draws (fleet parameters, fault schedules of one segment)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *[k & 0xFFFFFFFF for k in keys]])
