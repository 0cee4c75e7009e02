"""Run the embedded simulator: `python -m envs.server --port 2000 --map town` or `slimdrive server port=2000`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os

from envs.maps import MapError

from .api import Simulator
from .transport import SimulatorServer


def serve(host: str, port: int, map_name: str, log_level: str = "INFO", parent_pid: int | None = None,
          maps_dir: str | None = None) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if parent_pid is not None and os.getppid() != parent_pid:
        raise SystemExit(f"slimdrive server: --parent-pid {parent_pid} is not the process that started this one "
                         f"(pid {os.getppid()}); pass the launcher's own pid, or leave the option out")
    try:
        simulator = Simulator(map_name, port, maps_dir)
    except MapError as exc:
        raise SystemExit(f"slimdrive server: {exc}") from None
    server = SimulatorServer(simulator, host, port)
    try:
        asyncio.run(server.serve_forever(parent_pid=parent_pid))
    except KeyboardInterrupt:
        pass


def run(cfg) -> int:
    """`slimdrive server [host=..] [port=..] [map=..]`."""
    serve(cfg.host, int(cfg.port), cfg.map, cfg.log_level, maps_dir=cfg.get("maps_dir"))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m envs.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", type=int, default=2000, help="RPC port; streams use port+1")
    parser.add_argument("--map", default="town", help="a shipped map name or a path to an .xodr file")
    parser.add_argument("--maps-dir", default=None,
                        help="a folder of .xodr maps served by file name, as CARLA's towns: load_world('Town01')")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="the pid of the process that starts this server (its parent): stop when it is gone")
    args = parser.parse_args()
    serve(args.host, args.port, args.map, args.log_level, args.parent_pid, args.maps_dir)


if __name__ == "__main__":
    main()
