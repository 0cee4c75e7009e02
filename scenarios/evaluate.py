"""`slimdrive eval agent=expert suite=rare_events`: score an agent on every scenario x seed of a suite.

Each episode runs through DrivingEnv with the compute budget in the loop. Results go to `out/`:
  episodes.jsonl   one line per finished episode (everything measured); the runner resumes from it
  episodes.csv     the same as a table
  results.json     suite figures: global driving score (Leaderboard 2.0), per-scenario means, infractions per
                   km, Bench2Drive success rate and comfort, minimum time-to-collision, budget statistics
A per-scenario table (DS, RC, IP, infractions) is printed at the end.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs.budget import BudgetConfig, ComputeBudget
from envs.driving_env import DrivingEnv

from . import metrics
from .engine import ScenarioRun
from .errors import ScenarioError
from .suites import Episode, load_suite

CSV_FIELDS = ("scenario", "seed", "weather", "driving_score", "route_completion", "infraction_penalty",
              "success", "comfort", "min_ttc_s", "done", "infractions", "steps", "wall_s")


def make_agent(name: str, env, cfg: DictConfig):
    """`expert`, `cruise`, or a policy file exported by agent.export (packed ternary or checkpoint)."""
    if name == "expert":
        from agent.expert import Expert, ExpertConfig
        return Expert(env, ExpertConfig.from_dict(OmegaConf.to_container(cfg.expert)))
    if name == "cruise":
        from agent.cruise import Cruise
        return Cruise(float(cfg.cruise.speed_mps))
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"agent={name}: not 'expert', 'cruise' or an existing policy file")
    from agent.controllers import ControllerConfig
    from agent.policy import DrivingPolicy
    return DrivingPolicy.from_packed(path, ControllerConfig())


def _movers(world, ego_id: int) -> tuple[list[int], np.ndarray]:
    """Ids and half (length, width) of the vehicles and walkers other than the ego."""
    actors = [a for a in world.get_actors() if a.type_id.split(".")[0] in ("vehicle", "walker") and a.id != ego_id]
    return [a.id for a in actors], np.array([[a.bounding_box.extent.x, a.bounding_box.extent.y] for a in actors])


def run_episode(env: DrivingEnv, agent, budget: ComputeBudget, episode: Episode) -> dict:
    """One scenario x seed to the end of its route; returns everything measured."""
    run = ScenarioRun(episode.scenario, episode.seed)
    started = time.monotonic()
    obs, info = env.reset(seed=episode.seed, options={"scenario": run})
    agent.reset()
    budget.reset()
    priv = env.unwrapped.privileged
    ego_id = priv.ego.id
    ego_half = np.array([priv.ego.bounding_box.extent.x, priv.ego.bounding_box.extent.y])
    ids, halves = _movers(priv.world, ego_id)
    trajectory, min_ttc, steps = [], math.inf, 0
    while True:
        obs, _, terminated, truncated, info = env.step(budget.act(agent, obs))
        steps += 1
        if info["failure"]:
            break
        snapshot = priv.world.get_snapshot()
        ego = snapshot.find(ego_id)
        t, v = ego.get_transform(), ego.get_velocity()
        trajectory.append((t.location.x, t.location.y, math.radians(t.rotation.yaw)))
        others = [snapshot.find(i) for i in ids]
        if others:
            poses = [o.get_transform() for o in others]
            xy = np.array([[p.location.x, p.location.y] for p in poses])
            yaw = np.radians([p.rotation.yaw for p in poses])
            vel = np.array([[o.get_velocity().x, o.get_velocity().y] for o in others])
            min_ttc = min(min_ttc, metrics.time_to_collision(
                np.array([t.location.x, t.location.y]), np.array([v.x, v.y]), math.radians(t.rotation.yaw),
                ego_half, xy, vel, yaw, halves))
        if terminated or truncated:
            break
    criteria = priv.criteria
    kinds = [i["kind"] for i in info["infractions"]]
    score = metrics.score_route(criteria.route_completion, kinds, criteria.outside_lanes_pct,
                                criteria.min_speed_pct_per_quarter) if not info["failure"] else None
    path = np.array(trajectory).reshape(-1, 3)
    return {
        "scenario": run.name, "seed": episode.seed, "file": str(episode.scenario.file), "weather": run.weather_name,
        "parameters": {k: round(v, 4) for k, v in run.parameters.items()},
        "driving_score": round(score.driving_score, 4) if score else 0.0,
        "route_completion": round(score.route_completion, 4) if score else 0.0,
        "infraction_penalty": round(score.infraction_penalty, 4) if score else 0.0,
        "success": bool(score) and metrics.bench2drive_success(criteria.done == "completed", kinds),
        "comfort": round(metrics.comfort(path[:, 0], path[:, 1], path[:, 2], env.fixed_delta_seconds), 4),
        "min_ttc_s": round(min_ttc, 3) if math.isfinite(min_ttc) else None,
        "done": criteria.done, "failure": info["failure"], "route_length_m": round(priv.route.length, 2),
        "outside_lanes_pct": round(criteria.outside_lanes_pct, 3),
        "min_speed_pct_per_quarter": [round(p, 2) for p in criteria.min_speed_pct_per_quarter],
        "infractions": info["infractions"],
        "events": [{"frame": e.frame, "actor": e.actor, "step": e.step, "primitive": e.primitive, "what": e.what}
                   for e in run.events],
        "budget": budget.stats.summary(), "steps": steps, "wall_s": round(time.monotonic() - started, 2),
    }


def _code_version() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def summarise(records: list[dict], episodes: list[Episode], cfg: DictConfig, suite: str) -> dict:
    by_key = {f"{r['scenario']}#{r['seed']}": r for r in records}
    per_route = [by_key.get(e.key, {}).get("driving_score") for e in episodes]
    scenarios: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        scenarios[r["scenario"]].append(r)
    counts = Counter(i["kind"] for r in records for i in r["infractions"])
    table = {}
    for name, rows in scenarios.items():
        table[name] = {
            "episodes": len(rows),
            "driving_score": round(float(np.mean([r["driving_score"] for r in rows])), 3),
            "route_completion": round(float(np.mean([r["route_completion"] for r in rows])), 3),
            "infraction_penalty": round(float(np.mean([r["infraction_penalty"] for r in rows])), 4),
            "success_rate": round(float(np.mean([r["success"] for r in rows])), 3),
            "infractions": dict(Counter(i["kind"] for r in rows for i in r["infractions"])),
        }
    ttcs = [r["min_ttc_s"] for r in records if r["min_ttc_s"] is not None]
    return {
        "scoring_version": metrics.SCORING_VERSION,
        "suite": suite, "agent": cfg.agent, "code_version": _code_version(),
        "seeds": sorted({e.seed for e in episodes}), "episodes_planned": len(episodes), "episodes_run": len(records),
        "budget": OmegaConf.to_container(cfg.budget), "env": OmegaConf.to_container(cfg.env),
        "driving_score": round(metrics.global_score(per_route), 3),
        "route_completion": round(float(np.mean([r["route_completion"] for r in records])) if records else 0.0, 3),
        "infraction_penalty": round(float(np.mean([r["infraction_penalty"] for r in records])) if records else 0.0, 4),
        "success_rate": round(float(np.mean([r["success"] for r in records])) if records else 0.0, 3),
        "comfort": round(float(np.mean([r["comfort"] for r in records])) if records else 0.0, 3),
        "min_ttc_s": round(min(ttcs), 3) if ttcs else None,
        "infractions_per_km": {k: round(v, 3) for k, v in metrics.infractions_per_km(
            dict(counts), [r["route_length_m"] for r in records], [r["route_completion"] for r in records]).items()},
        "scenarios": table,
    }


def print_table(results: dict) -> None:
    print(f"\n{results['suite']}  agent={results['agent']}  scoring={results['scoring_version']}  "
          f"episodes={results['episodes_run']}/{results['episodes_planned']}")
    print(f"{'scenario':34s} {'n':>3s} {'DS':>7s} {'RC':>7s} {'IP':>6s} {'succ':>5s}  infractions")
    for name, row in sorted(results["scenarios"].items()):
        infractions = ", ".join(f"{k} x{n}" for k, n in sorted(row["infractions"].items())) or "-"
        print(f"{name:34s} {row['episodes']:3d} {row['driving_score']:7.2f} {row['route_completion']:7.2f} "
              f"{row['infraction_penalty']:6.3f} {row['success_rate']:5.2f}  {infractions}")
    print(f"{'global (mean over routes)':34s} {'':3s} {results['driving_score']:7.2f} {results['route_completion']:7.2f} "
          f"{results['infraction_penalty']:6.3f} {results['success_rate']:5.2f}")


def run(cfg: DictConfig) -> int:
    try:
        suite, episodes = load_suite(str(cfg.suite))
    except ScenarioError as exc:
        print(f"slimdrive eval: {exc}")
        return 2
    if cfg.limit:
        episodes = episodes[: int(cfg.limit)]
    out = Path(cfg.out or f"runs/eval/{suite}-{Path(str(cfg.agent)).stem}")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "episodes.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    done = {f"{r['scenario']}#{r['seed']}" for r in records}
    env = DrivingEnv(cfg.env)
    agent = make_agent(str(cfg.agent), env, cfg)
    budget = ComputeBudget(BudgetConfig.from_cfg(cfg.budget), env.fixed_delta_seconds)
    budget.check(agent.footprint())
    # Grouped by map (stable, so suite order holds within a map): each map switch reloads the world.
    todo = sorted((e for e in episodes if e.key not in done), key=lambda e: str(e.scenario.scenario.map))
    if done:
        print(f"resuming: {len(done)} episodes already in {log}, {len(todo)} to run")
    try:
        with tqdm(todo, desc=f"eval {suite}", unit="episode") as bar:
            for episode in bar:
                bar.set_postfix_str(episode.key)
                record = run_episode(env, agent, budget, episode)
                with log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                records.append(record)
    finally:
        env.close()
    with (out / "episodes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "infractions": ";".join(i["kind"] for i in r["infractions"])})
    results = summarise(records, episodes, cfg, suite)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"wrote {out / 'results.json'}, {out / 'episodes.csv'} and {log}")
    return 0
