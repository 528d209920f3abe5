"""A rig run's phase deadlines (evaluate/hil.py PhaseClock) on a clock the test drives: a phase left at
its default grows with the measured rate of its samples (a 176x176 model's store phase on a real board
runs past the 900 s default), a phase given with --timeout keeps exactly that, the growth stops at 8x
the default, and the multiplier scales the base."""

from __future__ import annotations

import pytest

from microt_deploy.boards import load_board
from microt_deploy.evaluate import hil


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, phase_clock: hil.PhaseClock, samples: int, seconds_each: float) -> int:
    """Store ``samples`` at ``seconds_each``; the number stored when the phase gave up (all: none)."""
    phase_clock.start("store")
    for i in range(samples):
        clock.now += seconds_each
        try:
            phase_clock.progress("store train", i + 1, samples)
        except hil.PhaseTimeout:
            return i + 1
    return samples


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(hil.time, "monotonic", fake)
    return fake


def _phase_clock(multiplier: float = 1.0, fixed: frozenset[str] = frozenset()) -> hil.PhaseClock:
    spec = hil.BoardSpec(board=load_board("nucleo_l4r5zi"), label="l4r5", timeout_multiplier=multiplier)
    return hil.PhaseClock(spec, dict(hil.DEFAULT_TIMEOUTS_S), lambda *_: None, fixed)


def test_a_default_phase_grows_with_its_samples(clock):
    # 150 samples at 9.7 s (93 KB at 115200 baud plus 1.67 s of graphs): 1,455 s against the 900 s default
    assert _store(clock, _phase_clock(), 150, 9.7) == 150


def test_a_phase_given_with_timeout_keeps_it(clock):
    # the deadline stays at 900 s: the sample that ends past it (the 93rd, at 902 s) stops the phase
    assert _store(clock, _phase_clock(fixed=frozenset({"store"})), 150, 9.7) == 93


def test_growth_stops_at_eight_times_the_default(clock):
    # 200 s per sample projects 30,000 s: the phase ends past 8 x 900 = 7,200 s, at the 37th sample
    assert _store(clock, _phase_clock(), 150, 200.0) == 37


def test_the_multiplier_scales_the_base_and_the_ceiling(clock):
    # --timeout-multiplier 2: 1,800 s, enough for the 1,455 s store even when fixed
    assert _store(clock, _phase_clock(multiplier=2.0, fixed=frozenset({"store"})), 150, 9.7) == 150
    # and a ceiling of 8 x 1,800 = 14,400 s: 200 s per sample ends at the 73rd
    assert _store(clock, _phase_clock(multiplier=2.0), 150, 200.0) == 73


def test_a_timeout_names_the_phase_and_its_grown_limit(clock):
    phase_clock = _phase_clock()
    with pytest.raises(hil.PhaseTimeout, match=r"l4r5: the store phase ran past its 7200 s \(37 of 150 store train\)"):
        phase_clock.start("store")
        for i in range(150):
            clock.now += 200.0
            phase_clock.progress("store train", i + 1, 150)
