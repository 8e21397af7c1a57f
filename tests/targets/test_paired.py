"""Paired rounds (vitedge.targets.paired): the order of the bursts and the direction of the
ratio, which a swapped argument would silently invert."""

from __future__ import annotations

import time

import numpy as np
import pytest

from vitedge.targets.base import RunnerInfo
from vitedge.targets.paired import Pair, paired_rounds, pooled_reference_s

BATCH = np.zeros((1, 3, 4, 4), np.float32)


class FakeRunner:
    """A runner whose call takes `seconds` of fake time (read by FakeBurst) and logs itself."""

    info = RunnerInfo("fake", "cpu", "fp32", 1)

    def __init__(self, name: str, seconds: float, log: list[str]) -> None:
        self.name, self.seconds, self.log = name, seconds, log

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.log.append(self.name)
        return np.zeros((len(batch), 10), np.float32)


class FakeBurst:
    """A burst timer on a drifting fake machine: round r runs everything (1 + r) times slower,
    the same for a pair's two bursts, as on a shared machine whose load changes slowly."""

    def __init__(self, bursts_per_round: int) -> None:
        self.calls, self.bursts_per_round = 0, bursts_per_round

    def __call__(self, runner: FakeRunner, batch: np.ndarray, seconds: float) -> float:
        slowdown = 1.0 + self.calls // self.bursts_per_round
        self.calls += 1
        runner(batch)
        return runner.seconds * slowdown


def test_a_candidate_twice_as_fast_gives_two_not_a_half() -> None:
    log: list[str] = []
    reference = FakeRunner("ref", 0.010, log)
    fast, slow = FakeRunner("fast", 0.005, log), FakeRunner("slow", 0.040, log)
    pairs = [Pair("fast", reference, fast, BATCH), Pair("slow", reference, slow, BATCH)]
    result = paired_rounds(pairs, rounds=3, seconds=0.0, burst=FakeBurst(bursts_per_round=4))
    assert list(result) == ["fast", "slow"]
    assert result["fast"].ratio == pytest.approx(2.0)
    assert result["slow"].ratio == pytest.approx(0.25)
    # the drift (1×, 2×, 3× slower by round) cancels within each pair, but not in the seconds
    assert result["fast"].round_ratios == pytest.approx((2.0, 2.0, 2.0))
    assert result["fast"].candidate_s == pytest.approx((0.005, 0.010, 0.015))
    assert result["fast"].median_s == pytest.approx(0.010)
    assert result["fast"].reference_median_s == pytest.approx(0.020)
    assert result["fast"].images_per_s(8) == pytest.approx(800.0)


def test_the_reference_is_timed_right_before_each_candidate_in_every_round() -> None:
    log: list[str] = []
    reference = FakeRunner("ref", 0.010, log)
    pairs = [Pair(name, reference, FakeRunner(name, 0.01, log), BATCH) for name in ("a", "b", "c")]
    rounds = paired_rounds(pairs, rounds=2, seconds=0.0, burst=FakeBurst(bursts_per_round=6), on_round=log.append)
    assert log == ["ref", "a", "ref", "b", "ref", "c", 1] + ["ref", "a", "ref", "b", "ref", "c", 2]
    assert all(len(timing.reference_s) == 2 for timing in rounds.values())
    assert pooled_reference_s(rounds.values()) == pytest.approx(0.015)  # 3 bursts at 0.010, 3 at 0.020


def test_each_pair_uses_its_own_reference() -> None:
    log: list[str] = []
    ref_a, ref_b = FakeRunner("ref_a", 0.030, log), FakeRunner("ref_b", 0.002, log)
    pairs = [Pair("a", ref_a, FakeRunner("a", 0.010, log), BATCH), Pair("b", ref_b, FakeRunner("b", 0.001, log), BATCH)]
    result = paired_rounds(pairs, rounds=1, seconds=0.0, burst=FakeBurst(bursts_per_round=4))
    assert log == ["ref_a", "a", "ref_b", "b"]
    assert result["a"].ratio == pytest.approx(3.0) and result["b"].ratio == pytest.approx(2.0)


class SleepingRunner:
    """Really takes `seconds` per call, for the default burst timer (measure.burst_median_s)."""

    info = RunnerInfo("fake", "cpu", "fp32", 1)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return np.zeros((len(batch), 10), np.float32)


def test_the_real_burst_timer_measures_the_right_direction() -> None:
    pair = Pair("half the time", SleepingRunner(0.008), SleepingRunner(0.004), BATCH)
    result = paired_rounds([pair], rounds=3, seconds=0.02)["half the time"]
    # a loaded machine stretches some sleeps (the exact figures are the fake timer's tests'):
    # the ratio is near 2, on the right side of 1, never near 0.5
    assert 1.4 < result.ratio < 3.0
    assert result.median_s >= 0.004 and result.reference_median_s >= 0.008


def test_refuses_duplicate_names_and_zero_rounds() -> None:
    runner = FakeRunner("x", 0.01, [])
    with pytest.raises(ValueError, match="unique"):
        paired_rounds([Pair("x", runner, runner, BATCH)] * 2, rounds=1, seconds=0.0)
    with pytest.raises(ValueError, match="at least 1"):
        paired_rounds([Pair("x", runner, runner, BATCH)], rounds=0, seconds=0.0)
