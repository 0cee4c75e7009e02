"""`slimdrive scenario validate PATH...`: schema and cross-field checks, then compile on the file's map for
`seeds` (routes, placements); one line per file, exit status 1 if any file is bad. (`slimdrive scenario
preview`, which drives a scenario, lives with evaluation: `evaluation/preview.py`.)
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .compile import validate_file
from .errors import ScenarioError


def validate(cfg: DictConfig) -> int:
    paths = [Path(p) for p in cfg.paths]
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    if not files:
        print("slimdrive scenario validate: no files given (paths=[a.yaml,dir/])")
        return 2
    bad = 0
    for file in files:
        try:
            compiled = validate_file(file, tuple(int(s) for s in cfg.seeds))
            note = f"route {compiled[0].route.length:.0f} m, {len(compiled[0].actors)} actors" if compiled else \
                "schema ok (map checks need a server for CARLA towns)"
            print(f"ok    {file}: {note}")
        except ScenarioError as exc:
            bad += 1
            print(f"error {exc}")
    print(f"{len(files) - bad}/{len(files)} valid")
    return 1 if bad else 0
