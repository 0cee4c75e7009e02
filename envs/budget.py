"""The on-board compute budget: a per-step deadline, a weight-memory cap, and consequences for lateness.

The computer is modelled as one processor that takes a policy `latency` L to turn an observation into a
control, with the simulation stepping every `dt`:

* the control is in force for the first step whose start is at or after its arrival, counting the
  current step when L <= dt (CARLA's synchronous agent loop: compute between ticks). So it comes
  d = ceil(L / dt) - 1 steps late, and at least one step late when it missed the deadline;
* the processor is busy until its control takes force: its next observation is that of step k + max(d, 1);
* the steps before a late control arrives use the previous control when L is within the deadline, and the
  configured fallback (`hold` the last control, or `brake`) when the deadline was missed.

Latency is measured with a monotonic clock around `policy.act`, or, for reproducible runs, derived from the
policy's `Footprint` and a device profile (`latency = overhead + ops / ops_per_second`). The same schedule
serves the rollout loop (`ComputeBudget.act`, see `envs.rollout`) and a Gymnasium wrapper
(`ComputeBudgetWrapper`). What the budget asks of a policy is `BudgetedPolicy`: `act` and `footprint`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from .config import typed_config


@dataclass(frozen=True)
class Footprint:
    """What one policy step costs, computed from the network (checked before the first step, priced every step).

    A privileged baseline (the rule-based expert, cruise) reads the simulator instead of computing on images:
    it declares `privileged=True` and no arithmetic, rather than inventing some.
    """

    parameters: int  # numbers that define the network (ternary weights count one each)
    ternary_parameters: int
    weight_bytes: int  # resident bytes of all weights as this policy holds them
    ternary_macs: int  # int8 x ternary multiply-accumulates per step (packed runtime only)
    float_macs: int  # floating-point multiply-accumulates per step, in `dtype`
    dtype: str  # the floating-point type the float part computes in
    activation_bytes: int = 0  # the largest activation tensor of one step (peak working memory beyond weights)
    privileged: bool = False

    @property
    def ops_per_step(self) -> float:
        """Arithmetic operations per step: a multiply-accumulate is two."""
        return 2.0 * (self.ternary_macs + self.float_macs)

    @classmethod
    def privileged_baseline(cls) -> Footprint:
        return cls(parameters=0, ternary_parameters=0, weight_bytes=0, ternary_macs=0, float_macs=0,
                   dtype="none", privileged=True)


class BudgetedPolicy(Protocol):
    """What the budget runs: an observation in, `[steer, throttle, brake]` out, and what a step costs."""

    def act(self, obs: Mapping[str, Any]) -> np.ndarray: ...

    def footprint(self) -> Footprint: ...


class BudgetExceeded(ValueError):
    """A policy that cannot fit the on-board computer (refused before the first step)."""


class InvalidAction(ValueError):
    """A policy produced an action the vehicle cannot take (NaN, wrong shape)."""


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    ops_per_second: float  # sustained arithmetic rate for the policy's kind of operations
    overhead_ms: float = 0.0  # fixed per-step cost (pre-processing, transfers)

    def latency(self, ops_per_step: float) -> float:
        return self.overhead_ms / 1000.0 + ops_per_step / self.ops_per_second


@dataclass(frozen=True)
class BudgetConfig:
    deadline_ms: float = 50.0
    weight_cap_mb: float = 64.0
    fallback: str = "brake"  # "hold" the last control, or "brake"
    latency: str = "measured"  # "measured" with a monotonic clock, or "profile" (reproducible)
    device: DeviceProfile | None = None

    def __post_init__(self) -> None:
        if self.fallback not in ("hold", "brake"):
            raise ValueError(f"budget.fallback must be 'hold' or 'brake', got {self.fallback!r}")
        if self.latency not in ("measured", "profile"):
            raise ValueError(f"budget.latency must be 'measured' or 'profile', got {self.latency!r}")
        if self.latency == "profile" and self.device is None:
            raise ValueError("budget.latency=profile needs budget.device (name, ops_per_second, overhead_ms)")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> BudgetConfig:
        """From a `conf/budget/*.yaml` node (or a plain mapping)."""
        device = cfg.get("device")
        device = typed_config(DeviceProfile, device, "budget.device") if device else None
        return typed_config(cls, {**cfg, "device": device}, "budget")


@dataclass
class BudgetStats:
    steps: int = 0
    decisions: int = 0  # observations the policy turned into controls
    missed_deadlines: int = 0
    fallback_steps: int = 0
    held_steps: int = 0  # steps that kept the previous control while a within-deadline control was on its way
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"steps": self.steps, "decisions": self.decisions, "missed_deadlines": self.missed_deadlines,
                "fallback_steps": self.fallback_steps, "held_steps": self.held_steps,
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
                "latency_ms_max": round(float(lat.max()), 3)}


def validate_action(action, source: str) -> np.ndarray:
    array = np.asarray(action, dtype=np.float32)
    if array.shape != (3,):
        raise InvalidAction(f"{source} returned an action of shape {array.shape}; expected (3,) "
                            "= [steer, throttle, brake]")
    if not np.all(np.isfinite(array)):
        raise InvalidAction(f"{source} returned a non-finite action {array.tolist()}; "
                            "check the policy's inputs and weights")
    return np.clip(array, [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0])


class ComputeBudget:
    """Schedules controls by latency, one call per simulation step. `dt` is the simulation step (s)."""

    def __init__(self, config: BudgetConfig, dt: float):
        self.config, self.dt = config, dt
        self.reset()

    def reset(self) -> None:
        self.stats = BudgetStats()
        self._step = 0
        self._busy_until = 0  # first step at which the processor takes a new observation
        self._pending: tuple[int, np.ndarray] | None = None  # (step it takes force, control)
        self._control = np.array([0.0, 0.0, 1.0], dtype=np.float32)  # parked until the first decision
        self._late = False  # whether the control on its way missed the deadline
        self.decision: np.ndarray | None = None  # the policy's answer on this step, if it was asked

    def check(self, footprint: Footprint) -> None:
        """Refuse a policy whose weights exceed the cap; call before the first step."""
        if not isinstance(footprint, Footprint):
            raise TypeError(f"footprint() returned {type(footprint).__name__}; an agent's footprint() must return "
                            "envs.budget.Footprint (see agent/contract.py)")
        weight_mb = footprint.weight_bytes / 2**20
        if weight_mb > self.config.weight_cap_mb:
            raise BudgetExceeded(f"policy weights take {weight_mb:.1f} MiB, over the on-board cap of "
                                 f"{self.config.weight_cap_mb:.1f} MiB (budget.weight_cap_mb); export a smaller "
                                 "or packed ternary model, or raise the cap")
        self._footprint = footprint

    @property
    def ready(self) -> bool:
        """Whether the processor takes the current step's observation."""
        return self._step >= self._busy_until

    def act(self, policy: BudgetedPolicy, obs) -> np.ndarray:
        """The control for this step, asking `policy` only when the processor is free (`self.decision` then
        holds what it answered, before any delay; None on a step it was not asked)."""
        self.decision = None
        if not self.ready:
            return self.skip()
        started = time.monotonic()
        action = policy.act(obs)
        measured = time.monotonic() - started
        if self.config.latency == "profile":
            latency = self.config.device.latency(self._footprint.ops_per_step)
        else:
            latency = measured
        self.decision = validate_action(action, f"{type(policy).__name__}.act")
        return self.submit(self.decision, latency)

    def submit(self, action: np.ndarray, latency: float) -> np.ndarray:
        """A decision taken from this step's observation with `latency` seconds of compute."""
        fresh = self._receive_due()
        self.stats.decisions += 1
        self.stats.latencies_ms.append(latency * 1000.0)
        late = latency * 1000.0 > self.config.deadline_ms
        delay = max(math.ceil(latency / self.dt - 1e-9) - 1, 1 if late else 0)
        self._busy_until = self._step + max(delay, 1)
        if delay == 0:
            self._control, self._pending, fresh = np.asarray(action, dtype=np.float32), None, True
        else:
            self._pending, self._late = (self._step + delay, np.asarray(action, dtype=np.float32)), late
            self.stats.missed_deadlines += int(late)
        return self._end_step(fresh)

    def skip(self) -> np.ndarray:
        """A step on which the processor is still busy with an earlier observation."""
        return self._end_step(self._receive_due())

    def _receive_due(self) -> bool:
        """Put a control whose time has come in force; True if one did."""
        if self._pending is not None and self._pending[0] <= self._step:
            self._control, self._pending = self._pending[1], None
            return True
        return False

    def _end_step(self, fresh: bool) -> np.ndarray:
        """The control for this step: a fresh one, else the held or fallback control while one is on its way."""
        if not fresh and self._pending is not None:
            if self._late:
                self.stats.fallback_steps += 1
                if self.config.fallback == "brake":
                    self._control = np.array([self._control[0], 0.0, 1.0], dtype=np.float32)
            else:
                self.stats.held_steps += 1
        self._step += 1
        self.stats.steps += 1
        return self._control.copy()


class ComputeBudgetWrapper(gym.Wrapper):
    """The budget around any env, for a given latency: actions chosen while the processor is busy are
    ignored (`info["budget_ready"]` says whether this step's action was taken), late ones arrive late."""

    def __init__(self, env: gym.Env, latency_s: float | Callable[[], float], config: BudgetConfig | None = None):
        super().__init__(env)
        dt = float(getattr(env.unwrapped, "fixed_delta_seconds", 0.05))
        self.budget = ComputeBudget(config or BudgetConfig(), dt)
        self._latency = latency_s if callable(latency_s) else (lambda: float(latency_s))

    def reset(self, **kwargs):
        self.budget.reset()
        obs, info = self.env.reset(**kwargs)
        info["budget_ready"] = True
        return obs, info

    def step(self, action):
        ready = self.budget.ready
        if ready:
            control = self.budget.submit(validate_action(action, "the agent"), self._latency())
        else:
            control = self.budget.skip()
        obs, reward, terminated, truncated, info = self.env.step(control)
        info["budget_ready"] = ready
        info["applied_action"] = control
        info["budget"] = self.budget.stats.summary()
        return obs, reward, terminated, truncated, info
