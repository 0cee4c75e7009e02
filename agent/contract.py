"""The agent contract: what every driver that `slimdrive` runs implements, learned or rule-based.

    agent.reset()                 start of an episode (after `env.reset()`)
    agent.act(obs) -> action      one observation of `DrivingEnv` in, `[steer, throttle, brake]` out
    agent.footprint()             what one step costs (`envs.budget.Footprint`), computed from the network;
                                  a privileged baseline says `privileged=True` instead of inventing arithmetic

The rollout loop (`envs.rollout`) and the compute budget see only this. Agents are made by name through
`agent.registry.make_agent`: ``expert``, ``cruise``, ``slimdrive`` (the shipped policy), a weight file, or any
user class given as ``module:Class``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from envs.budget import BudgetedPolicy, Footprint

__all__ = ["Agent", "Footprint"]


@runtime_checkable
class Agent(BudgetedPolicy, Protocol):
    def reset(self) -> None: ...

    def act(self, obs: Mapping[str, Any]) -> np.ndarray: ...

    def footprint(self) -> Footprint: ...
