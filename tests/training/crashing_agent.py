"""A test-only agent (`agent=crashing_agent:CrashingExpert`, with tests/training on PYTHONPATH): the expert, whose
process dies mid-episode as LibCarla's `std::bad_weak_ptr` abort kills a collection worker, on chosen episodes.

SLIMDRIVE_TEST_CRASH_ONCE=KEY:MARKER  dies in episode KEY unless the file MARKER exists (it creates it first), so
                                      the episode's second attempt goes through;
SLIMDRIVE_TEST_CRASH_ALWAYS=KEY       dies in episode KEY every time.

`agent=crashing_agent:RaisingExpert` is the expert with a bug instead: its `act` raises at step CRASH_STEP, an
agent's failure while the simulator is fine.
"""
from __future__ import annotations

import os
from pathlib import Path

from agent.expert import Expert

CRASH_STEP = 10  # mid-episode: the episode's log is open, nothing of it committed
ABORT_EXIT = 134  # what a shell reports for a process that std::terminate aborted (128 + SIGABRT)


class CrashingExpert(Expert):
    def __init__(self, env) -> None:
        super().__init__(env)
        self._env = env

    def reset(self) -> None:
        super().reset()
        run = self._env.unwrapped.privileged.scenario
        self._key, self._steps = f"{run.name}-s{run.seed}", 0

    def act(self, obs):
        self._steps += 1
        if self._steps == CRASH_STEP and self._doomed():
            os._exit(ABORT_EXIT)  # no Python clean-up, as an abort: the worker's simulator and log are left behind
        return super().act(obs)

    def _doomed(self) -> bool:
        if self._key == os.environ.get("SLIMDRIVE_TEST_CRASH_ALWAYS"):
            return True
        key, _, marker = os.environ.get("SLIMDRIVE_TEST_CRASH_ONCE", "").partition(":")
        if self._key == key and marker and not Path(marker).exists():
            Path(marker).touch()
            return True
        return False


class RaisingExpert(Expert):
    def reset(self) -> None:
        super().reset()
        self._steps = 0

    def act(self, obs):
        self._steps += 1
        if self._steps == CRASH_STEP:
            raise ValueError(f"a bug in the agent at step {CRASH_STEP}")
        return super().act(obs)
