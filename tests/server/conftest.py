"""Fixtures of the server tests (the server, client and world fixtures are tests/conftest.py's)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import msgpack
import pytest

from envs.server.launch import REPO_ROOT


@pytest.fixture
def raw_call(server):
    """`raw_call(name, *params)`: one msgpack-RPC request on a fresh connection to the module's server, past the
    stock client; returns (rpclib error field, result)."""
    def call(name, *params):
        with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
            conn.sendall(msgpack.packb([0, 7, name, [[False], *params]], use_bin_type=True))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                unpacker.feed(conn.recv(1 << 20))
                for reply in unpacker:
                    assert reply[:2] == [1, 7]
                    return reply[2], reply[3]
    return call


def run_client_script(server, source: str, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Run a CARLA-style client script in a Python process of its own against `server` (`sys.argv[1:3]` are its
    host and port, then `args`): a crash of the stock client (LibCarla segfaults and aborts) then fails the one
    test that ran it, with the script's output in the message, instead of killing the pytest run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source), server.host, str(server.port), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, (
        f"client script exited with {done.returncode} ({_signal_name(done.returncode)}):\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return done


def _signal_name(returncode: int) -> str:
    return signal.Signals(-returncode).name if returncode < 0 else "exit status"


@pytest.fixture
def client_script():
    """`client_script(server, source, *args, timeout=...)`: see `run_client_script`."""
    return run_client_script
