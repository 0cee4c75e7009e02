"""The pool's executor choice (`executor=` and `ray.*`, envs.workers.Executor) is checked before anything starts:
an unknown executor, CARLA servers without Ray, a server that is not host:port, and executor=ray on an install
without the Ray extra each get a message that says what to do. Runs without Ray installed."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from envs.workers import Executor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cfg,message", [
    ({"executor": "dask"}, "executor=dask: use local (worker processes here) or ray (a Ray cluster)"),
    ({"ray": {"servers": ["10.0.0.5:2000"]}}, "ray.servers shares CARLA servers among Ray workers: add executor=ray"),
    ({"executor": "ray", "ray": {"servers": ["10.0.0.5"]}}, "ray.servers: '10.0.0.5' is not host:port"),
])
def test_a_wrong_executor_is_refused_saying_what_to_do(cfg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Executor.from_cfg(cfg)


def test_the_default_is_local_and_ray_options_are_read():
    assert Executor.from_cfg({}) == Executor("local")
    assert Executor.from_cfg({"ray": {"address": "auto", "cpus_per_worker": 2}}) == Executor("local", "auto", (), 2.0)


@pytest.mark.parametrize("command", ["eval", "collect"])
def test_executor_ray_without_ray_says_how_to_install_it(command, tmp_path):
    """A real process in which `import ray` fails (sys.modules["ray"] = None, as on an install without the
    extra): the command stops before starting a simulator and names the extra."""
    code = ("import sys; sys.modules['ray'] = None; import slimdrive; "
            f"raise SystemExit(slimdrive.main(['{command}', 'executor=ray', 'suite=rare_events', 'limit=1', "
            f"'agent=cruise', 'out={tmp_path / 'out'}']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert 'executor=ray needs Ray, an optional extra: pip install -e ".[ray]"' in done.stdout
