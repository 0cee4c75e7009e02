"""The one rollout loop: an agent drives one episode of `DrivingEnv` under the compute budget.

    record = rollout(env, agent, budget, episode, observers=[...], teacher=None, perturb=None)

Every job that drives runs through here: `slimdrive eval`, `slimdrive collect`, the rounds of
`slimdrive dagger`, scenario previews. Per step the loop

1. asks the budget for the control in force (`ComputeBudget.act`: the agent is asked only when the on-board
   computer is free; a late answer arrives late, a missed deadline gets the fallback);
2. asks the `teacher`, if any, what it would do in the same state (the label: DAgger's expert; when the teacher
   is the agent itself its own answer is the label, and it is not asked twice);
3. lets `perturb` change the applied control (recovery data: the label stays the teacher's);
4. steps the env and hands a `Step` to every observer.

It returns one episode record: the Leaderboard 2.0 route score from the env's criteria, the infractions and
scenario events, the budget's statistics, and whatever the observers add in `on_end` (e.g. minimum
time-to-collision, comfort, a recorded log's name).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scenarios import metrics
from scenarios.engine import ScenarioRun
from scenarios.suites import Episode

from .budget import BudgetedPolicy, ComputeBudget, validate_action
from .driving_env import DrivingEnv


@dataclass
class Step:
    """One tick of an episode, as observers see it."""

    index: int  # 0-based step of the episode
    obs: Mapping[str, Any]  # what the agent could see when this step's control was chosen
    action: np.ndarray  # the control applied to the vehicle this step
    decision: np.ndarray | None  # the agent's own answer from `obs` (None: the budget kept it busy)
    label: np.ndarray | None  # the teacher's control in this state (None without a teacher)
    plan: Any  # the teacher's plan behind its label (e.g. `agent.expert.Plan`), if it exposes one
    perturbed: bool  # `perturb` changed the applied control
    next_obs: Mapping[str, Any]
    reward: float
    terminated: bool
    truncated: bool
    info: Mapping[str, Any]


class Observer:
    """Watches an episode; override what you need. `on_end` may add keys to the episode record."""

    def on_reset(self, env: DrivingEnv, obs: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        pass

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        pass

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        pass


class Perturbation(Protocol):
    """Changes the applied control (noise injection); `reset(seed)` at the start of each episode."""

    def reset(self, seed: int) -> None: ...

    def __call__(self, step: int, action: np.ndarray) -> tuple[np.ndarray, bool]: ...


class Teacher(BudgetedPolicy, Protocol):
    def reset(self) -> None: ...


def rollout(env: DrivingEnv, agent, budget: ComputeBudget, episode: Episode, *,
            observers: Sequence[Observer] = (), teacher: Teacher | None = None,
            perturb: Perturbation | None = None, max_steps: int | None = None) -> dict:
    """Drive `episode` (a scenario x seed) to its end; returns the episode record."""
    run = ScenarioRun(episode.scenario, episode.seed)
    started = time.monotonic()
    obs, info = env.reset(seed=episode.seed, options={"scenario": run})
    agent.reset()
    if teacher is not None and teacher is not agent:
        teacher.reset()
    if perturb is not None:
        perturb.reset(episode.seed)
    budget.reset()
    for observer in observers:
        observer.on_reset(env, obs, info)
    index = 0
    while True:
        action = budget.act(agent, obs)
        decision = budget.decision
        label, plan = None, None
        if teacher is agent:
            label, plan = decision, getattr(agent, "plan", None)
        elif teacher is not None:
            label = validate_action(teacher.act(obs), f"teacher {type(teacher).__name__}.act")
            plan = getattr(teacher, "plan", None)
        perturbed = False
        if perturb is not None:
            action, perturbed = perturb(index, action)
        next_obs, reward, terminated, truncated, info = env.step(action)
        step = Step(index, obs, action, decision, label, plan, perturbed, next_obs, float(reward),
                    terminated, truncated, info)
        for observer in observers:
            observer.on_step(env, step)
        index += 1
        obs = next_obs
        if terminated or truncated or info["failure"] or (max_steps is not None and index >= max_steps):
            break
    record = _record(env, run, episode, info, budget, index, time.monotonic() - started)
    for observer in observers:
        observer.on_end(env, record)
    return record


def _record(env: DrivingEnv, run: ScenarioRun, episode: Episode, info: Mapping[str, Any],
            budget: ComputeBudget, steps: int, wall_s: float) -> dict:
    """The route's Leaderboard 2.0 score and everything else the episode measured."""
    failed = info["failure"] is not None
    kinds = [i["kind"] for i in info["infractions"]]
    criteria = None if failed else env.unwrapped.privileged.criteria
    score = None if failed else metrics.score_route(criteria.route_completion, kinds, criteria.outside_lanes_pct,
                                                    criteria.min_speed_pct_per_quarter)
    return {
        "scenario": run.name, "seed": episode.seed, "file": str(episode.scenario.file), "weather": run.weather_name,
        "parameters": {k: round(v, 4) for k, v in run.parameters.items()},
        "driving_score": round(score.driving_score, 4) if score else 0.0,
        "route_completion": round(score.route_completion, 4) if score else 0.0,
        "infraction_penalty": round(score.infraction_penalty, 4) if score else 0.0,
        "success": bool(score) and metrics.bench2drive_success(criteria.done == "completed", kinds),
        "done": info["done_reason"], "failure": info["failure"], "route_length_m": round(info["route_length_m"], 2),
        "outside_lanes_pct": round(criteria.outside_lanes_pct, 3) if criteria else None,
        "min_speed_pct_per_quarter": [round(p, 2) for p in criteria.min_speed_pct_per_quarter] if criteria else [],
        "infractions": info["infractions"],
        "events": [{"frame": e.frame, "actor": e.actor, "step": e.step, "primitive": e.primitive, "what": e.what}
                   for e in run.events],
        "budget": budget.stats.summary(), "steps": steps, "wall_s": round(wall_s, 2),
    }


class TimeToCollision(Observer):
    """The episode's minimum time-to-collision between the ego and any other vehicle or walker (oriented boxes,
    constant velocity and heading; `scenarios.metrics.time_to_collision`). Adds ``min_ttc_s`` (None if none).

    It also keeps, per step, that step's time-to-collision (`ttc_s`, inf when none) and the centre distance to
    the nearest vehicle or walker (`nearest_m`, inf when there is none; NaN on a failed step), for the
    evaluation's traces: computed here, where the poses are read anyway, rather than a second time."""

    def on_reset(self, env: DrivingEnv, obs, info) -> None:
        priv = env.unwrapped.privileged
        self.world, self.ego_id = priv.world, priv.ego.id
        self.ego_half = np.array([priv.ego.bounding_box.extent.x, priv.ego.bounding_box.extent.y])
        movers = [a for a in priv.world.get_actors()
                  if a.type_id.split(".")[0] in ("vehicle", "walker") and a.id != self.ego_id]
        self.ids = [a.id for a in movers]
        self.halves = np.array([[a.bounding_box.extent.x, a.bounding_box.extent.y] for a in movers])
        self.min_ttc = math.inf
        self.ttc_s: list[float] = []
        self.nearest_m: list[float] = []

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        if step.info["failure"] or not self.ids:
            self.ttc_s.append(math.nan if step.info["failure"] else math.inf)
            self.nearest_m.append(math.nan if step.info["failure"] else math.inf)
            return
        snapshot = self.world.get_snapshot()
        ego = snapshot.find(self.ego_id)
        t, v = ego.get_transform(), ego.get_velocity()
        others = [snapshot.find(i) for i in self.ids]
        poses = [o.get_transform() for o in others]
        xy = np.array([[p.location.x, p.location.y] for p in poses])
        yaw = np.radians([p.rotation.yaw for p in poses])
        vel = np.array([[o.get_velocity().x, o.get_velocity().y] for o in others])
        ego_xy = np.array([t.location.x, t.location.y])
        ttc = metrics.time_to_collision(ego_xy, np.array([v.x, v.y]), math.radians(t.rotation.yaw),
                                        self.ego_half, xy, vel, yaw, self.halves)
        self.min_ttc = min(self.min_ttc, ttc)
        self.ttc_s.append(ttc)
        self.nearest_m.append(float(np.min(np.hypot(*(xy - ego_xy).T))))

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        record["min_ttc_s"] = round(self.min_ttc, 3) if math.isfinite(self.min_ttc) else None


class Comfort(Observer):
    """Bench2Drive comfort of the ego's trajectory (`scenarios.metrics.comfort`). Adds ``comfort``."""

    def on_reset(self, env: DrivingEnv, obs, info) -> None:
        priv = env.unwrapped.privileged
        self.world, self.ego_id, self.path = priv.world, priv.ego.id, []

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        if step.info["failure"]:
            return
        t = self.world.get_snapshot().find(self.ego_id).get_transform()
        self.path.append((t.location.x, t.location.y, math.radians(t.rotation.yaw)))

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        path = np.array(self.path).reshape(-1, 3)
        record["comfort"] = round(metrics.comfort(path[:, 0], path[:, 1], path[:, 2], env.fixed_delta_seconds), 4)
