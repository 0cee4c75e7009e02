"""Per-step traces of evaluated episodes, the report's raw material: one compressed `.npz` per episode under
`<out>/traces/`, written by the `Trace` observer as the episode ends and read back by `load_trace`.

A trace holds float32/int8 arrays, one value per step (a 200-step episode is a few kB):
  t               simulated time (s) after the step
  speed           ego speed (m/s)
  command         route command (CARLA RoadOption 1..6)
  steer, throttle, brake   the control applied
  route_completion         percent of the route done
  ttc_s, nearest_m         time-to-collision and distance to the nearest vehicle or walker (`TimeToCollision`)
  decided, missed, fallback   whether the agent answered this step, and the budget's cumulative deadline misses
                              and fallback steps
and per episode: `latencies_ms` (one per decision), `deadline_ms`, `infraction_t`/`infraction_kind` (when, what).
Written to a temporary name and renamed, so a killed run never leaves half a trace under the final name; a
retried episode overwrites the trace of its failed attempt.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from envs.budget import ComputeBudget
from envs.driving_env import DrivingEnv
from envs.rollout import Observer, Step, TimeToCollision

TRACES = "traces"
SERIES = ("t", "speed", "command", "steer", "throttle", "brake", "route_completion", "ttc_s", "nearest_m",
          "decided", "missed", "fallback")


def episode_stem(scenario: str, seed: int) -> str:
    """The file name (without suffix) of an episode's trace and video: `<scenario>-seed<seed>`, with anything
    that is not safe in a file name or a URL replaced (a report links to its videos by this name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{scenario}-seed{seed}")


class Trace(Observer):
    """Records the per-step series above; the TTC and nearest-actor series come from `ttc` (which must be
    among the rollout's observers, before this one)."""

    def __init__(self, folder: Path, budget: ComputeBudget, ttc: TimeToCollision) -> None:
        self.folder, self.budget, self.ttc = Path(folder), budget, ttc

    def on_reset(self, env: DrivingEnv, obs, info) -> None:
        self.rows: dict[str, list] = {name: [] for name in SERIES if name not in ("ttc_s", "nearest_m")}

    def on_step(self, env: DrivingEnv, step: Step) -> None:
        stats, info, obs = self.budget.stats, step.info, step.next_obs
        row = {"t": info["sim_time"], "speed": float(np.asarray(obs["speed"]).reshape(-1)[0]),
               "command": int(obs["command"]), "steer": step.action[0], "throttle": step.action[1],
               "brake": step.action[2], "route_completion": info["route_completion"],
               "decided": step.decision is not None, "missed": stats.missed_deadlines,
               "fallback": stats.fallback_steps}
        for name, value in row.items():
            self.rows[name].append(value)

    def on_end(self, env: DrivingEnv, record: dict) -> None:
        arrays = {name: np.asarray(values, np.int8 if name in ("command", "decided") else
                                   np.int32 if name in ("missed", "fallback") else np.float32)
                  for name, values in self.rows.items()}
        arrays["ttc_s"] = np.asarray(self.ttc.ttc_s, np.float32)
        arrays["nearest_m"] = np.asarray(self.ttc.nearest_m, np.float32)
        arrays["latencies_ms"] = np.asarray(self.budget.stats.latencies_ms, np.float32)
        arrays["deadline_ms"] = np.float32(record["budget"].get("deadline_ms", np.nan))
        arrays["infraction_t"] = np.asarray([i["sim_time"] for i in record["infractions"]], np.float32)
        arrays["infraction_kind"] = np.asarray([i["kind"] for i in record["infractions"]], dtype=str)
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{episode_stem(record['scenario'], record['seed'])}.npz"
        partial = final.with_name(f".{final.stem}.partial.npz")
        np.savez_compressed(partial, **arrays)
        os.replace(partial, final)


def load_trace(out: Path, scenario: str, seed: int) -> dict[str, np.ndarray] | None:
    """An episode's trace from the run folder `out`, or None when it has none (a run from before traces)."""
    path = Path(out) / TRACES / f"{episode_stem(scenario, seed)}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable trace ({exc}); delete it and rerun the eval to record it again "
                         "(the episode's line in episodes.jsonl must go too)") from exc
