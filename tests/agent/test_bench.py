"""`slimdrive bench policy quick=true` runs end to end and writes its JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_policy_quick_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "slimdrive", "bench", "policy", "quick=true", f"out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}" in run.stdout
    result = json.loads(out.read_text())
    assert result["mode"] == "quick"
    assert set(result["variants"]) == {"packed", "fake_quant", "fp32", "bf16"}
    for variant in result["variants"].values():
        assert 0 < variant["latency_ms_p50"] <= variant["latency_ms_p99"]
    assert "Horowitz" in result["energy"]["source"]
    assert result["goals"]["fp32_vs_packed_bytes_disk"] >= 10  # the size goal holds by construction
    assert result["goals"]["fp32_vs_packed_bytes_resident"] >= 10
