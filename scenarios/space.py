"""A scenario file's distributions as a search space, and the concrete file of one point in it.

    spec = load_scenario("scenarios/search_spaces/crossing_walker.yaml")
    space = search_space(spec)                      # one Dimension per distribution in the file
    values = space.from_unit([0.3, 0.9, ...])       # a point, e.g. from random or Latin-hypercube sampling
    text = concrete_text(spec, values, name="crossing_walker_t0007")   # the file with every draw fixed

Every distribution of the file is a dimension: the `parameters:` (with a suite's overrides), and any number,
blueprint choice, placement or weather written inline as `{uniform|normal|choice: ...}`. A concrete file is the
source file with each distribution replaced by the point's value, so it has no draws left: run with the same
seed (which still picks what no distribution names, e.g. a `length` route's turns) it is the same episode
every time. Optimisers (`evaluation/search.py`) see uniform and clipped-normal dimensions as float ranges and
choices as categories.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import yaml

from .compile import ScenarioSpec
from .distributions import DIST_KEYS, Choice, Distribution, Normal, Uniform, parse_distribution
from .source import Path_, dotted

NORMAL_SPAN_STD = 3.0  # an unclipped side of a normal is searched to mean +- 3 std


@dataclass(frozen=True)
class Dimension:
    """One distribution of the file, at `path` in its data (`("parameters", "release_tta")`,
    `("actors", 1, "blueprint")`, `("weather",)`)."""

    path: Path_
    dist: Distribution

    @property
    def name(self) -> str:
        return dotted(self.path)

    @property
    def categorical(self) -> bool:
        return isinstance(self.dist, Choice)

    @property
    def options(self) -> tuple[Any, ...]:
        assert isinstance(self.dist, Choice)
        return self.dist.options

    def bounds(self) -> tuple[float, float]:
        """The float range searched: a uniform's own, a normal's clip bounds or mean +- 3 std within them."""
        if isinstance(self.dist, Uniform):
            return self.dist.low, self.dist.high
        assert isinstance(self.dist, Normal)
        d = self.dist
        low = d.mean - NORMAL_SPAN_STD * d.std if d.low is None else max(d.low, d.mean - NORMAL_SPAN_STD * d.std)
        high = d.mean + NORMAL_SPAN_STD * d.std if d.high is None else min(d.high, d.mean + NORMAL_SPAN_STD * d.std)
        return float(low), float(high)

    def from_unit(self, u: float) -> Any:
        """The value at quantile `u` in [0, 1) of the file's own distribution, so that uniform points in the unit
        cube draw the scenario as its seeds would (random sampling) or stratify it (Latin hypercube)."""
        u = min(max(float(u), 0.0), math.nextafter(1.0, 0.0))
        if isinstance(self.dist, Choice):
            return self.dist.options[int(u * len(self.dist.options))]
        if isinstance(self.dist, Uniform):
            return self.dist.low + u * (self.dist.high - self.dist.low)
        d = self.dist
        if d.std == 0:
            return float(d.mean)
        value = NormalDist(d.mean, d.std).inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
        return float(min(max(value, -math.inf if d.low is None else d.low), math.inf if d.high is None else d.high))


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def __len__(self) -> int:
        return len(self.dimensions)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def from_unit(self, point: Sequence[float]) -> dict[str, Any]:
        return {d.name: d.from_unit(u) for d, u in zip(self.dimensions, point)}


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DIST_KEYS


def _data(spec: ScenarioSpec) -> dict:
    """The file's data with the parameters in use (a suite's overrides applied)."""
    data = copy.deepcopy(spec.source.data)
    if spec.parameters:
        data["parameters"] = copy.deepcopy(spec.parameters)
    return data


def search_space(spec: ScenarioSpec) -> SearchSpace:
    """Every distribution in the (validated) file, in file order; empty when the file draws nothing."""
    found: list[Dimension] = []

    def walk(value: Any, path: Path_) -> None:
        if _is_distribution(value):
            found.append(Dimension(path, parse_distribution(value)))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, path + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, path + (i,))

    walk(_data(spec), ())
    return SearchSpace(tuple(found))


def _plain(value: Any) -> Any:
    """Numbers as short, exact YAML: floats rounded to 4 decimals (the file is what runs, so rounding changes
    nothing about reproducing it), whole numbers kept as they are."""
    if isinstance(value, float):
        return round(value, 4)
    return value


def concrete_data(spec: ScenarioSpec, values: dict[str, Any], name: str, note: str = "") -> dict:
    """The file's data with each dimension's distribution replaced by `values[dimension name]`, renamed."""
    data = _data(spec)
    for dim in search_space(spec).dimensions:
        if dim.name not in values:
            raise KeyError(f"no value for {dim.name} (the search space has {search_space(spec).names})")
        node = data
        for part in dim.path[:-1]:
            node = node[part]
        node[dim.path[-1]] = _plain(values[dim.name])
    data["name"] = name
    if note:
        data["description"] = note
    return data


def concrete_text(spec: ScenarioSpec, values: dict[str, Any], name: str, note: str = "") -> str:
    """The concrete file as YAML text (keys in the source's order)."""
    return yaml.safe_dump(concrete_data(spec, values, name, note), sort_keys=False, width=110,
                          default_flow_style=None)


__all__ = ["Dimension", "SearchSpace", "search_space", "concrete_data", "concrete_text"]
