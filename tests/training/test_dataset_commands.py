"""`slimdrive dataset info|view` and `slimdrive bench data` run end to end and write their files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2

import slimdrive
from training.logs import synthetic

REPO = Path(__file__).resolve().parents[2]


def test_info_and_view(tmp_path, capsys):
    synthetic.write_dataset(tmp_path, episodes=3, steps_per_episode=100)
    assert slimdrive.main(["dataset", "info", f"data={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'dataset_info.png'}" in printed and "3 episodes, 300 steps" in printed
    assert "LANEFOLLOW" in printed and "synthetic_a" in printed
    figures = json.loads((tmp_path / "dataset_info.json").read_text())
    assert figures["steps"] == 300 and 0 < figures["brake_fraction"] < 1 and figures["km"] > 0
    assert cv2.imread(str(tmp_path / "dataset_info.png")) is not None

    assert slimdrive.main(["dataset", "view", f"data={tmp_path}", "episode=synthetic_b-s1", "max_frames=12"]) == 0
    video = tmp_path / "view_synthetic_b-s1.mp4"
    assert f"wrote {video}" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 12
    assert slimdrive.main(["dataset", "view", f"data={tmp_path}", "episode=nope"]) == 1
    capsys.readouterr()
    unwritable = tmp_path / "no such folder" / "view.mp4"
    assert slimdrive.main(["dataset", "view", f"data={tmp_path}", "episode=synthetic_b-s1", "max_frames=2",
                           f"out={unwritable}"]) == 1
    assert f"OpenCV cannot write {unwritable}" in capsys.readouterr().err


def test_bench_data_quick(tmp_path):
    """`slimdrive bench data` in a quick mode: one short expert episode with eight 64x32 cameras."""
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", "data", "collect.limit=1",
                           "collect.max_steps=20",
                           "collect.env.image_size_x=64", "collect.env.image_size_y=32", "samples=64",
                           "batch_size=16", f"out={out}"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert 0 < figures["storage"]["bytes_per_step"] < 40 * 1024
    assert set(figures["reading"]["samples_per_s"]) == {"0", "2"}
    assert all(rate > 0 for rate in figures["reading"]["samples_per_s"].values())
    assert "KB/step" in done.stdout and f"wrote {out}" in done.stdout
