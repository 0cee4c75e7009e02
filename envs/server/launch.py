"""Start the embedded simulator as a separate process on free loopback ports, and stop it by its pid (it also
stops by itself within a second or two if the launching process dies first).

    with launch(map_name="town") as server:
        client = carla.Client(server.host, server.port)

Used by the tests, the env and the benchmarks, so that every one of them talks to a real process over
real sockets.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServerStartError(RuntimeError):
    pass


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port N such that N and N+1 are both free right now (RPC and streaming)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host, port))
                b.bind((host, port + 1))
            return port
        except OSError:
            continue
    raise ServerStartError(f"no two consecutive free ports found on {host}")


def ping(host: str, port: int, timeout: float = 1.0) -> str:
    """Ask the server for its version over raw msgpack-RPC; raises OSError if it does not answer."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(msgpack.packb([0, 1, "version", [[False]]]))
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError(f"{host}:{port} closed the connection")
            unpacker.feed(data)
            for reply in unpacker:
                return reply[3][0][1]


@dataclass
class ServerProcess:
    host: str
    port: int
    map_name: str
    process: subprocess.Popen
    log_path: Path
    _log_file: object = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the process by its pid: SIGTERM, then SIGKILL if it lingers."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(map_name: str = "town", host: str = "127.0.0.1", port: int | None = None,
           timeout: float = 30.0, log_dir: str | os.PathLike | None = None,
           maps_dir: str | os.PathLike | None = None) -> ServerProcess:
    """Start `python -m envs.server` and wait until it answers `version`; `maps_dir`: a folder of .xodr maps it
    serves by name (`--maps-dir`)."""
    port = port or free_port_pair(host)
    log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir())
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"slimdrive-server-{port}.log"
    log_file = open(log_path, "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "envs.server", "--host", host, "--port", str(port), "--map", map_name,
         "--log-level", "WARNING", "--parent-pid", str(os.getpid())]
        + (["--maps-dir", str(maps_dir)] if maps_dir is not None else []),
        stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    server = ServerProcess(host, port, map_name, process, log_path, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            server.stop()
            raise ServerStartError(f"simulator exited with code {process.returncode} while starting; "
                                   f"log {log_path}:\n{server.log_tail()}")
        try:
            ping(host, port)
            return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise ServerStartError(f"simulator on {host}:{port} did not answer within {timeout:.0f} s; log {log_path}")
