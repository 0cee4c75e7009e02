"""The one way slimdrive reads its configuration.

* Configuration files are the YAML files under `conf/`, read by OmegaConf. A `slimdrive` command's file is
  composed with its defaults (`env: default`, a budget) by Hydra in `compose` (`slimdrive.py` and DAgger's
  val scoring, which scores by `slimdrive eval`'s own file); code that needs one file outside a command reads
  it with `load_conf`, which also merges a caller's config and dotted overrides over it (`DrivingEnv`'s
  settings, a camera rig).
* A typed config (a dataclass: the budget, a model, the expert) is built from a mapping, a plain one or an
  OmegaConf node, by `typed_config`, which refuses keys the dataclass does not have and names the missing
  ones.

Scenario and suite files are not configuration: they are the scenario language (`scenarios/source.py`), read
with their line numbers so that an error names the line.

A leaf: it imports nothing of slimdrive, so every layer may use it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

T = TypeVar("T")


def load_conf(path: str | Path, cfg: DictConfig | Mapping[str, Any] | None = None, **overrides: Any) -> DictConfig:
    """The YAML file `path` (relative to `conf/` unless absolute) merged with `cfg`, then with `overrides`
    (dotted keys allowed: `load_conf("env/default.yaml", **{"server.port": 2000})`)."""
    merged = OmegaConf.load(CONF_DIR / path)
    if cfg is not None:
        merged = OmegaConf.merge(merged, cfg)
    if overrides:
        dotted = [f"{key}={value if value is not None else 'null'}" for key, value in overrides.items()]
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(dotted))
    return merged


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """`conf/<config_name>.yaml` composed by Hydra with its defaults list and `overrides` (`key=value`,
    `group=option`); no working-directory change, no logging setup."""
    from hydra import compose as hydra_compose  # Hydra is slow to import: only for the callers that compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or ()))


def typed_config(cls: type[T], values: Mapping[str, Any] | None, what: str) -> T:
    """The dataclass `cls` from `values`: unknown keys are refused by name, missing ones take their defaults
    (a missing one without a default is named too), and a list given for a tuple field becomes a tuple.
    `what` names the config in errors ("model config", "budget")."""
    if isinstance(values, DictConfig):
        values = OmegaConf.to_container(values, resolve=True)
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; known keys are {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in values and f.init
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ValueError(f"{what}: missing keys {missing}")
    for name, value in values.items():
        if isinstance(value, list) and str(fields[name].type).startswith("tuple"):
            values[name] = tuple(value)
    return cls(**values)
