"""Training throughput of a `DrivingNet` on synthetic batches: what ``slimdrive bench train`` reports.

`train_step_throughput` times whole optimisation steps (forward, the imitation losses, backward, AdamW) on
random uint8 camera batches of the configured resolution, so it measures the network and the optimiser only,
not data loading. Run it as ``python -m agent.throughput [model=bitnet_small] [batch=32] [steps=20]``.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from agent.model import DrivingNet, ModelConfig


def synthetic_batch(cfg: ModelConfig, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One random batch with the network's inputs and imitation targets (waypoints, speeds, brake)."""
    g = generator or torch.Generator().manual_seed(0)
    return {
        "cameras": torch.randint(0, 256, (batch, cfg.cameras, cfg.image_height, cfg.image_width, 3),
                                 generator=g, dtype=torch.uint8),
        "speed": torch.rand(batch, 1, generator=g) * 10,
        "target_point": torch.randn(batch, 2, generator=g) * 5 + torch.tensor([15.0, 0.0]),
        "command": torch.randint(1, 7, (batch,), generator=g),
        "waypoints": torch.cumsum(torch.rand(batch, cfg.waypoints, 2, generator=g), dim=1),
        "target_speed": torch.rand(batch, generator=g) * 10,
        "brake": (torch.rand(batch, generator=g) < 0.2).float(),
    }


def imitation_loss(net: DrivingNet, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """L1 on waypoints, target speed and the auxiliary speed, plus BCE on the brake logit."""
    out = net(batch["cameras"], batch["speed"], batch["target_point"], batch["command"])
    return (
        F.l1_loss(out["waypoints"], batch["waypoints"])
        + F.l1_loss(out["target_speed"], batch["target_speed"])
        + F.l1_loss(out["speed"], batch["speed"].squeeze(-1))
        + F.binary_cross_entropy_with_logits(out["brake"], batch["brake"])
    )


def train_step_throughput(model_cfg: ModelConfig | Mapping[str, Any], batch: int = 32, steps: int = 20,
                          warmup: int = 3, device: str | torch.device = "cpu") -> float:
    """Samples (eight-camera frames) per second of full training steps at ``batch``: the median of ``steps``
    timed steps after ``warmup`` untimed ones, so that a moment of load on a shared machine does not count."""
    cfg = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig.from_dict(model_cfg)
    torch.manual_seed(0)
    net = DrivingNet(cfg).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    data = {name: t.to(device) for name, t in synthetic_batch(cfg, batch).items()}
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        loss = imitation_loss(net, data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main(argv: list[str]) -> int:
    from pathlib import Path

    import yaml

    options = dict(arg.split("=", 1) for arg in argv)
    name = options.pop("model", "bitnet_small")
    batch, steps = int(options.pop("batch", 32)), int(options.pop("steps", 20))
    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    values: dict[str, Any] = {}
    for layer in ("bitnet_small", name):  # bitnet_tiny's defaults list starts from bitnet_small
        values.update(yaml.safe_load((conf / f"{layer}.yaml").read_text())["net"])
    values.update({key: yaml.safe_load(value) for key, value in options.items()})
    for quant in ("ternary", "none"):
        rate = train_step_throughput({**values, "quant": quant}, batch, steps)
        print(f"{name} quant={quant} batch {batch}: {rate:.0f} samples/s ({rate * values['cameras']:.0f} camera frames/s)"
              f", {torch.get_num_threads()} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
