"""The recorded-log format: writer, commit protocol, checks, reader and dataset (docs/data.md), on real files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.provenance import sha256_file
from training.logs import synthetic
from training.logs.reader import (
    DrivingLogDataset,
    EpisodeReader,
    EpisodeRefused,
    balanced_sampler,
    make_loader,
    split_of,
    verify_dir,
)
from training.logs.schema import LogFormatError
from training.logs.writer import (
    MANIFEST,
    EpisodeWriter,
    cleanup_leftovers,
    committed_keys,
    read_manifest,
    write_episode,
)

REPO = Path(__file__).resolve().parents[2]
STEPS = 20


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    synthetic.write_dataset(root, episodes=4, steps_per_episode=STEPS)
    return root


@pytest.fixture
def copy(logs, tmp_path) -> Path:
    root = tmp_path / "logs"
    shutil.copytree(logs, root)
    return root


def test_round_trip(tmp_path):
    steps = list(synthetic.steps(STEPS, seed=5))
    meta = synthetic.metadata("round_trip", 5)
    entry = write_episode(tmp_path, "round_trip-s5", meta, steps)
    path = tmp_path / "round_trip-s5.parquet"
    assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
    assert entry["steps"] == STEPS and entry["scenario"] == "round_trip" and entry["seed"] == 5
    assert read_manifest(tmp_path).entries == {"round_trip-s5": entry}
    reader = EpisodeReader(tmp_path, entry)
    assert reader.metadata == {**meta, "schema_version": 2}
    assert reader.layout["cameras"] == 8 and reader.layout["waypoints_k"] == 4
    labels = reader.labels()
    table = reader.read().to_pylist()
    for i, step in enumerate(steps):
        error = np.abs(reader.cameras(i).astype(int) - step["cameras"]).mean()
        assert error < 5, f"step {i}: JPEG mean abs error {error:.2f}"
        np.testing.assert_allclose(labels["waypoints"][i].reshape(-1, 2), step["waypoints"], atol=1e-5)
        np.testing.assert_allclose(labels["expert"][i], step["expert"], atol=1e-6)
        assert labels["command"][i] == step["command"] and labels["brake"][i] == step["brake"]
        assert table[i]["actors"][0]["type_id"] == step["actors"][0]["type_id"]
        assert json.loads(table[i]["events"]) == step["events"]
    assert reader.cameras(0, (32, 64)).shape == (8, 32, 64, 3)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("field, value, message", [
    ("expert", np.array([0.0, np.nan, 0.0]), "step 3, field 'expert': not finite"),
    ("cameras", np.zeros((8, 64, 120, 3), np.uint8), "step 3, field 'cameras': shape (8, 64, 120, 3)"),
    ("waypoints", np.zeros((5, 2)), "step 3, field 'waypoints': shape (5, 2), expected (4, 2)"),
    ("command", 9, "step 3, field 'command'"),
    ("wheel", 1.0, "step 3: unknown field(s) ['wheel']"),
])
def test_a_bad_step_names_field_and_step(tmp_path, field, value, message):
    writer = EpisodeWriter(tmp_path, "bad", synthetic.metadata())
    for i, step in enumerate(synthetic.steps(4)):
        if i == 3:
            step[field] = value
            with pytest.raises(LogFormatError) as info:
                writer.add(step)
            assert message in str(info.value)
        else:
            writer.add(step)


def test_a_committed_key_is_not_written_twice(logs):
    key = sorted(committed_keys(logs))[0]
    with pytest.raises(FileExistsError, match="delete its manifest line"):
        EpisodeWriter(logs, key, synthetic.metadata())


def test_truncated_file_is_refused_naming_it(copy):
    entry = sorted(read_manifest(copy).entries.values(), key=lambda e: e["key"])[1]
    path = copy / entry["file"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for checksum in (True, False):
        with pytest.raises(EpisodeRefused) as info:
            DrivingLogDataset(copy, "all", checksum=checksum)
        assert str(path) in str(info.value) and "slimdrive dataset verify" in str(info.value)
    # even when the manifest's size is made to agree, the Parquet footer check refuses it
    lines = [json.loads(x) for x in (copy / MANIFEST).read_text().splitlines()]
    for line in lines:
        if line["key"] == entry["key"]:
            line["bytes"] = path.stat().st_size
    (copy / MANIFEST).write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(EpisodeRefused, match="not a readable Parquet file"):
        DrivingLogDataset(copy, "all", checksum=False)


def test_flipped_byte_found_by_verify(copy):
    import slimdrive

    entry = sorted(read_manifest(copy).entries.values(), key=lambda e: e["key"])[2]
    path = copy / entry["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x40
    path.write_bytes(bytes(data))
    report = verify_dir(copy)
    assert len(report.ok) == 3 and len(report.failures) == 1 and str(path) in report.failures[0]
    assert "sha256" in report.failures[0]
    done = subprocess.run([sys.executable, "-m", "slimdrive", "dataset", "verify", f"data={copy}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and str(path) in done.stderr
    assert slimdrive.main(["dataset", "verify", f"data={copy}"]) == 1
    with pytest.raises(EpisodeRefused, match="sha256"):
        DrivingLogDataset(copy, "all")


def test_torn_manifest_line_is_ignored_and_reported(copy):
    before = committed_keys(copy)
    with open(copy / MANIFEST, "ab") as f:
        f.write(b'{"key": "torn-s9", "file": "torn-s9.parq')
    manifest = read_manifest(copy)
    assert set(manifest.entries) == before
    assert len(manifest.problems) == 1 and "torn last line" in manifest.problems[0]
    write_episode(copy, "after-s1", synthetic.metadata("after", 1), synthetic.steps(3))
    manifest = read_manifest(copy)
    assert set(manifest.entries) == before | {"after-s1"} and len(manifest.problems) == 1
    assert len(DrivingLogDataset(copy, "all")) == len(before) * STEPS + 3


_KILLED_WRITER = """
import os, sys
import training.logs.writer as w
from training.logs import synthetic
where = sys.argv[2]
if where == "rename":
    os.replace = lambda *a: os._exit(9)            # killed after the temporary file, before the rename
else:
    w.append_manifest = lambda *a: os._exit(9)     # killed after the rename, before the manifest line
w.write_episode(sys.argv[1], "killed-" + where, synthetic.metadata("killed", 0), synthetic.steps(5))
"""


def test_killed_writer_loses_only_its_episode_and_leftovers_are_cleaned(copy):
    before = committed_keys(copy)
    for where in ("rename", "manifest"):
        done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(copy), where], cwd=REPO, timeout=60)
        assert done.returncode == 9
    assert (copy / "killed-rename.parquet.tmp").exists() and (copy / "killed-manifest.parquet").exists()
    assert committed_keys(copy) == before
    assert len(DrivingLogDataset(copy, "all")) == len(before) * STEPS
    warnings = verify_dir(copy).warnings
    assert any("killed-rename.parquet.tmp" in w and "leftover" in w for w in warnings)
    removed = cleanup_leftovers(copy)
    assert sorted(p.name for p in removed) == ["killed-manifest.parquet", "killed-rename.parquet.tmp"]
    assert cleanup_leftovers(copy) == [] and verify_dir(copy).warnings == []


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_random_access_split_and_missing_episode(copy):
    ds = DrivingLogDataset(copy, "all", image_size=(32, 64))
    assert len(ds) == 4 * STEPS
    item = ds[STEPS + 7]
    assert item["cameras"].shape == (8, 32, 64, 3) and item["cameras"].dtype == torch.uint8
    assert item["speed"].shape == (1,) and item["target_point"].shape == (2,) and item["command"].shape == ()
    assert item["waypoints"].shape == (4, 2) and item["expert"].shape == (3,)
    assert item["brake"].dtype == torch.bool and item["perturbed"].dtype == torch.bool
    assert _same(item, DrivingLogDataset(copy, "all", image_size=(32, 64))[STEPS + 7])  # deterministic
    keys = sorted(committed_keys(copy))
    split = {k: split_of(k, 0.5) for k in keys}
    train, val = (DrivingLogDataset(copy, s, val_fraction=0.5) for s in ("train", "val"))
    assert len(train) + len(val) == len(ds)
    assert [e["key"] for e in train.entries] == [k for k in keys if split[k] == "train"]
    assert [e["key"] for e in val.entries] == [k for k in keys if split[k] == "val"]
    # a removed episode does not shift the others: the index comes from the manifest's keys
    last = ds[len(ds) - 1]
    gone = read_manifest(copy).entries[keys[0]]
    (copy / gone["file"]).unlink()
    (copy / MANIFEST).write_text("".join(line + "\n" for line in (copy / MANIFEST).read_text().splitlines()
                                         if json.loads(line)["key"] != keys[0]))
    fewer = DrivingLogDataset(copy, "all", image_size=(32, 64))
    assert len(fewer) == 3 * STEPS
    last_after = fewer[len(fewer) - 1]
    assert all(torch.equal(last[k], last_after[k]) for k in last if k != "episode")


def test_context_frames_and_stored_size(logs):
    ds = DrivingLogDataset(logs, "all", image_size=None, context_frames=2, context_stride=3)
    item = ds[4]
    assert item["cameras"].shape == (8, 64, 128, 3) and item["context"].shape == (2, 8, 64, 128, 3)
    assert torch.equal(item["context"][1], ds[1]["cameras"])          # row 4 - 3
    assert torch.equal(item["context"][0], ds[0]["cameras"])          # row 4 - 6 clipped at the start


def test_balanced_sampler_is_seeded_and_balances(logs):
    ds = DrivingLogDataset(logs, "all")
    a, b = list(balanced_sampler(ds, seed=3)), list(balanced_sampler(ds, seed=3))
    assert a == b and a != list(balanced_sampler(ds, seed=4))
    draws = np.asarray(list(balanced_sampler(ds, seed=0, num_samples=20000, by=("command",))))
    counts = np.bincount(ds.labels["command"][draws])[1:5]
    assert counts.min() > 0.8 * counts.max(), counts


def test_dataloader_with_two_workers(logs):
    """Spawned workers (make_loader): forked ones deadlocked after other tests had started torch's threads."""
    ds = DrivingLogDataset(logs, "all", image_size=(32, 64))
    batches = list(make_loader(ds, batch_size=16, workers=2))
    assert sum(len(b["cameras"]) for b in batches) == len(ds)
    assert batches[1]["cameras"].shape == (16, 8, 32, 64, 3)
    assert torch.equal(batches[2]["cameras"][5], ds[37]["cameras"])
    assert torch.equal(batches[2]["waypoints"][5], ds[37]["waypoints"])


def test_frame_cache_gives_the_decoded_items_and_follows_a_recollected_episode(copy):
    """The decoded-frame cache (training.logs.frames) serves the same items as decoding the JPEGs, in DataLoader
    workers too; a re-recorded episode gets a new cache file and the old one goes; a cache file of the wrong
    length is refused naming it; a killed build's temporary file is removed by the next build, a live run's is
    left alone."""
    plain = DrivingLogDataset(copy, "all", image_size=(32, 64), context_frames=1, context_stride=2)
    cached = DrivingLogDataset(copy, "all", image_size=(32, 64), context_frames=1, context_stride=2,
                               frame_cache=True, cache_workers=2)
    assert all(_same(plain[i], cached[i]) for i in range(0, len(plain), 7))
    batch = next(iter(make_loader(cached, batch_size=len(cached), workers=2)))
    assert torch.equal(batch["cameras"][STEPS + 3], plain[STEPS + 3]["cameras"])
    files = sorted((copy / ".frames").glob("*.npy"))
    assert [p.name.split(".")[0] for p in files] == [Path(e["file"]).stem for e in cached.entries]

    # the same key recorded again: new sha256, new cache file, the stale one removed
    key = cached.entries[0]["key"]
    gone = read_manifest(copy).entries[key]
    (copy / gone["file"]).unlink()
    (copy / MANIFEST).write_text("".join(line + "\n" for line in (copy / MANIFEST).read_text().splitlines()
                                         if json.loads(line)["key"] != key))
    write_episode(copy, key, synthetic.metadata(key, 99), synthetic.steps(STEPS, seed=99))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (copy / ".frames" / f"leftover.npy.tmp{dead}").write_bytes(b"half")            # a killed build's file
    (copy / ".frames" / f"building.npy.tmp{os.getpid()}").write_bytes(b"running")  # a live run's build
    again = DrivingLogDataset(copy, "all", image_size=(32, 64), frame_cache=True, cache_workers=0)
    assert torch.equal(again[0]["cameras"], DrivingLogDataset(copy, "all", image_size=(32, 64))[0]["cameras"])
    assert len(list((copy / ".frames").glob(f"{Path(gone['file']).stem}.*"))) == 1
    assert [p.name for p in (copy / ".frames").glob("*.tmp*")] == [f"building.npy.tmp{os.getpid()}"]

    wrong = again.frame_paths[1]
    np.save(wrong, np.zeros((3, 8, 32, 64, 3), np.uint8))
    with pytest.raises(LogFormatError, match=str(wrong)):
        DrivingLogDataset(copy, "all", image_size=(32, 64), frame_cache=True, cache_workers=0)[STEPS]
