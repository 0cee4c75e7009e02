"""What produced a result: the code version, stated in every evaluation, recorded log and training run."""
from __future__ import annotations

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
