"""The policy that ships in the package (`agent=slimdrive`, agent/shipped.py): it loads, its file is checked
against its card, and it drives a `val` episode to its end through the real server under the default budget
(a smoke test of the shipped path, not a score: docs/model-card.md has the scores)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import agent.shipped as shipped
from agent.export import WeightFileError
from agent.registry import make_agent
from envs.budget import BudgetConfig, ComputeBudget
from envs.config import load_conf
from slimdrive import main

VAL_EPISODE = Path(__file__).resolve().parent / "scenarios" / "val_red_light_runner.yaml"


def test_the_shipped_policy_loads_checked_against_its_card():
    card = shipped.shipped_card()
    assert shipped.shipped_policy().stat().st_size == card["bytes"] < 2_000_000
    policy = make_agent("slimdrive", env=None)
    footprint = policy.footprint()
    assert footprint.ternary_parameters > 0.9 * footprint.parameters
    budget = ComputeBudget(BudgetConfig.from_cfg(load_conf("budget/orin_1ms_per_frame.yaml")), 0.05, cameras=8)
    budget.check(footprint)  # fits eval's default on-board budget (conf/eval.yaml) ...
    assert budget.priced_ms < 0.6 < budget.deadline_ms == 8.0  # ... priced ~0.5 ms on the roofline against 8 ms


def test_a_damaged_shipped_file_is_refused_naming_it(tmp_path, monkeypatch):
    damaged = tmp_path / "slimdrive.safetensors"
    shutil.copy(shipped.SHIPPED, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "SHIPPED", damaged)
    with pytest.raises(WeightFileError, match=f"{damaged}.*damaged or replaced.*git checkout -- agent/policies/"):
        make_agent("slimdrive", env=None)
    damaged.unlink()
    with pytest.raises(WeightFileError, match=f"{damaged}: the shipped policy is missing"):
        make_agent("slimdrive", env=None)


def test_the_shipped_policy_drives_a_val_episode_to_its_end(tmp_path):
    """`val`'s red-light runner, seed 503 (a short route): the policy drives it to the end of the route."""
    out = tmp_path / "eval"
    assert main(["eval", "agent=slimdrive", f"suite={VAL_EPISODE}", f"out={out}"]) == 0
    results = json.loads((out / "results.json").read_text())
    (episode,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert results["agent"] == "slimdrive" and results["env"]["image_size_x"] == 128  # the recorded resolution
    assert episode["failure"] is None and episode["done"] == "completed" and episode["route_completion"] > 90
    assert episode["budget"]["decisions"] == episode["steps"] and episode["budget"]["missed_deadlines"] == 0
