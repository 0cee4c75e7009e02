"""`make_agent(name, env, cfg)`: every agent slimdrive runs is made here, by name.

* ``expert``: the privileged rule-based driver (`agent.expert`), configured by ``cfg.expert``;
* ``cruise``: the naive constant-speed baseline, ``cfg.cruise.speed_mps``;
* a ``.safetensors`` file: a packed ternary export (runs on the packed runtime) or a float checkpoint
  (``slimdrive-checkpoint``, e.g. a training run's ``model.safetensors``), told apart by the file's metadata;
* ``module:Class``: any class on the Python path that implements `agent.contract.Agent`; it is called with
  ``env=`` when its constructor takes an ``env`` parameter (a privileged agent), else with no arguments.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from agent.contract import Agent
from envs.config import typed_config


class AgentError(ValueError):
    """An agent name that names nothing runnable; the message says what was tried and what is accepted."""


ACCEPTED = "'expert', 'cruise', a .safetensors weight file, or module:Class"


def make_agent(name: str, env, cfg: DictConfig | None = None) -> Agent:
    cfg = cfg if cfg is not None else OmegaConf.create({})
    if name == "expert":
        from agent.expert import Expert, ExpertConfig

        overrides = OmegaConf.to_container(cfg.expert) if "expert" in cfg else {}
        return Expert(env, typed_config(ExpertConfig, overrides, "expert config"))
    if name == "cruise":
        from agent.cruise import Cruise

        return Cruise(float(OmegaConf.select(cfg, "cruise.speed_mps", default=8.0)))
    if ":" in name and not Path(name).exists():
        return _user_class(name, env)
    path = Path(name)
    if path.is_file():
        return _weight_file(path)
    raise AgentError(f"agent={name}: not {ACCEPTED} (no such file)")


def _weight_file(path: Path) -> Agent:
    from agent.export import CHECKPOINT_FORMAT, PACKED_FORMAT, WeightFileError, file_format, load_checkpoint
    from agent.policy import DrivingPolicy

    kind = file_format(path)
    if kind == PACKED_FORMAT:
        return DrivingPolicy.from_packed(path)
    if kind == CHECKPOINT_FORMAT:
        return DrivingPolicy(load_checkpoint(path))
    raise WeightFileError(f"{path}: format {kind!r} is neither {PACKED_FORMAT!r} nor {CHECKPOINT_FORMAT!r}; "
                          "pass a file written by agent.export or by `slimdrive train`")


def _user_class(name: str, env) -> Agent:
    module_name, _, class_name = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise AgentError(f"agent={name}: cannot import {class_name!r} from module {module_name!r} ({exc}); "
                         "the module must be importable (on PYTHONPATH) and define the class") from exc
    takes_env = "env" in inspect.signature(cls).parameters
    agent = cls(env=env) if takes_env else cls()
    missing = [m for m in ("reset", "act", "footprint") if not callable(getattr(agent, m, None))]
    if missing:
        raise AgentError(f"agent={name}: {class_name} lacks {', '.join(missing)}; an agent implements reset(), "
                         "act(obs) and footprint() (agent/contract.py)")
    return agent
