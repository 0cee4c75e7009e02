"""The benchmark commands run end to end in a quick mode and write their figures (numbers are not judged
here: benchmarks print them; timed assertions would flake on a shared machine)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", *args, f"out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {out}" in done.stdout
    return json.loads(out.read_text()), done.stdout


def test_bench_server_quick(tmp_path):
    figures, printed = _bench(tmp_path, "server", "ticks=40", "vehicles=10", "walkers=10")
    assert figures["ticks_per_second"] > 0 and figures["vehicles"] == 10
    assert "synchronous ticks/s through the stock carla client" in printed


def test_bench_env_quick(tmp_path):
    figures, printed = _bench(tmp_path, "env", "steps=5", "warmup=1", "rig=front1")
    assert figures["raw_client_steps_per_s"] > 0 and figures["env_steps_per_s"] > 0
    assert "the env costs" in printed


def test_bench_rejects_an_unknown_override(tmp_path):
    done = subprocess.run([sys.executable, "-m", "slimdrive", "bench", "server", "tick=5"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bad override" in done.stderr and "conf/bench/server.yaml" in done.stderr

