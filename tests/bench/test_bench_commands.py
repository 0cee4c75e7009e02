"""The benchmark commands run end to end and write their figures (numbers are not judged here: benchmarks
print them; timed assertions would flake on a shared machine).

The default run takes each in a quick mode. `python -m pytest -m bench -s tests/bench` runs the full
benchmarks, as `slimdrive bench ...` with the configs' defaults, and prints their figures (minutes).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FULL_TIMEOUT = 1800  # s: a full benchmark on a loaded 2-core machine


def _bench(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[dict, str]:
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", *args, f"out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text()), done.stdout


def test_bench_server_quick(tmp_path):
    figures, printed = _bench(tmp_path, "server", "ticks=40", "vehicles=10", "walkers=10")
    assert figures["ticks_per_second"] > 0 and figures["vehicles"] == 10
    assert "synchronous ticks/s through the stock carla client" in printed


def test_bench_sim_quick(tmp_path):
    figures, printed = _bench(tmp_path, "sim", "steps=3", "warmup=1", "vehicles=4", "walkers=3", "rig=front1",
                              "rig.image_size_x=64", "rig.image_size_y=32")
    assert figures["cameras"] == 1 and figures["image"] == "64x32" and figures["moving_actors"] == 7
    assert figures["steps_per_s"] > 0 and set(figures["ms_per_step"]) == {"total", "physics", "render", "transport"}
    assert "steps/s through the stock client" in printed


def test_bench_env_quick(tmp_path):
    figures, printed = _bench(tmp_path, "env", "steps=5", "warmup=1", "rig=front1")
    assert figures["raw_client_steps_per_s"] > 0 and figures["env_steps_per_s"] > 0
    assert "the env costs" in printed


def test_bench_policy_quick(tmp_path):
    figures, printed = _bench(tmp_path, "policy", "quick=true")
    assert figures["mode"] == "quick" and set(figures["variants"]) == {"packed", "fake_quant", "fp32", "bf16"}
    for variant in figures["variants"].values():
        assert 0 < variant["latency_ms_p50"] <= variant["latency_ms_p99"] and variant["network_ms_p50"] > 0
    assert "Horowitz" in figures["energy"]["source"]
    assert figures["goals"]["fp32_vs_packed_bytes_disk"] >= 10  # the size goal holds by construction
    assert figures["goals"]["fp32_vs_packed_bytes_resident"] >= 10
    assert "goals:" in printed


def test_bench_train_quick(tmp_path):
    figures, printed = _bench(tmp_path, "train", "quick=true")
    assert figures["mode"] == "quick" and figures["batch_size"] == 64 and figures["model"]["name"] == "bitnet_small"
    assert set(figures["training_samples_per_s"]) == {"ternary", "none"}
    assert all(rate > 0 for rate in figures["training_samples_per_s"].values())
    assert set(figures["reading"]["samples_per_s"]) == {"frame_cache", "jpeg"} and figures["reading"]["workers"] == 2
    assert all(rate > 0 for rate in figures["reading"]["samples_per_s"].values())
    assert set(figures["training_loop_samples_per_s"]) == {"frame_cache", "jpeg"}
    assert all(rate > 0 for rate in figures["training_loop_samples_per_s"].values())
    assert figures["runtime"]["recorded_cameras"] == "64x128"
    assert set(figures["ratios"]) == {"ternary_vs_fp_training", "reading_vs_ternary_training",
                                      "loop_frame_cache_vs_jpeg", "packed_vs_fp32_latency"}
    assert "samples/s" in printed and "packed/fp32 latency" in printed


def test_bench_rejects_an_unknown_override(tmp_path):
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", "server", "tick=5"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bad override" in done.stderr and "conf/bench/server.yaml" in done.stderr


# ------------------------------------------------------------------------ full benchmarks (-m bench)
@pytest.mark.bench
@pytest.mark.timeout(FULL_TIMEOUT)
def test_full_bench_server(tmp_path):
    figures, printed = _bench(tmp_path, "server", timeout=FULL_TIMEOUT)
    print(printed)
    assert figures["vehicles"] == 50 and figures["walkers"] == 50 and figures["ticks_per_second"] > 0


@pytest.mark.bench
@pytest.mark.timeout(FULL_TIMEOUT)
def test_full_bench_sim(tmp_path):
    figures, printed = _bench(tmp_path, "sim", timeout=FULL_TIMEOUT)
    print(printed)
    assert figures["rig"] == "tesla8" and figures["moving_actors"] == 30 and figures["steps_per_s"] > 0


@pytest.mark.bench
@pytest.mark.timeout(FULL_TIMEOUT)
def test_full_bench_env(tmp_path):
    figures, printed = _bench(tmp_path, "env", timeout=FULL_TIMEOUT)
    print(printed)
    assert figures["rig"] == "tesla8" and figures["env_steps_per_s"] > 0 and figures["raw_client_steps_per_s"] > 0


@pytest.mark.bench
@pytest.mark.timeout(FULL_TIMEOUT)
def test_full_bench_train(tmp_path):
    figures, printed = _bench(tmp_path, "train", timeout=FULL_TIMEOUT)
    print(printed)
    assert figures["mode"] == "full" and figures["training_steps_timed"] == 60


@pytest.mark.bench
@pytest.mark.timeout(FULL_TIMEOUT)
def test_full_bench_policy(tmp_path):
    figures, printed = _bench(tmp_path, "policy", timeout=FULL_TIMEOUT)
    print(printed)
    assert figures["mode"] == "full" and set(figures["variants"]) == {"packed", "fake_quant", "fp32", "bf16"}
