"""The on-board compute budget: a per-step deadline, a memory cap, and consequences for lateness.

The computer is modelled as one processor that takes a policy `latency` L to turn an observation into a
control, with the simulation stepping every `dt`:

* the control is in force for the first step whose start is at or after its arrival, counting the
  current step when L <= dt (CARLA's synchronous agent loop: compute between ticks). So it comes
  d = ceil(L / dt) - 1 steps late, and at least one step late when it missed the deadline;
* the processor is busy until its control takes force: its next observation is that of step k + max(d, 1);
* the steps before a late control arrives use the previous control when L is within the deadline, and the
  configured fallback (`hold` the last control, or `brake`) when the deadline was missed.

The deadline is `deadline_ms` per step, or `deadline_ms_per_camera` x the rig's cameras (1 ms per camera frame:
8 ms for eight cameras). What a step costs is computed from the network (`Footprint`, counted by
`agent.policy.DrivingPolicy.footprint`) and either priced on a device profile, a roofline
(`DeviceProfile.latency`: max(arithmetic / peak rate of its precision, bytes moved / memory bandwidth) +
overhead, numbers sourced in `conf/budget/devices/*.yaml`), or `measured`: the wall time of the real call on
this machine. The profile's memory is the cap: weights and the peak activation must fit, or the policy is
refused before the first step. A privileged baseline (the expert, cruise) reads the simulator instead of
computing on images: it is exempt, neither priced nor capped.

The same schedule serves the rollout loop (`ComputeBudget.act`, see `envs.rollout`) and a Gymnasium wrapper
(`ComputeBudgetWrapper`) for any user loop. What the budget asks of a policy is `BudgetedPolicy`: `act` and
`footprint`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from .config import load_conf, typed_config


@dataclass(frozen=True)
class Footprint:
    """What one policy step costs, computed from the network (checked before the first step, priced every step).

    A privileged baseline (the rule-based expert, cruise) reads the simulator instead of computing on images:
    it declares `privileged=True` and no arithmetic, rather than inventing some, and the budget exempts it.
    """

    parameters: int  # numbers that define the network (ternary weights count one each)
    ternary_parameters: int
    weight_bytes: int  # resident bytes of all weights as this policy holds them
    ternary_macs: int  # int8 x ternary multiply-accumulates per step (packed runtime only)
    float_macs: int  # floating-point multiply-accumulates per step, in `dtype`
    dtype: str  # the floating-point type the float part computes in
    activation_bytes: int = 0  # the largest activation tensor of one step (peak working memory beyond weights)
    moved_bytes: int = 0  # bytes one step moves: the weights once, the cameras, each layer's inputs and outputs
    privileged: bool = False

    @property
    def ops_per_step(self) -> float:
        """Arithmetic operations per step: a multiply-accumulate is two."""
        return 2.0 * (self.ternary_macs + self.float_macs)

    @property
    def memory_bytes(self) -> int:
        """What must stay resident while a step runs: the weights and the peak activation."""
        return self.weight_bytes + self.activation_bytes

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


DEVICES_DIR = "budget/devices"  # under conf/: one roofline profile per file, its numbers sourced there


@dataclass(frozen=True)
class DeviceProfile:
    """A roofline of the on-board computer: peak arithmetic rate per precision, memory bandwidth, the memory a
    policy may hold, and a fixed per-step overhead. `source` says where the numbers come from."""

    name: str
    source: str
    int8_ops_per_s: float  # int8 x ternary products (no device has ternary units: they run as int8 x int8)
    fp16_ops_per_s: float  # float16 and bfloat16
    fp32_ops_per_s: float
    bandwidth_bytes_per_s: float
    memory_mb: float  # the cap on weights + peak activation (MiB)
    overhead_ms: float = 0.0  # per step, whatever the network: launches, pre-processing, transfers

    def __post_init__(self) -> None:
        rates = {"int8_ops_per_s": self.int8_ops_per_s, "fp16_ops_per_s": self.fp16_ops_per_s,
                 "fp32_ops_per_s": self.fp32_ops_per_s, "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
                 "memory_mb": self.memory_mb}
        bad = {k: v for k, v in rates.items() if not (isinstance(v, (int, float)) and v > 0)}
        if bad or not self.overhead_ms >= 0:
            raise ValueError(f"device profile {self.name!r}: {bad or {'overhead_ms': self.overhead_ms}} must be "
                             f"positive numbers (overhead_ms >= 0); see {DEVICES_DIR}/")

    @classmethod
    def load(cls, device: str | Mapping[str, Any]) -> DeviceProfile:
        """A profile by name (`conf/budget/devices/<name>.yaml`) or from a mapping of its fields."""
        if isinstance(device, str):
            try:
                device = load_conf(f"{DEVICES_DIR}/{device}.yaml")
            except FileNotFoundError:
                raise ValueError(f"budget.device: no device profile {device!r} in conf/{DEVICES_DIR}/; "
                                 "name one of its files or give the profile's fields") from None
        return typed_config(cls, device, "budget.device")

    def rate(self, dtype: str) -> float:
        """Peak arithmetic rate (operations/s) for a floating-point type."""
        rates = {"float32": self.fp32_ops_per_s, "float16": self.fp16_ops_per_s, "bfloat16": self.fp16_ops_per_s}
        if dtype not in rates:
            raise ValueError(f"device profile {self.name!r} has no rate for {dtype!r}; "
                             f"it prices {sorted(rates)} and int8 x ternary")
        return rates[dtype]

    def latency(self, footprint: Footprint) -> float:
        """Seconds for one step on the roofline: max(arithmetic time, memory time) + overhead."""
        arithmetic = 2.0 * footprint.ternary_macs / self.int8_ops_per_s
        if footprint.float_macs:
            arithmetic += 2.0 * footprint.float_macs / self.rate(footprint.dtype)
        memory = footprint.moved_bytes / self.bandwidth_bytes_per_s
        return max(arithmetic, memory) + self.overhead_ms / 1000.0


@dataclass(frozen=True)
class BudgetConfig:
    deadline_ms: float | None = 50.0  # per step; or None with deadline_ms_per_camera
    deadline_ms_per_camera: float | None = None  # e.g. 1.0: 8 ms for the eight cameras of tesla8
    fallback: str = "brake"  # "hold" the last control, or "brake"
    latency: str = "measured"  # "measured" with a monotonic clock, or "profile" (the device's roofline)
    device: DeviceProfile | None = None  # its memory is the cap; None (measured only): no cap

    def __post_init__(self) -> None:
        if self.fallback not in ("hold", "brake"):
            raise ValueError(f"budget.fallback must be 'hold' or 'brake', got {self.fallback!r}")
        if self.latency not in ("measured", "profile"):
            raise ValueError(f"budget.latency must be 'measured' or 'profile', got {self.latency!r}")
        if self.latency == "profile" and self.device is None:
            raise ValueError(f"budget.latency=profile needs budget.device: a profile name from conf/{DEVICES_DIR}/ "
                             "or its fields")
        if (self.deadline_ms is None) == (self.deadline_ms_per_camera is None):
            raise ValueError("budget: set exactly one of deadline_ms (per step) and deadline_ms_per_camera "
                             f"(got {self.deadline_ms} and {self.deadline_ms_per_camera}); the other must be null")
        if not (self.deadline_ms or self.deadline_ms_per_camera) > 0:
            raise ValueError("budget: the deadline must be positive")

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> BudgetConfig:
        """From a `conf/budget/*.yaml` node (or a plain mapping); `device` is a profile name or its fields."""
        device = cfg.get("device")
        device = DeviceProfile.load(device) if device else None
        return typed_config(cls, {**cfg, "device": device}, "budget")

    @classmethod
    def load(cls, name: str) -> BudgetConfig:
        """A budget file by name: `BudgetConfig.load("orin_int8")` reads `conf/budget/orin_int8.yaml`."""
        return cls.from_cfg(load_conf(f"budget/{name}.yaml"))

    def deadline(self, cameras: int | None) -> float:
        """The per-step deadline (ms) for a rig of `cameras` cameras."""
        if self.deadline_ms is not None:
            return float(self.deadline_ms)
        if not cameras:
            raise ValueError("budget.deadline_ms_per_camera needs the rig's camera count: make the budget with "
                             "ComputeBudget.for_env(cfg, env) or pass cameras=")
        return float(self.deadline_ms_per_camera) * cameras


@dataclass
class BudgetStats:
    deadline_ms: float = 0.0
    latency_source: str = "measured"  # "measured", "profile" (the roofline's price) or "exempt" (not priced)
    steps: int = 0
    decisions: int = 0  # observations the policy turned into controls
    missed_deadlines: int = 0
    fallback_steps: int = 0
    held_steps: int = 0  # steps that kept the previous control while a within-deadline control was on its way
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {"deadline_ms": round(self.deadline_ms, 3), "latency_source": self.latency_source,
                "steps": self.steps, "decisions": self.decisions, "missed_deadlines": self.missed_deadlines,
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
    """Schedules controls by latency, one call per simulation step. `dt` is the simulation step (s), `cameras`
    the rig's camera count (for a per-camera deadline). Call `check(policy.footprint())` before the first step."""

    def __init__(self, config: BudgetConfig, dt: float, cameras: int | None = None):
        self.config, self.dt = config, dt
        self.deadline_ms = config.deadline(cameras)
        self._footprint: Footprint | None = None
        self._priced_s = 0.0
        self.reset()

    @classmethod
    def for_env(cls, cfg: BudgetConfig | Mapping[str, Any] | str, env: gym.Env) -> ComputeBudget:
        """The budget of `cfg` (a `BudgetConfig`, a `conf/budget` node or a budget file's name) for `env`'s
        simulation step and camera rig."""
        if isinstance(cfg, str):
            cfg = BudgetConfig.load(cfg)
        elif not isinstance(cfg, BudgetConfig):
            cfg = BudgetConfig.from_cfg(cfg)
        base = env.unwrapped
        return cls(cfg, float(base.fixed_delta_seconds), len(base.rig.cameras))

    def reset(self) -> None:
        self.stats = BudgetStats(deadline_ms=self.deadline_ms, latency_source=self.latency_source)
        self._step = 0
        self._busy_until = 0  # first step at which the processor takes a new observation
        self._pending: tuple[int, np.ndarray] | None = None  # (step it takes force, control)
        self._control = np.array([0.0, 0.0, 1.0], dtype=np.float32)  # parked until the first decision
        self._late = False  # whether the control on its way missed the deadline
        self.decision: np.ndarray | None = None  # the policy's answer on this step, if it was asked

    @property
    def latency_source(self) -> str:
        if self._footprint is not None and self._footprint.privileged:
            return "exempt"
        return self.config.latency

    @property
    def priced_ms(self) -> float | None:
        """What one step of the checked policy costs on the device's roofline (None: measured or exempt)."""
        return self._priced_s * 1000.0 if self.latency_source == "profile" and self._footprint else None

    def check(self, footprint: Footprint) -> None:
        """Refuse a policy that does not fit the device's memory; call before the first step. A privileged
        baseline is exempt: never refused, never priced (it computes nothing on board)."""
        if not isinstance(footprint, Footprint):
            raise TypeError(f"footprint() returned {type(footprint).__name__}; an agent's footprint() must return "
                            "envs.budget.Footprint (see agent/contract.py)")
        device = self.config.device
        if not footprint.privileged and device is not None and footprint.memory_bytes > device.memory_mb * 2**20:
            raise BudgetExceeded(
                f"policy needs {footprint.memory_bytes / 2**20:.2f} MiB (weights {footprint.weight_bytes:,} B + "
                f"peak activation {footprint.activation_bytes:,} B), over the {device.memory_mb:g} MiB that "
                f"device {device.name!r} gives a policy (budget.device); export a smaller or packed ternary "
                "model, or choose another device profile")
        self._footprint = footprint
        if self.config.latency == "profile" and not footprint.privileged:
            self._priced_s = device.latency(footprint)
        self.stats.latency_source = self.latency_source

    def price(self, measured_s: float) -> float:
        """The latency (s) that schedules a decision whose call took `measured_s` on this machine."""
        if self._footprint is None:
            raise RuntimeError("ComputeBudget: call check(policy.footprint()) before the first step")
        if self._footprint.privileged:
            return 0.0
        return self._priced_s if self.config.latency == "profile" else measured_s

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
        latency = self.price(time.monotonic() - started)
        self.decision = validate_action(action, f"{type(policy).__name__}.act")
        return self.submit(self.decision, latency)

    def submit(self, action: np.ndarray, latency: float) -> np.ndarray:
        """A decision taken from this step's observation with `latency` seconds of compute."""
        fresh = self._receive_due()
        self.stats.decisions += 1
        self.stats.latencies_ms.append(latency * 1000.0)
        late = latency * 1000.0 > self.deadline_ms
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
    """The budget around `slimdrive/Drive-v0` (or any env with `fixed_delta_seconds` and a camera `rig`), for a
    plain Gymnasium loop: ``action = policy.act(obs); obs, ... = env.step(action)``.

    `policy` is checked before the first step (`BudgetExceeded` if it does not fit the device) and priced by its
    footprint on a `profile` budget. On a `measured` budget the wrapper times the agent's turn: from the moment
    `reset`/`step` hands out an observation to the moment the next action arrives, which in such a loop is the
    policy's call (whatever else the loop does in between counts too, as it would on the car). An action chosen
    while the processor is still busy is ignored (`info["budget_ready"]` is False); a late one arrives late,
    with the fallback applied meanwhile. `info["applied_action"]` is what the vehicle got, `info["budget"]` the
    statistics so far."""

    def __init__(self, env: gym.Env, policy: BudgetedPolicy, config: BudgetConfig | Mapping[str, Any] | str):
        super().__init__(env)
        self.budget = ComputeBudget.for_env(config, env)
        self.budget.check(policy.footprint())
        self._handed_out: float | None = None  # when the observation being decided on was handed out

    def reset(self, **kwargs):
        self.budget.reset()
        obs, info = self.env.reset(**kwargs)
        info["budget_ready"] = True
        self._handed_out = time.monotonic()
        return obs, info

    def step(self, action):
        if self._handed_out is None:
            raise gym.error.ResetNeeded("ComputeBudgetWrapper.step: call reset() first")
        measured = time.monotonic() - self._handed_out
        ready = self.budget.ready
        if ready:
            control = self.budget.submit(validate_action(action, "the agent"), self.budget.price(measured))
        else:
            control = self.budget.skip()
        obs, reward, terminated, truncated, info = self.env.step(control)
        info["budget_ready"] = ready
        info["applied_action"] = control
        info["budget"] = self.budget.stats.summary()
        self._handed_out = time.monotonic()
        return obs, reward, terminated, truncated, info
