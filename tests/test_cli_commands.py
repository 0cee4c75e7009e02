"""The README's `slimdrive server` and `slimdrive render` commands, run as a user runs them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import carla
import cv2

import slimdrive
from envs.server.launch import free_port_pair, ping

REPO = Path(__file__).resolve().parents[1]


def test_slimdrive_server_serves_the_stock_client():
    port = free_port_pair()
    process = subprocess.Popen([sys.executable, "-m", "slimdrive", "server", f"port={port}", "map=town"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, up = time.monotonic() + 60, False
        while not up and time.monotonic() < deadline and process.poll() is None:
            try:
                up = bool(ping("127.0.0.1", port))
            except OSError:
                time.sleep(0.2)
        assert up, "the server did not answer within 60 s"
        client = carla.Client("127.0.0.1", port)
        client.set_timeout(10.0)
        assert client.get_server_version() == client.get_client_version()
        assert client.get_world().get_map().name.endswith("town")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_slimdrive_render_writes_the_mosaic(tmp_path, capsys):
    out = tmp_path / "render.png"
    assert slimdrive.main(["render", "map=junction", "weather=HardRainNoon", f"out={out}", "vehicles=2",
                           "walkers=1"]) == 0
    picture = cv2.imread(str(out))
    assert picture is not None and picture.std() > 5.0, "a picture, not a blank"
    assert str(out) in capsys.readouterr().out
