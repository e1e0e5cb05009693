"""A TCP proxy that can cut every connection and refuse new ones, then come back.

Used to make a real server (PostgreSQL) unreachable for one process only: the process under test
connects through the proxy, everything else (the test itself, other helpers' tests) connects
directly. ``cut()`` resets the open connections and closes the listening socket, so new
connections are refused exactly as if the server were down; ``restore()`` listens again on the
same port.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, int(target_port))
        self.port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self.connections = 0  # accepted since start, for the tests' reports
        self._trap: bytes | None = None
        self._muted: set[socket.socket] = set()
        self.trapped = 0  # connections dropped by the trap

    # -- control ------------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`restore`."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = set(self._sockets), set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            _reset(sock)

    def drop_reply_to_next(self, marker: bytes) -> None:
        """The next client message containing ``marker`` reaches the server, but its answer
        never comes back: the connection is reset instead. With ``b"COMMIT"`` the transaction
        is committed while the client sees an error (the ambiguous commit)."""
        with self._lock:
            self._trap = marker

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- plumbing -----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or stopped
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    _reset(client)
                    _reset(upstream)
                    continue
                self._sockets.update({client, upstream})
                self.connections += 1
            for source, sink, to_server in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, to_server), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not to_server and sink in self._muted:
                    continue  # the trapped answer: swallowed
                sprung = False
                if to_server and self._trap is not None:
                    with self._lock:
                        if self._trap is not None and self._trap in data:
                            self._trap = None
                            self._muted.add(source)
                            sprung = True
                sink.sendall(data)
                if sprung:
                    time.sleep(0.3)  # the server acts on it; its answer is swallowed
                    with self._lock:
                        self.trapped += 1
                    _reset(source)
                    _reset(sink)
                    break
        except OSError:
            pass
        finally:
            # PostgreSQL never half-closes: one side gone means the session is over.
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), as a crashed server would. ``shutdown`` first: a plain
    ``close`` does not wake the pump thread blocked in ``recv`` on it, and the kernel keeps the
    connection open (a silent half-open link, not a crash) until that ``recv`` returns."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
