"""The per-app service container: settings, database, Redis, clock. Stored on
``app.extensions['scrm']``; everything else asks for it through ``services()``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import redis
from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.callbacks.ingest import Ingester
from app.clock import Clock
from app.config import Settings
from app.redis_client import connect, embedded_redis_url
from app.store.db import make_engine
from app.wecom.crypto import CallbackCrypto


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    # The callback path stops trying Redis until then after a failure (see app/callbacks/ingest.py).
    enqueue_paused_until: float = 0.0

    @cached_property
    def redis_url(self) -> str:
        return self.settings.REDIS_URL or embedded_redis_url(self.settings.INSTANCE_PATH)

    @cached_property
    def redis(self) -> redis.Redis:
        """Redis for workers and the CLI (normal timeouts)."""
        return connect(self.redis_url)

    @cached_property
    def web_redis(self) -> redis.Redis:
        """Redis for the callback path (short timeouts: never hold up WeCom's answer)."""
        return connect(self.redis_url, fail_fast=True)

    @cached_property
    def ingest_engine(self) -> Engine:
        """The callback path's engine. On PostgreSQL a pool of its own without pre-ping (one
        round trip less per batch; a connection that fails is invalidated instead: see
        app/store/inbox.commit_deliveries). It is small: only the group commit's leader writes,
        one batch at a time, so a process needs one connection (two while one is replaced).
        SQLite has no pre-ping to save: the same engine."""
        if self.engine.dialect.name != "postgresql":
            return self.engine
        url = self.engine.url.render_as_string(hide_password=False)
        return make_engine(url, pre_ping=False, pool_size=1, max_overflow=1)

    @cached_property
    def ingester(self) -> Ingester:
        """The callback path's group commit of store + enqueue (one per process and app)."""
        return Ingester(self)

    @cached_property
    def passive_waiters(self) -> threading.BoundedSemaphore:
        """Slots for bot callbacks waiting on a passive reply in this process (app/bot/reply.py)."""
        return threading.BoundedSemaphore(max(1, self.settings.BOT_PASSIVE_REPLY_MAX_WAITERS))

    @cached_property
    def _cryptos(self) -> dict[str, CallbackCrypto]:
        s = self.settings
        return {
            "contact": CallbackCrypto(s.WECOM_TOKEN, s.WECOM_AES_KEY, s.WECOM_CORP_ID),
            "bot": CallbackCrypto(s.bot_token, s.bot_aes_key, s.WECOM_CORP_ID),
        }

    def callback_crypto(self, app_name: str) -> CallbackCrypto:
        """Credentials of one callback app: ``contact`` (客户联系) or ``bot`` (the self-built app)."""
        return self._cryptos[app_name]

    def close(self) -> None:
        for name in ("redis", "web_redis"):
            client = self.__dict__.pop(name, None)
            if client is not None:
                client.close()
        ingest_engine = self.__dict__.pop("ingest_engine", None)
        if ingest_engine is not None and ingest_engine is not self.engine:
            ingest_engine.dispose()
        self.engine.dispose()


def services() -> Services:
    return current_app.extensions["scrm"]
