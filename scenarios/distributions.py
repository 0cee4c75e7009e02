"""Numbers that may be distributions, and sampling them reproducibly from an episode seed.

In a scenario file any number may be written as a fixed value or as one of

    {uniform: [low, high]}
    {normal: {mean: m, std: s, min: a, max: b}}     # clipped to [min, max]
    {choice: [v1, v2, ...]}                          # numbers or names

A field's bounds (e.g. a speed is >= 0) are checked against the whole support of its distribution, so a
file cannot produce an invalid value for some seed only. Each value is drawn from its own generator seeded by
(episode seed, the value's path in the file): adding a field does not change the draws of the others.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, PlainValidator

DIST_KEYS = ("uniform", "normal", "choice")


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def support(self) -> tuple[float, float]:
        return self.low, self.high


@dataclass(frozen=True)
class Normal:
    mean: float
    std: float
    low: float | None
    high: float | None

    def sample(self, rng: np.random.Generator) -> float:
        value = float(rng.normal(self.mean, self.std))
        return float(np.clip(value, -np.inf if self.low is None else self.low,
                             np.inf if self.high is None else self.high))

    def support(self) -> tuple[float, float]:
        return (-np.inf if self.low is None else self.low), (np.inf if self.high is None else self.high)


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]


Distribution = Uniform | Normal | Choice


def is_number(value: Any) -> bool:
    """A finite int or float: YAML's `.nan` and `.inf` are floats, and a NaN pose or speed disables every check
    that compares it (a NaN actor never collides), so they are refused like any other non-number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _reads_as_number(text: str) -> bool:
    """Whether `text` is a number to Python though YAML 1.1 (PyYAML) reads it as a string, as `1e8`."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def parse_distribution(value: dict) -> Distribution:
    """A `{uniform|normal|choice: ...}` mapping as a Distribution; ValueError says what is wrong."""
    if len(value) != 1 or next(iter(value)) not in DIST_KEYS:
        raise ValueError(f"not a distribution (keys {sorted(value)}); fix: write a number or one of "
                         "{uniform: [low, high]}, {normal: {mean, std, min, max}}, {choice: [...]}")
    kind, body = next(iter(value.items()))
    if kind == "uniform":
        if not (isinstance(body, list) and len(body) == 2 and all(map(is_number, body))):
            raise ValueError("uniform needs two finite numbers; fix: write {uniform: [low, high]}")
        if body[0] > body[1]:
            raise ValueError(f"uniform low {body[0]} is above high {body[1]}; fix: write [low, high]")
        return Uniform(float(body[0]), float(body[1]))
    if kind == "normal":
        allowed = {"mean", "std", "min", "max"}
        if not isinstance(body, dict) or not {"mean", "std"} <= set(body) or set(body) - allowed:
            raise ValueError("malformed normal; fix: write {normal: {mean: m, std: s, min: a, max: b}} "
                             "(min/max optional)")
        if not all(is_number(v) for v in body.values()):
            raise ValueError("normal's mean, std, min and max must be finite numbers; fix: write finite numbers")
        if body["std"] < 0:
            raise ValueError(f"normal std {body['std']} is negative; fix: use std >= 0")
        low, high = body.get("min"), body.get("max")
        if low is not None and high is not None and low > high:
            raise ValueError(f"normal min {low} is above max {high}; fix: swap them")
        return Normal(float(body["mean"]), float(body["std"]), low, high)
    if not (isinstance(body, list) and body):
        raise ValueError("empty or malformed choice; fix: write {choice: [a, b, c]}")
    return Choice(tuple(body))


def _bounds_text(ge, gt, le) -> str:
    parts = ([f">= {ge}"] if ge is not None else []) + ([f"> {gt}"] if gt is not None else []) + \
            ([f"<= {le}"] if le is not None else [])
    return " and ".join(parts)


def number(ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A pydantic type for a number field that may be a distribution; bounds apply to every possible draw."""
    bounds = _bounds_text(ge, gt, le)

    def inside(x: float) -> bool:
        return (ge is None or x >= ge) and (gt is None or x > gt) and (le is None or x <= le)

    def validate(value: Any) -> float | Distribution:
        if isinstance(value, (Uniform, Normal, Choice)):
            return value
        if _non_finite(value):
            raise ValueError(f"{value} is not a finite number; fix: write a finite number")
        if is_number(value):
            if not inside(value):
                raise ValueError(f"{value} is out of range; fix: use a value {bounds}")
            return float(value)
        if isinstance(value, str) and _reads_as_number(value):
            raise ValueError(f"{value!r} is text to YAML 1.1, not a number; fix: write it with a dot and a signed "
                             "exponent (1.0e+8) or in full")
        if not isinstance(value, dict):
            raise ValueError(f"expected a number, got {type(value).__name__} {value!r}; "
                             "fix: write a number or a distribution")
        dist = parse_distribution(value)
        if isinstance(dist, Choice):
            bad = [v for v in dist.options if not is_number(v) or not inside(v)]
            if bad:
                raise ValueError(f"choice option {bad[0]!r} is out of range; fix: list finite numbers"
                                 + (f" {bounds}" if bounds else ""))
            return Choice(tuple(float(v) for v in dist.options))
        low, high = dist.support()
        if bounds and not (inside(low) and inside(high)):
            hint = " (give normal min/max clip bounds)" if isinstance(dist, Normal) else ""
            raise ValueError(f"distribution range [{low}, {high}] goes out of range; "
                             f"fix: keep every draw {bounds}{hint}")
        return dist

    return Annotated[float | Distribution, PlainValidator(validate)]


def name_choice(known: Callable[[str], str | None]) -> Any:
    """A pydantic type for a name (or `{choice: [names]}`); `known(name)` returns an error text or None."""

    def validate(value: Any) -> str | Choice:
        if isinstance(value, Choice):
            return value
        dist = parse_distribution(value) if isinstance(value, dict) else None
        if dist is not None and not isinstance(dist, Choice):
            raise ValueError("a name cannot be uniform or normal; fix: write {choice: [name, ...]}")
        names = list(dist.options) if dist is not None else [value]
        for name in names:
            if not isinstance(name, str):
                raise ValueError(f"expected a name, got {name!r}; fix: write a name")
            problem = known(name)
            if problem:
                raise ValueError(problem)
        return dist if dist is not None else value

    return Annotated[str | Choice, PlainValidator(validate)]


def rng_for(seed: int, path: tuple) -> np.random.Generator:
    """The generator of one value: seeded by the episode seed and a stable hash of the value's path."""
    return np.random.default_rng([int(seed), zlib.crc32(repr(path).encode())])


def sample_tree(value: Any, seed: int, path: tuple = ()) -> Any:
    """A copy of a validated model tree with every distribution replaced by its draw for `seed`."""
    if isinstance(value, (Uniform, Normal, Choice)):
        return value.sample(rng_for(seed, path))
    if isinstance(value, BaseModel):
        updates = {name: sample_tree(getattr(value, name), seed, path + (name,)) for name in type(value).model_fields}
        return value.model_copy(update=updates)
    if isinstance(value, list):
        return [sample_tree(v, seed, path + (i,)) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: sample_tree(v, seed, path + (k,)) for k, v in value.items()}
    return value
