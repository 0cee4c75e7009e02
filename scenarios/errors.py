"""`ScenarioError`: one bad input, reported as `file:line: field: problem. Fix: how`.

Every error a scenario or suite file can cause goes through this type, so that `slimdrive scenario validate`,
the engine and the evaluation runner all print the same one-line message.
"""
from __future__ import annotations

from pathlib import Path


class ScenarioError(ValueError):
    def __init__(self, file: str | Path, line: int | None, field: str, problem: str, fix: str) -> None:
        self.file, self.line, self.field, self.problem, self.fix = str(file), line, field, problem, fix
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {field or '<file>'}: {problem}. Fix: {fix}")
