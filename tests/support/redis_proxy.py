"""A TCP proxy in front of Redis that a test can cut and restore, to play "Redis went down"
against a real server (which other tests share, so it cannot be stopped itself)."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlparse


class RedisProxy:
    def __init__(self, target_url: str) -> None:
        parsed = urlparse(target_url)
        if parsed.scheme == "unix":
            self._target: tuple[int, object] = (socket.AF_UNIX, parsed.path)
        else:
            self._target = (socket.AF_INET, (parsed.hostname or "127.0.0.1", parsed.port or 6379))
        self._db = (parsed.path or "/0").lstrip("/") if parsed.scheme != "unix" else "0"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._pairs: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self._db or 0}"

    def start(self) -> None:
        self._up.set()

    def cut(self) -> None:
        """Refuse new connections and break the open ones, like a Redis that went away."""
        self._up.clear()
        with self._lock:
            for sock in self._pairs:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._pairs.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            family, address = self._target
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(address)
            with self._lock:
                self._pairs += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
