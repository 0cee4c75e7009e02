"""The slimdrive driving network: eight cameras, ego speed, command and target point in; waypoints and speeds out.

Read top to bottom:

1. ``ModelConfig``      the size and input resolution (from ``conf/model/*.yaml``, key ``net``).
2. ``Block``            a pre-norm transformer block built only from `BitLinear` (norms live inside it).
3. ``DrivingNet``       the whole network:
   - every camera image is cut into ``patch_size`` squares, each patch goes through a ternary patch embedding
     (a `BitLinear` on the flattened patch, i.e. a stride-``patch_size`` convolution), plus a learned position
     embedding and a learned camera embedding (the encoder weights are shared by all eight cameras, the camera
     embedding tells it which camera it is looking through);
   - ``encoder_layers`` blocks run on each camera's tokens separately (attention within one image);
   - an auxiliary head predicts the current speed from the camera tokens alone, before the network has seen
     the measured speed: a policy that must explain its speed from the images cannot simply learn "stopped
     means stay stopped" (the inertia problem of CILRS);
   - one ego token, the sum of a command embedding (RoadOption 1..6, CIL convention), a projection of the ego
     speed and a projection of the target point, is prepended to all camera tokens, and ``fusion_layers``
     blocks attend across all cameras and the ego token;
   - heads on the ego token give ``waypoints`` future positions (metres, ego frame: x forward, y right,
     predicted as steps and summed so that they form a path) and a target speed (m/s).

``quant: ternary`` makes every projection BitNet b1.58; ``quant: none`` is the full-precision twin, same
architecture, same parameter names. Norm gains, embeddings and heads are float in both (see `agent.bitlinear`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from agent.bitlinear import BitLinear, Quant, RMSNorm

N_COMMANDS = 6  # RoadOption LEFT 1, RIGHT 2, STRAIGHT 3, LANEFOLLOW 4, CHANGELANELEFT 5, CHANGELANERIGHT 6
SPEED_SCALE = 10.0  # m/s; brings speeds near unit range before they enter or leave the network
TARGET_SCALE = 20.0  # m; likewise for the target point


@dataclass(frozen=True)
class ModelConfig:
    """Network size and input resolution; ``image_height``/``image_width`` are per camera, after resizing."""

    quant: Quant = "ternary"
    cameras: int = 8
    image_height: int = 64
    image_width: int = 128
    patch_size: int = 16
    dim: int = 192
    heads: int = 3
    encoder_layers: int = 2
    fusion_layers: int = 2
    mlp_ratio: int = 4
    waypoints: int = 4

    def __post_init__(self) -> None:
        if self.image_height % self.patch_size or self.image_width % self.patch_size:
            raise ValueError(
                f"model config: image {self.image_height}x{self.image_width} is not a multiple of "
                f"patch_size {self.patch_size}; change model.net.image_height/image_width or patch_size"
            )
        if self.dim % self.heads:
            raise ValueError(f"model config: dim {self.dim} is not divisible by heads {self.heads}")
        # the packed runtime kernel works on whole 32-byte vectors of inputs and of outputs
        if self.quant == "ternary" and (self.dim % 32 or (3 * self.patch_size**2) % 32):
            raise ValueError(
                f"model config: a ternary model needs dim ({self.dim}) and 3 * patch_size**2 "
                f"({3 * self.patch_size**2}) to be multiples of 32"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build from a plain mapping (a Hydra ``model.net`` node or the JSON stored in a weight file)."""
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"model config: unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
        return cls(**dict(values))

    @property
    def tokens_per_camera(self) -> int:
        return (self.image_height // self.patch_size) * (self.image_width // self.patch_size)


class Block(nn.Module):
    """Transformer block: x + Attention(x), then x + FFN(x). Each BitLinear normalises its own input, which
    gives the usual pre-norm on ``qkv``/``up`` and BitNet's extra "subln" norm on ``proj``/``down``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = BitLinear(cfg.dim, 3 * cfg.dim, cfg.quant)
        self.proj = BitLinear(cfg.dim, cfg.dim, cfg.quant)
        self.up = BitLinear(cfg.dim, cfg.mlp_ratio * cfg.dim, cfg.quant)
        self.down = BitLinear(cfg.mlp_ratio * cfg.dim, cfg.dim, cfg.quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, tokens, head_dim)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))
        # squared ReLU, as in BitNet b1.58 2B4T: sparse activations suit the 8-bit quantizer of `down`
        return x + self.down(F.relu(self.up(x)).square())


class DrivingNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        patch_features = 3 * cfg.patch_size**2
        # ternary, like every other projection: camera pixels are 8-bit already, so the 8-bit activation
        # quantizer in front of it loses almost nothing, and it is the largest single matmul of the network
        self.patch_embed = BitLinear(patch_features, cfg.dim, cfg.quant)
        self.position = nn.Parameter(torch.randn(cfg.tokens_per_camera, cfg.dim) * 0.02)
        self.camera = nn.Parameter(torch.randn(cfg.cameras, cfg.dim) * 0.02)
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(cfg.encoder_layers))
        self.speed_head = nn.Sequential(RMSNorm(cfg.dim), nn.Linear(cfg.dim, 1))
        self.command = nn.Embedding(N_COMMANDS, cfg.dim)
        self.ego_speed = nn.Linear(1, cfg.dim)
        self.ego_target = nn.Linear(2, cfg.dim)
        self.fusion = nn.ModuleList(Block(cfg) for _ in range(cfg.fusion_layers))
        self.head_norm = RMSNorm(cfg.dim)
        self.waypoint_head = nn.Linear(cfg.dim, 2 * cfg.waypoints)
        self.target_speed_head = nn.Linear(cfg.dim, 1)

    def forward(
        self, cameras: torch.Tensor, speed: torch.Tensor, target_point: torch.Tensor, command: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """cameras: uint8 (B, cameras, H, W, 3) at the configured resolution; speed: (B, 1) m/s;
        target_point: (B, 2) metres in the ego frame; command: (B,) int RoadOption 1..6.

        Returns ``waypoints`` (B, waypoints, 2) metres, ``target_speed`` (B,) m/s and ``speed`` (B,) m/s, the
        auxiliary estimate of the current speed from the images alone.
        """
        cfg = self.cfg
        batch, n_cam, height, width, _ = cameras.shape
        p = cfg.patch_size
        # uint8 pixels -> [-1, 1], then (B * cameras, tokens, p*p*3) patches in raster order
        pixels = cameras.to(self.position.dtype) / 127.5 - 1.0
        patches = (
            pixels.view(batch * n_cam, height // p, p, width // p, p, 3)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(batch * n_cam, cfg.tokens_per_camera, 3 * p * p)
        )
        x = self.patch_embed(patches) + self.position
        x = x + self.camera.repeat(batch, 1)[:, None, :]  # row b * n_cam + c gets camera c's embedding
        for block in self.encoder:
            x = block(x)
        x = x.reshape(batch, n_cam * cfg.tokens_per_camera, cfg.dim)

        speed_from_images = self.speed_head(x.mean(dim=1)).squeeze(-1) * SPEED_SCALE

        ego = (
            self.command(command - 1)
            + self.ego_speed(speed / SPEED_SCALE)
            + self.ego_target(target_point / TARGET_SCALE)
        )
        x = torch.cat([ego[:, None, :], x], dim=1)
        for block in self.fusion:
            x = block(x)
        ego_out = self.head_norm(x[:, 0])

        steps = self.waypoint_head(ego_out).view(batch, cfg.waypoints, 2) * TARGET_SCALE / cfg.waypoints
        return {
            "waypoints": steps.cumsum(dim=1),
            "target_speed": self.target_speed_head(ego_out).squeeze(-1) * SPEED_SCALE,
            "speed": speed_from_images,
        }
