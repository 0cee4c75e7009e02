"""`slimdrive collect suite=train agent=expert out=data/train`: record driving logs.

Every scenario x seed of a suite is driven through the one rollout loop (`envs.rollout`) under the compute
budget, by any agent the registry makes; the privileged expert labels every step (for `agent=expert` its own
answer is the label). A `Recorder` observer turns each step into a log row (the eight camera images, ego
state, route command and target point, the applied control, the expert's control, plan and braking reason,
scenario events, infractions, every actor's pose) and commits the episode through `training.logs` when it
ends: written to a temporary name, renamed, then one manifest line with its checksum.

Resume: rerunning the same command removes leftovers of a killed run and skips committed episodes. Failures are
told apart and recorded in failures.jsonl: a simulator failure restarts the simulator and collects the episode
again, at most `retries` more times (one that fails every time is not committed and runs again next time); an
agent's or scenario's error stops the collection naming the episode. `workers=N` runs N processes, each with its own
simulator; each episode is decided by its seed alone, so the set of episodes equals a sequential run's. A worker
process that dies (LibCarla's client can abort the process it runs in) is replaced and its episode collected
again, at most `retries` more times (`envs.workers`); the other workers carry on. `executor=ray` runs the
workers as actors on a Ray cluster, the same pool's other backend (`envs.ray_pool`, docs/scale.md).
`noise.share` of the episodes get triangular steering and speed perturbations (`training.noise`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agent.export import WeightFileError
from agent.registry import AgentError, make_agent
from envs.budget import BudgetExceeded, ComputeBudget
from envs.config import typed_config
from envs.driving_env import DrivingEnv, ScenarioFailed
from envs.provenance import code_version, sha256_file
from envs.rig import Rig
from envs.rollout import AgentFailed, Observer, Step, drive_with_retries
from envs.workers import Death, Executor, WorkerError, close_when_the_worker_ends, on_server, supervised
from evaluation.evaluate import check_agent
from scenarios.errors import ScenarioError
from scenarios.suites import Episode, load_suite

from .logs.writer import EpisodeWriter, cleanup_leftovers, committed_keys
from .noise import NoiseConfig, TriangularNoise, noisy_episode

RECORDED_KINDS = ("vehicle", "walker", "static")
FAILURES = "failures.jsonl"  # beside the manifest: every episode attempt that failed, its kind and reason


def record_failure(out: Path, key: str, kind: str, reason: str) -> None:
    """Append one failed attempt to `out/failures.jsonl`: kind is simulator (it died, would not start or stopped
    answering), worker (the process collecting it died), agent or scenario."""
    line = {"episode": key, "kind": kind, "reason": reason, "time": datetime.now(UTC).isoformat(timespec="seconds")}
    with open(out / FAILURES, "a") as f:
        f.write(json.dumps(line) + "\n")


def log_key(episode: Episode) -> str:
    """The episode's name in a log folder (its file name and manifest key)."""
    return f"{episode.scenario.scenario.name}-s{episode.seed}"


class Recorder(Observer):
    """Writes the episode it watches as one log file under `root`; adds ``log`` (the file name) to the record.
    An episode the simulator failed is left uncommitted, so that a rerun collects it again."""

    def __init__(self, root: Path, episode: Episode, agent_name: str, noise: NoiseConfig | None) -> None:
        self.root, self.episode, self.agent_name, self.noise = root, episode, agent_name, noise

    def on_reset(self, env: DrivingEnv, obs, info) -> None:
        priv = env.unwrapped.privileged
        self.world, self.ego_id = priv.world, priv.ego.id
        self.types: dict[int, tuple[str, str]] = {}  # actor id -> (type_id, colour attribute)
        # a re-render sets every light as recorded: the lights' own cycle may have been changed by the scenario
        self.lights = sorted(self.world.get_actors().filter("traffic.traffic_light"), key=lambda a: a.id)
        self.events_seen = 0
        self.writer = EpisodeWriter(self.root, log_key(self.episode), self._metadata(env, priv.ego))
        self.state = self._state(self.world.get_snapshot())

    def _metadata(self, env: DrivingEnv, ego) -> dict[str, Any]:
        run = env.unwrapped.privileged.scenario
        file = Path(self.episode.scenario.file)
        weather = self.world.get_weather()
        return {
            "scenario": run.name, "scenario_file": str(file),
            "scenario_sha256": sha256_file(file), "seed": self.episode.seed,
            "parameters": {k: float(v) for k, v in run.parameters.items()},
            "weather": {"name": run.weather_name, **weather_fields(weather)},
            "map": run.map_name if isinstance(run.map_name, str) else str(run.map_name),
            "rig": rig_metadata(env.rig),
            "fixed_delta_seconds": env.fixed_delta_seconds, "agent": self.agent_name,
            "noise": None if self.noise is None else {k: v for k, v in vars(self.noise).items()},
            "code_version": code_version(), "simulator": env.endpoint,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "ego_blueprint": ego.type_id, "ego_color": ego.attributes.get("color", ""),
            "traffic_lights": [light_pose(light) for light in self.lights],
        }

    def _state(self, snapshot) -> dict[str, Any]:
        """The ego's state and every recorded actor's pose at `snapshot` (the moment an observation shows)."""
        unknown = [a.id for a in snapshot if a.id not in self.types]
        if unknown:  # type and colour are fixed at spawn: asked once per actor
            for actor in self.world.get_actors(unknown):
                self.types[actor.id] = (actor.type_id, actor.attributes.get("color", ""))
            self.types.update({i: ("", "") for i in unknown if i not in self.types})
        ego = snapshot.find(self.ego_id)
        t, v, a = ego.get_transform(), ego.get_velocity(), ego.get_acceleration()
        actors = []
        for actor in snapshot:
            type_id, color = self.types[actor.id]
            if actor.id == self.ego_id or type_id.split(".")[0] not in RECORDED_KINDS:
                continue
            at, av = actor.get_transform(), actor.get_velocity()
            actors.append({"id": actor.id, "type_id": type_id, "color": color, "x": at.location.x,
                           "y": at.location.y, "z": at.location.z, "roll": at.rotation.roll,
                           "pitch": at.rotation.pitch, "yaw": at.rotation.yaw, "vx": av.x, "vy": av.y, "vz": av.z})
        return {"frame": snapshot.frame, "time_s": snapshot.timestamp.elapsed_seconds,
                "ego": {"location": (t.location.x, t.location.y, t.location.z),
                        "rotation": (t.rotation.roll, t.rotation.pitch, t.rotation.yaw),
                        "velocity": (v.x, v.y, v.z), "acceleration": (a.x, a.y, a.z),
                        "speed": math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z)},
                "actors": actors,
                # the client's copy of the latest tick's state (the snapshot's frame): no request per light
                "light_states": [int(light.state) for light in self.lights]}

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        if step.info["failure"]:
            return
        plan = step.plan
        events = env.unwrapped.privileged.scenario.events
        new_events = [{"frame": e.frame, "actor": e.actor, "step": e.step, "primitive": e.primitive,
                       "what": e.what} for e in events[self.events_seen:]]
        self.events_seen = len(events)
        label = step.label if step.label is not None else step.action
        self.writer.add({
            **self.state,
            "cameras": step.obs["cameras"],
            "command": int(step.obs["command"]),
            "target_point": np.asarray(step.obs["target_point"], np.float32),
            "control": np.asarray(step.action, np.float32),
            "expert": np.asarray(label, np.float32),
            "waypoints": plan.waypoints, "target_speed": plan.target_speed, "brake": plan.brake,
            "hazard_kind": plan.hazard_kind, "hazard_actor": plan.hazard_actor, "light_state": plan.light_state,
            "perturbed": step.perturbed,
            "events": new_events,
            "infractions": list(step.info["new_infractions"]),
        })
        self.state = self._state(self.world.get_snapshot())

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        if record["failure"]:
            record["log"] = None
            return
        record["log"] = self.writer.commit()


def weather_fields(weather) -> dict[str, float]:
    """Every numeric field of a carla.WeatherParameters, as a log's metadata records it."""
    return {k: float(getattr(weather, k)) for k in dir(weather)
            if not k.startswith("_") and isinstance(getattr(weather, k), (int, float))}


def rig_metadata(rig: Rig) -> dict[str, Any]:
    """A rig as a log's metadata records it: every camera's size, field of view and mounting."""
    return {"name": rig.name, "cameras": [
        {"name": c.name, "width": rig.image_size_x, "height": rig.image_size_y, "fov": c.fov, "x": c.x, "y": c.y,
         "z": c.z, "roll": c.roll, "pitch": c.pitch, "yaw": c.yaw} for c in rig.cameras]}


def light_pose(light) -> dict[str, float]:
    """A traffic light's metadata entry: its id and pose, by which a re-render finds the same light."""
    t = light.get_transform()
    return {"id": light.id, "x": t.location.x, "y": t.location.y, "z": t.location.z, "yaw": t.rotation.yaw}


# ------------------------------------------------------------------------------------------ collection
class Collector:
    """One simulator, agent and expert, collecting episodes one after another (a worker's whole state)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        _, self.episodes = load_suite(str(cfg.suite))
        self.env = DrivingEnv(cfg.env)
        self.agent = make_agent(str(cfg.agent), self.env, cfg)
        self.teacher = self.agent if cfg.agent == "expert" else make_agent("expert", self.env, cfg)
        self.budget = ComputeBudget.for_env(cfg.budget, self.env)
        self.budget.check(self.agent.footprint())
        noise = OmegaConf.to_container(cfg.noise)
        self.noise = typed_config(NoiseConfig, {**noise, "dt": self.env.fixed_delta_seconds}, "noise config")

    def collect(self, index: int, observers: Sequence[Observer] = ()) -> dict:
        """Drive and record the suite's episode `index`, watched also by `observers` (after the recorder);
        returns its episode record (with ``log``; None when the simulator failed every attempt).

        Whose failure is told as eval tells it (`envs.rollout.drive_with_retries`): a simulator failure is
        retried at most `retries` more times, each recorded in failures.jsonl and the record's
        ``simulator_failures``; the agent's (`AgentFailed`) or the scenario's (`ScenarioFailed`) is recorded, then
        raised, since driving the same episode again would fail the same way."""
        episode, key = self.episodes[index], log_key(self.episodes[index])
        noisy = noisy_episode(episode.key, self.noise.share)
        max_steps = self.cfg.get("max_steps")
        try:
            record, failures = drive_with_retries(
                self.env, self.agent, str(self.cfg.agent), self.budget, episode,
                observers=lambda: [Recorder(self.out, episode, str(self.cfg.agent), self.noise if noisy else None),
                                   *observers],
                retries=int(self.cfg.get("retries", 2)), teacher=self.teacher,
                perturb=lambda: TriangularNoise(self.noise) if noisy else None,
                max_steps=int(max_steps) if max_steps else None,
                on_simulator_failure=lambda reason: record_failure(self.out, key, "simulator", reason))
        except ScenarioFailed as exc:
            record_failure(self.out, key, "scenario", str(exc))
            raise
        except AgentFailed as exc:
            record_failure(self.out, key, "agent", str(exc))
            raise
        if record is None:
            return {"scenario": episode.scenario.scenario.name, "seed": episode.seed, "steps": 0, "log": None,
                    "failure": failures[-1], "simulator_failures": failures}
        return record

    def close(self) -> None:
        self.env.close()


_worker: Collector | None = None


def _start_worker(cfg_yaml: str, server: str | None = None) -> None:
    global _worker
    _worker = Collector(on_server(OmegaConf.create(cfg_yaml), server))
    close_when_the_worker_ends(_worker)


def _collect_in_worker(index: int) -> dict:
    return _worker.collect(index)


def run(cfg: DictConfig) -> int:
    try:
        executor = Executor.from_cfg(cfg)  # first: a missing Ray is named before the suite is compiled
        suite, episodes = load_suite(str(cfg.suite))
    except (ScenarioError, ValueError) as exc:
        print(f"slimdrive collect: {exc}")
        return 2
    if cfg.limit:
        episodes = episodes[: int(cfg.limit)]
    out = Path(cfg.out or f"data/{suite}")
    out.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.merge(cfg, {"out": str(out)})
    for leftover in cleanup_leftovers(out):
        print(f"removed leftover {leftover} (an episode interrupted before its commit)")
    done = committed_keys(out)
    # Seed by seed, so that a collection stopped early still covers every scenario; grouped by map within a
    # seed (each map switch reloads the world).
    todo = sorted((i for i, e in enumerate(episodes) if log_key(e) not in done),
                  key=lambda i: (episodes[i].seed, str(episodes[i].scenario.scenario.map)))
    if done:
        print(f"resuming: {len(done)} episodes already committed in {out}, {len(todo)} to collect")
    failed = []
    with tqdm(total=len(todo), desc=f"collect {suite}", unit="episode") as bar:
        def finished(record: dict) -> None:
            if record["log"] is None:
                failed.append(f"{record['scenario']}#{record['seed']}: {record['failure']}")
            bar.set_postfix_str(f"{record['scenario']}#{record['seed']} {record['steps']} steps")
            bar.update()

        stopped = f"(recorded in {out / FAILURES}); nothing retried: the same episode would fail the same way"
        try:
            check_agent(cfg)  # once, before any simulator or worker starts: one line whatever `workers` is
            workers = int(cfg.workers)
            if workers <= 1 and executor.kind == "local":
                collector = Collector(cfg)
                try:
                    for index in todo:
                        finished(collector.collect(index))
                finally:
                    collector.close()
            else:
                retries = int(cfg.get("retries", 2))

                def died(death: Death) -> None:
                    if death.task is None:
                        bar.write(f"collection worker pid {death.pid} died ({death.cause}) while starting; "
                                  "starting another")
                        return
                    what = f"{log_key(episodes[death.task])} (suite episode {death.task})"
                    record_failure(out, log_key(episodes[death.task]), "worker",
                                   f"worker pid {death.pid} {death.cause}")
                    if death.retried:
                        bar.write(f"collection worker pid {death.pid} died ({death.cause}) while collecting {what}; "
                                  f"collecting it again in a new worker (attempt {death.attempt + 1} of "
                                  f"{retries + 1})")
                    else:
                        bar.write(f"collection worker pid {death.pid} died ({death.cause}) while collecting {what}; "
                                  f"giving it up after {death.attempt} attempts")
                        bar.update()

                gave_up = supervised(todo, workers, _start_worker, (OmegaConf.to_yaml(cfg),), _collect_in_worker,
                                     lambda _, record: finished(record), died, retries, executor)
                failed += [f"{log_key(episodes[d.task])}: its worker died {d.attempt} times ({d.cause})"
                           for d in gave_up]
        except BudgetExceeded as exc:  # refused before the first step: the model does not fit the device
            print(f"slimdrive collect: {exc} (agent={cfg.agent}, budget in conf/collect.yaml)")
            return 2
        except (AgentError, WeightFileError) as exc:  # no such agent, or a refused weight file: before any episode
            print(f"slimdrive collect: {exc} (conf/collect.yaml)")
            return 2
        except (AgentFailed, ScenarioFailed) as exc:
            print(f"slimdrive collect: {exc} {stopped}")
            return 1
        except WorkerError as exc:
            if exc.kind not in ("AgentFailed", "ScenarioFailed"):
                raise  # any other exception in a worker is a defect: its traceback is the report
            # the worker recorded it in failures.jsonl before raising; its class and message come back by name
            print(f"slimdrive collect: {exc.reason} {stopped}")
            return 1
    for line in failed:
        print(f"not committed (rerun to collect it): {line}")
    print(f"wrote {len(committed_keys(out))} episodes to {out} (manifest {out / 'manifest.jsonl'})")
    return 1 if failed else 0
