"""Settings: read once from the environment (or a mapping given to ``create_app``), validated here.

Every key is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.sop import schedule

DEFAULT_WECOM_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin/"

# Credentials the demo and the tests use with the local sandbox. They are the official
# WeCom documentation's sample credentials (see ../shared/wecom/REFERENCE.md, vector V1),
# so they are public; production never falls back to them.
SANDBOX_CREDENTIALS: dict[str, str] = {
    "WECOM_CORP_ID": "wx5823bf96d3bd56c7",
    "WECOM_TOKEN": "QDG6eK",
    "WECOM_AES_KEY": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
    "WECOM_CONTACT_SECRET": "sandbox-contact-secret",
    "WECOM_AGENT_ID": "1000002",
    "WECOM_AGENT_SECRET": "sandbox-agent-secret",
    "HQ_API_TOKEN": "sandbox-hq-token",
    "SECRET_KEY": "sandbox-sidebar-session-key",
}

# Outside demo/test mode these must be set, or start-up stops naming the missing one.
REQUIRED_IN_PRODUCTION = (
    "WECOM_CORP_ID",
    "WECOM_TOKEN",
    "WECOM_AES_KEY",
    "WECOM_CONTACT_SECRET",
    "WECOM_AGENT_ID",
    "WECOM_AGENT_SECRET",
    "HQ_API_TOKEN",
    "SECRET_KEY",  # signs the sidebar's sign-in cookie: a long random value
)


class ConfigError(RuntimeError):
    """Start-up cannot go on: the message names the variable and what is wrong with it."""


class Settings(BaseModel):
    """All configuration keys. Field names are the environment variable names."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    SCRM_MODE: Literal["production", "demo", "test"] = "production"
    INSTANCE_PATH: str = Field(default_factory=lambda: str(Path.cwd() / "instance"))

    DATABASE_URL: str = ""
    REDIS_URL: str = ""
    AUTO_MIGRATE: bool | None = None

    WECOM_CORP_ID: str = ""
    WECOM_TOKEN: str = ""
    WECOM_AES_KEY: str = ""
    WECOM_CONTACT_SECRET: str = ""
    WECOM_AGENT_ID: str = ""
    WECOM_AGENT_SECRET: str = ""
    WECOM_BOT_TOKEN: str = ""
    WECOM_BOT_AES_KEY: str = ""
    WECOM_API_BASE: str = DEFAULT_WECOM_API_BASE
    WECOM_HTTP_TIMEOUT: float = 5.0
    WECOM_RATE_LIMIT_PER_MINUTE: int = 1000
    WECOM_RATE_LIMITS: str = ""
    WECOM_RATE_LIMIT_MAX_WAIT: float = 10.0

    HQ_API_TOKEN: str = ""
    DEALER_API_TOKENS: str = ""  # "SH01=token,HZ01=token2": dealer-scoped API tokens (campaigns)
    PUBLIC_BASE_URL: str = "http://localhost:5000"
    PHONE_HASH_KEY: str = ""

    CALLBACK_MAX_BYTES: int = 64 * 1024
    JOB_TIMEOUT: int = 180
    JOB_RETRY_INTERVALS: str = "10,30,120,600,1800"
    INBOX_SWEEP_INTERVAL: int = 30
    INBOX_SWEEP_GRACE: int = 30
    LOG_LEVEL: str = "INFO"

    SOP_WORKING_HOURS: str = "09:00-21:00"
    SOP_QUIET_HOURS: str = "22:00-08:00"
    SOP_SWEEP_INTERVAL: int = Field(default=30, ge=1)
    SOP_SWEEP_BATCH: int = Field(default=1000, ge=1)
    SOP_STEPS_PER_JOB: int = Field(default=10, ge=1, le=100)

    # Lead intent score (app/insight/intent.py). With these defaults DESIGN's example, five link
    # opens plus a favourite, is 5 × 10 + 20 = 70 raw points = 70 of 100 (the high band starts
    # there); a booked test drive alone is 40 (medium); the full score is reached by 100 raw
    # points (more is still 100), e.g. a test drive, two store visits and a few opens.
    INTENT_WEIGHTS: str = (
        "link_opened=10:5,favourite=20:1,enquiry=15:3,reply_received=5:4,"
        "quote_requested=20:2,test_drive_booked=40:1,store_visit=30:2"
    )
    INTENT_FULL_SCORE: float = 100.0
    INTENT_BANDS: str = "40,70"

    # The bot and the sidebar (app/bot, app/sidebar).
    BOT_PASSIVE_REPLY_WAIT: float = 1.5  # seconds the bot callback waits for a passive reply; 0: never
    # Callbacks of one web process that may wait for a passive reply at once; more answer "success"
    # at once (their answers go out as app messages), so bot traffic never holds every thread.
    BOT_PASSIVE_REPLY_MAX_WAITERS: int = 4
    SECRET_KEY: str = ""  # signs the sidebar's session cookie

    # Simulated time (demo and tests only): a Redis key holding seconds added to real time, shared
    # by every process (app.clock.SharedOffsetClock). Empty: the system clock.
    CLOCK_OFFSET_KEY: str = ""

    # Campaign submission and results (app/campaigns/submit.py, results.py).
    CAMPAIGN_BATCH_SIZE: int = Field(default=10000, ge=1, le=10000)  # customers per add_msg_template
    CAMPAIGN_POLL_INTERVAL: int = Field(default=300, ge=1)  # seconds between result polls
    CAMPAIGN_REMIND_AFTER: int = Field(default=3600, ge=1)  # unconfirmed this long: remind (≤ 3)
    CAMPAIGN_TASK_EXPIRY: int = Field(default=3 * 24 * 3600, ge=60)  # unsent this long: expired

    # Mini-program covers uploaded as WeCom media (app/wecom/media.py): seconds one download of a
    # cover address may take in all (connect, each read, and the whole body).
    COVER_DOWNLOAD_TIMEOUT: float = Field(default=10.0, gt=0, le=120)

    @field_validator("WECOM_API_BASE")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @field_validator("LOG_LEVEL")
    @classmethod
    def _log_level(cls, value: str) -> str:
        """A level name in any case (logging and RQ take only the upper-case name)."""
        level = value.strip().upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    # -- derived values -------------------------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.SCRM_MODE == "production"

    @property
    def database_url(self) -> str:
        if self.DATABASE_URL:
            return self.DATABASE_URL
        return "sqlite:///" + str(Path(self.INSTANCE_PATH) / "scrm.db")

    @property
    def auto_migrate(self) -> bool:
        if self.AUTO_MIGRATE is not None:
            return self.AUTO_MIGRATE
        return not self.is_production

    @property
    def bot_token(self) -> str:
        return self.WECOM_BOT_TOKEN or self.WECOM_TOKEN

    @property
    def bot_aes_key(self) -> str:
        return self.WECOM_BOT_AES_KEY or self.WECOM_AES_KEY

    @property
    def phone_hash_key(self) -> bytes:
        """Key of the phone-number HMAC. Without PHONE_HASH_KEY it is derived from the AES key,
        so it is secret but changes if that key is rotated: set PHONE_HASH_KEY in production."""
        if self.PHONE_HASH_KEY:
            return self.PHONE_HASH_KEY.encode()
        return hashlib.sha256(b"dealer-scrm phone hash:" + self.WECOM_AES_KEY.encode()).digest()

    def public_url(self, path: str) -> str:
        """An absolute link to this server (cards sent to advisors link back here)."""
        return self.PUBLIC_BASE_URL.rstrip("/") + "/" + path.lstrip("/")

    @property
    def dealer_api_tokens(self) -> dict[str, str]:
        """DEALER_API_TOKENS parsed: {token: dealer code}. ValueError on a malformed list."""
        tokens: dict[str, str] = {}
        codes: set[str] = set()
        for number, item in enumerate(self.DEALER_API_TOKENS.split(","), start=1):
            if not item.strip():
                continue
            code, sep, token = item.partition("=")
            code, token = code.strip().upper(), token.strip()
            if not sep or not code or not token:
                # Named by position: the item may be a token (never echo a secret).
                raise ValueError(f"item {number} is not CODE=token")
            if code in codes:
                raise ValueError(f"dealer {code} has two tokens")
            if token in tokens or token == self.HQ_API_TOKEN:
                raise ValueError(f"the token of {code} is not unique")
            if self.is_production and len(token) < 24:
                raise ValueError(f"the token of {code} is shorter than 24 characters")
            tokens[token] = code
            codes.add(code)
        return tokens

    @property
    def retry_intervals(self) -> list[int]:
        return [int(part) for part in self.JOB_RETRY_INTERVALS.split(",") if part.strip()]

    @property
    def rate_limits(self) -> dict[str, int]:
        """Per-API per-minute limits, e.g. ``externalcontact/add_msg_template=600``."""
        limits: dict[str, int] = {}
        for item in self.WECOM_RATE_LIMITS.split(","):
            if item.strip():
                api, _, value = item.partition("=")
                limits[api.strip().strip("/")] = int(value)
        return limits

    @property
    def sop_working_hours(self) -> schedule.Window:
        """When SOP steps may fall due (China time); a due time outside moves to the next start."""
        return schedule.parse_window(self.SOP_WORKING_HOURS, may_wrap=False)

    @property
    def sop_quiet_hours(self) -> schedule.Window:
        """When nothing is ever due (China time); may wrap midnight."""
        return schedule.parse_window(self.SOP_QUIET_HOURS)

    @property
    def intent_weights(self) -> Mapping[str, Any]:
        """INTENT_WEIGHTS parsed: {interaction kind: app.insight.intent.Weight(weight, cap)}."""
        from app.insight import intent

        return intent.parse_weights(self.INTENT_WEIGHTS)

    @property
    def intent_bands(self) -> tuple[float, float]:
        """INTENT_BANDS parsed: (medium from, high from)."""
        from app.insight import intent

        return intent.parse_bands(self.INTENT_BANDS)

    def check(self) -> None:
        """Raise ConfigError naming the first variable that stops a safe start."""
        if self.CLOCK_OFFSET_KEY and self.is_production:
            raise ConfigError(
                "CLOCK_OFFSET_KEY simulates time: only with SCRM_MODE=demo or test, never in production"
            )
        if self.is_production:
            for key in REQUIRED_IN_PRODUCTION:
                if not getattr(self, key):
                    raise ConfigError(
                        f"{key} is not set. Set it in the environment (see README, Configuration), "
                        "or run with SCRM_MODE=demo to use the local WeCom sandbox."
                    )
        for key in ("WECOM_AES_KEY", "WECOM_BOT_AES_KEY"):
            value = getattr(self, key)
            if value and not _is_encoding_aes_key(value):
                raise ConfigError(
                    f"{key} must be the 43-character EncodingAESKey from the WeCom admin console"
                )
        try:
            intervals = self.retry_intervals
        except ValueError:
            intervals = []
        if not intervals or any(seconds < 0 for seconds in intervals):  # RQ refuses a negative one
            raise ConfigError(
                "JOB_RETRY_INTERVALS must list at least one whole number of seconds (0 or more), e.g. 10,30"
            )
        try:
            limits = self.rate_limits  # parse now so a typo stops start-up, not a worker later
        except ValueError as exc:
            raise ConfigError(f"WECOM_RATE_LIMITS must look like 'api/path=600,other=100': {exc}") from exc
        if any(limit < 1 for limit in limits.values()):  # the rate limiter refuses them on every call
            raise ConfigError("WECOM_RATE_LIMITS: each limit must be at least 1 call per minute")
        if self.WECOM_RATE_LIMIT_PER_MINUTE < 1:
            raise ConfigError("WECOM_RATE_LIMIT_PER_MINUTE must be at least 1 call per minute")
        try:
            self.dealer_api_tokens  # noqa: B018 - parse now so a typo stops start-up
        except ValueError as exc:
            raise ConfigError(f"DEALER_API_TOKENS must look like 'SH01=token,HZ01=token2': {exc}") from exc
        for key in ("SOP_WORKING_HOURS", "SOP_QUIET_HOURS"):
            try:
                getattr(self, key.lower())
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
        try:
            schedule.check_hours(self.sop_working_hours, self.sop_quiet_hours)
        except ValueError as exc:
            raise ConfigError(f"SOP_WORKING_HOURS / SOP_QUIET_HOURS: {exc}") from exc
        from app.insight import intent

        for key, parse in (
            ("INTENT_WEIGHTS", intent.parse_weights),
            ("INTENT_BANDS", intent.parse_bands),
            ("INTENT_FULL_SCORE", intent.check_full_score),
        ):
            try:
                parse(getattr(self, key))
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
        if not 0 <= self.BOT_PASSIVE_REPLY_WAIT <= 4:
            raise ConfigError("BOT_PASSIVE_REPLY_WAIT must be 0-4 seconds (WeCom waits 5 s for the answer)")
        if self.BOT_PASSIVE_REPLY_MAX_WAITERS < 0:
            raise ConfigError("BOT_PASSIVE_REPLY_MAX_WAITERS must be 0 or more (0: never wait)")


def _is_encoding_aes_key(value: str) -> bool:
    """43 base64 characters that decode to a 32-byte AES key (WeCom's EncodingAESKey)."""
    try:
        return len(value) == 43 and len(base64.b64decode(value + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def load_settings(
    config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from the environment, overridden by ``config``; demo/test fill sandbox credentials."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {key: env[key] for key in Settings.model_fields if key in env and env[key] != ""}
    values.update({key: value for key, value in (config or {}).items() if key in Settings.model_fields})
    mode = values.get("SCRM_MODE", "production")
    if mode in ("demo", "test"):
        for key, default in SANDBOX_CREDENTIALS.items():
            values.setdefault(key, default)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{name}: {first['msg']}") from exc
    settings.check()
    return settings
