"""Suites: which scenario files run with which seeds (and parameter overrides), as a YAML list.

    name: rare_events
    entries:
      - scenario: ../library/jaywalker_parked_van.yaml   # relative to the suite file
        seeds: [1001, 1002]
        parameters: {release_tta: {uniform: [2.4, 2.7]}}   # optional overrides of the file's parameters
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .compile import ScenarioSpec, compile_seeds, load_scenario
from .errors import ScenarioError
from .source import dotted, load_source

SUITES_DIR = Path(__file__).resolve().parent / "suites"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: str
    seeds: list[int] = Field(min_length=1)
    parameters: dict[str, Any] = {}


class _Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    entries: list[_Entry] = Field(min_length=1)


@dataclass
class Episode:
    scenario: ScenarioSpec
    seed: int

    @property
    def key(self) -> str:
        return f"{self.scenario.scenario.name}#{self.seed}"


def suite_path(name_or_path: str) -> Path:
    """A suite name under scenarios/suites/ or a path to a suite file."""
    path = Path(name_or_path)
    return path if path.suffix in (".yaml", ".yml") else SUITES_DIR / f"{name_or_path}.yaml"


def load_suite(name_or_path: str, limit: int | None = None) -> tuple[str, list[Episode]]:
    """(suite name, its episodes in order, only the first `limit` when given); every scenario is validated
    first as `slimdrive scenario validate` does (schema, then compiled on its map for each of its seeds), errors
    name the file."""
    path = suite_path(name_or_path)
    source = load_source(path)
    try:
        suite = _Suite.model_validate(source.data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        raise ScenarioError(path, source.line(loc), dotted(loc), error["msg"],
                            "a suite is {name, entries: [{scenario, seeds, parameters}]}") from None
    episodes, seen = [], set()
    for i, entry in enumerate(suite.entries):
        spec = load_scenario(path.parent / entry.scenario, entry.parameters)
        compile_seeds(spec, entry.seeds)  # the map checks `slimdrive scenario validate` makes, for these seeds
        for seed in entry.seeds:
            episode = Episode(spec, seed)
            if episode.key in seen:
                raise ScenarioError(path, source.line(("entries", i, "seeds")), f"entries[{i}].seeds",
                                    f"episode {episode.key} appears twice", "give each episode its own seed")
            seen.add(episode.key)
            episodes.append(episode)
    return suite.name, episodes[: int(limit)] if limit else episodes
