"""The server's write coalescing, on a real asyncio transport over a socket pair."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sidecar.server import CoalescingWriter


class _Counted:
    """The real transport, with its writes counted."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[_Counted, socket.socket]:
    ours, theirs = socket.socketpair()
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    return _Counted(transport), theirs


async def _read(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        data += await asyncio.wait_for(loop.sock_recv(sock, size - len(data)), 2)
    return data


async def test_writes_of_one_iteration_leave_as_one():
    counted, peer = await _pair()
    writer = CoalescingWriter(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    writer.write(b"")  # an empty final body message writes nothing
    writer.write(b"hello")
    assert counted.writes == []  # held until the loop turns
    assert writer.get_write_buffer_size() == 43
    await asyncio.sleep(0)
    assert counted.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert await _read(peer, 43) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    writer.write(b"next")  # a later iteration: a write of its own
    writer.writelines([b" and", b" more"])  # queued behind it, never past it
    await asyncio.sleep(0)
    assert counted.writes[1:] == [b"next and more"]
    writer.close()
    peer.close()


async def test_close_sends_what_waits_and_abort_drops_it():
    counted, peer = await _pair()
    writer = CoalescingWriter(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\r\n")
    writer.close()  # e.g. a refusal: written, then closed, in the same iteration
    assert writer.is_closing()
    data = await _read(peer, 67)
    assert data.startswith(b"HTTP/1.1 431 ")
    peer.close()

    counted, peer = await _pair()
    writer = CoalescingWriter(counted, asyncio.get_running_loop())  # type: ignore[arg-type]
    writer.write(b"never sent")
    writer.abort()
    await asyncio.sleep(0.01)
    assert counted.writes == []
    peer.close()
