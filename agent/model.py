"""The slimdrive driving network: eight cameras, ego speed, command and target point in; waypoints, speeds and a
brake logit out.

Read top to bottom:

1. ``ModelConfig``      the size and input resolution (from ``conf/model/*.yaml``, key ``net``).
2. ``Block``            a pre-norm transformer block built only from `BitLinear` (norms live inside it).
3. ``DrivingNet``       the whole network:
   - a ternary convolutional stem that downsamples early, as two patchify stages (both are strided convolutions
     written as a `BitLinear` on flattened patches): ``patch_size`` squares of pixels -> ``stem_dim`` features
     with a squared ReLU, then ``merge`` x ``merge`` neighbouring stem tokens -> one ``dim`` token. A 32x64
     camera with 8x8 patches and a 2x2 merge becomes 2x4 = 8 tokens: the token count, not the width, is what
     makes a vision transformer slow on a CPU;
   - a learned position embedding and a learned camera embedding (the stem and encoder weights are shared by
     all eight cameras, the camera embedding tells them which camera they are looking through);
   - ``encoder_layers`` blocks run on each camera's tokens separately (attention within one image);
   - an auxiliary head predicts the current speed from the camera tokens alone, before the network has seen
     the measured speed: a policy that must explain its speed from the images cannot simply learn "stopped
     means stay stopped" (the inertia problem of CILRS);
   - one ego token, the sum of a command embedding (RoadOption 1..6, CIL convention), a projection of the ego
     speed and a projection of the target point, is prepended to all camera tokens, and ``fusion_layers``
     blocks attend across all cameras and the ego token;
   - one linear head on the ego token gives ``waypoints`` future positions (metres, ego frame: x forward,
     y right, predicted as steps and summed so that they form a path), a target speed (m/s) and a brake logit
     (does the expert brake here for a hazard or a red light).

``quant: ternary`` makes every projection BitNet b1.58; ``quant: none`` is the full-precision twin, same
architecture, same parameter names. Norm gains, embeddings and heads are float in both (see `agent.bitlinear`).

Every projection is called as ``layer(x, activation=..., residual=...)``: the squared ReLU and the residual
addition belong to the layer call, so the packed runtime (`agent.runtime.PackedBitLinear`, swapped in for each
`BitLinear`) fuses them into its kernel while this same code runs unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agent.bitlinear import BitLinear, Quant, RMSNorm
from envs.config import typed_config

N_COMMANDS = 6  # RoadOption LEFT 1, RIGHT 2, STRAIGHT 3, LANEFOLLOW 4, CHANGELANELEFT 5, CHANGELANERIGHT 6
SPEED_SCALE = 10.0  # m/s; brings speeds near unit range before they enter or leave the network
TARGET_SCALE = 20.0  # m; likewise for the target point


@dataclass(frozen=True)
class ModelConfig:
    """Network size and input resolution; ``image_height``/``image_width`` are per camera, after resizing."""

    quant: Quant = "ternary"
    cameras: int = 8
    image_height: int = 32
    image_width: int = 64
    patch_size: int = 8     # stem stage 1: patch_size x patch_size pixels -> one stem token
    stem_dim: int = 64
    merge: int = 2          # stem stage 2: merge x merge stem tokens -> one token (1: no second stage)
    dim: int = 128
    heads: int = 2
    encoder_layers: int = 0
    fusion_layers: int = 1
    mlp_ratio: int = 3
    waypoints: int = 8

    def __post_init__(self) -> None:
        cell = self.patch_size * self.merge
        if self.image_height % cell or self.image_width % cell:
            raise ValueError(
                f"model config: image {self.image_height}x{self.image_width} is not a multiple of "
                f"patch_size * merge = {cell}; change model.net.image_height/image_width, patch_size or merge"
            )
        if self.dim % self.heads:
            raise ValueError(f"model config: dim {self.dim} is not divisible by heads {self.heads}")
        # the packed runtime kernel works on whole 32-byte vectors of inputs and of outputs
        widths = {"dim": self.dim, "stem_dim": self.stem_dim, "3 * patch_size**2": 3 * self.patch_size**2}
        if self.quant == "ternary" and any(width % 32 for width in widths.values()):
            raise ValueError(f"model config: a ternary model needs {widths} to be multiples of 32")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping (a Hydra ``model.net`` node or the JSON stored in a weight file)."""
        return typed_config(cls, values, "model config")

    @property
    def grid(self) -> tuple[int, int]:
        """Tokens per camera after the stem, (rows, columns)."""
        cell = self.patch_size * self.merge
        return self.image_height // cell, self.image_width // cell

    @property
    def tokens_per_camera(self) -> int:
        rows, columns = self.grid
        return rows * columns


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
        x = self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim), residual=x)
        # squared ReLU, as in BitNet b1.58 2B4T: sparse activations suit the 8-bit quantizer of `down`
        return self.down(self.up(x, activation="relu_square"), residual=x)


class DrivingNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # ternary, like every other projection: camera pixels are 8-bit already, so the 8-bit activation
        # quantizer in front of the stem loses almost nothing
        self.stem = BitLinear(3 * cfg.patch_size**2, cfg.stem_dim, cfg.quant)
        self.merge = BitLinear(cfg.merge**2 * cfg.stem_dim, cfg.dim, cfg.quant)
        self.position = nn.Parameter(torch.randn(cfg.tokens_per_camera, cfg.dim) * 0.02)
        self.camera = nn.Parameter(torch.randn(cfg.cameras, cfg.dim) * 0.02)
        self.encoder = nn.ModuleList(Block(cfg) for _ in range(cfg.encoder_layers))
        self.speed_head = nn.Sequential(RMSNorm(cfg.dim), nn.Linear(cfg.dim, 1))
        self.command = nn.Embedding(N_COMMANDS, cfg.dim)
        self.ego_speed = nn.Linear(1, cfg.dim)
        self.ego_target = nn.Linear(2, cfg.dim)
        self.fusion = nn.ModuleList(Block(cfg) for _ in range(cfg.fusion_layers))
        self.head_norm = RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 2 * cfg.waypoints + 2)  # waypoint steps (x, y), target speed, brake

    def forward(
        self, cameras: torch.Tensor, speed: torch.Tensor, target_point: torch.Tensor, command: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """cameras: uint8 (B, cameras, H, W, 3) at the configured resolution; speed: (B, 1) m/s;
        target_point: (B, 2) metres in the ego frame; command: (B,) int RoadOption 1..6.

        Returns ``waypoints`` (B, waypoints, 2) metres, ``target_speed`` (B,) m/s, ``speed`` (B,) m/s (the
        auxiliary estimate of the current speed from the images alone) and ``brake`` (B,), a logit.
        """
        cfg = self.cfg
        batch, n_cam, height, width, _ = cameras.shape
        p, m = cfg.patch_size, cfg.merge
        rows, columns = cfg.grid
        # cut the uint8 cameras into (B * cameras, rows * columns, m * m, p * p * 3): each stem patch in raster
        # order, grouped so that the m x m patches one merged token covers are adjacent (cutting the bytes first
        # moves a quarter of the memory a float copy would); then centre the pixels on mid-grey. No scaling: the
        # stem's RMSNorm divides each patch by its own root mean square
        patches = (
            cameras.reshape(batch * n_cam, rows, m, p, columns, m, p, 3)
            .permute(0, 1, 4, 2, 5, 3, 6, 7)
            .reshape(batch * n_cam, rows * columns, m * m, 3 * p * p)
        )
        patches = patches.to(self.position.dtype).mul_(2.0 / 255.0).sub_(1.0)
        x = self.stem(patches, activation="relu_square")  # (B * cameras, tokens, m * m, stem_dim)
        x = self.merge(x.flatten(2)).view(batch, n_cam, cfg.tokens_per_camera, cfg.dim)
        x = (x + (self.position + self.camera[:, None, :])).flatten(0, 1)  # camera c's rows get its embedding
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
        out = self.head(self.head_norm(x[:, 0]))
        steps = out[:, :-2].view(batch, cfg.waypoints, 2) * (TARGET_SCALE / cfg.waypoints)
        return {
            "waypoints": steps.cumsum(dim=1),
            "target_speed": out[:, -2] * SPEED_SCALE,
            "speed": speed_from_images,
            "brake": out[:, -1],
        }
