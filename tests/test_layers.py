"""The declared layers (docs/architecture.md, `[tool.importlinter]` in pyproject.toml) hold, and would catch a
forbidden import: the same contracts run on a copy of the packages in which the simulator imports an agent."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "bench", "control", "envs", "evaluation", "native", "scenarios", "training")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's command, beside python
    return subprocess.run([str(lint_imports), str(cwd / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_the_layers_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_a_forbidden_import_breaks_the_layers(tmp_path):
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    geometry = tmp_path / "envs" / "server" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\nimport agent.policy  # the simulator must know nothing of agents\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "- envs.server.geometry -> agent.policy" in result.stdout
