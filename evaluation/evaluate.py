"""`slimdrive eval agent=expert suite=rare_events`: score an agent on every scenario x seed of a suite.

Each episode runs through the one rollout loop (`envs.rollout`): `DrivingEnv` with the compute budget in the
loop, the agent made by the registry (`agent.registry`: expert, cruise, a weight file, module:Class).
Results go to `out/`:
  episodes.jsonl   one line per finished episode (everything measured); the runner resumes from it
  episodes.csv     the same as a table
  results.json     suite figures: global driving score (Leaderboard 2.0), per-scenario means, infractions per
                   km, Bench2Drive success rate and comfort, minimum time-to-collision, budget statistics
  traces/          one compressed per-step trace per episode (`evaluation.traces`): speed, TTC, budget...
  videos/          an MP4 per failed episode (`videos=all|none|[keys]`; `evaluation.video`)
  report.html      the report (`evaluation.report`; `slimdrive report RUN_DIR` rebuilds it)
A per-scenario table (DS, RC, IP, infractions) is printed at the end. `precision=bfloat16` runs a float
checkpoint as its bfloat16 twin (`agent.registry`); its default out folder says so.

Faults: a simulator that dies (killed mid-episode, or in `reset`, or failing to start) is a simulator failure,
not the agent's: its episode is not recorded, the simulator is restarted and the episode driven again, at most
`retries` more times; the reasons are kept in the record's `simulator_failures`. An episode still failing after
that is not recorded (the run exits 1 and a rerun tries it again). An exception from the agent is the agent's
failure: the run stops there, naming the episode, and is not retried. Both are told apart by
`envs.rollout.drive_with_retries`, the loop collection and the scenario search use too; an OSError writing our
own files (a full disk) is neither's and stops the run as itself. The agent is made and checked against the
budget once before any simulator or worker starts, so a bad agent is one line whatever `workers` is. A torn
last line of episodes.jsonl (a run killed while writing it) is repaired on resume, naming the file; `workers=N`
drives N simulators in the shared worker pool (`envs.workers`), and the results equal a sequential run's (each
episode is decided by its seed; records are summarised in suite order).
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agent.export import WeightFileError
from agent.registry import AgentError, make_agent, precision_of
from envs.budget import BudgetExceeded, ComputeBudget
from envs.driving_env import DrivingEnv, ScenarioFailed
from envs.provenance import code_version
from envs.rollout import AgentFailed, Comfort, TimeToCollision, drive_with_retries
from envs.workers import Death, Executor, WorkerError, close_when_the_worker_ends, on_server, supervised
from scenarios import metrics
from scenarios.errors import ScenarioError
from scenarios.suites import Episode, load_suite

from . import report
from .runs import EvalLogError, RunError, read_log
from .traces import TRACES, Trace
from .video import VIDEOS, EpisodeVideo, wanted_videos

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
        "episode_keys": [f"{r['scenario']}#{r['seed']}" for r in records],  # the records summarised, in suite order
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


class Evaluator:
    """One simulator and agent scoring the suite's episodes one after another: the sequential run's whole
    state, or one pool worker's."""

    def __init__(self, cfg: DictConfig, out: Path) -> None:
        self.cfg, self.out = cfg, Path(out)
        _, self.episodes = load_suite(str(cfg.suite), cfg.limit)
        self.retries = int(cfg.retries)
        self.keep_video = wanted_videos(cfg.videos)
        self.env = DrivingEnv(cfg.env)
        try:
            self.agent = make_agent(str(cfg.agent), self.env, cfg)
            self.budget = ComputeBudget.for_env(cfg.budget, self.env)
            self.budget.check(self.agent.footprint())
        except BaseException:
            self.env.close()
            raise

    def evaluate(self, index: int, say=print) -> tuple[dict | None, list[str]]:
        """Drive the suite's episode `index`: (its record, the simulator failures on the way), or (None, the
        failures) when the simulator failed `retries` + 1 times (`envs.rollout.drive_with_retries`). `say`
        reports each retry."""
        def observers() -> list:
            ttc = TimeToCollision()
            watching = [ttc, Comfort(), Trace(self.out / TRACES, self.budget, ttc)]
            if self.cfg.videos != "none":
                watching.append(EpisodeVideo(self.out / VIDEOS, self.agent, self.budget, self.keep_video))
            return watching

        return drive_with_retries(self.env, self.agent, str(self.cfg.agent), self.budget, self.episodes[index],
                                  observers=observers, retries=self.retries, say=say)

    def close(self) -> None:
        self.env.close()


def check_agent(cfg: DictConfig) -> None:
    """Make `cfg.agent` and check its footprint against `cfg.budget`, as every worker will, once in the driver
    before any simulator or worker starts: an unknown agent, a refused weight file or a model that does not fit
    (AgentError, WeightFileError, BudgetExceeded) is then one line, whatever `workers` is. A `DrivingEnv` starts
    no simulator until its first reset."""
    env = DrivingEnv(cfg.env)
    try:
        agent = make_agent(str(cfg.agent), env, cfg)
        ComputeBudget.for_env(cfg.budget, env).check(agent.footprint())
    finally:
        env.close()


_worker: Evaluator | None = None


def _start_worker(cfg_yaml: str, out: str, server: str | None = None) -> None:
    global _worker
    _worker = Evaluator(on_server(OmegaConf.create(cfg_yaml), server), Path(out))
    close_when_the_worker_ends(_worker)


def _evaluate_in_worker(index: int) -> tuple[dict | None, list[str]]:
    return _worker.evaluate(index)


def run(cfg: DictConfig) -> int:
    # DAgger and the table build their own eval configs: one driver, no videos, unless they ask
    cfg = OmegaConf.merge({"workers": 1, "retries": 2, "videos": "none"}, cfg)
    try:
        # the executor first: a missing Ray is named before a suite is compiled (seconds for a large one)
        executor = Executor.from_cfg(cfg)
        precision = precision_of(cfg)
        wanted_videos(cfg.videos)
        suite, episodes = load_suite(str(cfg.suite), cfg.limit)
    except (ScenarioError, AgentError, ValueError) as exc:
        print(f"slimdrive eval: {exc} (conf/eval.yaml)")
        return 2
    suffix = "" if precision == "float32" else f"-{precision}"  # the bf16 twin never resumes the fp32 run's folder
    out = Path(cfg.out or f"runs/eval/{suite}-{Path(str(cfg.agent)).stem}{suffix}")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "episodes.jsonl"
    try:
        records = read_log(log)
    except EvalLogError as exc:
        print(f"slimdrive eval: {exc}")
        return 2
    done = {f"{r['scenario']}#{r['seed']}" for r in records}
    # Grouped by map (stable, so suite order holds within a map): each map switch reloads the world.
    todo = sorted((i for i, e in enumerate(episodes) if e.key not in done),
                  key=lambda i: str(episodes[i].scenario.scenario.map))
    if done:
        print(f"resuming: {len(done)} episodes already in {log}, {len(todo)} to run")
    not_scored: list[str] = []
    if todo:  # a finished folder is only summarised again: no simulator to start
        with tqdm(total=len(todo), desc=f"eval {suite}", unit="episode") as bar:
            def finished(index: int, outcome: tuple[dict | None, list[str]]) -> None:
                record, failures = outcome
                key = episodes[index].key
                if record is None:
                    not_scored.append(f"{key}: the simulator failed {len(failures)} times ({failures[-1]})")
                else:
                    with log.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                        f.flush()
                        os.fsync(f.fileno())  # a line is either wholly on disk or torn (repaired on resume)
                    records.append(record)
                bar.set_postfix_str(key)
                bar.update()

            try:
                check_agent(cfg)
                workers = int(cfg.workers)
                if workers <= 1 and executor.kind == "local":
                    evaluator = Evaluator(cfg, out)
                    try:
                        for index in todo:
                            finished(index, evaluator.evaluate(index, say=bar.write))
                    finally:
                        evaluator.close()
                else:
                    def died(death: Death) -> None:
                        what = "while starting" if death.task is None else \
                            f"while driving {episodes[death.task].key}"
                        then = "starting another" if death.task is None else "driving it again in a new worker" \
                            if death.retried else f"giving it up after {death.attempt} attempts"
                        bar.write(f"eval worker pid {death.pid} died ({death.cause}) {what}; {then}")

                    gave_up = supervised(todo, workers, _start_worker, (OmegaConf.to_yaml(cfg), str(out)),
                                         _evaluate_in_worker, finished, died, int(cfg.retries), executor)
                    not_scored += [f"{episodes[d.task].key}: its worker died {d.attempt} times ({d.cause})"
                                   for d in gave_up]
            except BudgetExceeded as exc:  # refused before the first step: the model does not fit the device
                print(f"slimdrive eval: {exc} (agent={cfg.agent}, budget in conf/eval.yaml)")
                return 2
            except (AgentError, WeightFileError) as exc:  # no such agent, or a refused weight file: before any episode
                print(f"slimdrive eval: {exc} (conf/eval.yaml)")
                return 2
            except (ScenarioFailed, AgentFailed) as exc:
                print(f"slimdrive eval: {exc}\nnot a simulator failure, so not retried; the episodes before it are "
                      f"kept in {log}: fix the cause and rerun to resume")
                return 1
            except WorkerError as exc:
                # a worker's AgentFailed or ScenarioFailed, named by its class (the traceback adds nothing); any
                # other exception in a worker is a defect, shown with its traceback
                reason = exc.reason if exc.kind in ("AgentFailed", "ScenarioFailed") else str(exc)
                print(f"slimdrive eval: {reason}\nnot a simulator failure, so not retried; the episodes before it "
                      f"are kept in {log}: fix the cause and rerun to resume")
                return 1
    # Suite order, whatever order they finished in, so that a parallel run summarises exactly as a sequential one
    order = {e.key: i for i, e in enumerate(episodes)}  # a folder may hold more episodes than this limit asks for
    records = sorted((r for r in records if f"{r['scenario']}#{r['seed']}" in order),
                     key=lambda r: order[f"{r['scenario']}#{r['seed']}"])
    with (out / "episodes.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "infractions": ";".join(i["kind"] for i in r["infractions"])})
    results = summarise(records, episodes, cfg, suite)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    try:
        html = report.write(out)
    except (RunError, EvalLogError, ValueError, OSError) as exc:  # the scores stand without their report
        html = f"no report ({exc}; `slimdrive report {out}` rebuilds it)"
    print(f"wrote {out / 'results.json'}, {out / 'episodes.csv'}, {log}, {html}, traces in {out / TRACES}"
          f" and videos in {out / VIDEOS}")
    for line in not_scored:
        print(f"not scored (rerun to try it again): {line}")
    return 1 if not_scored else 0
