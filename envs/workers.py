"""Tasks in N spawned worker processes that survive the death of a worker (`slimdrive eval workers=N`,
`slimdrive collect workers=N`, `slimdrive dataset rerender workers=N`): the one pool of the project.

It lives at the bottom of `envs` (it imports nothing of slimdrive) so that evaluation, below training, and
training's collection and re-rendering share it.

The CARLA client library can kill the process it runs in: LibCarla occasionally throws `std::bad_weak_ptr` from a
callback thread, `std::terminate` aborts the process, and no Python code runs. In a `ProcessPoolExecutor` that
breaks the pool: every pending future fails with `BrokenProcessPool`, the other workers are killed with the
episodes they were driving, and the whole collection stops. Here the parent hands each worker one task at a
time over its own pipe, so it knows which task a dead worker held: that task goes back in the queue (at most
`retries` more times), a new worker replaces the dead one, and the other workers carry on undisturbed.

Spawned, not forked: a forked worker inherits the parent's CARLA clients and hangs freeing them. A worker ends
through multiprocessing's exit path, which runs `multiprocessing.util.Finalize` finalizers (a collector's
simulator is stopped by one) but not atexit handlers.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.util
import signal
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from omegaconf import DictConfig, OmegaConf

STOP = None  # the message that tells a worker to return
STOP_TIMEOUT_S = 30.0  # a worker told to stop is killed after this long


class WorkerError(RuntimeError):
    """A worker raised (in its initializer or a task), or workers kept dying before taking a task.

    `kind` is the class name of what the worker raised (None: no exception, workers kept dying) and `reason` its
    message, so that the parent can tell failures apart (an agent's from a simulator's) and name one in one line:
    this module sits below every caller and cannot know their exception classes, and exceptions are not pickled
    (a class that does not unpickle would lose the whole report)."""

    def __init__(self, message: str, kind: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.reason = kind, reason


@dataclass
class Death:
    """A worker that died; `task` is what it held (None: it died while starting)."""

    pid: int
    exitcode: int | None
    task: Any
    attempt: int  # times the task has now been lost to a dead worker
    retried: bool  # the task goes back in the queue

    @property
    def cause(self) -> str:
        code = self.exitcode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


@dataclass(frozen=True)
class Executor:
    """Where the pool's workers run (`executor=` and `ray.*` in conf/eval.yaml, conf/collect.yaml): `local`,
    spawned processes on this machine; `ray`, actors on a Ray cluster (`envs.ray_pool`, docs/scale.md) at
    `address` (None: a Ray started for the run; `auto`; a head's host:port), each holding one simulator: the
    embedded one on its node, or one of `servers` (CARLA host:port, one per worker)."""

    kind: str = "local"
    address: str | None = None
    servers: tuple[str, ...] = ()
    cpus_per_worker: float = 1.0

    @classmethod
    def from_cfg(cls, cfg: Any) -> Executor:
        """The executor a command's config asks for; a ValueError says what is wrong (Ray missing included)."""
        kind = str(cfg.get("executor", "local"))
        options = cfg.get("ray") or {}
        executor = cls(kind, options.get("address"), tuple(str(s) for s in options.get("servers") or ()),
                       float(options.get("cpus_per_worker", 1.0)))
        if kind not in ("local", "ray"):
            raise ValueError(f"executor={kind}: use local (worker processes here) or ray (a Ray cluster)")
        if kind == "local" and executor.servers:
            raise ValueError("ray.servers shares CARLA servers among Ray workers: add executor=ray")
        for server in executor.servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"ray.servers: {server!r} is not host:port")
        if kind == "ray":
            try:
                import ray  # noqa: F401  (only to say how to install it before any simulator starts)
            except ImportError as exc:
                raise ValueError('executor=ray needs Ray, an optional extra: pip install -e ".[ray]"') from exc
        return executor


def on_server(cfg: DictConfig, server: str | None) -> DictConfig:
    """`cfg` with its env driving the CARLA server `host:port` (a pool worker's share of `ray.servers`)."""
    if server is None:
        return cfg
    host, _, port = server.rpartition(":")
    return OmegaConf.merge(cfg, {"env": {"server": {"host": host, "port": int(port)}}})


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """What the parent needs of a worker's exception: (class name, message, traceback)."""
    return type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)).rstrip()


def _serve(conn: Connection, initializer: Callable[..., None], initargs: Sequence, task: Callable[[Any], Any]) -> None:
    """A worker's life: initialize, then answer one task at a time until told to stop."""
    try:
        initializer(*initargs)
    except BaseException as exc:  # the parent raises it
        conn.send(("init_error", _describe(exc)))
        return
    conn.send(("ready", None))
    while (item := conn.recv()) is not STOP:
        try:
            conn.send(("ok", task(item)))
        except Exception as exc:
            conn.send(("error", _describe(exc)))


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    state: str = "starting"  # starting | idle | busy
    task: Any = None


def close_when_the_worker_ends(resource) -> None:
    """Call `resource.close()` (its simulator, agent, open files) when this pool worker ends: a worker ends
    through multiprocessing's exit path, which runs finalizers but not atexit handlers."""
    multiprocessing.util.Finalize(resource, resource.close, exitpriority=10)


def supervised(tasks: Iterable, workers: int, initializer: Callable[..., None], initargs: Sequence,
               task: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
               on_death: Callable[[Death], None], retries: int = 2, executor: Executor | None = None) -> list[Death]:
    """Run `task(item)` for every item in up to `workers` spawned processes, each of which first runs
    `initializer(*initargs)`; `on_result(item, result)` is called in the parent as results arrive, in the order
    they finish, and may return more items, queued after those waiting (an ask/tell optimiser's next points:
    `slimdrive scenario search`), or None. A worker that dies holding an item is replaced and the item tried
    again, at most `retries` more times; `on_death` hears of every death. Returns the deaths that made an item
    be given up.

    A task's or initializer's exception is raised here as `WorkerError` carrying the worker's traceback (after
    every worker is stopped); so are more than `retries` deaths of workers that were starting. `initializer`
    and `task` must be module-level functions, their arguments and results picklable. `executor` says where
    the workers run: here (None or local) or as Ray actors (`envs.ray_pool`, the same contract)."""
    if workers < 1:  # no worker would ever take a task: the loop would wait for ever
        raise ValueError(f"supervised: workers={workers}, give at least 1")
    if executor is not None and executor.kind == "ray":
        from .ray_pool import supervised as on_ray  # Ray is an optional extra: imported only when asked for

        return on_ray(tasks, workers, initializer, initargs, task, on_result, on_death, retries, executor)
    context = multiprocessing.get_context("spawn")
    queue = list(tasks)[::-1]  # popped from the end: first in, first out

    def result(item: Any, value: Any) -> None:
        queue[:0] = list(on_result(item, value) or ())[::-1]  # more items: after those waiting

    lost: Counter = Counter()
    gave_up: list[Death] = []
    starting_deaths = 0
    pool: list[_Worker] = []

    def start() -> None:
        parent, child = context.Pipe()
        process = context.Process(target=_serve, args=(child, initializer, initargs, task), daemon=True)
        process.start()
        child.close()  # only the worker holds that end now: its death closes the pipe
        pool.append(_Worker(process, parent))

    def dispatch() -> None:
        for worker in pool:
            if worker.state == "idle" and queue:
                worker.task, worker.state = queue.pop(), "busy"
                worker.conn.send(worker.task)
        # a worker for every queued task that no live worker will take, up to `workers`
        starting = sum(w.state == "starting" for w in pool)
        for _ in range(min(workers - len(pool), len(queue) - starting)):
            start()

    try:
        dispatch()
        while queue or any(w.state != "idle" for w in pool):
            ready = set(wait([w.conn for w in pool] + [w.process.sentinel for w in pool]))
            for worker in [w for w in pool if w.conn in ready or w.process.sentinel in ready]:
                if _receive(worker, result):
                    continue
                pool.remove(worker)
                worker.process.join()
                worker.conn.close()
                if worker.state == "busy":
                    lost[worker.task] += 1
                    death = Death(worker.process.pid, worker.process.exitcode, worker.task, lost[worker.task],
                                  lost[worker.task] <= retries)
                    if death.retried:
                        queue.append(death.task)  # next out
                    else:
                        gave_up.append(death)
                    on_death(death)
                elif worker.state == "starting":
                    starting_deaths += 1
                    death = Death(worker.process.pid, worker.process.exitcode, None, starting_deaths, False)
                    on_death(death)
                    if starting_deaths > retries:
                        raise WorkerError(f"{starting_deaths} workers died while starting (the last: pid "
                                          f"{death.pid}, {death.cause}); not starting more")
            dispatch()
    finally:
        _stop(pool)
    return gave_up


def _receive(worker: _Worker, on_result: Callable[[Any, Any], None]) -> bool:
    """Handle what `worker` sent (a result may arrive just before its death); False when it is dead. Only the
    pipe's errors mean a dead worker: an OSError of `on_result` (the caller's own write, a full disk) is the
    caller's and propagates, instead of being taken for a death and waited on forever."""
    while True:
        try:
            if not worker.conn.poll():
                break
            kind, payload = worker.conn.recv()
        except (EOFError, OSError):
            return False  # the pipe closed under us: the worker is gone
        if kind == "ready":
            worker.state = "idle"
        elif kind == "ok":
            item, worker.task, worker.state = worker.task, None, "idle"
            on_result(item, payload)
        elif kind == "error":
            name, reason, text = payload
            raise WorkerError(f"task {worker.task!r} raised in worker pid {worker.process.pid}:\n{text}", name,
                              reason)
        else:
            name, reason, text = payload
            raise WorkerError(f"worker pid {worker.process.pid} failed to start:\n{text}", name, reason)
    return worker.process.is_alive()


def _stop(pool: list[_Worker]) -> None:
    """Tell every live worker to stop, wait for it (its finalizers stop its simulator), kill a straggler."""
    for worker in pool:
        try:
            worker.conn.send(STOP)
        except OSError:
            pass  # dead already
    for worker in pool:
        worker.process.join(timeout=STOP_TIMEOUT_S)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()
