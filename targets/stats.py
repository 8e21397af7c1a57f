"""Paired accuracy differences with their uncertainty.

Two models scored on the same images differ only where one is right and the other wrong
(the discordant images); the rest cancels. The interval for Δ top-1 = (gained - lost) / n is
Agresti and Min's (2005) adjusted Wald interval for paired proportions: half an image added
to each discordant cell, then the usual paired standard error. It stays sensible for the
small counts int8 rows have (0-20 discordant images out of 1,000), where the plain Wald
interval collapses to a point, and unlike an interval conditional on the discordant count it
also carries the uncertainty of how many images differ at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class PairedDelta:
    delta: float  # top-1 points, candidate minus reference
    low: float  # 95% interval, points
    high: float
    gained: int  # images only the candidate gets right
    lost: int  # images only the reference gets right
    samples: int

    @property
    def within_noise(self) -> bool:
        """Whether no difference is shown: the interval contains 0."""
        return self.low <= 0.0 <= self.high


def paired_delta(reference_correct: np.ndarray, candidate_correct: np.ndarray, z: float = Z95) -> PairedDelta:
    """Δ top-1 of the candidate against the reference on the same images, with its 95% interval."""
    reference = np.asarray(reference_correct, dtype=bool)
    candidate = np.asarray(candidate_correct, dtype=bool)
    if reference.shape != candidate.shape or reference.ndim != 1 or len(reference) == 0:
        raise ValueError(
            f"paired correctness must be two equal 1-D arrays, got {reference.shape} and {candidate.shape}"
        )
    gained = int(np.sum(candidate & ~reference))
    lost = int(np.sum(reference & ~candidate))
    samples = len(reference)
    up, down, total = gained + 0.5, lost + 0.5, samples + 2.0
    center = (up - down) / total
    half = z * math.sqrt(max(up + down - (up - down) ** 2 / total, 0.0)) / total
    return PairedDelta(
        100.0 * (gained - lost) / samples, 100.0 * (center - half), 100.0 * (center + half), gained, lost, samples
    )


def pack_correct(correct: np.ndarray) -> str:
    """Per-image correctness as hex of packed bits: 1,000 images in 250 characters of JSON."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack_correct(packed: str, samples: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(packed), dtype=np.uint8))[:samples].astype(bool)
