"""`slimdrive train` on a real collected dataset: the loss falls, a killed run resumes to the same weights,
bad checkpoints are refused by name, the outputs (TensorBoard, packed export) are written and usable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import slimdrive
from agent.registry import make_agent

REPO = Path(__file__).resolve().parents[2]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A tiny ternary policy on the four short episodes: three train, one held out (split_seed=2)."""
    return ["train", f"data={data}", f"out={out}", "model=bitnet_tiny", "epochs=6", "samples_per_epoch=512",
            "batch_size=32", "workers=0", "threads=1", "val_fraction=0.34", "split_seed=2", "val_samples=200",
            "log_every=4", "checkpoint_every=7", *extra]


@pytest.fixture(scope="module")
def trained(short_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert slimdrive.main(train_args(short_dataset, out)) == 0
    return out


def test_validation_loss_falls_and_outputs_are_written(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    first, last = summary["val"][0], summary["val"][-1]
    assert first["step"] == 0 and summary["steps"] == 6 * 16
    assert last["total"] < 0.5 * first["total"], summary["val"]
    assert last["waypoint_error_m"] < first["waypoint_error_m"]
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    assert "model" in (trained / "config.yaml").read_text()
    # the packed export is a real agent: the registry loads it and it answers an observation
    agent = make_agent(str(trained / "policy.safetensors"), env=None)
    footprint = agent.footprint()
    assert footprint.ternary_parameters > 0 and not footprint.privileged


def test_killed_run_resumes_to_the_uninterrupted_weights(short_dataset, trained, tmp_path):
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "slimdrive", *train_args(short_dataset, out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = out / "checkpoint" / "state.json"
    deadline = time.monotonic() + 240
    try:
        while not state_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    state = json.loads(state_file.read_text())
    assert 0 < state["step"] < 6 * 16, "the run must be killed before it finished"
    assert not (out / "model.safetensors").exists()

    assert slimdrive.main(train_args(short_dataset, out)) == 0
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(trained / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert torch.equal(resumed[name], uninterrupted[name]), name


def test_altered_or_mismatched_checkpoints_are_refused_by_name(short_dataset, trained, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    for file in (trained / "checkpoint").iterdir():
        (run / "checkpoint" / file.name).write_bytes(file.read_bytes())
    more = "epochs=7"  # more work left, so the run resumes from the checkpoint

    optimizer = run / "checkpoint" / "optimizer.safetensors"
    data = bytearray(optimizer.read_bytes())
    data[-5] ^= 0xFF
    optimizer.write_bytes(bytes(data))
    assert slimdrive.main(train_args(short_dataset, run, more)) == 2
    assert f"{optimizer}: missing or altered" in capsys.readouterr().out

    model = run / "checkpoint" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    assert slimdrive.main(train_args(short_dataset, run, more)) == 2
    assert str(model) in capsys.readouterr().out

    (run / "checkpoint" / "model.safetensors").write_bytes((trained / "checkpoint" / "model.safetensors").read_bytes())
    assert slimdrive.main(train_args(short_dataset, run, more, "model.net.dim=64")) == 2
    printed = capsys.readouterr().out
    assert str(model) in printed and "use another out=" in printed


def test_wrong_data_folder_is_named(tmp_path, capsys):
    assert slimdrive.main(["train", f"data={tmp_path / 'nowhere'}", f"out={tmp_path / 'run'}",
                           "model=bitnet_tiny"]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().out
