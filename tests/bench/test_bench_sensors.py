"""`slimdrive bench sensors` in a quick mode: the command composes conf/bench/sensors.yaml, times the four
ray-cast sensors on a car in bench sim's scene, prints one line of figures per sensor and says where it wrote
them (figures are not judged: timings on a shared machine are the benchmark's to print, not a test's to assert)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SENSORS = ("sensor.lidar.ray_cast", "sensor.lidar.ray_cast_semantic", "sensor.other.radar", "sensor.other.obstacle")


def test_bench_sensors_quick(tmp_path):
    out = tmp_path / "sensors.json"
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", "sensors", "steps=2", "warmup=0",
                           "vehicles=2", "walkers=2", f"out={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["map"] == "town" and figures["steps"] == 2 and figures["range"] == 100.0
    assert set(figures["sensors"]) == set(SENSORS)
    for name in SENSORS:
        assert figures["sensors"][name]["ms_per_tick"] > 0 and figures["sensors"][name]["cpu_ms_per_tick"] >= 0, name
        assert name in done.stdout and "ms/tick" in done.stdout
    # the LiDARs see the town (a point cloud every tick); a radar or obstacle tick may well see nothing
    assert figures["sensors"]["sensor.lidar.ray_cast"]["bytes_per_tick"] > 0
    assert figures["sensors"]["sensor.lidar.ray_cast_semantic"]["bytes_per_tick"] > 0
    assert figures["scene_boxes"] > 0 and "2 ticks at 20 Hz" in done.stdout
    assert done.stdout.rstrip().endswith(f"wrote {out}")


def test_bench_sensors_rejects_an_unknown_override():
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", "sensors", "tick=5"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bad override" in done.stderr and "conf/bench/sensors.yaml" in done.stderr
