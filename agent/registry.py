"""`make_agent(name, env, cfg)`: every agent slimdrive runs is made here, by name.

* ``expert``: the privileged rule-based driver (`agent.expert`), configured by ``cfg.expert``;
* ``cruise``: the naive constant-speed baseline, ``cfg.cruise.speed_mps``;
* ``slimdrive``: the trained BitNet b1.58 policy that ships in the package (`agent.shipped`), on the packed
  runtime;
* a ``.safetensors`` file: a packed ternary export (runs on the packed runtime) or a float checkpoint
  (``slimdrive-checkpoint``, e.g. a training run's ``model.safetensors``), told apart by the file's metadata;
  ``cfg.precision`` (`PRECISIONS`) runs a float checkpoint in float32 (as stored) or bfloat16 (the BF16 twin);
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


ACCEPTED = "'slimdrive', 'expert', 'cruise', a .safetensors weight file, or module:Class"
PRECISIONS = ("float32", "bfloat16")  # what a float checkpoint computes in; packed files run the ternary runtime


def precision_of(cfg: DictConfig) -> str:
    """``cfg.precision`` (float32 when absent or null), checked against `PRECISIONS`."""
    precision = str(OmegaConf.select(cfg, "precision", default=None) or "float32")
    if precision not in PRECISIONS:
        raise AgentError(f"precision={precision}: expected one of {', '.join(PRECISIONS)}")
    return precision


def make_agent(name: str, env, cfg: DictConfig | None = None) -> Agent:
    cfg = cfg if cfg is not None else OmegaConf.create({})
    precision = precision_of(cfg)
    path = Path(name)
    if precision != "float32" and not path.is_file():
        raise AgentError(f"agent={name} precision={precision}: precision applies to a float checkpoint "
                         "(a training run's model.safetensors); leave precision at float32 for other agents")
    if name == "expert":
        from agent.expert import Expert, ExpertConfig

        overrides = OmegaConf.to_container(cfg.expert) if "expert" in cfg else {}
        return Expert(env, typed_config(ExpertConfig, overrides, "expert config"))
    if name == "cruise":
        from agent.cruise import Cruise

        return Cruise(float(OmegaConf.select(cfg, "cruise.speed_mps", default=8.0)))
    if name == "slimdrive":
        from agent.shipped import shipped_policy

        return _weight_file(shipped_policy())
    if ":" in name and not path.exists():
        return _user_class(name, env)
    if path.is_file():
        return _weight_file(path, precision)
    raise AgentError(f"agent={name}: not {ACCEPTED} (no such file)")


def _weight_file(path: Path, precision: str = "float32") -> Agent:
    import torch

    from agent.export import CHECKPOINT_FORMAT, PACKED_FORMAT, WeightFileError, file_format, load_checkpoint
    from agent.policy import DrivingPolicy

    kind = file_format(path)
    if kind == PACKED_FORMAT:
        if precision != "float32":
            raise AgentError(f"{path}: a packed ternary file runs on the ternary runtime, not in {precision}; "
                             "precision applies to a float checkpoint (a training run's model.safetensors)")
        return DrivingPolicy.from_packed(path)
    if kind == CHECKPOINT_FORMAT:
        # The whole network, weights and float arithmetic, cast once: the twin as a bfloat16 device would run it.
        return DrivingPolicy(load_checkpoint(path).to(getattr(torch, precision)))
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
