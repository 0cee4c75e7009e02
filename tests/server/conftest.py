"""Fixtures of the server tests (the server, client and world fixtures are tests/conftest.py's)."""
from __future__ import annotations

import socket

import msgpack
import pytest


@pytest.fixture
def raw_call(server):
    """`raw_call(name, *params)`: one msgpack-RPC request on a fresh connection to the module's server, past the
    stock client; returns (rpclib error field, result)."""
    def call(name, *params):
        with socket.create_connection((server.host, server.port), timeout=5.0) as conn:
            conn.sendall(msgpack.packb([0, 7, name, [[False], *params]], use_bin_type=True))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                unpacker.feed(conn.recv(1 << 20))
                for reply in unpacker:
                    assert reply[:2] == [1, 7]
                    return reply[2], reply[3]
    return call
