"""One `slimdrive dagger` round on the real simulator: the policy drives, the expert labels what it visited,
the labelled states join the data, the policy is fine-tuned and scored on a val suite; a rerun resumes."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

import slimdrive
from training.logs.writer import read_manifest


def test_one_round_adds_expert_labelled_states_and_retrains(short_dataset, short_suite, small_rig, tmp_path, capsys):
    tiny = ["model=bitnet_tiny", "batch_size=32", "workers=0", "threads=1", "val_fraction=0.34", "split_seed=2",
            "val_samples=100"]
    base = tmp_path / "bc"
    assert slimdrive.main(["train", f"data={short_dataset}", f"out={base}", "epochs=1", "samples_per_epoch=256",
                           *tiny]) == 0
    out = tmp_path / "dagger"
    args = ["dagger", f"base={base}", f"data={short_dataset}", f"out={out}", "rounds=1", f"suite={short_suite}",
            "episodes_per_round=2", f"val_suite={short_suite}", "val_episodes=1", "collect_workers=1",
            "round_samples=256", *tiny, *small_rig]
    assert slimdrive.main(args) == 0

    round_data = out / "round-1" / "data"
    entries = read_manifest(round_data).entries
    assert len(entries) == 2
    for entry in entries.values():
        table = pq.read_table(round_data / entry["file"], columns=["control", "expert"])
        metadata = pq.read_schema(round_data / entry["file"]).metadata
        assert b"policy.safetensors" in metadata[b"slimdrive.episode"], "the policy drove"
        assert table.num_rows > 0 and table.column("expert").null_count == 0, "the expert labelled every step"

    train_run = out / "round-1" / "train"
    config = (train_run / "config.yaml").read_text()
    assert str(round_data) in config and str(short_dataset) in config, "the round trains on all data so far"
    assert (train_run / "policy.safetensors").is_file()
    curve = json.loads((out / "dagger.json").read_text())
    assert [point["round"] for point in curve] == [0, 1]
    assert all(0.0 <= point["driving_score"] <= 100.0 for point in curve)
    assert (out / "round-1" / "val" / "results.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert f"wrote {out / 'dagger.json'}" in capsys.readouterr().out

    # everything is done: a rerun resumes each step and changes nothing
    before = load_file(train_run / "model.safetensors")
    assert slimdrive.main(args) == 0
    after = load_file(train_run / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert json.loads((out / "dagger.json").read_text()) == curve
