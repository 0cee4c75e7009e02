"""What produced a result: the code version, stated in every evaluation, recorded log and training run, and
the sha256 of a file (a recorded episode, a shipped policy) by which it is checked."""
from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from pathlib import Path


@cache
def code_version() -> str:
    """`git describe --always --dirty` of the checkout, or "unknown" outside one (an installed wheel)."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
