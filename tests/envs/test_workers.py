"""`envs.workers.supervised` with real spawned processes: a worker that dies is replaced and only its task is
tried again, the other workers' results all arrive; a task that always kills its worker is given up after
`retries` more attempts; a task's or an initializer's exception is raised in the parent with the worker's
traceback."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from envs.workers import WorkerError, supervised

_state: dict = {}


def _start(marker_dir: str, fail: bool = False) -> None:
    if fail:
        raise RuntimeError("no simulator today")
    _state["markers"] = Path(marker_dir)


def _square(item: int) -> tuple[int, int]:
    """Dies (as an abort would) on item 3 the first time and on item 5 every time; raises on item -1."""
    if item == -1:
        raise ValueError("a task's own error")
    first = _state["markers"] / f"died-{item}"
    if item == 5 or (item == 3 and not first.exists()):
        first.touch()
        os._exit(134)
    return item * item, os.getpid()


def test_a_dead_worker_is_replaced_and_only_its_task_retried(tmp_path):
    results, deaths = {}, []
    gave_up = supervised(range(8), 2, _start, (str(tmp_path),), _square,
                         lambda item, result: results.__setitem__(item, result), deaths.append, retries=1)
    assert sorted(results) == [0, 1, 2, 3, 4, 6, 7]
    assert all(results[i][0] == i * i for i in results)
    assert [(d.task, d.attempt, d.retried, d.exitcode) for d in deaths if d.task == 3] == [(3, 1, True, 134)]
    assert [(d.task, d.attempt, d.retried) for d in deaths if d.task == 5] == [(5, 1, True), (5, 2, False)]
    assert len(deaths) == 3 and [(d.task, d.attempt) for d in gave_up] == [(5, 2)]
    assert deaths[0].cause == "exit code 134"


def test_errors_are_raised_with_the_workers_traceback(tmp_path):
    with pytest.raises(WorkerError, match="(?s)task -1 raised in worker pid .*ValueError: a task's own error"):
        supervised([1, -1, 2], 2, _start, (str(tmp_path),), _square, lambda *_: None, lambda _: None)
    with pytest.raises(WorkerError, match="(?s)failed to start.*RuntimeError: no simulator today"):
        supervised([1], 1, _start, (str(tmp_path), True), _square, lambda *_: None, lambda _: None)
    with pytest.raises(ValueError, match="supervised: workers=0, give at least 1"):  # no worker would take a task
        supervised([1], 0, _start, (str(tmp_path),), _square, lambda *_: None, lambda _: None)


def test_an_oserror_of_the_callers_own_result_handler_is_raised_not_taken_for_a_dead_worker(tmp_path):
    """A full disk while the parent writes a result must stop the run with that error; it once looked like a
    dead worker (the pipe's OSError), so the parent waited forever on a worker that was alive."""
    def write_result(item, result):
        raise OSError(28, "No space left on device", str(tmp_path / "results.jsonl"))

    with pytest.raises(OSError, match="No space left on device"):
        supervised([1, 2], 1, _start, (str(tmp_path),), _square, write_result, lambda _: None)
