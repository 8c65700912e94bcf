"""The sandbox as a Flask app of its own (never the SCRM app), and a helper that serves it from a
background thread for end-to-end tests, the demo and benchmarks."""

from __future__ import annotations

import re
import threading
from types import TracebackType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from app.clock import Clock
from app.sandbox.config import SandboxConfig
from app.sandbox.platform import Platform
from app.sandbox.runtime import EXTENSION, Sandbox
from app.sandbox.state import SandboxState


def create_sandbox_app(config: SandboxConfig | None = None, clock: Clock | None = None) -> Flask:
    """The WeCom API under /cgi-bin/ and the control API under /sandbox/. Without a clock it runs
    on real time that POST /sandbox/clock/advance can move forward (app.clock.OffsetClock)."""
    from app.sandbox.api import api
    from app.sandbox.control import control

    app = Flask("scrm_sandbox")
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = Sandbox.build(config, clock)
    app.register_blueprint(api)
    app.register_blueprint(control)
    return app


_SECRET_PARAMS = re.compile(r"\b(access_token|corpsecret)=[^&\s]*")


def redact(line: str) -> str:
    """Request lines without tokens or secrets (gettoken carries the secret in its query)."""
    return _SECRET_PARAMS.sub(r"\1=***", line)


class RedactingRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Called after the response is sent, so rewriting what werkzeug logs changes nothing else.
        self.path = redact(self.path)
        self.requestline = redact(self.requestline)
        super().log_request(code, size)


class QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # the sandbox's own logs (GET /sandbox/deliveries, /stats) say what happened


class SandboxServer:
    """A running sandbox: ``url`` (no trailing slash), ``api_base`` (…/cgi-bin/), ``state``,
    ``platform`` and ``stop()``. Also a context manager."""

    def __init__(self, app: Flask, server: BaseWSGIServer) -> None:
        self.app = app
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="wecom-sandbox", daemon=True
        )
        self.url = f"http://{server.host}:{server.port}"
        self.api_base = self.url + "/cgi-bin/"

    @property
    def sandbox(self) -> Sandbox:
        return self.app.extensions[EXTENSION]

    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def platform(self) -> Platform:
        return self.sandbox.platform

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sandbox.deliverer.close()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(app: Flask, host: str, port: int, log_requests: bool = False) -> BaseWSGIServer:
    """A threaded werkzeug server for the sandbox (one process: its state is in memory)."""
    handler = RedactingRequestHandler if log_requests else QuietRequestHandler
    return make_server(host, port, app, threaded=True, request_handler=handler)


def run_sandbox(
    config: SandboxConfig | None = None,
    clock: Clock | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_requests: bool = False,
) -> SandboxServer:
    """Serve a new sandbox on ``host`` (port 0: a free port) in a daemon thread; returns once it
    accepts connections (the socket listens before the thread starts)."""
    app = create_sandbox_app(config, clock)
    server = serve(app, host, port, log_requests)
    return SandboxServer(app, server).start()
