"""Fixtures of the server tests (the server, client and world fixtures are tests/conftest.py's)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import warnings

import msgpack
import pytest

from envs.server.launch import REPO_ROOT


@pytest.fixture
def raw_call(server):
    """`raw_call(name, *params)`: one msgpack-RPC request on a fresh connection to the module's server, past the
    stock client; returns (rpclib error field, result)."""
    def call(name, *params):
        return _call(server, name, *params)
    return call


def run_client_script(server, source: str, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Run a CARLA-style client script in a Python process of its own against `server` (`sys.argv[1:3]` are its
    host and port, then `args`): a crash of the stock client (LibCarla segfaults and aborts) then fails the one
    test that ran it, with the script's output in the message, instead of killing the pytest run. A script that
    hangs prints the line it hangs on (a watchdog) and fails; one hang of the stock client's own Traffic Manager
    (`traffic_manager_hang`) reruns it once, with a warning."""
    done = _run_script(server, source, args, timeout)
    hung_at = traffic_manager_hang(source, done)
    if hung_at is not None:
        warnings.warn(f"the stock client's synchronous Traffic Manager missed a step at script line {hung_at} "
                      f"(CARLA 0.9.16's lost wake-up, docs/server.md); rerunning the script once", stacklevel=2)
        _clear_after_a_dead_script(server, args)
        done = _run_script(server, source, args, timeout)
    assert done.returncode == 0, (
        f"client script exited with {done.returncode} ({_signal_name(done.returncode)}):\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return done


WATCHDOG = "import faulthandler; faulthandler.dump_traceback_later({seconds}, exit=True)\n"


def _run_script(server, source: str, args, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    # a hanging script prints where it hangs and exits before the timeout kills it without a word
    script = WATCHDOG.format(seconds=max(timeout - 10.0, 1.0)) + textwrap.dedent(source)
    return subprocess.run([sys.executable, "-c", script, server.host, str(server.port), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)


# What a script killed mid-way leaves on its server: its actors, synchronous mode, and its Traffic Manager's
# registration (a rerun asking for that port would connect to the dead process's Traffic Manager)
CLEAR_THE_WORLD = """
import sys
import carla

client = carla.Client(sys.argv[1], int(sys.argv[2]))
client.set_timeout(20.0)
world = client.get_world()
settings = world.get_settings()
settings.synchronous_mode, settings.fixed_delta_seconds = False, None
world.apply_settings(settings)
world.wait_for_tick()  # the client lists the actors of the latest state: one after the dead script's spawns
kinds = ("sensor", "controller", "vehicle", "walker", "static")  # sensors and controllers first, as CARLA asks
left = sorted((a for a in world.get_actors() if a.type_id.split(".")[0] in kinds),
              key=lambda a: kinds.index(a.type_id.split(".")[0]))
client.apply_batch_sync([carla.command.DestroyActor(a.id) for a in left], False)
world.wait_for_tick()
print("cleared", len(left))
"""


def _clear_after_a_dead_script(server, args) -> None:
    for port in (int(a) for a in args if a.isdigit() and 1024 <= int(a) <= 65535):
        _call(server, "destroy_traffic_manager", port)  # any argument that may be its Traffic Manager's port
    cleared = _run_script(server, CLEAR_THE_WORLD, (), 120.0)
    assert cleared.returncode == 0, f"could not clear the server after a hung script:\n{cleared.stderr[-2000:]}"


def _call(server, name: str, *params):
    """One msgpack-RPC request on a fresh connection, past the stock client; returns (error field, result)."""
    with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
        conn.sendall(msgpack.packb([0, 7, name, [[False], *params]], use_bin_type=True))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = conn.recv(1 << 20)
            assert data, f"the server closed the connection before answering {name}"
            unpacker.feed(data)
            for reply in unpacker:
                assert reply[:2] == [1, 7]
                return reply[2], reply[3]


def traffic_manager_hang(source: str, done: subprocess.CompletedProcess) -> int | None:
    """The script line (1-based, in `source` dedented) of a `world.tick()` the watchdog found the script stuck in
    while it uses a Traffic Manager, else None. CARLA 0.9.16's `TrafficManagerLocal::SynchronousTick` sets
    `step_begin` and notifies its worker without holding the mutex the worker waits under, so the worker can
    miss the wake-up and `world.tick()` then waits for its step forever (no timeout): a race in the client that
    a loaded machine makes likelier, whatever the server."""
    if done.returncode == 0 or "Timeout (" not in done.stderr or "get_trafficmanager" not in source:
        return None
    lines = textwrap.dedent(source).splitlines()
    for line_number in re.findall(r'File "<string>", line (\d+) in <module>', done.stderr)[-1:]:
        script_line = int(line_number) - WATCHDOG.count("\n")  # the watchdog's line comes first
        if 0 < script_line <= len(lines) and "world.tick()" in lines[script_line - 1]:
            return script_line
    return None


def _signal_name(returncode: int) -> str:
    return signal.Signals(-returncode).name if returncode < 0 else "exit status"


@pytest.fixture
def client_script():
    """`client_script(server, source, *args, timeout=...)`: see `run_client_script`."""
    return run_client_script
