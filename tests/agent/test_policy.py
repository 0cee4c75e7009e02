"""The policy contract: training works in both precisions, act() validates and returns a bounded action."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY

from agent.export import export_packed
from agent.model import DrivingNet, ModelConfig
from agent.policy import DrivingPolicy, ObservationError, resize_cameras


@pytest.mark.parametrize("quant", ["ternary", "none"])
def test_tiny_policy_overfits_a_tiny_batch(quant: str, tiny_runs: dict) -> None:
    _net, losses = tiny_runs[quant]
    # measured over three seeds: 1.6-5.3 % of the first loss after 100 steps in either precision
    assert min(losses[-10:]) < 0.08 * losses[0]


def _obs(height: int = TINY.image_height, width: int = TINY.image_width, **changes: object) -> dict:
    obs = {
        "cameras": np.random.default_rng(0).integers(0, 256, (8, height, width, 3), dtype=np.uint8),
        "speed": np.array([4.0], np.float32),
        "target_point": np.array([15.0, 2.0], np.float32),
        "command": 4,
    }
    return {**obs, **changes}


def test_act_returns_a_bounded_action_and_resizes_larger_cameras() -> None:
    torch.manual_seed(0)
    policy = DrivingPolicy(DrivingNet(TINY))
    policy.reset()
    action = policy.act(_obs(height=96, width=160))  # env images larger than the network's 32x64
    assert action.dtype == np.float32 and action.shape == (3,)
    assert -1 <= action[0] <= 1 and 0 <= action[1] <= 1 and 0 <= action[2] <= 1


def test_resizing_recorded_cameras_in_one_call_equals_one_call_per_camera() -> None:
    import cv2

    cameras = np.random.default_rng(1).integers(0, 256, (8, 64, 128, 3), dtype=np.uint8)
    one_each = np.stack([cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA) for image in cameras])
    assert np.array_equal(resize_cameras(cameras, 32, 64), one_each)
    odd = np.stack([cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA) for image in cameras[:, :60, :100]])
    assert np.array_equal(resize_cameras(np.ascontiguousarray(cameras[:, :60, :100]), 32, 64), odd)


def test_predict_returns_every_head_including_the_brake_logit() -> None:
    torch.manual_seed(0)
    out = DrivingPolicy(DrivingNet(TINY)).predict(_obs(height=64, width=128))
    assert out["waypoints"].shape == (TINY.waypoints, 2)
    assert {name: out[name].shape for name in ("target_speed", "speed", "brake")} == {
        "target_speed": (), "speed": (), "brake": ()}


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"speed": np.array([np.nan], np.float32)}, "'speed'"),
        ({"target_point": np.array([1.0, np.inf], np.float32)}, "'target_point'"),
        ({"command": 0}, "'command'"),
        ({"cameras": np.zeros((6, 32, 64, 3), np.uint8)}, "'cameras'"),
        ({"cameras": np.zeros((8, 32, 64, 3), np.float32)}, "'cameras'"),
    ],
)
def test_bad_observations_are_refused_naming_the_field(changes: dict, field: str) -> None:
    policy = DrivingPolicy(DrivingNet(TINY))
    with pytest.raises(ObservationError, match=field):
        policy.act(_obs(**changes))


def test_footprint_of_the_packed_policy(tmp_path) -> None:
    torch.manual_seed(0)
    net = DrivingNet(TINY)
    twin = DrivingPolicy(DrivingNet(replace(TINY, quant="none"))).footprint()
    packed = DrivingPolicy.from_packed(export_packed(net, tmp_path / "p.safetensors")).footprint()
    assert packed.parameters == twin.parameters
    assert packed.ternary_macs > 0 and twin.ternary_macs == 0
    assert packed.ternary_macs + packed.float_macs == twin.float_macs  # same arithmetic, different kinds
    assert twin.weight_bytes > 5 * packed.weight_bytes  # the tiny net's float embeddings weigh more than the default's


def test_ternary_config_rejects_sizes_the_runtime_cannot_run() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        ModelConfig(dim=72, heads=2)
    ModelConfig(dim=72, heads=2, quant="none")  # the float twin has no such constraint
