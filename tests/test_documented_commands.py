"""Every `slimdrive ...` command shown in the README and docs/ names a real command whose overrides compose
against its Hydra config, and every documented command is run (in a quick mode) by some test: a documented
path that nobody runs is how `slimdrive eval agent=policy.safetensors` once came to crash."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import slimdrive

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every `slimdrive` line inside the fenced code blocks of the README and docs/."""
    found = []
    for doc in DOCS:
        fenced = False
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
                continue
            command = line.split("#", 1)[0].strip()
            for part in re.split(r"&&|;", command):
                part = part.strip()
                if fenced and part.startswith("slimdrive "):
                    found.append((f"{doc.relative_to(REPO)}:{number}", shlex.split(part)[1:]))
                elif fenced and part.startswith("torchrun "):  # `torchrun ... -m slimdrive train ...`: its command
                    words = shlex.split(part)
                    assert "slimdrive" in words, f"{doc.relative_to(REPO)}:{number}: torchrun runs no slimdrive"
                    found.append((f"{doc.relative_to(REPO)}:{number}", words[words.index("slimdrive") + 1:]))
    return found


def command_words(argv: list[str]) -> tuple[str, ...]:
    for n_words in (2, 1):
        if tuple(argv[:n_words]) in slimdrive.COMMANDS:
            return tuple(argv[:n_words])
    raise AssertionError(f"`slimdrive {' '.join(argv)}` is not a slimdrive command")


@pytest.mark.parametrize("where,argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_composes(where, argv):
    words = command_words(argv)
    config_name, target = slimdrive.COMMANDS[words]
    overrides = slimdrive._positional_paths(config_name, argv[len(words):])
    slimdrive.load_config(config_name, overrides)
    module_name = target.split(":")[0]
    assert (REPO / Path(*module_name.split("."))).with_suffix(".py").is_file(), f"{where}: no module {module_name}"


def test_every_documented_command_is_run_by_a_test():
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name != Path(__file__).name)
    missing = set()
    for where, argv in documented_commands():
        words = command_words(argv)
        # a test runs it as slimdrive.main(["words", ...]), `python -m slimdrive words ...` or, for a benchmark,
        # through tests/bench's _bench(tmp_path, "name", ...)
        as_list = ", ".join(f'"{w}"' for w in words)
        runs = (f"[{as_list}, ", f"[{as_list}]", f'"slimdrive", {as_list}', f'_bench(tmp_path, "{words[-1]}"')
        if not any(form in tests for form in runs):
            missing.add((" ".join(words), where))
    assert not missing, f"documented commands no test runs: {sorted(missing)}"


def test_every_documented_torchrun_command_is_run_under_torchrun_by_a_test():
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py") if p.name != Path(__file__).name)
    for doc in DOCS:
        fenced = False
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
            elif fenced and line.strip().startswith("torchrun "):
                words = shlex.split(line.split("#", 1)[0])
                command = words[words.index("slimdrive") + 1]
                assert f'"--nproc_per_node", "2", "-m", "slimdrive", "{command}"' in tests, \
                    f"{doc.relative_to(REPO)}:{number}: no test runs `slimdrive {command}` under torchrun"
