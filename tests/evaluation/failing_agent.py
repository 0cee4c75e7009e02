"""A test-only agent (`agent=failing_agent:FailingCruise`, with tests/evaluation on the path): the cruise
baseline with a bug that raises at step FAIL_STEP of every episode: an agent's failure, not the simulator's."""
from __future__ import annotations

from agent.cruise import Cruise

FAIL_STEP = 5


class FailingCruise(Cruise):
    def reset(self) -> None:
        super().reset()
        self._steps = 0

    def act(self, obs):
        self._steps += 1
        if self._steps == FAIL_STEP:
            raise ValueError("the agent's own bug")
        return super().act(obs)
