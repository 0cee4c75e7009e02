"""The compute budget's schedule: exact delays, held and fallback steps, refusals."""
from __future__ import annotations

import numpy as np
import pytest

from envs.budget import BudgetConfig, BudgetExceeded, ComputeBudget, DeviceProfile, Footprint, InvalidAction

DT = 0.05


class Counter:
    """A synthetic policy: its k-th decision is [0, k/100, 0], so every control shows where it came from."""

    def __init__(self):
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        return np.array([0.0, self.calls / 100.0, 0.0])


def _run(latency_s: float, steps: int, **config) -> tuple[list[list[float]], ComputeBudget, Counter]:
    budget = ComputeBudget(BudgetConfig(**config), DT)
    policy = Counter()
    controls = []
    for _ in range(steps):
        if budget.ready:
            controls.append(budget.submit(np.asarray(policy.act(None), np.float32), latency_s).tolist())
        else:
            controls.append(budget.skip().tolist())
    return controls, budget, policy


def test_fast_policy_acts_every_step_without_delay():
    controls, budget, policy = _run(0.010, 5)
    assert [c[1] for c in controls] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    assert budget.stats.missed_deadlines == budget.stats.fallback_steps == 0 and policy.calls == 5


def test_late_policy_brakes_until_its_control_arrives_then_uses_it():
    # 120 ms at 20 Hz: each control is in force 2 steps after its observation, when the processor also takes
    # the next one; every step without a fresh control brakes (the 50 ms deadline is always missed).
    controls, budget, policy = _run(0.120, 7, fallback="brake")
    parked = [0.0, 0.0, 1.0]
    first, second, third = [0.0, 0.01, 0.0], [0.0, 0.02, 0.0], [0.0, 0.03, 0.0]
    np.testing.assert_allclose(controls, [parked, parked, first, parked, second, parked, third], atol=1e-6)
    assert policy.calls == 4  # observations of steps 0, 2, 4, 6
    assert budget.stats.missed_deadlines == 4
    assert budget.stats.fallback_steps == 4  # steps 0, 1, 3, 5
    assert budget.stats.steps == 7


def test_hold_fallback_keeps_the_previous_control():
    controls, budget, _ = _run(0.120, 5, fallback="hold")
    assert [c[1] for c in controls] == pytest.approx([0.0, 0.0, 0.01, 0.01, 0.02])
    assert budget.stats.fallback_steps == 3


def test_within_a_long_deadline_a_slow_control_is_delayed_not_a_miss():
    controls, budget, _ = _run(0.070, 4, deadline_ms=100.0)
    assert [c[1] for c in controls] == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert budget.stats.missed_deadlines == 0 and budget.stats.held_steps == 1


def _footprint(weight_bytes: int, macs: float = 0) -> Footprint:
    return Footprint(parameters=weight_bytes, ternary_parameters=0, weight_bytes=weight_bytes, ternary_macs=0,
                     float_macs=int(macs), dtype="float32")


def test_a_footprint_that_is_not_a_footprint_is_refused_with_the_contract_named():
    with pytest.raises(TypeError, match="must return envs.budget.Footprint"):
        ComputeBudget(BudgetConfig(), DT).check({"weight_bytes": 1})


def test_profile_latency_is_reproducible_and_measured_latency_is_recorded():
    profile = DeviceProfile("toy", ops_per_second=1e9, overhead_ms=5.0)
    budget = ComputeBudget(BudgetConfig(latency="profile", device=profile), DT)
    budget.check(_footprint(1000, macs=5e7))  # 1e8 ops: 5 ms + 100 ms
    policy = Counter()
    controls = [budget.act(policy, None) for _ in range(4)]
    assert budget.stats.latencies_ms == pytest.approx([105.0, 105.0])
    assert [c[1] for c in controls] == pytest.approx([0.0, 0.0, 0.01, 0.0])
    measured = ComputeBudget(BudgetConfig(), DT)
    measured.check(_footprint(1000))
    measured.act(policy, None)
    assert 0.0 <= measured.stats.latencies_ms[0] < 50.0


def test_oversize_policy_is_refused_before_the_first_step():
    budget = ComputeBudget(BudgetConfig(weight_cap_mb=16.0), DT)
    with pytest.raises(BudgetExceeded, match=r"20\.0 MiB, over the on-board cap of 16\.0 MiB"):
        budget.check(_footprint(20 * 2**20))


def test_nan_action_is_a_clear_error():
    class Broken:
        def act(self, obs):
            return np.array([np.nan, 0.5, 0.0])

    budget = ComputeBudget(BudgetConfig(), DT)
    budget.check(_footprint(1))
    with pytest.raises(InvalidAction, match="Broken.act returned a non-finite action"):
        budget.act(Broken(), None)
