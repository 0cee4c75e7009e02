"""Sockets: the msgpack-RPC port (N) and the streaming port (N+1), served by one asyncio loop.

RPC: rpclib framing, i.e. bare msgpack arrays `[0, id, name, params]` answered by `[1, id, error, result]`.
A malformed stream of bytes closes only that connection. Streaming: a client connects, writes a u32 stream
id, then receives `[u32 size][payload]` frames of that stream. A subscriber that stops reading loses frames
instead of growing the server's memory.

Memory is bounded whatever a client sends (docs/server.md, Limits): a request larger than `MAX_FRAME_BYTES`,
finished or not, closes its connection; a client that does not read its replies stops being read once
`MAX_PENDING_REPLY_BYTES` of them wait (its requests stay in its socket until it reads); each port takes at
most `MAX_CONNECTIONS` connections, and closes the ones beyond.
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
from .protocol import response, response_error, response_void, with_map_change
from .world import CarlaError, NotServed, not_served

log = logging.getLogger("slimdrive.server")

MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # per stream subscriber
# The largest RPC request: a client's own OpenDRIVE map (generate_opendrive_world) is the only big one, and the
# shipped town is 0.2 MB. msgpack builds a request's objects as its bytes arrive, so the bytes of an unfinished
# one are counted here (`RpcProtocol.unfinished`), and its arrays and maps are kept short: a batch of commands is
# the longest array a client sends.
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_ITEMS = 65_536
MAX_PENDING_REPLY_BYTES = 8 * 1024 * 1024  # per RPC connection: replies queued for a client that is not reading
MAX_CONNECTIONS = 64  # per port: a client takes one RPC connection and one stream connection per sensor
ASYNC_TICK_SECONDS = 0.05  # wall-clock period of the self-ticking loop in asynchronous mode


class RpcProtocol(asyncio.Protocol):
    def __init__(self, server: SimulatorServer):
        self.server = server
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_bin_len=MAX_FRAME_BYTES,
                                         max_str_len=MAX_FRAME_BYTES, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS)
        self.received = 0  # bytes fed to the unpacker
        self.complete = 0  # where the last complete request ended (the unpacker's tell())
        self.transport: asyncio.Transport | None = None
        self.replies_waiting = False  # the transport's write buffer is above its high-water mark

    def connection_made(self, transport):
        self.transport = transport
        if self.server.admit(self, "RPC"):
            transport.set_write_buffer_limits(high=MAX_PENDING_REPLY_BYTES)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        self.received += len(data)
        self._handle_buffered()
        # (requests held back by backpressure count too: at most one read, as reading pauses with them)
        if not self.transport.is_closing() and self.received - self.complete > MAX_FRAME_BYTES:
            log.warning("closing RPC connection from %s: a request larger than %d bytes (MAX_FRAME_BYTES)",
                        self.transport.get_extra_info("peername"), MAX_FRAME_BYTES)
            self.transport.abort()  # drop it now: its bytes are what must not accumulate

    def _handle_buffered(self) -> None:
        """Answer the complete requests buffered so far, stopping while the client leaves its replies unread."""
        try:
            for message in self.unpacker:
                self.complete = self.unpacker.tell()
                self._handle(message)
                if self.replies_waiting or self.transport.is_closing():
                    break
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as exc:
            log.warning("closing RPC connection after malformed msgpack: %s", exc)
            self.transport.close()

    def pause_writing(self) -> None:
        # Backpressure: a client that does not read its replies is not read either, so that neither its requests
        # nor the replies to them pile up here; they wait in its socket instead.
        self.replies_waiting = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.replies_waiting = False
        self.transport.resume_reading()
        self._handle_buffered()

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
        self.server.admit(self, "stream")

    def data_received(self, data: bytes) -> None:
        if self.stream_id is not None:
            return
        self.buffer += data
        if len(self.buffer) >= 4:
            (self.stream_id,) = self._ID.unpack(self.buffer[:4])
            if self.stream_id in self.server.simulator.observer_streams:
                self.server.observers.add(self)
                first = self.server.simulator.observer_subscribed(self.stream_id)
                if self.server.last_state is not None:
                    # A new client waits for one episode state; in synchronous mode none may come for a while.
                    # A client that loaded a map is told that the map changed (Simulator.observer_subscribed).
                    state = self.server.last_state
                    self.send(state[:4] + with_map_change(state[4:]) if first else state)
            else:
                self.server.subscribers.setdefault(self.stream_id, set()).add(self)
                late = self.server.latest_sensor_data.get(self.stream_id)
                if late is not None:
                    # listen() subscribes after it returns, so the tick a client sends right after it can be
                    # measured first: the subscriber gets that tick's data as if it had been in time
                    self.send(late)

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.stream_id is not None:
            self.server.observers.discard(self)
            self.server.subscribers.get(self.stream_id, set()).discard(self)

    def send(self, frame: bytes) -> None:
        if self.transport.is_closing() or self.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            return
        self.transport.write(frame)


class SimulatorServer:
    def __init__(self, simulator: Simulator, host: str, port: int):
        self.simulator = simulator
        self.host, self.port = host, port
        self.subscribers: dict[int, set[StreamProtocol]] = {}  # sensor stream id -> its subscribers
        # Subscribers of any episode's state stream: each gets the current episode's state, so a client that did
        # not load the new map itself follows it on the stream it has (as on CARLA's one broadcast stream)
        self.observers: set[StreamProtocol] = set()
        self.last_state: bytes | None = None  # the latest framed episode state
        self.latest_sensor_data: dict[int, bytes] = {}  # sensor stream id -> its framed data of the latest tick
        self.connections: set[RpcProtocol | StreamProtocol] = set()
        simulator.on_tick = self.publish

    def admit(self, protocol: RpcProtocol | StreamProtocol, port: str) -> bool:
        """Count a new connection in, or close it when its port already has `MAX_CONNECTIONS`."""
        open_here = sum(type(c) is type(protocol) for c in self.connections)
        if open_here >= MAX_CONNECTIONS:
            log.warning("refusing a %s connection from %s: %d are open, the limit (MAX_CONNECTIONS)", port,
                        protocol.transport.get_extra_info("peername"), open_here)
            protocol.transport.abort()
            return False
        self.connections.add(protocol)
        return True

    def dispatch(self, name, params) -> tuple[object, object]:
        """Run one call; returns (rpclib error field, result)."""
        log.debug("call %s%r", name, params)
        if not isinstance(name, str) or name not in REGISTRY:
            return f"rpc::rpc_error: {not_served(f'function {name!r}')}", None
        method_name, wrapping = REGISTRY[name]
        void = wrapping == "void"
        args = list(params[1:]) if isinstance(params, list) and params else []  # drop Metadata
        # Metadata [true]: the client discards the answer (apply_batch, as against apply_batch_sync)
        metadata = params[0] if isinstance(params, list) and params else None
        self.simulator.answer_discarded = isinstance(metadata, list) and metadata[:1] == [True]
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
            frame = struct.pack("<I", len(payload)) + payload
            if stream_id in self.simulator.observer_streams:
                self.last_state = frame
                self.latest_sensor_data.clear()  # a new tick: what was kept for late subscribers is stale
                subscribers = self.observers
            else:
                self.latest_sensor_data[stream_id] = frame
                subscribers = self.subscribers.get(stream_id)
            for subscriber in list(subscribers or ()):
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
        # A tick's sensors are measured right after the call that ticked is answered, ahead of any call read after
        # it (call_soon runs before the next poll for input), so they see the world of their tick
        self.simulator.measure_sensors = loop.call_soon
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
