"""`slimdrive collect` through the real embedded simulator (docs/data.md): two short episodes with two workers,
what the log holds against what the env rendered and the expert did, noise flags, a collection killed by its pid
that resumes, a dying worker that is replaced, and damaged files refused with their name.

The episodes are `scenarios/short.yaml`'s (a straight drive behind a slower car) with eight 64x32 cameras, cut
at `MAX_STEPS`, every one noisy (`noise.share=1`) so that perturbed and clean steps both appear."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from omegaconf import OmegaConf

import slimdrive
from envs.provenance import sha256_file
from envs.rollout import Observer, Step
from training.collect import FAILURES, Collector
from training.logs.reader import DrivingLogDataset, EpisodeReader, EpisodeRefused, verify_dir
from training.logs.schema import DOCUMENTED_METADATA_KEYS, SCHEMA_VERSION
from training.logs.writer import MANIFEST, read_manifest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MAX_STEPS = 60
NOISY = ["noise.share=1.0", "noise.every_s=1.0"]  # every episode perturbed, a ramp every second or so
# mean absolute error per pixel and channel (0..255) of a quality-90 JPEG: about 4.1 measured on these 64x32
# frames (4:2:0 chroma subsampling costs most on small, detailed images)
JPEG_TOLERANCE = 6.0


def _collect_args(short_suite: Path, small_rig: list[str], out: Path, *extra: str) -> list[str]:
    return ["collect", f"suite={short_suite}", f"out={out}", "limit=2", f"max_steps={MAX_STEPS}", *small_rig,
            *NOISY, *extra]


@pytest.fixture(scope="module")
def collected(tmp_path_factory, short_suite, small_rig) -> Path:
    out = tmp_path_factory.mktemp("collect") / "data"
    assert slimdrive.main(_collect_args(short_suite, small_rig, out, "workers=2")) == 0
    return out


class Keep(Observer):
    """What the env showed and the agent and expert did, step by step."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def on_step(self, env, step: Step) -> None:
        self.steps.append(step)


def test_manifest_checksums_and_schema(collected, short_suite):
    manifest = read_manifest(collected)
    assert sorted(manifest.entries) == ["short_drive-s0", "short_drive-s1"] and manifest.problems == []
    scenario_sha = sha256_file(short_suite.parent / "short_drive.yaml")
    for key, entry in manifest.entries.items():
        path = collected / entry["file"]
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
        assert entry["schema_version"] == SCHEMA_VERSION and entry["scenario"] == "short_drive"
        reader = EpisodeReader(collected, entry)
        assert len(reader) == entry["steps"] == MAX_STEPS == reader.file.metadata.num_rows
        meta, layout = reader.metadata, reader.layout
        assert set(meta) <= set(DOCUMENTED_METADATA_KEYS) and meta["schema_version"] == SCHEMA_VERSION
        assert meta["scenario_sha256"] == scenario_sha and meta["seed"] == int(key[-1]) and meta["map"] == "straight"
        assert meta["agent"] == "expert" and meta["noise"]["share"] == 1.0 and meta["weather"]["name"] == "ClearNoon"
        assert meta["ego_blueprint"].startswith("vehicle.") and "embedded" in meta["simulator"]
        assert [c["name"] for c in meta["rig"]["cameras"]] == layout["camera_names"]
        assert (layout["cameras"], layout["height"], layout["width"]) == (8, 32, 64)
        table = reader.read(columns=["frame", "actors", "light_states"]).to_pylist()
        assert all(b["frame"] == a["frame"] + 1 for a, b in zip(table, table[1:]))  # one row per tick
        assert {a["type_id"] for a in table[0]["actors"]} == {"vehicle.tesla.model3"}  # the lead car
        assert all(len(row["light_states"]) == len(meta["traffic_lights"]) for row in table)
    report = verify_dir(collected)
    assert len(report.ok) == 2 and report.failures == [] and report.warnings == []


def test_images_and_labels_are_what_the_env_showed_and_the_expert_did(collected, short_suite, small_rig, tmp_path):
    """Episode 1 again in this process with an observer: the two-worker log holds the frames the env rendered
    (within JPEG tolerance) and exactly the applied controls, expert labels, plans and noise flags (an episode is
    decided by its seed alone, whichever process drives it)."""
    args = _collect_args(short_suite, small_rig, tmp_path / "again")[1:]
    cfg = OmegaConf.merge(slimdrive.load_config("collect", args), {"out": str(tmp_path / "again")})
    keep = Keep()
    collector = Collector(cfg)
    try:
        record = collector.collect(1, observers=[keep])
    finally:
        collector.close()
    assert record["log"]["key"] == "short_drive-s1" and len(keep.steps) == MAX_STEPS
    reader = EpisodeReader(collected, read_manifest(collected).entries["short_drive-s1"])
    again = EpisodeReader(tmp_path / "again", record["log"])
    labels = reader.labels()
    for i, step in enumerate(keep.steps):
        assert reader.jpeg(i) == again.jpeg(i), f"step {i}: a worker's frame differs from this process's"
        error = np.abs(reader.cameras(i).astype(np.int16) - step.obs["cameras"]).mean()
        assert error < JPEG_TOLERANCE, f"step {i}: JPEG round trip mean abs error {error:.2f}"
        np.testing.assert_array_equal(labels["control"][i], np.float32(step.action))
        np.testing.assert_array_equal(labels["expert"][i], np.float32(step.label))
        assert labels["perturbed"][i] == step.perturbed
        np.testing.assert_allclose(labels["waypoints"][i].reshape(-1, 2), step.plan.waypoints, atol=1e-5)
        assert labels["target_speed"][i] == np.float32(step.plan.target_speed) and labels["brake"][i] == step.plan.brake
        assert labels["command"][i] == step.obs["command"]
        np.testing.assert_allclose(labels["speed"][i], step.obs["speed"][0], atol=1e-4)
        np.testing.assert_allclose(labels["target_point"][i], step.obs["target_point"], atol=1e-6)


def test_noise_is_flagged_and_the_label_stays_the_experts(collected):
    """agent=expert: where nothing was perturbed the applied control is the expert's label; perturbed steps
    (triangular ramps, Codevilla et al. 2018) are flagged and applied something else."""
    for entry in read_manifest(collected).entries.values():
        labels = EpisodeReader(collected, entry).labels()
        perturbed = labels["perturbed"]
        assert 0 < perturbed.sum() < len(perturbed), entry["key"]
        np.testing.assert_array_equal(labels["control"][~perturbed], labels["expert"][~perturbed])
        assert np.any(np.abs(labels["control"][perturbed] - labels["expert"][perturbed]).max(axis=1) > 0.01)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "envs.server" in _cmdline(p)]
        time.sleep(0.1)
    return alive


def _run_collect(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimdrive", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=240, env=env)


def test_killed_collection_resumes_and_loses_only_the_episode_in_progress(short_suite, small_rig, tmp_path):
    """A real `slimdrive collect` process, SIGKILLed by its pid while it drives its second episode: the first stays
    committed, byte for byte; the rerun removes what the killed one left, skips the first and collects the rest."""
    out = tmp_path / "data"
    args = ["collect", f"suite={short_suite}", f"out={out}", "limit=3", *small_rig]
    process = subprocess.Popen([sys.executable, "-m", "slimdrive", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / MANIFEST).exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        time.sleep(0.5)  # into the next episode (each is about 140 steps: seconds on this machine)
        assert process.poll() is None, "the collection ended before it could be killed mid-episode"
        servers = [p for p in _children(process.pid) if "envs.server" in _cmdline(p)]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    outlived = _gone(servers, 10.0)
    for pid in outlived:  # stopped here, not left behind, before the test fails
        os.kill(pid, signal.SIGKILL)
    assert servers and outlived == [], "the killed collector's simulator outlived it"
    keys = ["short_drive-s0", "short_drive-s1", "short_drive-s2"]  # collected in this order (by seed)
    committed = dict(read_manifest(out).entries)
    finished = len(committed)
    assert 1 <= finished < 3 and sorted(committed) == keys[:finished], "the finished episodes, and only they"

    done = _run_collect(args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming: {finished} episodes already committed" in done.stdout
    manifest = read_manifest(out)
    assert sorted(manifest.entries) == keys
    for key, entry in committed.items():
        assert manifest.entries[key] == entry and sha256_file(out / entry["file"]) == entry["sha256"]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *(e["file"] for e in manifest.entries.values())])
    report = verify_dir(out)
    assert len(report.ok) == 3 and report.failures == [] and report.warnings == []


def test_a_dying_worker_is_replaced_and_its_episode_collected_again(short_suite, small_rig, tmp_path):
    """Workers that die mid-episode as a LibCarla abort kills them (`crashing_agent.CrashingExpert`): an episode
    whose worker died once is collected by a new worker; one whose worker always dies is given up after
    `retries` more attempts, reported, and collected by a rerun; the other worker's episodes are untouched."""
    out = tmp_path / "data"
    args = ["collect", f"suite={short_suite}", f"out={out}", "limit=3", "max_steps=30", "workers=2", "retries=1",
            "agent=crashing_agent:CrashingExpert", *small_rig]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]),
               SLIMDRIVE_TEST_CRASH_ONCE=f"short_drive-s1:{tmp_path / 'crashed-once'}",
               SLIMDRIVE_TEST_CRASH_ALWAYS="short_drive-s2")
    done = _run_collect(args, env)
    assert done.returncode == 1, done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "died (exit code 134) while collecting short_drive-s1 (suite episode 1); collecting it again" in said
    assert said.count("while collecting short_drive-s2") == 2 and "giving it up after 2 attempts" in said
    assert "not committed (rerun to collect it): short_drive-s2: its worker died 2 times" in done.stdout
    manifest = read_manifest(out)
    assert sorted(manifest.entries) == ["short_drive-s0", "short_drive-s1"]
    before = dict(manifest.entries)

    del env["SLIMDRIVE_TEST_CRASH_ALWAYS"]
    done = _run_collect(args, env)
    assert done.returncode == 0 and "resuming: 2 episodes already committed" in done.stdout, done.stderr[-2000:]
    manifest = read_manifest(out)
    assert sorted(manifest.entries) == ["short_drive-s0", "short_drive-s1", "short_drive-s2"]
    assert all(manifest.entries[k] == before[k] for k in before)
    assert len(verify_dir(out).ok) == 3


class KillServerOnce(Observer):
    """Kills the env's embedded simulator by its pid at step `at`, once: a server that dies mid-episode."""

    def __init__(self, at: int) -> None:
        self.at, self.killed = at, None

    def on_step(self, env, step: Step) -> None:
        if self.killed is None and step.index == self.at:
            self.killed = env.unwrapped._server.pid
            os.kill(self.killed, signal.SIGKILL)


def test_a_simulator_killed_mid_episode_is_restarted_and_the_episode_collected_again(short_suite, small_rig,
                                                                                      tmp_path):
    """A simulator failure is not the agent's: recorded with its kind and reason in failures.jsonl and the
    record, the simulator restarted, the episode driven again and committed whole."""
    out = tmp_path / "data"
    args = _collect_args(short_suite, small_rig, out, "max_steps=30")[1:]
    cfg = OmegaConf.merge(slimdrive.load_config("collect", args), {"out": str(out)})
    kill = KillServerOnce(at=10)
    collector = Collector(cfg)
    try:
        record = collector.collect(0, observers=[kill])
        assert collector.env.unwrapped._server.pid != kill.killed  # a fresh simulator drove the second attempt
    finally:
        collector.close()
    assert not psutil.pid_exists(kill.killed)
    assert record["log"]["key"] == "short_drive-s0" and record["log"]["steps"] == 30 and record["failure"] is None
    (failure,) = record["simulator_failures"]
    assert "embedded simulator" in failure and "failed" in failure
    (line,) = [json.loads(text) for text in (out / FAILURES).read_text().splitlines()]
    assert line["episode"] == "short_drive-s0" and line["kind"] == "simulator" and line["reason"] == failure
    assert sorted(read_manifest(out).entries) == ["short_drive-s0"]


def test_an_agent_failure_is_recorded_as_the_agents_and_not_retried(short_suite, small_rig, tmp_path, capsys):
    out = tmp_path / "data"
    args = _collect_args(short_suite, small_rig, out, "max_steps=30", "agent=crashing_agent:RaisingExpert")
    assert slimdrive.main(args) == 1
    said = capsys.readouterr().out
    assert "slimdrive collect: agent=crashing_agent:RaisingExpert raised in act(): ValueError" in said
    assert "in episode short_drive#0" in said
    assert "ValueError: a bug in the agent at step 10" in said and "nothing retried" in said
    (line,) = [json.loads(text) for text in (out / FAILURES).read_text().splitlines()]
    assert line["episode"] == "short_drive-s0" and line["kind"] == "agent" and "a bug in the agent" in line["reason"]
    assert not read_manifest(out).entries


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_episode_is_refused_naming_the_file(collected, tmp_path, capsys, damage):
    root = tmp_path / "data"
    shutil.copytree(collected, root)
    entry = read_manifest(root).entries["short_drive-s1"]
    path = root / entry["file"]
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert slimdrive.main(["dataset", "verify", f"data={root}"]) == 1
    printed = capsys.readouterr()
    assert str(path) in printed.err and "1 episode file(s) intact, 1 failed" in printed.out
    for checksum in (True, False) if damage == "truncated" else (True,):
        with pytest.raises(EpisodeRefused) as refused:
            DrivingLogDataset(root, "all", checksum=checksum)
        message = str(refused.value)
        assert str(path) in message and "slimdrive dataset verify" in message and "rerun collect" in message


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_agent_that_cannot_be_made_is_one_line_whatever_the_workers(short_suite, small_rig, tmp_path, capsys,
                                                                         workers):
    """The driver makes the agent once before any simulator or worker starts: an unknown agent is one line
    naming it and the config file (exit 2), with workers=2 as with 1, and nothing is recorded."""
    out = tmp_path / "data"
    assert slimdrive.main(_collect_args(short_suite, small_rig, out, "agent=json:Nope", f"workers={workers}")) == 2
    said = capsys.readouterr().out
    assert "slimdrive collect: agent=json:Nope" in said and "cannot import 'Nope' from module 'json'" in said
    assert "(conf/collect.yaml)" in said and "Traceback" not in said
    assert not read_manifest(out).entries


def test_an_agent_failure_in_a_worker_is_one_line_and_recorded(short_suite, small_rig, tmp_path, capsys):
    """An agent raising inside a pool worker comes back by its kind: one line naming the agent, the episode and
    the error (exit 1), as with workers=1; the worker recorded it in failures.jsonl."""
    out = tmp_path / "data"
    args = _collect_args(short_suite, small_rig, out, "max_steps=30", "agent=crashing_agent:RaisingExpert",
                         "workers=2")
    assert slimdrive.main(args) == 1
    said = capsys.readouterr().out
    assert "slimdrive collect: agent=crashing_agent:RaisingExpert raised in act(): ValueError: a bug in the agent" \
        in said and "in episode short_drive#" in said and "nothing retried" in said and "Traceback" not in said
    lines = [json.loads(text) for text in (out / FAILURES).read_text().splitlines()]
    assert lines and all(line["kind"] == "agent" for line in lines)
