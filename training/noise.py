"""Noise injection for recovery data (Codevilla et al., "End-to-end Driving via Conditional Imitation Learning",
ICRA 2018): on a share of episodes the applied control is perturbed by short triangular ramps in simulation
time, a steering ramp and, independently, a speed ramp (throttle cut with a light brake), while the expert's own
control is recorded as the label. The car drifts off its lane or falls behind, the expert steers it back, and
the log holds what recovering looks like, which clean expert driving never shows. Perturbed steps are flagged
so that training can leave them out of the inputs' distribution or the loss.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseConfig:
    share: float = 0.3  # fraction of episodes that get noise (chosen by episode seed, so reruns agree)
    every_s: float = 6.0  # mean time between the starts of two perturbations
    duration_s: tuple[float, float] = (0.5, 1.5)  # a ramp's length, drawn uniformly
    steer_peak: tuple[float, float] = (0.15, 0.35)  # |steer| added at the ramp's peak (sign drawn)
    speed_share: float = 0.3  # chance that a perturbation is a speed ramp instead of a steering one
    brake_peak: float = 0.3  # brake added at the peak of a speed ramp (throttle cut to zero there)
    dt: float = 0.05


class TriangularNoise:
    """The `envs.rollout.Perturbation` of a noisy episode: deterministic given the episode seed."""

    def __init__(self, cfg: NoiseConfig) -> None:
        self.cfg = cfg
        self.reset(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 0x5EED])
        self._start, self._length, self._peak, self._kind = -1, 0, 0.0, "steer"
        self._next = self._gap()

    def _gap(self) -> int:
        return max(int(self.rng.exponential(self.cfg.every_s) / self.cfg.dt), 20)

    def __call__(self, step: int, action: np.ndarray) -> tuple[np.ndarray, bool]:
        cfg = self.cfg
        if step >= self._next and step >= self._start + self._length:
            self._start = step
            self._length = max(int(self.rng.uniform(*cfg.duration_s) / cfg.dt), 2)
            self._kind = "speed" if self.rng.random() < cfg.speed_share else "steer"
            self._peak = float(self.rng.uniform(*cfg.steer_peak)) * float(self.rng.choice([-1.0, 1.0]))
            self._next = step + self._length + self._gap()
        offset = step - self._start
        if self._length == 0 or not 0 <= offset < self._length:  # no ramp yet, or between two ramps
            return action, False
        phase = offset / self._length
        height = 1.0 - abs(2.0 * phase - 1.0)  # the triangle: 0 -> 1 at the middle -> 0
        perturbed = np.array(action, dtype=np.float32)
        if self._kind == "steer":
            perturbed[0] = np.clip(perturbed[0] + self._peak * height, -1.0, 1.0)
        else:
            perturbed[1] = perturbed[1] * (1.0 - height)
            perturbed[2] = np.clip(perturbed[2] + cfg.brake_peak * height, 0.0, 1.0)
        return perturbed, True


def noisy_episode(key: str, share: float) -> bool:
    """Whether the episode `key` gets noise: a stable hash, so a rerun or another worker decides alike."""
    return (zlib.crc32(key.encode()) % 10_000) / 10_000.0 < share
