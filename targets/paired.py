"""Paired timing: is B faster than A, on a machine whose speed drifts?

Two runners timed minutes apart on a shared machine can differ by more than the change being
measured. Timed back to back, both see the same machine, so each round's ratio of the two
median call times cancels the drift; the median of those per-round ratios is the speedup.
Every round times each candidate right after its own reference (one reference burst per
candidate per round, never one shared burst), so no ratio compares bursts taken apart.

The bursts are `measure.burst_median_s`: a settle pause, a short warm-up, the median call.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .base import Runner
from .measure import burst_median_s

Burst = Callable[[Runner, np.ndarray, float], float]  # (runner, batch, seconds) -> median call seconds


@dataclass(frozen=True)
class Pair:
    """One comparison: `candidate` against `reference` on the same `batch`."""

    name: str
    reference: Runner
    candidate: Runner
    batch: np.ndarray


@dataclass(frozen=True)
class PairedTiming:
    """What the rounds found for one pair. `ratio` is reference seconds / candidate seconds:
    2.0 means the candidate is twice as fast."""

    name: str
    ratio: float  # median over rounds of the per-round ratios
    round_ratios: tuple[float, ...]
    median_s: float  # the candidate's median call, median over rounds
    reference_median_s: float  # its reference's, over the bursts paired with it
    candidate_s: tuple[float, ...]  # per round
    reference_s: tuple[float, ...]  # per round

    def images_per_s(self, batch: int) -> float:
        """The candidate's images per second at `batch` images per call."""
        return batch / self.median_s


def _result(name: str, reference_s: list[float], candidate_s: list[float]) -> PairedTiming:
    ratios = tuple(ref / cand for ref, cand in zip(reference_s, candidate_s, strict=True))
    return PairedTiming(
        name=name,
        ratio=statistics.median(ratios),
        round_ratios=ratios,
        median_s=statistics.median(candidate_s),
        reference_median_s=statistics.median(reference_s),
        candidate_s=tuple(candidate_s),
        reference_s=tuple(reference_s),
    )


def paired_rounds(
    pairs: Sequence[Pair],
    *,
    rounds: int,
    seconds: float,
    burst: Burst = burst_median_s,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, PairedTiming]:
    """Time every pair in each of `rounds` rounds, reference first and its candidate straight
    after, `seconds` per burst; `on_round(i)` after round i (1-based) is for progress lines.
    Returns the pairs' results by name, in the order given."""
    names = [pair.name for pair in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"pair names must be unique: {names}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    reference_s: dict[str, list[float]] = {name: [] for name in names}
    candidate_s: dict[str, list[float]] = {name: [] for name in names}
    for done in range(1, rounds + 1):
        for pair in pairs:
            reference_s[pair.name].append(burst(pair.reference, pair.batch, seconds))
            candidate_s[pair.name].append(burst(pair.candidate, pair.batch, seconds))
        if on_round is not None:
            on_round(done)
    return {name: _result(name, reference_s[name], candidate_s[name]) for name in names}


def pooled_reference_s(timings: Iterable[PairedTiming]) -> float:
    """The median of every reference burst of these pairs: the reference's own call time when
    several candidates were paired with the same reference runner."""
    return statistics.median(seconds for timing in timings for seconds in timing.reference_s)
