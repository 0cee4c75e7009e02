"""`slimdrive eval agent=expert suite=rare_events`: score an agent on every scenario x seed of a suite.

Each episode runs through the one rollout loop (`envs.rollout`): `DrivingEnv` with the compute budget in the
loop, the agent made by the registry (`agent.registry`: expert, cruise, a weight file, module:Class).
Results go to `out/`:
  episodes.jsonl   one line per finished episode (everything measured); the runner resumes from it
  episodes.csv     the same as a table
  results.json     suite figures: global driving score (Leaderboard 2.0), per-scenario means, infractions per
                   km, Bench2Drive success rate and comfort, minimum time-to-collision, budget statistics
A per-scenario table (DS, RC, IP, infractions) is printed at the end. `precision=bfloat16` runs a float
checkpoint as its bfloat16 twin (`agent.registry`); its default out folder says so.
"""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agent.registry import AgentError, make_agent, precision_of
from envs.budget import BudgetConfig, ComputeBudget
from envs.driving_env import DrivingEnv
from envs.provenance import code_version
from envs.rollout import Comfort, TimeToCollision, rollout
from scenarios import metrics
from scenarios.errors import ScenarioError
from scenarios.suites import Episode, load_suite

CSV_FIELDS = ("scenario", "seed", "weather", "driving_score", "route_completion", "infraction_penalty",
              "success", "comfort", "min_ttc_s", "done", "infractions", "steps", "wall_s")


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
        "scoring_deviations": metrics.deviations(bool(cfg.env.end_on_collision)),
        "suite": suite, "agent": cfg.agent, "precision": precision_of(cfg), "code_version": code_version(),
        "seeds": sorted({e.seed for e in episodes}), "episodes_planned": len(episodes), "episodes_run": len(records),
        "budget": OmegaConf.to_container(cfg.budget), "env": OmegaConf.to_container(cfg.env),
        "budget_stats": {key: sum(r["budget"][key] for r in records)
                         for key in ("decisions", "missed_deadlines", "fallback_steps")},
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
    print(f"{'global (mean over routes)':34s} {'':3s} {results['driving_score']:7.2f} "
          f"{results['route_completion']:7.2f} {results['infraction_penalty']:6.3f} {results['success_rate']:5.2f}")


def run(cfg: DictConfig) -> int:
    try:
        suite, episodes = load_suite(str(cfg.suite), cfg.limit)
        precision = precision_of(cfg)
    except (ScenarioError, AgentError) as exc:
        print(f"slimdrive eval: {exc} (conf/eval.yaml)")
        return 2
    suffix = "" if precision == "float32" else f"-{precision}"  # the bf16 twin never resumes the fp32 run's folder
    out = Path(cfg.out or f"runs/eval/{suite}-{Path(str(cfg.agent)).stem}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "episodes.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    done = {f"{r['scenario']}#{r['seed']}" for r in records}
    # Grouped by map (stable, so suite order holds within a map): each map switch reloads the world.
    todo = sorted((e for e in episodes if e.key not in done), key=lambda e: str(e.scenario.scenario.map))
    if done:
        print(f"resuming: {len(done)} episodes already in {log}, {len(todo)} to run")
    if todo:  # a finished folder is only summarised again: no simulator to start
        env = DrivingEnv(cfg.env)
        try:
            agent = make_agent(str(cfg.agent), env, cfg)
            budget = ComputeBudget(BudgetConfig.from_cfg(cfg.budget), env.fixed_delta_seconds)
            budget.check(agent.footprint())
            with tqdm(todo, desc=f"eval {suite}", unit="episode") as bar:
                for episode in bar:
                    bar.set_postfix_str(episode.key)
                    record = rollout(env, agent, budget, episode, observers=[TimeToCollision(), Comfort()])
                    with log.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                    records.append(record)
        finally:
            env.close()
    planned = {e.key for e in episodes}  # a folder may hold more episodes than this run's limit asks for
    records = [r for r in records if f"{r['scenario']}#{r['seed']}" in planned]
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
