"""`slimdrive scenario search`: the scenario's distributions are the space, each trial is a concrete file, a
failing case found with cruise is a file that `slimdrive eval` reproduces exactly, and a search resumes;
`workers=2` drives the trials in the worker pool with workers=1's trials and scores (random, lhs), an
optimiser in batches, and a parallel search killed mid-batch resumes without re-running or losing a trial."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envs.workers import supervised
from evaluation.search import make_sampler
from scenarios.compile import draw, load_scenario
from scenarios.space import concrete_text, search_space
from scenarios.suites import SUITES_DIR
from slimdrive import main

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = SUITES_DIR.parent
FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]
JAYWALKER = SCENARIOS / "library" / "jaywalker_parked_van.yaml"  # 140 m in town: a trial takes seconds
NOT_OUTCOME = ("file", "wall_s")  # where it was written and how long it took: not what the trial was


def _trials(out) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def _outcomes(out) -> list[dict]:
    return [{k: v for k, v in t.items() if k not in NOT_OUTCOME} for t in _trials(out)]


def _body(file: str) -> str:
    """A trial file without its two comment lines (they name the folder it was written to)."""
    return "".join(Path(file).read_text().splitlines(keepends=True)[2:])


def test_the_space_is_every_distribution_and_a_concrete_file_draws_nothing(tmp_path):
    spec = load_scenario(SCENARIOS / "spaces" / "crossing_walker.yaml")
    space = search_space(spec)
    assert space.names == ["weather", "parameters.release_tta", "parameters.walker_speed", "parameters.crossing_s",
                           "actors[0].blueprint", "actors[0].place.s", "actors[1].blueprint"]
    values = space.from_unit([0.999] * len(space))  # the top of every range, the last of every choice
    assert values["parameters.release_tta"] == pytest.approx(0.5 + 0.999 * 24.5)
    assert values["actors[1].blueprint"] == "walker.pedestrian.0005"
    file = tmp_path / "point.yaml"
    file.write_text(concrete_text(spec, values, "point"))
    concrete = load_scenario(file)
    assert len(search_space(concrete)) == 0
    # no draws left: every seed gives the same scenario, the one of the point
    (first, p0), (second, p1) = draw(concrete, 0), draw(concrete, 12345)
    assert first == second and p0 == p1 and p0["walker_speed"] == round(values["parameters.walker_speed"], 4)


def test_bad_searches_are_refused_before_any_episode(tmp_path, capsys):
    assert main(["scenario", "search", f"out={tmp_path}"]) == 2
    assert "path=FILE" in capsys.readouterr().out
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("name: fixed\nmap: straight\nego: {route: {start: {x: 680, y: -5.25}, length: 100}}\n")
    assert main(["scenario", "search", f"path={fixed}", f"out={tmp_path}/a"]) == 2
    assert "draws nothing" in capsys.readouterr().out
    space = SCENARIOS / "spaces" / "crossing_walker.yaml"
    assert main(["scenario", "search", f"path={space}", "sampler=annealing", f"out={tmp_path}/b"]) == 2
    assert "tpe, cmaes, random, lhs" in capsys.readouterr().out
    for workers in ("0", "-1", "two"):
        assert main(["scenario", "search", f"path={space}", f"workers={workers}", f"out={tmp_path}/c"]) == 2
        assert f"workers={workers}: give the number of simulators" in capsys.readouterr().out
    assert not (tmp_path / "c").exists()


def test_search_finds_cruise_hitting_the_jaywalker_and_eval_reproduces_the_file(tmp_path):
    out = tmp_path / "search"
    library = SCENARIOS / "library" / "jaywalker_parked_van.yaml"
    assert main(["scenario", "search", f"path={library}", "agent=cruise", "trials=2", "sampler=lhs",
                 "baseline=null", "seed=3", f"out={out}", *FAST_ENV]) == 0
    trials = _trials(out)
    failed = [t for t in trials if t["failed"]]
    assert failed, trials  # cruise never brakes: the walker is hit
    assert "collisions_pedestrian" in failed[0]["infractions"]
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["failures"] == len(failed) and report["search"]["trials"] == 2
    # the failing file, run by `slimdrive eval` from the written suite, is the same episode
    assert main(["eval", "agent=cruise", f"suite={out / 'failures.yaml'}", f"out={tmp_path / 'eval'}",
                 *FAST_ENV]) == 0
    replayed = {r["scenario"]: r for r in map(json.loads, (tmp_path / "eval" / "episodes.jsonl").open())}
    for t in failed:
        name = t["file"].rsplit("/", 1)[1].removesuffix(".yaml")
        again = replayed[name]
        assert again["seed"] == 3
        assert again["driving_score"] == t["driving_score"]
        assert [i["kind"] for i in again["infractions"]] == t["infractions"]
        assert again["min_ttc_s"] == t["min_ttc_s"]


def test_tpe_search_resumes_after_its_finished_trials(tmp_path, capsys):
    pytest.importorskip("optuna", reason="sampler=tpe needs Optuna: pip install -e '.[search]'")
    out = tmp_path / "tpe"
    library = SCENARIOS / "library" / "lead_hard_brake.yaml"
    args = ["scenario", "search", f"path={library}", "agent=cruise", "sampler=tpe", "baseline=null",
            "objective=min_ttc", f"out={out}", *FAST_ENV]
    assert main([*args, "trials=2"]) == 0
    first = _trials(out)
    assert main([*args, "trials=3"]) == 0  # two told to the sampler again, one more run
    resumed = _trials(out)
    assert resumed[:2] == first and len(resumed) == 3 and resumed[2]["trial"] == 2
    assert all(t["value"] is not None for t in resumed)
    capsys.readouterr()
    assert main([*args, "trials=3", "sampler=random"]) == 2  # another sampler cannot continue this folder
    assert "sampler=tpe" in capsys.readouterr().out


def _search_w(out: Path, workers: int) -> list[str]:
    return ["scenario", "search", f"path={JAYWALKER}", "agent=cruise", "trials=2", "sampler=lhs", "baseline=random",
            "seed=3", f"workers={workers}", f"out={out}", *FAST_ENV]


def test_two_workers_give_one_workers_trials_and_scores(tmp_path, capsys):
    """lhs with its random baseline, the same seed, run by one simulator and by two in the pool: the same points,
    files, scores, failures and reports (trials.jsonl in trial order whatever order the trials finished in).
    Then the folder a parallel search leaves when killed after trial 1 finished but before trial 0 did: the rerun
    drives trial 0 alone, keeps trial 1 as it was, and ends with the same trials again."""
    runs = {}
    for workers in (1, 2):
        runs[workers] = tmp_path / f"w{workers}"
        assert main(_search_w(runs[workers], workers)) == 0
    for part in ("", "baseline-random"):
        one, two = runs[1] / part, runs[2] / part
        assert [t["trial"] for t in _trials(two)] == [0, 1]
        assert _outcomes(two) == _outcomes(one)
        assert all(t["value"] is not None and t["driving_score"] > 0 for t in _trials(two))
        assert [_body(t["file"]) for t in _trials(two)] == [_body(t["file"]) for t in _trials(one)]
        assert sorted(p.name for p in (two / "failures").iterdir()) == \
            sorted(p.name for p in (one / "failures").iterdir())
    report = {w: json.loads((runs[w] / "report.json").read_text()) for w in (1, 2)}
    for part in ("search", "baseline"):
        for key in ("trials", "failures", "falsification_rate", "first_failure_trial", "invalid"):
            assert report[2][part][key] == report[1][part][key], (part, key)
        assert report[2][part]["best"]["values"] == report[1][part]["best"]["values"]
    assert report[2]["rate_vs_baseline"] == report[1]["rate_vs_baseline"]

    log = runs[2] / "baseline-random" / "trials.jsonl"
    kept = log.read_text().splitlines()[1]
    log.write_text(kept + "\n")
    capsys.readouterr()
    assert main(_search_w(runs[2], 2)) == 0
    printed = capsys.readouterr().out
    assert "random trial 1/2" in printed and "random trial 2/2" not in printed and "lhs trial" not in printed
    assert log.read_text().splitlines()[1] == kept  # not driven again
    assert _outcomes(runs[2] / "baseline-random") == _outcomes(runs[1] / "baseline-random")


@pytest.mark.slow
def test_a_parallel_search_killed_mid_batch_resumes_without_rerunning_or_losing_a_trial(tmp_path):
    """SIGKILL a workers=2 random search (its process group: the search, its workers and their simulators) once
    two of four trials are written; the rerun keeps those lines as they were (not driven again: the same wall_s), drives
    only the missing trials, each once, and every trial n is the random point of (seed, n)."""
    out = tmp_path / "killed"
    args = ["scenario", "search", f"path={JAYWALKER}", "agent=cruise", "trials=4", "sampler=random",
            "baseline=null", "seed=5", "workers=2", f"out={out}", *FAST_ENV]
    search = subprocess.Popen([sys.executable, "-m", "slimdrive", *args], cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "trials.jsonl"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and search.poll() is None and \
                (not log.exists() or log.read_text().count("\n") < 2):
            time.sleep(0.05)
        assert search.poll() is None, "the search ended before it could be killed"
        os.killpg(search.pid, signal.SIGKILL)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
        search.wait()
    before = {t["trial"]: t for t in _trials(out)}
    assert 2 <= len(before) < 4, before.keys()
    assert main(args) == 0
    after = _trials(out)
    assert [t["trial"] for t in after] == list(range(4))  # none lost, none twice, in trial order
    for number, line in before.items():
        assert after[number] == line  # kept as it was: not driven again
    space = search_space(load_scenario(JAYWALKER))
    sampler = make_sampler("random", space, 5, 4)
    for t in after:
        assert t["values"] == {k: round(v, 4) if isinstance(v, float) else v
                               for k, v in sampler.propose(t["trial"]).items()}
        assert t["value"] is not None


@pytest.mark.slow
def test_tpe_in_batches_of_two_workers_resumes(tmp_path):
    """TPE asked two points at a time (constant liar), told both once both finished; a rerun with more trials
    tells the four finished ones again and runs one more batch."""
    pytest.importorskip("optuna", reason="sampler=tpe needs Optuna: pip install -e '.[search]'")
    out = tmp_path / "tpe2"
    args = ["scenario", "search", f"path={JAYWALKER}", "agent=cruise", "sampler=tpe", "baseline=null",
            "objective=min_ttc", "workers=2", f"out={out}", *FAST_ENV]
    assert main([*args, "trials=2"]) == 0
    first = _trials(out)
    assert [t["trial"] for t in first] == [0, 1] and first[0]["values"] != first[1]["values"]
    assert main([*args, "trials=4"]) == 0
    resumed = _trials(out)
    assert resumed[:2] == first and [t["trial"] for t in resumed] == [0, 1, 2, 3]
    assert all(t["value"] is not None for t in resumed)


def test_the_pool_runs_the_items_a_result_asks_for():
    """The pool's side of the optimiser's batches (envs.workers.supervised): the items `on_result` returns are
    queued after those waiting and run by the same pool, which ends when no item is left (math.sqrt: a module-level
    function a spawned worker imports in no time)."""
    seen: list[tuple[float, float]] = []

    def told(item: float, value: float) -> list[float]:
        seen.append((item, value))
        return [item + 10.0] if item < 10 else []

    # one worker: 11 (asked for by 1's result) runs after 4, which was waiting, and 14 last
    gave_up = supervised([1.0, 4.0], 1, math.sqrt, (0.0,), math.sqrt, told,
                         lambda death: pytest.fail(f"no worker should die: {death}"))
    assert gave_up == [] and seen == [(x, math.sqrt(x)) for x in (1.0, 4.0, 11.0, 14.0)]


def test_executor_ray_without_ray_names_the_extra(tmp_path, capsys):
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Ray is installed: tests/test_ray_executor.py runs executor=ray")
    assert main(["scenario", "search", f"path={JAYWALKER}", "executor=ray", "workers=2", f"out={tmp_path}"]) == 2
    printed = capsys.readouterr().out
    assert 'pip install -e ".[ray]"' in printed and "executor=ray" in printed
    assert not (tmp_path / "trials.jsonl").exists()
