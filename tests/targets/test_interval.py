"""Δ top-1's paired interval (targets.stats) on known counts."""

from __future__ import annotations

import numpy as np
import pytest

from vitedge.targets.stats import pack_correct, paired_delta, unpack_correct


def _pair(samples: int, lost: int, gained: int) -> tuple[np.ndarray, np.ndarray]:
    reference = np.zeros(samples, dtype=bool)
    reference[: samples // 2] = True
    candidate = reference.copy()
    candidate[:lost] = False
    candidate[samples // 2 : samples // 2 + gained] = True
    return reference, candidate


def test_known_counts_give_the_agresti_min_interval() -> None:
    """30 lost, 10 gained of 1,000: Δ -2.00; adjusted cells 30.5 / 10.5 of 1,002 give
    centre -20/1002 and se sqrt(41 - 400/1002)/1002, so -1.996 ± 1.246 points."""
    delta = paired_delta(*_pair(1000, lost=30, gained=10))
    assert (delta.gained, delta.lost, delta.samples) == (10, 30, 1000)
    assert delta.delta == pytest.approx(-2.0)
    assert delta.low == pytest.approx(-3.2424, abs=1e-3) and delta.high == pytest.approx(-0.7496, abs=1e-3)
    assert not delta.within_noise


def test_few_discordant_images_are_inside_the_noise_and_none_is_not_a_point() -> None:
    small = paired_delta(*_pair(1000, lost=3, gained=1))
    assert small.delta == pytest.approx(-0.2) and small.within_noise
    none = paired_delta(*_pair(1000, lost=0, gained=0))
    # no image changed: still an interval (half-images 0.5/0.5 of 1,002 -> ±1.96/1002)
    assert none.delta == 0.0 and none.high == pytest.approx(100 * 1.959964 / 1002, rel=1e-5) and none.low == -none.high


def test_the_interval_narrows_with_more_images_and_widens_with_more_disagreement() -> None:
    base = paired_delta(*_pair(1000, lost=20, gained=10))
    more_images = paired_delta(*_pair(10000, lost=200, gained=100))
    more_churn = paired_delta(*_pair(1000, lost=60, gained=50))
    width = lambda d: d.high - d.low  # noqa: E731
    assert base.delta == more_images.delta == more_churn.delta == pytest.approx(-1.0)
    assert width(more_images) < width(base) < width(more_churn)


def test_mismatched_pairs_are_refused_and_packing_round_trips() -> None:
    with pytest.raises(ValueError):
        paired_delta(np.ones(3, bool), np.ones(4, bool))
    correct = np.random.default_rng(0).random(1001) > 0.3
    assert np.array_equal(unpack_correct(pack_correct(correct), 1001), correct)
