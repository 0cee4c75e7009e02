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


def _run(latency_s: float, steps: int, cameras: int | None = None,
         **config) -> tuple[list[list[float]], ComputeBudget, Counter]:
    budget = ComputeBudget(BudgetConfig(**config), DT, cameras)
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


def _footprint(weight_bytes: int, macs: float = 0, **fields) -> Footprint:
    return Footprint(**{"parameters": weight_bytes, "ternary_parameters": 0, "weight_bytes": weight_bytes,
                        "ternary_macs": 0, "float_macs": int(macs), "dtype": "float32", **fields})


# A toy roofline with round numbers: 1 TOPS int8, 0.5 TFLOPS fp16, 0.1 TFLOPS fp32, 1 GB/s, 1 MiB.
TOY = DeviceProfile("toy", "test numbers", int8_ops_per_s=1e12, fp16_ops_per_s=5e11, fp32_ops_per_s=1e11,
                    bandwidth_bytes_per_s=1e9, memory_mb=1.0, overhead_ms=5.0)


def test_a_footprint_that_is_not_a_footprint_is_refused_with_the_contract_named():
    with pytest.raises(TypeError, match="must return envs.budget.Footprint"):
        ComputeBudget(BudgetConfig(), DT).check({"weight_bytes": 1})


def test_the_roofline_prices_arithmetic_by_precision_and_memory_by_bandwidth():
    # 1e9 int8 x ternary MACs = 2e9 ops at 1e12/s: 2 ms; bytes are few, so arithmetic binds
    assert TOY.latency(_footprint(1, ternary_macs=10**9)) == pytest.approx(0.002 + 0.005)
    # the same MACs in float32 take 10x as long as in int8, in bfloat16 2x
    assert TOY.latency(_footprint(1, 10**9)) == pytest.approx(0.020 + 0.005)
    assert TOY.latency(_footprint(1, 10**9, dtype="bfloat16")) == pytest.approx(0.004 + 0.005)
    # 3e7 bytes moved at 1e9 B/s: 30 ms, more than the 2 ms of arithmetic: memory binds
    assert TOY.latency(_footprint(1, ternary_macs=10**9, moved_bytes=3 * 10**7)) == pytest.approx(0.030 + 0.005)
    with pytest.raises(ValueError, match="no rate for 'float64'"):
        TOY.latency(_footprint(1, 10, dtype="float64"))


def test_profile_latency_is_reproducible_and_measured_latency_is_recorded():
    budget = ComputeBudget(BudgetConfig(latency="profile", device=TOY), DT)
    budget.check(_footprint(1000, macs=5e6))  # 1e7 fp32 ops at 1e11/s: 0.1 ms + 5 ms... below
    assert budget.priced_ms == pytest.approx(5.1)
    budget = ComputeBudget(BudgetConfig(latency="profile", device=TOY), DT)
    budget.check(_footprint(1000, macs=5e9))  # 1e10 ops: 100 ms + 5 ms
    policy = Counter()
    controls = [budget.act(policy, None) for _ in range(4)]
    assert budget.stats.latencies_ms == pytest.approx([105.0, 105.0])
    assert [c[1] for c in controls] == pytest.approx([0.0, 0.0, 0.01, 0.0])
    assert budget.stats.summary()["latency_source"] == "profile"
    measured = ComputeBudget(BudgetConfig(), DT)
    measured.check(_footprint(1000))
    measured.act(policy, None)
    assert 0.0 <= measured.stats.latencies_ms[0] < 50.0 and measured.priced_ms is None


def test_a_deadline_per_camera_frame_scales_with_the_rig():
    config = BudgetConfig(deadline_ms=None, deadline_ms_per_camera=1.0)
    assert ComputeBudget(config, DT, cameras=8).deadline_ms == 8.0
    assert ComputeBudget(config, DT, cameras=1).deadline_ms == 1.0
    with pytest.raises(ValueError, match="needs the rig's camera count"):
        ComputeBudget(config, DT)
    with pytest.raises(ValueError, match="exactly one of deadline_ms"):
        BudgetConfig(deadline_ms=50.0, deadline_ms_per_camera=1.0)
    # 6 ms of compute against 1 ms x 1 camera: every control misses and takes force a step late
    controls, budget, _ = _run(0.006, 4, cameras=1, deadline_ms=None, deadline_ms_per_camera=1.0)
    assert [c[1] for c in controls] == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert budget.stats.missed_deadlines == 4 and budget.stats.fallback_steps == 1
    controls, budget, _ = _run(0.006, 4, cameras=8, deadline_ms=None, deadline_ms_per_camera=1.0)
    assert [c[1] for c in controls] == pytest.approx([0.01, 0.02, 0.03, 0.04])  # 8 ms for eight: on time


def test_oversize_policy_is_refused_before_the_first_step():
    budget = ComputeBudget(BudgetConfig(device=TOY), DT)
    with pytest.raises(BudgetExceeded, match=r"needs 1\.25 MiB .* over the 1 MiB that device 'toy' gives a policy"):
        budget.check(_footprint(2**20, activation_bytes=2**18))
    with pytest.raises(RuntimeError, match=r"call check\(policy.footprint\(\)\) before the first step"):
        budget.act(Counter(), None)


def test_a_privileged_baseline_is_exempt_neither_capped_nor_priced():
    budget = ComputeBudget(BudgetConfig(latency="profile", device=TOY, deadline_ms=1.0), DT)
    budget.check(Footprint.privileged_baseline())
    policy = Counter()
    controls = [budget.act(policy, None) for _ in range(3)]
    assert [c[1] for c in controls] == pytest.approx([0.01, 0.02, 0.03])  # every step on time
    assert budget.stats.summary()["latency_source"] == "exempt" and budget.stats.missed_deadlines == 0


def test_a_device_profile_is_named_by_its_file_and_an_unknown_one_is_refused():
    config = BudgetConfig.from_cfg({"latency": "profile", "device": "jetson_agx_orin"})
    assert config.device.bandwidth_bytes_per_s == 204.8e9 and "Technical Brief" in config.device.source
    with pytest.raises(ValueError, match="no device profile 'orin_max' in conf/budget/devices/"):
        BudgetConfig.from_cfg({"device": "orin_max"})
    with pytest.raises(ValueError, match="must be positive numbers"):
        DeviceProfile("bad", "", int8_ops_per_s=0, fp16_ops_per_s=1, fp32_ops_per_s=1, bandwidth_bytes_per_s=1,
                      memory_mb=1)


def test_nan_action_is_a_clear_error():
    class Broken:
        def act(self, obs):
            return np.array([np.nan, 0.5, 0.0])

    budget = ComputeBudget(BudgetConfig(), DT)
    budget.check(_footprint(1))
    with pytest.raises(InvalidAction, match="Broken.act returned a non-finite action"):
        budget.act(Broken(), None)
