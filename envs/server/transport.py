"""Sockets: the msgpack-RPC port (N) and the streaming port (N+1), served by one asyncio loop.

RPC: rpclib framing, i.e. bare msgpack arrays `[0, id, name, params]` answered by `[1, id, error, result]`.
A malformed stream of bytes closes only that connection. Streaming: a client connects, writes a u32 stream
id, then receives `[u32 size][payload]` frames of that stream. A subscriber that stops reading loses frames
instead of growing the server's memory.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import traceback

import msgpack

from .api import REGISTRY, Simulator
from .protocol import WORLD_OBSERVER_STREAM, response, response_error, response_void
from .world import CarlaError, NotServed, not_served

log = logging.getLogger("slimdrive.server")

MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # per stream subscriber
ASYNC_TICK_SECONDS = 0.05  # wall-clock period of the self-ticking loop in asynchronous mode


class RpcProtocol(asyncio.Protocol):
    def __init__(self, server: SimulatorServer):
        self.server = server
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        try:
            for message in self.unpacker:
                self._handle(message)
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            log.warning("closing RPC connection after malformed msgpack: %s", exc)
            self.transport.close()

    def _handle(self, message) -> None:
        if not isinstance(message, list) or len(message) not in (3, 4) or message[0] not in (0, 2):
            log.warning("ignoring a message that is not a msgpack-rpc request: %.80r", message)
            return
        if message[0] == 2:  # notification: run, never answer
            self.server.dispatch(message[1], message[2])
            return
        _, msgid, name, params = message
        error, result = self.server.dispatch(name, params)
        self.transport.write(msgpack.packb([1, msgid, error, result], use_bin_type=True))


class StreamProtocol(asyncio.Protocol):
    _ID = struct.Struct("<I")

    def __init__(self, server: SimulatorServer):
        self.server = server
        self.buffer = b""
        self.stream_id: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.stream_id is not None:
            return
        self.buffer += data
        if len(self.buffer) >= 4:
            (self.stream_id,) = self._ID.unpack(self.buffer[:4])
            self.server.subscribers.setdefault(self.stream_id, set()).add(self)
            if self.stream_id == WORLD_OBSERVER_STREAM and self.server.last_state is not None:
                # A new client waits for one episode state; in synchronous mode none may come for a while.
                self.send(self.server.last_state)

    def connection_lost(self, exc) -> None:
        if self.stream_id is not None:
            self.server.subscribers.get(self.stream_id, set()).discard(self)

    def send(self, frame: bytes) -> None:
        if self.transport.is_closing() or self.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            return
        self.transport.write(frame)


class SimulatorServer:
    def __init__(self, simulator: Simulator, host: str, port: int):
        self.simulator = simulator
        self.host, self.port = host, port
        self.subscribers: dict[int, set[StreamProtocol]] = {}
        self.last_state: bytes | None = None  # the latest framed episode state
        simulator.on_tick = self.publish

    def dispatch(self, name, params) -> tuple[object, object]:
        """Run one call; returns (rpclib error field, result)."""
        log.debug("call %s%r", name, params)
        if not isinstance(name, str) or name not in REGISTRY:
            return f"rpc::rpc_error: {not_served(f'function {name!r}')}", None
        method_name, wrapping = REGISTRY[name]
        void = wrapping == "void"
        args = list(params[1:]) if isinstance(params, list) and params else []  # drop Metadata
        try:
            value = getattr(self.simulator, method_name)(*args)
            if wrapping == "raw":
                return None, value
            return None, (response_void() if void else response(value))
        except CarlaError as exc:
            if isinstance(exc, NotServed):
                log.warning("%s", exc)
            return None, response_error(str(exc), void)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            message = f"{name}: bad arguments ({exc})"
            log.warning(message)
            return None, response_error(message, void)
        except Exception as exc:  # the server must keep serving whatever one call does
            log.error("internal error in %s:\n%s", name, traceback.format_exc())
            return None, response_error(f"{name}: internal simulator error: {exc}", void)

    def publish(self, messages: list[tuple[int, bytes]]) -> None:
        for stream_id, payload in messages:
            subscribers = self.subscribers.get(stream_id)
            if stream_id == WORLD_OBSERVER_STREAM:
                self.last_state = struct.pack("<I", len(payload)) + payload
            if subscribers:
                frame = struct.pack("<I", len(payload)) + payload
                for subscriber in list(subscribers):
                    subscriber.send(frame)

    async def _self_tick(self) -> None:
        """In asynchronous mode the server advances on its own, as CARLA does."""
        while True:
            started = time.monotonic()
            settings = self.simulator.world.settings
            if not settings.synchronous_mode:
                self.simulator.step()
            period = settings.fixed_delta_seconds or ASYNC_TICK_SECONDS
            await asyncio.sleep(max(period - (time.monotonic() - started), 0.001))

    async def serve_forever(self, ready=None, parent_pid: int | None = None) -> None:
        """Serve until cancelled or, given `parent_pid`, until that process (the launcher) is gone."""
        loop = asyncio.get_running_loop()
        rpc = await loop.create_server(lambda: RpcProtocol(self), self.host, self.port)
        stream = await loop.create_server(lambda: StreamProtocol(self), self.host, self.port + 1)
        log.info("slimdrive simulator serving map '%s' on %s:%d (streams on %d)",
                 self.simulator.world.map_name, self.host, self.port, self.port + 1)
        if ready is not None:
            ready()
        async with rpc, stream:
            tasks = [asyncio.create_task(self._self_tick())]
            if parent_pid is not None:
                tasks.append(asyncio.create_task(_until_gone(parent_pid)))
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()


async def _until_gone(parent_pid: int) -> None:
    """Returns once the process `parent_pid` is gone: a launcher that dies without stopping its server (killed,
    crashed) leaves no simulator behind, holding ports and memory."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("the process that launched this simulator (pid %d) is gone: stopping", parent_pid)
