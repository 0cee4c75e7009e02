"""`ruff check .` passes with the rule set of `[tool.ruff]` in pyproject.toml, and the repository stands alone:
no file points at notes kept outside it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    from ruff.__main__ import find_ruff_bin  # the `ruff` of the test extras

    result = subprocess.run([find_ruff_bin(), "check", ".", "--no-cache", "--output-format", "concise"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"ruff check . found:\n{result.stdout}{result.stderr}"


def test_ruff_checks_the_stated_rules():
    from ruff.__main__ import find_ruff_bin

    bad = "import os, sys\nx = ( 1 )\nunused = lambda: undefined_name\n"
    result = subprocess.run([find_ruff_bin(), "check", "--no-cache", "--stdin-filename", "sample.py", "-"],
                            cwd=ROOT, input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "F821" in result.stdout and "E401" in result.stdout, result.stdout


# Notes that once lay beside the repository: a reference to them leaves a reader with nothing to open.
OUTSIDE = re.compile(r"\.\./shared|shared/docs|ARCHITECTURE\.md|field-facts|learning-facts|carla-wire-protocol")


def test_no_file_points_outside_the_repository():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    here = Path(__file__).resolve()
    found = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".toml", ".c", ".cpp", ".txt") or path == here:
            continue
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "state the fact and its public source instead:\n" + "\n".join(found)
