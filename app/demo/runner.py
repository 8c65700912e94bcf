"""Starts and stops the demo's processes: the embedded Redis, gunicorn serving the callback
endpoints and one RQ worker, both real subprocesses as in production.

Each child gets a session (process group) of its own: Ctrl-C in the terminal reaches only the
demo, which then stops the children in order, and a group kill at the end also takes the
processes they forked (gunicorn's workers, RQ's work horse), so nothing is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

import app as app_package
from app import redis_client


class StartupError(RuntimeError):
    """A process did not come up; the message says which and ends with its log's last lines."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def repository_root() -> Path:
    """Where wsgi.py lives: gunicorn and ``python -m app.cli`` run from there."""
    return Path(app_package.__file__).resolve().parents[1]


def free_port() -> int:
    # Another process could take the port between here and gunicorn's bind; gunicorn then
    # exits, and wait_for_web reports it with gunicorn's own message (use --port-base then).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only: never through a proxy from the environment
    return session


# -- embedded Redis ---------------------------------------------------------------------------


def start_redis(instance: Path) -> str:
    """Start the embedded redis-server for the instance folder; its unix:// URL for the children."""
    return redis_client.embedded_redis_url(str(instance))


def stop_redis(instance: Path) -> None:
    """Shut the embedded server down now rather than leave it for interpreter exit."""
    redis_client.stop_embedded(str(instance))


# -- subprocesses -----------------------------------------------------------------------------


def _spawn(name: str, command: list[str], env: Mapping[str, str], log: Path) -> Child:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=repository_root(),
            env=dict(env),
            stdin=subprocess.DEVNULL,  # CI has no stdin; nothing of ours should wait on one
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log)


def start_web(port: int, env: Mapping[str, str], log: Path) -> Child:
    target = "wsgi:app" if (repository_root() / "wsgi.py").exists() else "app:create_app()"
    command = [
        sys.executable, "-m", "gunicorn", target,
        "--worker-class", "gthread", "--workers", "2", "--threads", "4",
        "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--log-level", "warning",
    ]  # fmt: skip
    return _spawn("callback server (gunicorn)", command, env, log)


def start_worker(env: Mapping[str, str], log: Path) -> Child:
    return _spawn("worker (rq)", [sys.executable, "-m", "app.cli", "worker"], env, log)


def wait_for_web(child: Child, port: int, deadline: float) -> None:
    url = f"http://127.0.0.1:{port}/healthz"
    with http_session() as session:
        while True:
            _check_running(child)
            try:
                if session.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} did not answer {url} in time{_tail(child.log)}")
            time.sleep(0.1)


def wait_for_worker(child: Child, redis_url: str, deadline: float) -> None:
    """Ready once the worker has registered itself in Redis (it is then listening on its queues)."""
    from rq import Worker

    connection = redis_client.connect(redis_url)
    try:
        while Worker.count(connection=connection) == 0:
            _check_running(child)
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} did not register in Redis in time{_tail(child.log)}")
            time.sleep(0.1)
    finally:
        connection.close()


def _check_running(child: Child) -> None:
    code = child.process.poll()
    if code is not None:
        raise StartupError(f"{child.name} exited with code {code}{_tail(child.log)}")


def stop(child: Child, grace: float = 10.0) -> None:
    """SIGTERM to the leader (gunicorn and RQ then stop their own children cleanly), SIGKILL
    after ``grace``, then SIGKILL to whatever is left of the group."""
    process = child.process
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    finally:  # even when a signal cuts the graceful part short: no orphans
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is already empty
            os.killpg(process.pid, signal.SIGKILL)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return ""
    if not text:
        return f" (its log {log} is empty)"
    return f"; last lines of {log}:\n    " + "\n    ".join(text)
