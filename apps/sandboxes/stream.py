"""Streaming plumbing for command output: the Docker multiplexed stream, tails and decoding.

Kept free of any SDK import so it can be unit-tested with a socketpair.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import select
import socket
import struct
import time
from collections.abc import Callable
from typing import IO

STDOUT = "stdout"
STDERR = "stderr"
_STREAM_NAMES = {0: STDOUT, 1: STDOUT, 2: STDERR}
_HEADER = struct.Struct(">BxxxL")
_READ_SIZE = 256 * 1024
_WRITE_SIZE = 256 * 1024


class StopReading(Exception):
    """Raised by a frame callback to stop consuming the stream (e.g. output limit reached)."""


class OutputTail:
    """The last ``limit`` bytes of one stream, plus how many bytes went by in total."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> None:
        self.total += len(data)
        self._buffer += data
        if len(self._buffer) > 2 * self.limit:  # trim in batches: amortised O(1) per byte
            del self._buffer[: len(self._buffer) - self.limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def value(self) -> bytes:
        if len(self._buffer) > self.limit:
            del self._buffer[: len(self._buffer) - self.limit]
        return bytes(self._buffer)


def decode_output(data: bytes, *, truncated: bool = False) -> str:
    """UTF-8, U+FFFD for invalid bytes; a character cut off at the start of a tail is dropped."""
    if truncated:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")


class TextDecoder:
    """Incremental UTF-8 decoding of one stream's chunks (a character may span chunks).

    For ``on_output`` consumers that want text: ``decoder.feed(chunk)`` returns what is complete.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


FrameCallback = Callable[[str, memoryview], None]


class MuxStream:
    """Reads Docker's multiplexed exec stream (8-byte frame headers) from a hijacked socket,
    feeding stdin concurrently, with a wall-clock deadline. Never blocks past the deadline."""

    def __init__(self, sock: socket.socket, prebuffered: bytes = b"") -> None:
        self.sock = sock
        self._pending = bytearray(prebuffered)
        self._eof = False
        self._stdin_done = True
        self._stdin_view: memoryview | None = None
        self._stdin_file: IO[bytes] | None = None
        self._stdin_offset = 0
        self._file_chunk: memoryview | None = None
        self.stdin_error: OSError | None = None
        sock.setblocking(False)

    def set_stdin(self, data: bytes | memoryview | IO[bytes] | None) -> None:
        if data is None:
            return
        self._stdin_done = False
        if isinstance(data, bytes | bytearray | memoryview):
            self._stdin_view = memoryview(data).cast("B")
        else:
            self._stdin_file = data

    @property
    def eof(self) -> bool:
        return self._eof

    def run(self, on_frame: FrameCallback, *, deadline: float | None) -> str:
        """Pump until EOF ("eof"), the monotonic ``deadline`` ("timeout"), or a callback raising
        StopReading ("stopped")."""
        poller = select.poll()
        fd = self.sock.fileno()
        try:
            self._drain(on_frame)
            while not self._eof:
                events = select.POLLIN | (0 if self._stdin_done else select.POLLOUT)
                poller.register(fd, events)
                pending_tls = getattr(self.sock, "pending", None)
                if pending_tls is not None and pending_tls():
                    ready = [(fd, select.POLLIN)]
                else:
                    if deadline is None:
                        wait_ms = None
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return "timeout"
                        wait_ms = max(1, int(remaining * 1000))
                    ready = poller.poll(wait_ms)
                poller.unregister(fd)
                if not ready:
                    continue
                mask = ready[0][1]
                if mask & select.POLLOUT and not self._stdin_done:
                    self._write_stdin()
                if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._read_once()
                    self._drain(on_frame)
        except StopReading:
            return "stopped"
        return "eof"

    def _read_once(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
        else:
            self._pending += data

    def _drain(self, on_frame: FrameCallback) -> None:
        pending = self._pending
        offset = 0
        try:
            while len(pending) - offset >= _HEADER.size:
                stream_id, length = _HEADER.unpack_from(pending, offset)
                end = offset + _HEADER.size + length
                if len(pending) < end:
                    break
                if length:
                    # The callback must copy what it keeps: the view dies right after the call.
                    view = memoryview(pending)
                    chunk = view[offset + _HEADER.size : end]
                    try:
                        on_frame(_STREAM_NAMES.get(stream_id, STDOUT), chunk)
                    finally:
                        chunk.release()
                        view.release()
                offset = end
        finally:
            if offset:
                del pending[:offset]

    def _next_stdin_chunk(self) -> memoryview | bytes | None:
        if self._stdin_view is not None:
            if self._stdin_offset >= len(self._stdin_view):
                return None
            return self._stdin_view[self._stdin_offset : self._stdin_offset + _WRITE_SIZE]
        assert self._stdin_file is not None
        if not self._file_chunk:
            self._file_chunk = memoryview(self._stdin_file.read(_WRITE_SIZE) or b"")
            if not self._file_chunk:
                return None
        return self._file_chunk

    def _write_stdin(self) -> None:
        chunk = self._next_stdin_chunk()
        if chunk is None:
            self._finish_stdin()
            return
        try:
            sent = self.sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # The process closed its stdin (or exited) early; its output still matters.
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                self.stdin_error = exc
            self._stdin_done = True
            return
        if self._stdin_view is not None:
            self._stdin_offset += sent
        elif self._file_chunk is not None:
            self._file_chunk = self._file_chunk[sent:]

    def _finish_stdin(self) -> None:
        self._stdin_done = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
