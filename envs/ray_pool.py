"""The Ray backend of the one worker pool (`envs.workers.supervised(..., executor=Executor("ray"))`):
`slimdrive eval|collect|dagger executor=ray` drives episodes on the nodes of a Ray cluster (docs/scale.md).

The contract is the local pool's, so the commands keep one copy of their episode bookkeeping: up to `workers`
Ray actors, each a process that runs the command's initializer once (one simulator per actor: the embedded
server started on the actor's node, or the CARLA server `ray.servers` gives it), then takes one task at a time;
results come back to the driver as they finish and the command's `on_result` writes them there, exactly as in a
local run. An actor that dies (its process killed, its node lost) fails its task's ObjectRef with
`RayActorError`: the task goes back to the front of the queue for a new actor, which Ray places on any node with
a free CPU, at most `retries` more times; then it is given up and reported as a `Death` with Ray's reason. Ray's
own retries are off (`max_restarts=0`, `max_task_retries=0`): one bookkeeper decides what is retried, so nothing
is run or written twice behind its back.

Ray is an optional extra (`pip install -e ".[ray]"`); only this module imports it, and only `executor=ray`
imports this module.
"""
from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError

from .workers import STOP_TIMEOUT_S, Death, Executor, WorkerError, _describe


@dataclass
class RayDeath(Death):
    """A Ray actor that died; `reason` is Ray's account of it (the process killed, the node gone...)."""

    reason: str = ""
    node: str = ""

    @property
    def cause(self) -> str:
        return f"{self.reason} on {self.node}" if self.node else self.reason


@ray.remote(max_restarts=0, max_task_retries=0)
class EpisodeWorker:
    """One pool worker: a process on some node of the cluster holding a command's simulator, agent and state.
    While it runs a task its process title is `ray::EpisodeWorker.run` (what `ray list actors` and `ps` show)."""

    def start(self, initializer: Callable[..., None], initargs: Sequence, server: str | None) -> tuple:
        where = (os.getpid(), socket.gethostname())
        try:
            if server is None:
                initializer(*initargs)
            else:
                initializer(*initargs, server=server)
        except BaseException as exc:  # the driver raises it
            return ("init_error", _describe(exc), *where)
        return ("ready", None, *where)

    def run(self, task: Callable[[Any], Any], item: Any) -> tuple:
        try:
            return ("ok", task(item))
        except Exception as exc:
            return ("error", _describe(exc))

    def stop(self) -> None:
        # exits through the interpreter's exit path: atexit handlers run, and with them multiprocessing's
        # finalizers, by which a command's worker state stops its simulator (as in a local pool worker)
        ray.actor.exit_actor()


@dataclass(eq=False)
class _Actor:
    handle: Any
    server: str | None
    ref: Any = None  # the ObjectRef of the call in flight
    state: str = "starting"  # starting | idle | busy
    task: Any = None
    pid: int = 0
    node: str = ""


def _reason(exc: RayActorError) -> str:
    """Ray's reason for an actor's death, on one line (its message runs to many)."""
    text = " ".join(str(exc).split())
    for marker in ("The actor died unexpectedly before finishing this task.", "The actor is dead because"):
        if marker in text:
            return "actor process died: " + text.split(marker, 1)[1].strip()[:300]
    return text[:300]


def supervised(tasks: Iterable, workers: int, initializer: Callable[..., None], initargs: Sequence,
               task: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
               on_death: Callable[[Death], None], retries: int, executor: Executor) -> list[Death]:
    """`envs.workers.supervised` on Ray actors: the same arguments, callbacks, retries and errors. With
    `executor.servers`, one actor per server (at most `workers`), and the initializer is called with
    `server="host:port"`. Connects to `executor.address` (`auto`, a head's `host:port`, or none: a Ray started
    here for this run and stopped after it) unless the process is already connected to a Ray cluster."""
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=executor.address, include_dashboard=False, logging_level="WARNING")
        except ConnectionError as exc:  # no cluster at that address: say which and what to do
            raise WorkerError(f"executor=ray: no Ray cluster at ray.address={executor.address} ({exc}); start one "
                              "(`ray start --head`) or leave ray.address out to start Ray here") from exc
    queue = list(tasks)[::-1]  # popped from the end: first in, first out
    limit = min(workers, len(executor.servers)) if executor.servers else workers
    free_servers = list(executor.servers)
    lost: Counter = Counter()
    gave_up: list[Death] = []
    starting_deaths = 0
    pool: list[_Actor] = []

    def start() -> None:
        server = free_servers.pop(0) if executor.servers else None
        handle = EpisodeWorker.options(num_cpus=executor.cpus_per_worker).remote()
        actor = _Actor(handle, server)
        actor.ref = handle.start.remote(initializer, initargs, server)
        pool.append(actor)

    def dispatch() -> None:
        for actor in pool:
            if actor.state == "idle" and queue:
                actor.task, actor.state = queue.pop(), "busy"
                actor.ref = actor.handle.run.remote(task, actor.task)
        starting = sum(a.state == "starting" for a in pool)
        for _ in range(min(limit - len(pool), len(queue) - starting)):
            start()

    try:
        dispatch()
        while queue or any(a.state != "idle" for a in pool):
            (done,), _ = ray.wait([a.ref for a in pool if a.ref is not None], num_returns=1)
            actor = next(a for a in pool if a.ref == done)
            actor.ref = None
            try:
                kind, payload, *where = ray.get(done)
            except RayActorError as exc:
                pool.remove(actor)
                if actor.server is not None:
                    free_servers.append(actor.server)  # the server goes to the actor that replaces this one
                ray.kill(actor.handle, no_restart=True)
                if actor.state == "busy":
                    lost[actor.task] += 1
                    death = RayDeath(actor.pid, None, actor.task, lost[actor.task], lost[actor.task] <= retries,
                                     _reason(exc), actor.node)
                    if death.retried:
                        queue.append(death.task)  # next out
                    else:
                        gave_up.append(death)
                    on_death(death)
                else:
                    starting_deaths += 1
                    death = RayDeath(actor.pid, None, None, starting_deaths, False, _reason(exc), actor.node)
                    on_death(death)
                    if starting_deaths > retries:
                        raise WorkerError(f"{starting_deaths} Ray workers died while starting (the last: "
                                          f"{death.cause}); not starting more") from exc
                dispatch()
                continue
            if kind == "ready":
                actor.state, (actor.pid, actor.node) = "idle", where
            elif kind == "ok":
                item, actor.task, actor.state = actor.task, None, "idle"
                queue[:0] = list(on_result(item, payload) or ())[::-1]  # more items: after those waiting
            elif kind == "error":
                name, reason, text = payload
                raise WorkerError(f"task {actor.task!r} raised in Ray worker pid {actor.pid} on {actor.node}:\n"
                                  f"{text}", name, reason)
            else:
                name, reason, text = payload
                raise WorkerError(f"Ray worker pid {where[0]} on {where[1]} failed to start:\n{text}", name, reason)
            dispatch()
    finally:
        _stop(pool)
        if started_here:
            ray.shutdown()
    return gave_up


def _stop(pool: list[_Actor]) -> None:
    """Tell every actor to stop (its exit path stops its simulator), wait for it, kill a straggler."""
    if pool:  # a stop call ends with its actor (an error answer): ready either way
        ray.wait([actor.handle.stop.remote() for actor in pool], num_returns=len(pool), timeout=STOP_TIMEOUT_S)
    for actor in pool:
        ray.kill(actor.handle, no_restart=True)  # a straggler; a no-op for one that exited
