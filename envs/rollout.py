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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from scenarios import metrics
from scenarios.engine import ScenarioRun
from scenarios.suites import Episode

from .budget import BudgetedPolicy, ComputeBudget, InvalidAction, validate_action
from .driving_env import DrivingEnv, ScenarioFailed, ServerDied
from .server.launch import ServerStartError


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


class AgentFailed(RuntimeError):
    """The agent (or the teacher) raised while driving an episode: its own failure, not retried, since the same
    episode would fail the same way."""


class Blamed:
    """An agent as the rollout sees it: whatever its `reset` or `act` raises is its failure (`AgentFailed`), so
    that every other error of an episode can be told apart as the simulator's or the scenario's. `who` names it
    in the message (``agent=expert``)."""

    def __init__(self, agent, who: str, env: DrivingEnv) -> None:
        self._agent, self._who, self._env = agent, who, env

    def __getattr__(self, attribute: str):
        return getattr(self._agent, attribute)  # plan, waypoints, footprint: what observers and the budget read

    def reset(self) -> None:
        self._call("reset")

    def act(self, obs):
        return self._call("act", obs)

    def _call(self, method: str, *args):
        try:
            return getattr(self._agent, method)(*args)
        except (RuntimeError, TimeoutError, ConnectionError) as exc:
            # a privileged agent (the expert) reads the world: its RPC failing on a dead simulator is the
            # simulator's failure (the env's own check, which reset uses to tell the two apart)
            if not self._env.unwrapped.simulator_answers():
                raise
            raise AgentFailed(f"{self._who} raised in {method}(): {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            raise AgentFailed(f"{self._who} raised in {method}(): {type(exc).__name__}: {exc}") from exc


def drive_with_retries(env: DrivingEnv, agent, agent_name: str, budget: ComputeBudget, episode: Episode, *,
                       observers: Callable[[], Sequence[Observer]] = tuple, retries: int = 2,
                       teacher: Teacher | None = None, perturb: Callable[[], Perturbation | None] = lambda: None,
                       max_steps: int | None = None, on_simulator_failure: Callable[[str], None] = lambda _: None,
                       say: Callable[[str], None] = print) -> tuple[dict | None, list[str]]:
    """Drive `episode` by `rollout`, telling whose fault each failure is, the one way eval, collect and the
    scenario search do: (its record with ``simulator_failures``, those failures), or (None, the failures) when
    the simulator failed `retries` + 1 times. `observers` and `perturb` make fresh ones for each attempt.

    * The simulator's (it died mid-episode, in reset, would not start, stopped answering, or a connection to it
      broke): not the agent's. The env is closed (which stops an embedded simulator; the next reset starts
      another) and the episode driven again; `on_simulator_failure` hears each reason, `say` each retry.
    * The agent's (what its `reset` or `act` raises while the simulator answers, or an action the budget
      refuses): `AgentFailed`, naming the agent, the episode and its file.
    * The scenario's: `ScenarioFailed`, raised as the env named it.
    * Anything else is raised as itself: an OSError writing our own files (a full disk) is neither the
      simulator's fault nor the agent's, and a retry would only fill the disk again."""
    driver = Blamed(agent, f"agent={agent_name}", env)
    if teacher is agent:
        teacher = driver  # the rollout asks an agent that is its own teacher once per step
    elif teacher is not None:
        teacher = Blamed(teacher, f"the teacher ({type(teacher).__name__})", env)
    failures: list[str] = []
    while True:
        try:
            record = rollout(env, driver, budget, episode, observers=observers(), teacher=teacher,
                             perturb=perturb(), max_steps=max_steps)
            failure = record["failure"]  # the embedded simulator died mid-episode (the env stopped it)
        except InvalidAction as exc:  # the budget refused what the agent answered
            raise AgentFailed(f"agent={agent_name}: {exc} in episode {episode.key} ({episode.scenario.file})") from exc
        except AgentFailed as exc:
            raise AgentFailed(f"{exc} in episode {episode.key} ({episode.scenario.file})") from exc
        except ScenarioFailed:
            raise  # the scenario's own fault, named by the env
        except (ServerDied, ServerStartError, RuntimeError, TimeoutError, ConnectionError) as exc:
            # died in reset, would not start, a remote one died, or it stopped answering in time (a time-out from
            # a server that still answers a ping: hung or starved)
            failure = f"{type(exc).__name__}: {exc}"
        if failure is None:
            record["simulator_failures"] = failures
            return record, failures
        env.close()
        on_simulator_failure(failure)
        failures.append(failure)
        if len(failures) > retries:
            return None, failures
        say(f"{episode.key}: simulator failure ({failure}); not the agent's: restarting the simulator and driving "
            f"the episode again (attempt {len(failures) + 1} of {retries + 1})")


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
