"""`executor=ray` (envs/ray_pool.py) on a real local Ray cluster that these tests start on loopback (two CPUs)
and stop: the pool's contract on plain tasks; `slimdrive eval` of a small suite equals the local run; a Ray
worker SIGKILLed by its pid mid-episode is replaced and its episode driven again, written once; `slimdrive
collect` on Ray writes the manifest and labels of a local collection; two simulator servers started as separate
processes are shared out one per Ray worker (`ray.servers`) with the same results."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from envs.server.launch import launch
from envs.workers import Executor, WorkerError, supervised
from slimdrive import main
from training.logs.reader import EpisodeReader
from training.logs.writer import read_manifest

ray = pytest.importorskip("ray", reason='Ray is an optional extra (pip install -e ".[ray]"); without it the '
                                        "executor=ray tests are skipped")

TESTS = Path(__file__).resolve().parent
SHORT_DRIVE = TESTS / "training" / "scenarios" / "short_drive.yaml"
SHORT_SUITE = TESTS / "training" / "scenarios" / "short.yaml"  # tests/training/conftest.py's four short drives
SMALL_RIG = ["env.image_size_x=64", "env.image_size_y=32"]
FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32", "videos=none"]
NOT_OUTCOME = ("wall_s", "simulator_failures", "video")  # as tests/evaluation/test_reports.py: not the outcome
RAY = Executor("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on loopback for this module; the pool uses the connection this process holds."""
    ray.init(num_cpus=2, include_dashboard=False, address="local", logging_level="WARNING")
    yield
    ray.shutdown()


def test_the_ray_pool_keeps_the_local_pools_contract(ray_cluster):
    """The same results through the same callbacks as the local pool; a task's exception is a WorkerError with
    the worker's traceback. (math.sqrt: a module-level function that every Ray worker can import.)"""
    results: dict[float, float] = {}
    gave_up = supervised([1.0, 4.0, 9.0], 2, math.sqrt, (0.0,), math.sqrt, results.__setitem__,
                         lambda death: pytest.fail(f"no worker should die: {death}"), 1, RAY)
    assert gave_up == [] and results == {1.0: 1.0, 4.0: 2.0, 9.0: 3.0}
    with pytest.raises(WorkerError, match=r"(?s)task -1\.0 raised in Ray worker pid \d+ on .*math domain error"):
        supervised([4.0, -1.0], 1, math.sqrt, (0.0,), math.sqrt, lambda *_: None, lambda _: None, 1, RAY)


def _suite(folder: Path, seeds: list[int]) -> Path:
    path = folder / "short_drive.yaml"
    path.write_text(f"name: short_drive_{len(seeds)}\nentries:\n  - scenario: {SHORT_DRIVE}\n    seeds: {seeds}\n")
    return path


def _outcomes(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    for r in records:
        r["infractions"] = [i["kind"] for i in r["infractions"]]  # the kinds (test_reports.py says why)
    return sorted(({k: v for k, v in r.items() if k not in NOT_OUTCOME} for r in records), key=lambda r: r["seed"])


def _results(out: Path) -> dict:
    return {k: v for k, v in json.loads((out / "results.json").read_text()).items() if k != "agent"}


def _eval(out: Path, suite: Path, *extra: str) -> int:
    return main(["eval", "agent=cruise", f"suite={suite}", f"out={out}", *FAST_ENV, *extra])


class _KillFirstWorker(threading.Thread):
    """SIGKILLs, by its pid, the first Ray worker seen driving an episode (process title
    `ray::EpisodeWorker.run`), `after_s` seconds into its episode."""

    def __init__(self, after_s: float) -> None:
        super().__init__(daemon=True)
        self.after_s, self.killed, self.stop = after_s, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for process in psutil.process_iter(["pid", "cmdline"]):
                if (process.info["cmdline"] or [""])[0].startswith("ray::EpisodeWorker.run"):
                    time.sleep(self.after_s)
                    os.kill(process.info["pid"], signal.SIGKILL)
                    self.killed = process.info["pid"]
                    return
            time.sleep(0.2)


@pytest.mark.slow  # three evaluations of two episodes each: about 2-3 minutes on the shared 2-core machine
def test_eval_on_ray_equals_the_local_run_and_survives_a_killed_worker(ray_cluster, tmp_path, capsys):
    suite = _suite(tmp_path, [0, 1])
    assert _eval(tmp_path / "local", suite) == 0
    assert _eval(tmp_path / "ray", suite, "executor=ray", "workers=2") == 0
    assert _outcomes(tmp_path / "ray") == _outcomes(tmp_path / "local")
    assert _results(tmp_path / "ray") == _results(tmp_path / "local")

    capsys.readouterr()
    killer = _KillFirstWorker(after_s=3.0)
    killer.start()
    try:
        assert _eval(tmp_path / "killed", suite, "executor=ray", "workers=2") == 0
    finally:
        killer.stop.set()
        killer.join()
    said = capsys.readouterr()
    assert killer.killed, "no Ray worker was seen driving an episode"
    assert f"eval worker pid {killer.killed} died (actor process died" in said.out + said.err
    assert "driving it again in a new worker" in said.out + said.err
    lines = (tmp_path / "killed" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the killed attempt wrote nothing; its retry wrote its one line
    assert _outcomes(tmp_path / "killed") == _outcomes(tmp_path / "local")
    assert _results(tmp_path / "killed") == _results(tmp_path / "local")



@pytest.mark.slow  # two evaluations of two episodes and two servers: about 1.5 minutes here
def test_a_pool_of_servers_is_shared_one_per_ray_worker(ray_cluster, tmp_path):
    """`ray.servers`: each Ray worker drives the CARLA-compatible server at its host:port (the embedded simulator
    started here as a server of its own, as a CARLA server would be) instead of starting one."""
    suite = _suite(tmp_path, [0, 1])
    servers = [launch("straight"), launch("straight")]
    try:
        assert _eval(tmp_path / "local", suite) == 0
        hosts = ",".join(f"{s.host}:{s.port}" for s in servers)
        assert _eval(tmp_path / "servers", suite, "executor=ray", "workers=4", f"ray.servers=[{hosts}]") == 0
        # the servers ticked the episodes (a worker that started its own simulator would leave them near frame 0);
        # asked from a subprocess, as tests/server does, so that a LibCarla abort cannot take pytest with it
        ask = ("import carla, sys; c = carla.Client(sys.argv[1], int(sys.argv[2])); c.set_timeout(20.0); "
               "print(c.get_world().get_snapshot().frame)")
        frames = [int(subprocess.run([sys.executable, "-c", ask, s.host, str(s.port)], capture_output=True, text=True,
                                     check=True, timeout=120).stdout) for s in servers]
    finally:
        for server in servers:
            server.stop()
    steps = [json.loads(line)["steps"] for line in (tmp_path / "servers" / "episodes.jsonl").read_text().splitlines()]
    assert sum(frames) >= sum(steps), (frames, steps)
    assert _outcomes(tmp_path / "servers") == _outcomes(tmp_path / "local")
    assert _results(tmp_path / "servers") == _results(tmp_path / "local")


# What differs between two collections of the same episodes: the file's checksum and size (its metadata holds
# the creation time and the simulator's ports) and the commit time. Everything else is the same.
NOT_CONTENT = ("sha256", "bytes", "committed")
LABELS = ["command", "target_point", "control", "expert", "waypoints", "target_speed", "brake", "perturbed"]


@pytest.mark.slow  # two collections of two 30-step episodes: about a minute and a half here
def test_collect_on_ray_writes_the_manifest_of_a_local_collection(ray_cluster, tmp_path):
    args = ["collect", f"suite={SHORT_SUITE}", "limit=2", "max_steps=30", "noise.share=1.0", *SMALL_RIG]
    assert main([*args, f"out={tmp_path / 'local'}"]) == 0
    assert main([*args, f"out={tmp_path / 'ray'}", "executor=ray", "workers=2"]) == 0
    local, on_ray = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "ray")
    assert sorted(on_ray.entries) == sorted(local.entries) == ["short_drive-s0", "short_drive-s1"]
    assert on_ray.problems == local.problems == []
    for key, entry in local.entries.items():
        assert {k: v for k, v in on_ray.entries[key].items() if k not in NOT_CONTENT} == \
               {k: v for k, v in entry.items() if k not in NOT_CONTENT}
        theirs = EpisodeReader(tmp_path / "ray", on_ray.entries[key]).read(columns=LABELS).to_pylist()
        assert theirs == EpisodeReader(tmp_path / "local", entry).read(columns=LABELS).to_pylist(), key
