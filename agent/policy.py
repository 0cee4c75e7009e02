"""`DrivingPolicy`: the agent contract (`agent.contract.Agent`) around a `DrivingNet`: the network predicts a
path (waypoints in the ego frame), a target speed and a brake logit, and the shared controllers
(`control.PathFollower`: pure pursuit and the speed controller, as the expert drives) turn them into an action.

Observation (see docs/env.md): a dict with ``cameras`` uint8 (8, H, W, 3) in rig order, ``speed`` m/s
(float or shape (1,)), ``target_point`` (2,) metres in the ego frame (x forward, y right) and ``command``
(RoadOption 1..6). Camera images larger or smaller than the network's input are resized with
``cv2.INTER_AREA``. The action is ``[steer, throttle, brake]`` float32.

The same class drives every variant: the packed ternary runtime (`from_packed`), the fake-quant training graph
and the full-precision twin (`DrivingPolicy(net)` with a `DrivingNet`), and a bfloat16 copy of the twin.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from agent.bitlinear import BitLinear
from agent.model import N_COMMANDS, Block, DrivingNet
from agent.runtime import PackedBitLinear
from control import PathFollower
from envs.budget import Footprint


class ObservationError(ValueError):
    """An observation that breaks the contract; the message names the field and what is expected."""


def resize_cameras(cameras: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, height, width, 3) with ``cv2.INTER_AREA``. When both sizes shrink by whole
    factors (64x128 recorded -> 32x64), area resizing averages blocks that never straddle two images, so the
    cameras stacked into one tall image go through one cv2 call (3x faster than one call per camera, same bytes)."""
    n, h, w, _ = cameras.shape
    if h % height == 0 and w % width == 0:
        tall = np.ascontiguousarray(cameras).reshape(n * h, w, 3)
        return cv2.resize(tall, (width, n * height), interpolation=cv2.INTER_AREA).reshape(n, height, width, 3)
    return np.stack([cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for image in cameras])


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


class DrivingPolicy:
    def __init__(self, net: DrivingNet) -> None:
        self.net = net.eval()
        self.cfg = net.cfg
        self.controller = PathFollower()
        self.dtype = next(net.parameters()).dtype
        self._footprint: Footprint | None = None

    @classmethod
    def from_packed(cls, path: str | Path) -> DrivingPolicy:
        """A policy on the packed ternary runtime, from a file written by `agent.export.export_packed`."""
        from agent.export import load_packed

        return cls(load_packed(path))

    def reset(self) -> None:
        """Start of an episode: forget the speed controller's integral."""
        self.controller.reset()

    def inputs(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validate one observation and turn it into the network's batch-of-one inputs."""
        cfg = self.cfg
        missing = {"cameras", "speed", "target_point", "command"} - set(obs)
        if missing:
            raise ObservationError(f"observation: missing fields {sorted(missing)}")
        cameras = np.asarray(obs["cameras"])
        if cameras.dtype != np.uint8 or cameras.ndim != 4 or cameras.shape[0] != cfg.cameras or cameras.shape[3] != 3:
            raise ObservationError(
                f"observation field 'cameras': expected uint8 ({cfg.cameras}, H, W, 3) in rig order, "
                f"got {cameras.dtype} {cameras.shape}"
            )
        if cameras.shape[1:3] != (cfg.image_height, cfg.image_width):
            cameras = resize_cameras(cameras, cfg.image_height, cfg.image_width)
        speed = np.asarray(obs["speed"], dtype=np.float32).reshape(-1)
        if speed.shape != (1,) or not np.isfinite(speed).all():
            raise ObservationError(f"observation field 'speed': expected one finite number (m/s), got {obs['speed']!r}")
        target = np.asarray(obs["target_point"], dtype=np.float32)
        if target.shape != (2,) or not np.isfinite(target).all():
            raise ObservationError(
                f"observation field 'target_point': expected 2 finite numbers (metres, ego frame), "
                f"got {obs['target_point']!r}"
            )
        command = int(np.asarray(obs["command"]).reshape(()))
        if not 1 <= command <= N_COMMANDS:
            raise ObservationError(f"observation field 'command': expected a RoadOption 1..{N_COMMANDS}, got {command}")
        return (
            torch.from_numpy(np.ascontiguousarray(cameras))[None],
            torch.from_numpy(speed)[None].to(self.dtype),
            torch.from_numpy(target)[None].to(self.dtype),
            torch.tensor([command]),
        )

    def predict(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The network's raw outputs for one observation (waypoints, target_speed, speed, brake), float32 numpy."""
        with torch.inference_mode():
            out = self.net(*self.inputs(obs))
        return {name: value[0].float().numpy() for name, value in out.items()}

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One step: observation -> ``[steer, throttle, brake]`` float32."""
        out = self.predict(obs)
        self.waypoints = out["waypoints"]  # the path it drives (ego frame), drawn by evaluation videos
        speed = float(np.asarray(obs["speed"], dtype=np.float32).reshape(-1)[0])
        brake = bool(out["brake"] > 0.0) if "brake" in out else False  # a logit: the expert would brake here
        return self.controller.control(out["waypoints"], float(out["target_speed"]), speed, brake)

    def footprint(self) -> Footprint:
        """Parameters, resident weight bytes and arithmetic per step (counted once on a dummy step)."""
        if self._footprint is None:
            self._footprint = self._count()
        return self._footprint

    def _count(self) -> Footprint:
        cfg = self.cfg
        macs = {"ternary": 0, "float": 0}
        peak = [0]  # the largest activation tensor any layer produces in one step
        moved = [0]  # activation bytes the projections read and write (the roofline's memory side, with weights)

        def activation_hook(_module: nn.Module, _args: tuple, output: object) -> None:
            for tensor in output.values() if isinstance(output, dict) else (output,):
                if isinstance(tensor, torch.Tensor):
                    peak[0] = max(peak[0], tensor.numel() * tensor.element_size())

        def linear_hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            rows = args[0].numel() // args[0].shape[-1]
            moved[0] += sum(t.numel() * t.element_size() for t in (args[0], output))
            if isinstance(module, PackedBitLinear):
                macs["ternary"] += rows * module.in_features * module.out_features
            else:  # BitLinear of either quant runs as a float matmul; so do the float heads
                macs["float"] += rows * module.in_features * module.out_features

        def attention_hook(_module: nn.Module, args: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
            batch, tokens, dim = args[0].shape
            macs["float"] += 2 * batch * tokens * tokens * dim  # q k^T and attention-weighted v
            # reads q, k, v and writes the attended tokens (the projections' own traffic is counted above)
            moved[0] += 4 * args[0].numel() * args[0].element_size()

        counted = (PackedBitLinear, BitLinear, nn.Linear)
        hooks = [m.register_forward_hook(linear_hook) for m in self.net.modules() if isinstance(m, counted)]
        hooks += [m.register_forward_hook(attention_hook) for m in self.net.modules() if isinstance(m, Block)]
        hooks += [m.register_forward_hook(activation_hook) for m in self.net.modules()]
        try:
            obs = {
                "cameras": np.zeros((cfg.cameras, cfg.image_height, cfg.image_width, 3), np.uint8),
                "speed": np.zeros(1, np.float32),
                "target_point": np.array([10.0, 0.0], np.float32),
                "command": 4,
            }
            self.predict(obs)
        finally:
            for hook in hooks:
                hook.remove()

        packed_layers = [m for m in self.net.modules() if isinstance(m, PackedBitLinear)]
        ternary_parameters = sum(m.in_features * m.out_features for m in packed_layers) + sum(
            m.weight.numel() for m in self.net.modules() if isinstance(m, BitLinear) and m.quant == "ternary"
        )
        parameters = sum(p.numel() for p in self.net.parameters()) + sum(
            m.norm_weight.numel() + m.in_features * m.out_features for m in packed_layers
        )
        return Footprint(
            parameters=parameters,
            ternary_parameters=ternary_parameters,
            weight_bytes=_tensor_bytes(self.net),
            ternary_macs=macs["ternary"],
            float_macs=macs["float"],
            dtype=str(self.dtype).removeprefix("torch."),
            activation_bytes=peak[0],
            # weights once, the cameras as the network receives them, and every projection's activations
            moved_bytes=_tensor_bytes(self.net) + obs["cameras"].nbytes + moved[0],
        )
