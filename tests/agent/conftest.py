"""Shared fixtures for the agent tests: a tiny configuration and a tiny trained ternary network."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from agent.model import DrivingNet, ModelConfig
from training.train import losses

# conf/model/bitnet_tiny.yaml: the default architecture (32x64 cameras, 8x8 patches, 2x2 merge) at dim 32, with
# one block per camera and one across cameras so that both paths are tested
TINY = ModelConfig(image_height=32, image_width=64, patch_size=8, stem_dim=32, merge=2, dim=32, heads=1,
                   encoder_layers=1, fusion_layers=1)


def tiny_batch(samples: int = 4, seed: int = 0, cfg: ModelConfig = TINY) -> dict[str, torch.Tensor]:
    """A few random camera frames with distinct, learnable targets (waypoints, target speed, current speed,
    brake)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "cameras": torch.randint(0, 256, (samples, cfg.cameras, cfg.image_height, cfg.image_width, 3),
                                 generator=generator, dtype=torch.uint8),
        "speed": torch.rand(samples, 1, generator=generator) * 8,
        "target_point": torch.randn(samples, 2, generator=generator) * 5 + torch.tensor([10.0, 0.0]),
        "command": torch.randint(1, 7, (samples,), generator=generator),
        "waypoints": torch.cumsum(torch.rand(samples, cfg.waypoints, 2, generator=generator)
                                  * torch.tensor([3.0, 1.0]), dim=1),
        "target_speed": torch.rand(samples, generator=generator) * 8,
        "brake": torch.arange(samples) % 2 * 1.0,
    }


# `slimdrive train`'s losses (L1 on waypoints, target speed and the auxiliary speed, BCE on the brake logit), each
# weighted 1
UNIT_WEIGHTS = OmegaConf.create({"loss": {"waypoints": 1.0, "target_speed": 1.0, "speed": 1.0, "brake": 1.0}})


def imitation_loss(net: DrivingNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = net(batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
    return losses(out, batch, UNIT_WEIGHTS)["total"]


def overfit(net: DrivingNet, batch: dict[str, torch.Tensor], steps: int, lr: float) -> list[float]:
    """Adam (0.9, 0.95), as the BitNet recipe; returns the loss of every step."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.95))
    net.train()
    history = []
    for _ in range(steps):
        loss = imitation_loss(net, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


# peak learning rates: ternary about 5x the float one, as the BitNet b1.58 training tips advise
LR = {"ternary": 3e-3, "none": 6e-4}
STEPS = 100


@pytest.fixture(scope="session")
def tiny_runs() -> dict[str, tuple[DrivingNet, list[float]]]:
    """The tiny network of each precision overfitted on `tiny_batch()`, with its losses (trained once per session)."""
    runs = {}
    for quant in ("ternary", "none"):
        torch.manual_seed(0)
        net = DrivingNet(replace(TINY, quant=quant))
        history = overfit(net, tiny_batch(), STEPS, LR[quant])
        runs[quant] = (net.eval(), history)
    return runs


@pytest.fixture(scope="session")
def trained_tiny(tiny_runs: dict[str, tuple[DrivingNet, list[float]]]) -> DrivingNet:
    """The tiny ternary network overfitted on `tiny_batch()`."""
    return tiny_runs["ternary"][0]
