"""The kpa autoscaler on synthetic load traces (pure: no database, no clock)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.scaling.kpa import TICK_S, ScalerConfig, ScalerState, decide


def run_trace(config: ScalerConfig, loads: list[float], *, start_ready: int = 1) -> list[tuple[int, bool]]:
    """Feed one sample per tick; ready replicas follow the previous decision (instant start-up)."""
    state = ScalerState(desired=start_ready)
    ready = start_ready
    out = []
    for tick, load in enumerate(loads):
        decision = decide(state, config, now=tick * TICK_S, concurrency=load, ready=ready)
        out.append((decision.desired, decision.panicking))
        ready = decision.desired
    return out


def test_it_panics_within_two_ticks_of_a_tenfold_step() -> None:
    config = ScalerConfig(min_replicas=1, max_replicas=50, target_concurrency=10)
    per_replica_target = 0.7 * 10
    loads = [per_replica_target] * 30 + [10 * per_replica_target] * 5
    trace = run_trace(config, loads)
    step = 30
    assert not any(panicking for _, panicking in trace[:step])
    assert trace[step][1] or trace[step + 1][1], "panic mode must start within 2 ticks of the step"
    assert trace[step + 1][0] >= 2


def test_it_panics_within_two_ticks_of_a_step_from_idle_to_tenfold_load() -> None:
    config = ScalerConfig(min_replicas=1, max_replicas=50, target_concurrency=10)
    loads = [0.0] * 30 + [10 * 0.7 * 10] * 5
    trace = run_trace(config, loads)
    assert not any(panicking for _, panicking in trace[:30])
    assert trace[30][1] or trace[31][1], "panic mode must start within 2 ticks of the step"
    assert trace[31][0] >= 2 * trace[29][0]


def test_it_scales_up_to_the_load_it_sees() -> None:
    config = ScalerConfig(min_replicas=1, max_replicas=20, target_concurrency=10)
    trace = run_trace(config, [35.0] * 40)
    assert trace[-1][0] == math.ceil(35.0 / 7.0)


def test_it_reaches_zero_after_the_grace_period_when_idle_with_min_zero() -> None:
    config = ScalerConfig(min_replicas=0, max_replicas=4, target_concurrency=10)
    loads = [20.0] * 10 + [0.0] * 60
    trace = run_trace(config, loads)
    idle_start = 10
    grace_ticks = int(config.scale_to_zero_grace_s / TICK_S)
    assert all(desired >= 1 for desired, _ in trace[idle_start : idle_start + grace_ticks - 1])
    assert trace[-1][0] == 0


def test_it_never_goes_to_zero_with_min_one() -> None:
    config = ScalerConfig(min_replicas=1, max_replicas=4, target_concurrency=10)
    trace = run_trace(config, [0.0] * 100)
    assert all(desired == 1 for desired, _ in trace)


def test_it_wakes_a_scaled_to_zero_deployment_on_a_held_request() -> None:
    config = ScalerConfig(min_replicas=0, max_replicas=4, target_concurrency=10)
    state = ScalerState(desired=0, last_active=-1000.0)
    asleep = decide(state, config, now=0.0, concurrency=0.0, ready=0)
    woken = decide(state, config, now=2.0, concurrency=0.0, ready=0, wake=True)
    assert (asleep.desired, woken.desired) == (0, 1)


def test_it_reports_when_the_quota_caps_it() -> None:
    config = ScalerConfig(min_replicas=1, max_replicas=10, target_concurrency=1, quota_cap=3)
    decision = decide(ScalerState(desired=1), config, now=0.0, concurrency=50.0, ready=1)
    assert decision.desired == 3 and decision.capped_by_quota


def test_it_survives_a_round_trip_through_json() -> None:
    config = ScalerConfig(min_replicas=0, max_replicas=8, target_concurrency=4)
    state = ScalerState()
    decide(state, config, now=0.0, concurrency=9.0, ready=0)
    restored = ScalerState.from_json(state.to_json())
    assert restored == state


traces = st.lists(st.floats(min_value=0, max_value=500, allow_nan=False), min_size=1, max_size=120)
configs = st.builds(
    lambda lo, span, target, cap: ScalerConfig(
        min_replicas=lo, max_replicas=lo + span, target_concurrency=target, quota_cap=cap
    ),
    st.integers(0, 5),
    st.integers(1, 30),
    st.integers(1, 32),
    st.one_of(st.none(), st.integers(0, 40)),
)


@settings(max_examples=300, deadline=None)
@given(config=configs, loads=traces, start=st.integers(0, 10))
def test_it_stays_within_bounds_and_quota_for_every_trace(config: ScalerConfig, loads: list[float], start: int) -> None:
    for desired, _ in run_trace(config, loads, start_ready=start):
        upper = config.max_replicas if config.quota_cap is None else min(config.max_replicas, config.quota_cap)
        assert desired <= upper
        if config.quota_cap is None or config.quota_cap >= config.min_replicas:
            assert desired >= config.min_replicas


@settings(max_examples=300, deadline=None)
@given(config=configs, loads=traces, start=st.integers(0, 10))
def test_it_never_drops_more_than_half_per_tick(config: ScalerConfig, loads: list[float], start: int) -> None:
    uncapped = ScalerConfig(config.min_replicas, config.max_replicas, config.target_concurrency)
    previous = max(uncapped.min_replicas, min(uncapped.max_replicas, start))
    for desired, _ in run_trace(uncapped, loads, start_ready=previous):
        if desired < previous:
            assert desired >= math.ceil(previous / 2) or (previous == 1 and desired == 0)
        previous = desired
