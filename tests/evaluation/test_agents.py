"""Every kind of agent the registry makes is scored end to end by `slimdrive eval` through the real server,
the rollout loop and the default budget: an exported packed policy, a float checkpoint and a module:Class."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from agent.export import export_packed, save_checkpoint
from agent.model import DrivingNet, ModelConfig
from agent.registry import AgentError, make_agent
from slimdrive import main

# One camera at a small size keeps the server quick; the policy resizes what it gets to its own input.
FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]
ONE_CAMERA = ModelConfig(cameras=1, image_height=32, image_width=64, patch_size=8, dim=64, heads=2,
                         encoder_layers=1, fusion_layers=1)

USER_AGENT = '''
import numpy as np
from envs.budget import Footprint

class Creep:
    """Creeps forward on the route: a user's agent given as module:Class."""
    def reset(self):
        self.steps = 0
    def act(self, obs):
        self.steps += 1
        return np.array([0.0, 0.3, 0.0], np.float32)
    def footprint(self):
        return Footprint(parameters=0, ternary_parameters=0, weight_bytes=0, ternary_macs=0, float_macs=100,
                         dtype="float32")
'''


def _eval(tmp_path, agent: str) -> dict:
    out = tmp_path / "eval"
    assert main(["eval", f"agent={agent}", "suite=rare_events", "limit=2", f"out={out}", *FAST_ENV]) == 0
    results = json.loads((out / "results.json").read_text())
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert results["episodes_run"] == 2 and len(episodes) == 2
    for episode in episodes:
        assert episode["failure"] is None and episode["steps"] > 0
        assert episode["budget"]["decisions"] > 0 and episode["budget"]["missed_deadlines"] == 0
    return results


@pytest.fixture(scope="module")
def random_net() -> DrivingNet:
    torch.manual_seed(0)
    return DrivingNet(ONE_CAMERA).eval()


def test_an_exported_packed_policy_is_scored_end_to_end(tmp_path, random_net):
    path = export_packed(random_net, tmp_path / "policy.safetensors")
    results = _eval(tmp_path, str(path))
    assert results["agent"] == str(path)


def test_a_float_checkpoint_is_scored_end_to_end(tmp_path, random_net):
    _eval(tmp_path, str(save_checkpoint(random_net, tmp_path / "model.safetensors")))


def test_a_module_class_agent_is_scored_end_to_end(tmp_path, monkeypatch):
    (tmp_path / "my_agents.py").write_text(USER_AGENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_agents", None)
    _eval(tmp_path, "my_agents:Creep")


def test_an_unknown_agent_names_what_is_accepted(tmp_path):
    accepted = "not 'slimdrive', 'expert', 'cruise', a .safetensors weight file, or module:Class"
    with pytest.raises(AgentError, match=accepted):
        make_agent(str(tmp_path / "nothing.safetensors"), env=None)
    with pytest.raises(AgentError, match="cannot import 'Nope' from module 'json'"):
        make_agent("json:Nope", env=None)


SHORT_SUITE = Path(__file__).resolve().parents[1] / "training" / "scenarios" / "short.yaml"  # four short drives


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_agent_that_cannot_be_made_is_one_line_whatever_the_workers(tmp_path, capsys, workers):
    """The driver makes the agent once before any simulator or worker starts: with workers=2 as with 1, an
    unknown agent is one line naming it and the config file (exit 2), not a worker's traceback; an oversize
    model is refused the same way, naming the budget."""
    out = tmp_path / "eval"
    assert main(["eval", "agent=json:Nope", f"suite={SHORT_SUITE}", f"out={out}", f"workers={workers}"]) == 2
    said = capsys.readouterr().out
    assert "slimdrive eval: agent=json:Nope" in said and "cannot import 'Nope' from module 'json'" in said
    assert "(conf/eval.yaml)" in said and "Traceback" not in said
    assert not (out / "episodes.jsonl").exists()

    torch.manual_seed(0)
    large_net = DrivingNet(ModelConfig(quant="none", dim=256, heads=4, fusion_layers=3))  # 9.4 MB: over 4 MiB
    large = save_checkpoint(large_net, tmp_path / "large.safetensors")
    assert main(["eval", f"agent={large}", f"suite={SHORT_SUITE}", f"out={out}", f"workers={workers}"]) == 2
    said = capsys.readouterr().out
    assert f"agent={large}, budget in conf/eval.yaml" in said and "Traceback" not in said
