"""The compute budget binds, through the real server: the shipped policy under a deadline it cannot meet
misses it, acts late, brakes by fallback and scores lower than the same policy on the same computer under a
deadline it meets; a model too large for the device is refused before the first step."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers slimdrive/Drive-v0)
from agent.export import export_packed, save_checkpoint
from agent.model import DrivingNet, ModelConfig
from agent.registry import make_agent
from envs.budget import BudgetConfig, BudgetExceeded, ComputeBudget, ComputeBudgetWrapper, DeviceProfile
from envs.driving_env import DrivingEnv
from envs.rollout import Observer, rollout
from scenarios.compile import load_scenario
from scenarios.suites import Episode
from slimdrive import main

OPEN_ROAD = Path(__file__).resolve().parent / "scenarios" / "open_road.yaml"
# The shipped network's own footprint priced on the Orin roofline costs ~0.5 ms; on this profile it costs
# ~120 ms: every decision takes force two steps (100 ms) after its observation, whatever the deadline.
SLOW = replace(DeviceProfile.load("jetson_agx_orin"), name="orin_with_120ms_overhead", overhead_ms=120.0)
# A network larger than the shipped one: 2.4 M weights in its three fusion blocks (9.4 MB in float32).
LARGE = ModelConfig(dim=256, heads=4, fusion_layers=3)


class Applied(Observer):
    """What the agent decided and what the vehicle got, step by step."""

    def on_reset(self, env, obs, info) -> None:
        self.decisions, self.applied = [], []

    def on_step(self, env, step) -> None:
        self.decisions.append(step.decision)
        self.applied.append(step.action)


@pytest.mark.slow
def test_the_same_policy_under_a_deadline_it_cannot_meet_acts_late_brakes_and_scores_lower():
    policy = make_agent("slimdrive", env=None)
    episode = Episode(load_scenario(OPEN_ROAD), 0)
    env = DrivingEnv(image_size_x=128, image_size_y=64)  # tesla8 at the resolution the policy learnt from
    records, watched = {}, {}
    try:
        for deadline_ms in (150.0, 50.0):  # one it meets (~122 ms), one it cannot
            budget = ComputeBudget(BudgetConfig(deadline_ms=deadline_ms, latency="profile", device=SLOW),
                                   env.fixed_delta_seconds, len(env.rig.cameras))
            budget.check(policy.footprint())
            watched[deadline_ms] = Applied()
            records[deadline_ms] = rollout(env, policy, budget, episode, observers=[watched[deadline_ms]])
    finally:
        env.close()
    meets, misses = records[150.0], records[50.0]
    assert meets["budget"]["missed_deadlines"] == 0 and meets["budget"]["fallback_steps"] == 0
    assert meets["budget"]["held_steps"] > 0  # late within its deadline: the previous control holds meanwhile
    stats = misses["budget"]
    assert stats["latency_ms_p50"] == pytest.approx(SLOW.latency(policy.footprint()) * 1000, abs=1e-3)
    assert stats["decisions"] > 0 and stats["missed_deadlines"] == stats["decisions"]
    # Acts late: the decision taken on step k is what the vehicle gets on step k + 2, and every step between
    # brakes by fallback (steps 0 and 1 brake too: nothing has arrived yet).
    applied, decisions = watched[50.0].applied, watched[50.0].decisions
    asked = [k for k, d in enumerate(decisions) if d is not None]
    assert asked[:4] == [0, 2, 4, 6]
    for k in asked:
        if k + 2 < len(applied):
            np.testing.assert_array_equal(applied[k + 2], decisions[k])
            np.testing.assert_array_equal(applied[k + 1][1:], [0.0, 1.0])
    assert stats["fallback_steps"] >= len(applied) // 2
    assert misses["driving_score"] < meets["driving_score"] - 20.0, (misses, meets)


def test_an_oversize_model_is_refused_before_the_first_step(tmp_path):
    torch.manual_seed(0)
    twin = save_checkpoint(DrivingNet(replace(LARGE, quant="none")), tmp_path / "large_fp32.safetensors")
    packed = export_packed(DrivingNet(LARGE), tmp_path / "large_packed.safetensors")
    env = gym.make("slimdrive/Drive-v0", rig="tesla8", image_size_x=128, image_size_y=64)
    try:
        with pytest.raises(BudgetExceeded, match=r"over the 4 MiB that device 'jetson_agx_orin_64gb_gpu' gives"):
            ComputeBudgetWrapper(env, make_agent(str(twin), env=None), "orin_1ms_per_frame")
        assert env.unwrapped._server is None  # refused before any simulator started, let alone a step
        # the same network packed ternary fits (2 bits a weight instead of 32)
        wrapped = ComputeBudgetWrapper(env, make_agent(str(packed), env=None), "orin_1ms_per_frame")
        assert wrapped.budget.priced_ms < wrapped.budget.deadline_ms == 8.0
    finally:
        env.close()
    # `slimdrive eval` refuses it the same way, naming the budget, before any episode runs
    suite = tmp_path / "suite.yaml"
    suite.write_text(json.dumps({"name": "open_road", "entries": [{"scenario": str(OPEN_ROAD), "seeds": [0]}]}))
    out = tmp_path / "eval"
    assert main(["eval", f"agent={twin}", f"suite={suite}", f"out={out}"]) == 2
    assert not (out / "episodes.jsonl").exists()
