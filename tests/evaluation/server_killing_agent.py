"""A test-only agent (`agent=server_killing_agent:ServerKillingCruise`, with tests/evaluation on the path): the
cruise baseline, which SIGKILLs the env's embedded simulator by its pid mid-episode, once, in a chosen episode.

SLIMDRIVE_TEST_KILL_SERVER_ONCE=KEY:MARKER  kills the server at step KILL_STEP of episode KEY (scenario#seed)
                                            unless the file MARKER exists (it creates it first), so that the
                                            episode's retry drives undisturbed.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from agent.cruise import Cruise

KILL_STEP = 30  # mid-episode: the ego is moving, the episode's record is not written


class ServerKillingCruise(Cruise):
    def __init__(self, env) -> None:
        super().__init__()
        self._env = env

    def reset(self) -> None:
        super().reset()
        run = self._env.unwrapped.privileged.scenario
        self._key, self._steps = f"{run.name}#{run.seed}", 0

    def act(self, obs):
        self._steps += 1
        key, _, marker = os.environ.get("SLIMDRIVE_TEST_KILL_SERVER_ONCE", "").partition(":")
        if self._steps == KILL_STEP and self._key == key and marker and not Path(marker).exists():
            Path(marker).touch()
            # the env's own server process (there is no public handle: a test reaches in to kill it by pid)
            os.kill(self._env.unwrapped._server.pid, signal.SIGKILL)
        return super().act(obs)
