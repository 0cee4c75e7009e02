"""`slimdrive scenario search path=FILE agent=AGENT trials=N objective=driving_score|min_ttc sampler=tpe`: look
for the cases of a scenario where an agent fails, and keep each one as a scenario file that reproduces it.

The scenario's distributions are the search space (`scenarios.space`): its parameters, blueprint choices,
placements and weather. Each trial fixes every one of them, writes that point as a concrete scenario file
(`<out>/trials/<name>_tNNNN.yaml`: the source file with its draws replaced by values) and drives it for the
search's `seed` through the one rollout loop, so the file and the seed are the whole episode. A trial fails
when the agent collides (or, with `fail_below_ds`, scores below it); its file is copied to `<out>/failures/` and
listed with its seed in `<out>/failures.yaml`, a suite that `slimdrive eval` runs as it stands.

Samplers propose the points: `tpe` (Optuna's tree-structured Parzen estimator) and `cmaes` (Optuna's CMA-ES;
choices fall back to random draws) learn from the trials so far, minimising the objective (`driving_score`, or
`min_ttc`: the episode's minimum time-to-collision, 0 on contact); `random` draws each point from the file's
own distributions and `lhs` stratifies them (Latin hypercube), as baselines. Optuna is the optional extra
`search` (`pip install -e '.[search]'`): random and lhs run without it.

Resumable: every finished trial is a line of `<out>/trials.jsonl`, written (and synced) as it finishes; a rerun
with the same settings runs only the trials missing from it (the Optuna samplers are told the finished trials
again first), and the file is rewritten in trial order when the search ends. With `baseline=random` (the
default) a random search of as many trials runs beside an optimiser in `<out>/baseline-random`, and
`<out>/report.json` compares their falsification rates at equal trials.

Episodes: `workers=N` drives N simulators in the project's one worker pool (`envs.workers`; `executor=ray` on a
Ray cluster through `envs.ray_pool`, the optional extra `ray`), one trial at a time each. The optimisers are
used in batches (ask/tell): asked for `workers` points (TPE with `constant_liar`, Optuna's way of keeping the
points in flight apart), told the batch's results in trial order once all have finished, then asked again,
so that a seeded search is the same for the same `workers`; random and lhs learn nothing, so all their points
go to the pool at once, and trial n is the same point and episode whatever `workers` is. Each trial goes
through `envs.rollout.drive_with_retries` as eval's episodes do: a simulator that dies mid-trial is restarted
and the trial driven again (at most `retries`, 2, more times; a worker process that dies likewise); after that
the search stops, exit 1, and a rerun drives that trial again: it is never kept as an "invalid" point. An
agent's exception stops the search naming the agent, trial and error (exit 1); a trial whose scenario
behaviour fails is invalid, as an unplaceable one is. A torn last line of trials.jsonl (a search killed while
writing it) is repaired on resume (`runs.read_log`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agent.export import WeightFileError
from agent.registry import AgentError, make_agent
from envs.budget import BudgetExceeded, ComputeBudget
from envs.driving_env import DrivingEnv, ScenarioFailed
from envs.rollout import AgentFailed, TimeToCollision, drive_with_retries
from envs.workers import Death, Executor, WorkerError, close_when_the_worker_ends, on_server, supervised
from scenarios import metrics
from scenarios.compile import ScenarioSpec, compile_seeds, load_scenario
from scenarios.errors import ScenarioError
from scenarios.space import SearchSpace, concrete_text, search_space
from scenarios.suites import Episode

from .evaluate import check_agent
from .runs import EvalLogError, read_log

SAMPLERS = ("tpe", "cmaes", "random", "lhs")
OPTUNA_SAMPLERS = ("tpe", "cmaes")
OBJECTIVES = ("driving_score", "min_ttc")
# The settings a resumed search must share with the folder's first run (trials may grow, except for lhs, whose
# design is drawn for the number of trials).
SETTINGS = ("file_sha256", "agent", "objective", "sampler", "seed", "fail_below_ds")


class SearchError(ValueError):
    """A search that cannot run as configured; the message says which setting and what to do."""


class TrialNotRun(RuntimeError):
    """The simulator failed a trial's episode on every attempt: the search stops, and a rerun drives it again."""


def is_failure(record: dict, fail_below_ds: float | None) -> bool:
    """A collision of any kind, or (when asked) a driving score below `fail_below_ds`."""
    collided = any(i["kind"].startswith("collisions_") for i in record["infractions"])
    return collided or (fail_below_ds is not None and record["driving_score"] < fail_below_ds)


def objective_value(record: dict, objective: str) -> float:
    """What the optimisers minimise: the route's driving score, or its minimum time-to-collision (the TTC
    horizon when nothing ever approached; 0 on contact, which the observer may miss between ticks)."""
    if objective == "driving_score":
        return float(record["driving_score"])
    if any(i["kind"].startswith("collisions_") for i in record["infractions"]):
        return 0.0
    return float(record["min_ttc_s"]) if record.get("min_ttc_s") is not None else metrics.TTC_HORIZON_S


# ------------------------------------------------------------------------------------------- samplers
class UnitSampler:
    """random: point n is drawn from its own generator (seed, n), so a resumed search draws what an uninterrupted
    one would; lhs: a Latin hypercube of `trials` rows (each dimension's [0, 1) cut into `trials` strata, one point
    in each, strata shuffled per dimension), row n for trial n."""

    def __init__(self, kind: str, space: SearchSpace, seed: int, trials: int) -> None:
        self.kind, self.space, self.seed = kind, space, seed
        if kind == "lhs":
            rng = np.random.default_rng([seed, 0x1A5])
            strata = np.stack([rng.permutation(trials) for _ in range(len(space))], axis=1)
            self.design = (strata + rng.random((trials, len(space)))) / trials

    def propose(self, number: int) -> dict[str, Any]:
        if self.kind == "lhs":
            return self.space.from_unit(self.design[number])
        return self.space.from_unit(np.random.default_rng([self.seed, number]).random(len(self.space)))

    def tell(self, number: int, values: dict[str, Any], value: float | None) -> None:
        pass  # the baselines do not learn


class OptunaSampler:
    """Optuna's ask/tell interface on an in-memory study; the folder's trials.jsonl is the record, replayed into
    the study on resume (so one file, not a second database, says what has run)."""

    def __init__(self, kind: str, space: SearchSpace, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        with warnings.catch_warnings():  # constant_liar is experimental in Optuna 4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if kind == "tpe":
                # multivariate: the parameters of a scenario act together (a release time only matters with a
                # speed); constant_liar: a point asked while others of its batch are still running is kept away
                # from them (they count as if they had scored the worst value so far)
                sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10,
                                                     constant_liar=True)
            else:
                sampler = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self.distributions = {}
        for dim in space.dimensions:
            if dim.categorical:
                self.distributions[dim.name] = optuna.distributions.CategoricalDistribution(dim.options)
            else:
                low, high = dim.bounds()
                self.distributions[dim.name] = optuna.distributions.FloatDistribution(low, high) if high > low \
                    else optuna.distributions.CategoricalDistribution((low,))
        self.pending: dict[int, Any] = {}

    def propose(self, number: int) -> dict[str, Any]:
        trial = self.study.ask(self.distributions)
        self.pending[number] = trial
        return dict(trial.params)

    def tell(self, number: int, values: dict[str, Any], value: float | None) -> None:
        state = self.optuna.trial.TrialState.COMPLETE if value is not None else self.optuna.trial.TrialState.FAIL
        trial = self.pending.pop(number, None)
        if trial is not None:
            self.study.tell(trial, value if value is not None else None, state=state)
            return
        # a trial of an earlier run of this folder: its point as it was written (values rounded in the file)
        params = {k: values[k] for k in self.distributions}
        self.study.add_trial(self.optuna.trial.create_trial(params=params, distributions=self.distributions,
                                                            value=value, state=state))


def make_sampler(kind: str, space: SearchSpace, seed: int, trials: int):
    if kind not in SAMPLERS:
        raise SearchError(f"sampler={kind}: use one of {', '.join(SAMPLERS)} (conf/scenario/search.yaml)")
    if kind in OPTUNA_SAMPLERS:
        try:
            import optuna  # noqa: F401
            if kind == "cmaes":
                import cmaes  # noqa: F401
        except ImportError as exc:
            raise SearchError(f"sampler={kind} needs Optuna{' and cmaes' if kind == 'cmaes' else ''} ({exc.name} "
                              "is not installed): pip install -e '.[search]', or use sampler=random or "
                              "sampler=lhs") from None
        return OptunaSampler(kind, space, seed)
    return UnitSampler(kind, space, seed, trials)


# --------------------------------------------------------------------------------------------- search
@dataclass(frozen=True)
class TrialTask:
    """One trial to drive: its number, its concrete scenario file and the seed (what a pool worker is sent)."""

    number: int
    file: str
    seed: int


def trial_outcome(cfg: DictConfig, record: dict) -> dict:
    """A trial line's fields from its episode's record."""
    return {"invalid": None, "value": objective_value(record, str(cfg.objective)),
            "failed": is_failure(record, cfg.fail_below_ds), "driving_score": record["driving_score"],
            "min_ttc_s": record.get("min_ttc_s"), "done": record["done"],
            "infractions": [i["kind"] for i in record["infractions"]], "wall_s": record["wall_s"]}


@dataclass
class Runner:
    """One simulator, agent and budget driving trials one after another: `workers=1`'s whole state, or one pool
    worker's (made on the first episode)."""

    cfg: DictConfig
    env: DrivingEnv | None = None

    def episode(self, spec: ScenarioSpec, seed: int) -> tuple[dict | None, list[str]]:
        """One trial's episode, a simulator failure retried as eval retries it (`drive_with_retries`):
        (its record, the simulator failures), or (None, the failures) when the simulator failed every attempt."""
        if self.env is None:
            self.env = DrivingEnv(self.cfg.env)
            self.agent = make_agent(str(self.cfg.agent), self.env, self.cfg)
            self.budget = ComputeBudget.for_env(self.cfg.budget, self.env)
            self.budget.check(self.agent.footprint())
        return drive_with_retries(self.env, self.agent, str(self.cfg.agent), self.budget, Episode(spec, seed),
                                  observers=lambda: [TimeToCollision()], retries=int(self.cfg.retries))

    def trial(self, task: TrialTask) -> dict:
        """Load, place and drive one trial: its line's fields, or {"not_run": failures} when the simulator failed
        every attempt. An agent's exception (AgentFailed) is raised."""
        try:
            spec = load_scenario(task.file)
            compile_seeds(spec, [task.seed])  # a point whose placement does not fit the map is no episode
            record, failures = self.episode(spec, task.seed)
        except (ScenarioError, ScenarioFailed) as exc:  # unplaceable, or its own behaviour fails: no episode
            return {"invalid": str(exc), "value": None, "failed": False}
        if record is None:
            return {"not_run": failures}
        return trial_outcome(self.cfg, record)

    def drive(self, tasks: Iterable[TrialTask], finished: Callable[[TrialTask, dict], list[TrialTask]]) -> None:
        """Drive `tasks` in order, and those `finished` asks for after each."""
        queue = list(tasks)
        while queue:
            task = queue.pop(0)
            queue += finished(task, self.trial(task))

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


_worker: Runner | None = None


def _start_worker(cfg_yaml: str, server: str | None = None) -> None:
    global _worker
    _worker = Runner(on_server(OmegaConf.create(cfg_yaml), server))
    close_when_the_worker_ends(_worker)


def _trial_in_worker(task: TrialTask) -> dict:
    return _worker.trial(task)


@dataclass
class PoolRunner:
    """`workers` Runners in the worker pool (`envs.workers.supervised`, local or on Ray): the same trials and
    outcomes as one Runner, driven in parallel. Workers start per search and stop when it ends."""

    cfg: DictConfig
    executor: Executor

    def drive(self, tasks: Iterable[TrialTask], finished: Callable[[TrialTask, dict], list[TrialTask]]) -> None:
        def died(death: Death) -> None:
            what = "while starting" if death.task is None else f"while driving trial {death.task.number}"
            then = "starting another" if death.task is None else "driving it again in a new worker" \
                if death.retried else f"giving it up after {death.attempt} attempts"
            print(f"  search worker pid {death.pid} died ({death.cause}) {what}; {then}", flush=True)

        gave_up = supervised(tasks, int(self.cfg.workers), _start_worker, (OmegaConf.to_yaml(self.cfg),),
                             _trial_in_worker, finished, died, int(self.cfg.retries), self.executor)
        if gave_up:
            d = gave_up[0]
            raise TrialNotRun(f"trial {d.task.number} ({d.task.file}): its worker died {d.attempt} times "
                              f"({d.cause}); rerun the same command to resume from this trial")

    def close(self) -> None:
        pass  # the pool stops its workers, and their simulators, at the end of each search


def _settings(spec: ScenarioSpec, cfg: DictConfig, sampler: str) -> dict:
    return {"file": str(spec.file), "file_sha256": hashlib.sha256(spec.file.read_bytes()).hexdigest(),
            "agent": str(cfg.agent), "objective": str(cfg.objective), "sampler": sampler, "seed": int(cfg.seed),
            "fail_below_ds": cfg.fail_below_ds, "trials": int(cfg.trials)}


def _check_resume(out: Path, settings: dict) -> None:
    path = out / "search.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = [k for k in SETTINGS + (("trials",) if settings["sampler"] == "lhs" else ())
                   if before.get(k) != settings[k]]
        if changed:
            was = ", ".join(f"{k}={before.get(k)}" for k in changed)
            raise SearchError(f"{out} holds a search with other settings ({was}); give another out= or the same "
                              "settings to resume it")
    path.write_text(json.dumps(settings, indent=2))


class Batches:
    """The trials still to run, proposed in batches: a learning sampler is asked for `size` points, which run in
    parallel, and told their results in trial order once the batch has finished; a baseline's points are all
    proposed at once. Every finished trial is appended to trials.jsonl (and synced) as it arrives."""

    def __init__(self, spec: ScenarioSpec, cfg: DictConfig, out: Path, sampler_kind: str, sampler, todo: list[int],
                 size: int, trials: list[dict]) -> None:
        self.spec, self.cfg, self.out, self.kind, self.sampler = spec, cfg, out, sampler_kind, sampler
        self.todo, self.size, self.trials = list(todo), size, trials
        self.running: dict[int, dict] = {}  # this batch's trials still running: number -> its line so far
        self.batch: list[dict] = []  # this batch's finished trials

    def next(self) -> list[TrialTask]:
        """Propose the next batch and write its concrete files."""
        numbers, self.todo = self.todo[:self.size], self.todo[self.size:]
        tasks = []
        seed, base = int(self.cfg.seed), self.spec.scenario.name
        for number in numbers:
            # rounded as the file writes them: the values recorded are the ones that ran
            values = {k: round(v, 4) if isinstance(v, float) else v for k, v in self.sampler.propose(number).items()}
            name = f"{base}_t{number:04d}"
            file = self.out / "trials" / f"{name}.yaml"
            header = (f"# slimdrive scenario search: trial {number} of {self.spec.file} (sampler {self.kind}, agent "
                      f"{self.cfg.agent}), seed {seed}.\n# Run it with that seed: {self.out / 'failures.yaml'} "
                      "lists it if it failed.\n")
            file.write_text(header + concrete_text(self.spec, values, name, f"Trial {number} of a search over "
                                                                            f"{base} ({self.kind}); seed {seed}."))
            self.running[number] = {"trial": number, "file": str(file), "seed": seed, "values": values}
            tasks.append(TrialTask(number, str(file), seed))
        return tasks

    def finished(self, task: TrialTask, outcome: dict) -> list[TrialTask]:
        """Record a finished trial; when its batch is complete, tell the sampler and propose the next one."""
        if "not_run" in outcome:
            # not the trial's fault: left out of trials.jsonl, so that a rerun drives it again
            failures = outcome["not_run"]
            raise TrialNotRun(f"trial {task.number} ({task.file}): the simulator failed {len(failures)} times "
                              f"({failures[-1]}); rerun the same command to resume from this trial")
        line = {**self.running.pop(task.number), **outcome}
        with (self.out / "trials.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a line is either wholly on disk or torn (repaired on resume)
        self.trials.append(line)
        self.batch.append(line)
        mark = "FAIL" if line["failed"] else "invalid" if line["invalid"] else "ok"
        print(f"  {self.kind} trial {task.number + 1}/{self.cfg.trials}: {mark:7s} {self.cfg.objective}="
              f"{line['value'] if line['value'] is not None else '-'}  {line.get('infractions') or ''}", flush=True)
        if self.running:
            return []
        for t in sorted(self.batch, key=lambda t: t["trial"]):
            self.sampler.tell(t["trial"], t["values"], t["value"])
        self.batch = []
        return self.next()


def search(spec: ScenarioSpec, cfg: DictConfig, out: Path, sampler_kind: str,
           runner: Runner | PoolRunner) -> list[dict]:
    """Run (or resume) one search into `out`; returns every trial's line of trials.jsonl, in trial order."""
    space = search_space(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)
    settings = _settings(spec, cfg, sampler_kind)
    _check_resume(out, settings)
    log = out / "trials.jsonl"
    # a search killed while appending a trial leaves a torn last line: repaired here; a parallel one may have
    # finished trial n + 1 before trial n
    trials = sorted(read_log(log), key=lambda t: t["trial"])
    sampler = make_sampler(sampler_kind, space, int(cfg.seed), int(cfg.trials))
    for t in trials:
        sampler.tell(t["trial"], t["values"], t["value"])
    done = {t["trial"] for t in trials}
    todo = [n for n in range(int(cfg.trials)) if n not in done]
    learns = isinstance(sampler, OptunaSampler)
    batches = Batches(spec, cfg, out, sampler_kind, sampler, todo,
                      max(1, int(cfg.workers)) if learns else max(1, len(todo)), trials)
    if todo:
        runner.drive(batches.next(), batches.finished)
    trials.sort(key=lambda t: t["trial"])
    _rewrite_log(log, trials)
    _write_failures(out, trials)
    return trials


def _rewrite_log(log: Path, trials: list[dict]) -> None:
    """trials.jsonl in trial order (a parallel search appends in the order trials finish), replaced atomically."""
    staged = log.with_name(log.name + ".tmp")
    with staged.open("w") as f:
        f.writelines(json.dumps(t) + "\n" for t in trials)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged, log)


def _write_failures(out: Path, trials: list[dict]) -> None:
    """Copy each failing trial's file to failures/ and list them, seed-pinned, in failures.yaml."""
    failing = [t for t in trials if t["failed"]]
    folder = out / "failures"
    folder.mkdir(exist_ok=True)
    entries = []
    for t in failing:
        target = folder / Path(t["file"]).name
        shutil.copyfile(t["file"], target)
        entries.append(f"  - scenario: failures/{target.name}\n    seeds: [{t['seed']}]\n")
    text = (f"name: {out.name}-failures\ndescription: the failing cases of the search in {out}, each with its seed\n"
            + ("entries:\n" + "".join(entries) if entries else "entries: []\n"))
    (out / "failures.yaml").write_text(text)


def summary(trials: list[dict], sampler: str) -> dict:
    valid = [t for t in trials if t["invalid"] is None]
    failed = [t for t in trials if t["failed"]]
    ranked = sorted(valid, key=lambda t: t["value"])

    def brief(t: dict | None) -> dict | None:
        return None if t is None else {k: t.get(k) for k in ("trial", "value", "driving_score", "min_ttc_s",
                                                             "infractions", "values", "file")}

    return {"sampler": sampler, "trials": len(trials), "invalid": len(trials) - len(valid), "failures": len(failed),
            "falsification_rate": round(len(failed) / len(trials), 4) if trials else 0.0,
            "first_failure_trial": failed[0]["trial"] if failed else None,
            "best": brief(ranked[0] if ranked else None), "worst": brief(ranked[-1] if ranked else None)}


def reproduce_command(cfg: DictConfig, out: Path) -> str:
    env = " ".join(f"env.{k}={cfg.env[k]}" for k in ("rig", "image_size_x", "image_size_y") if cfg.env[k] is not None)
    return f"slimdrive eval agent={cfg.agent} suite={out / 'failures.yaml'} {env}"


def run(cfg: DictConfig) -> int:
    try:
        executor = Executor.from_cfg(cfg)  # a missing Ray is named before anything starts
        if cfg.path is None:
            raise SearchError("no scenario given: path=FILE (conf/scenario/search.yaml)")
        if str(cfg.objective) not in OBJECTIVES:
            raise SearchError(f"objective={cfg.objective}: use one of {', '.join(OBJECTIVES)}")
        if int(cfg.trials) < 1:
            raise SearchError(f"trials={cfg.trials}: give at least 1")
        if isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int) or cfg.workers < 1:
            # 0 or less started no simulator: the pool then waited for ever on trials no worker would take
            raise SearchError(f"workers={cfg.workers}: give the number of simulators driving trials, at least 1")
        spec = load_scenario(cfg.path)
        if not len(search_space(spec)):
            raise SearchError(f"{cfg.path}: the file draws nothing, so there is nothing to search; write the ranges "
                              "to search as distributions ({uniform: [lo, hi]}, {choice: [...]})")
        baseline = cfg.baseline if cfg.baseline not in (None, cfg.sampler) else None
        for kind in (cfg.sampler, baseline):
            if kind is not None:
                make_sampler(str(kind), search_space(spec), 0, 1)  # a bad name or a missing Optuna, before any episode
    except (ScenarioError, ValueError) as exc:  # a SearchError, or Executor's
        print(f"slimdrive scenario search: {exc}")
        return 2
    out = Path(cfg.out or f"runs/search/{spec.scenario.name}-{Path(str(cfg.agent)).stem}-{cfg.sampler}")
    print(f"searching {len(search_space(spec))} dimensions of {spec.file}: {', '.join(search_space(spec).names)}")
    parallel = int(cfg.workers) > 1 or executor.kind == "ray"
    runner = PoolRunner(cfg, executor) if parallel else Runner(cfg)
    try:
        if parallel:
            check_agent(cfg)  # an unknown agent or one that does not fit: one line, before any worker starts
        trials = search(spec, cfg, out, str(cfg.sampler), runner)
        report = {"file": str(spec.file), "agent": str(cfg.agent), "objective": str(cfg.objective),
                  "seed": int(cfg.seed), "dimensions": search_space(spec).names,
                  "search": summary(trials, str(cfg.sampler)), "baseline": None,
                  "failures_suite": str(out / "failures.yaml"), "reproduce": reproduce_command(cfg, out)}
        if baseline is not None:
            base_out = out / f"baseline-{baseline}"
            report["baseline"] = summary(search(spec, cfg, base_out, str(baseline), runner), str(baseline))
            report["baseline"]["out"] = str(base_out)
    except (SearchError, AgentError, WeightFileError, EvalLogError) as exc:
        print(f"slimdrive scenario search: {exc}")
        return 2
    except TrialNotRun as exc:
        print(f"slimdrive scenario search: {exc}")
        return 1
    except AgentFailed as exc:
        print(f"slimdrive scenario search: {exc}; not a simulator failure, so not retried: fix the agent and rerun "
              "to resume from this trial")
        return 1
    except WorkerError as exc:
        # a worker's AgentFailed, named by its class (the traceback adds nothing); any other exception in a worker
        # is a defect, shown with its traceback
        if exc.kind == "AgentFailed":
            print(f"slimdrive scenario search: {exc.reason}; not a simulator failure, so not retried: fix the agent "
                  "and rerun to resume from this trial")
        else:
            print(f"slimdrive scenario search: {exc}\nthe trials finished before it are kept: rerun to resume")
        return 1
    except BudgetExceeded as exc:
        print(f"slimdrive scenario search: {exc} (budget: conf/budget/, e.g. budget=orin_int8)")
        return 2
    finally:
        runner.close()
    if report["baseline"]:
        base = report["baseline"]["falsification_rate"]
        report["rate_vs_baseline"] = round(report["search"]["falsification_rate"] / base, 3) if base else \
            (math.inf if report["search"]["failures"] else None)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    _print(report)
    print(f"wrote {out / 'report.json'}, {out / 'trials.jsonl'}, {out / 'failures.yaml'} and the scenario files "
          f"in {out / 'failures'}\nreproduce: {report['reproduce']}")
    return 0


def _print(report: dict) -> None:
    for part in ("search", "baseline"):
        s = report[part]
        if not s:
            continue
        print(f"{s['sampler']:7s} {s['failures']}/{s['trials']} trials failed (rate {s['falsification_rate']:.2f}, "
              f"{s['invalid']} invalid), first at trial {s['first_failure_trial']}")
        if s["best"]:
            print(f"        lowest {report['objective']} {s['best']['value']} at trial {s['best']['trial']}: "
                  f"{s['best']['values']}")
    if report.get("rate_vs_baseline") is not None:
        print(f"falsification rate {report['search']['sampler']} / {report['baseline']['sampler']}: "
              f"{report['rate_vs_baseline']}")


__all__ = ["run", "search", "summary", "is_failure", "objective_value", "make_sampler", "SearchError"]
