"""The sandbox's settings. Defaults are the sandbox credentials the app uses in demo and test
mode, so the two talk to each other without any configuration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.config import SANDBOX_CREDENTIALS


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    corp_id: str = SANDBOX_CREDENTIALS["WECOM_CORP_ID"]
    token: str = SANDBOX_CREDENTIALS["WECOM_TOKEN"]
    aes_key: str = SANDBOX_CREDENTIALS["WECOM_AES_KEY"]
    # The bot app may have its own callback credentials; by default it shares the contact app's,
    # as the main app's settings do (Settings.bot_token / bot_aes_key).
    bot_token: str | None = None
    bot_aes_key: str | None = None
    contact_secret: str = SANDBOX_CREDENTIALS["WECOM_CONTACT_SECRET"]
    agent_id: int = int(SANDBOX_CREDENTIALS["WECOM_AGENT_ID"])
    agent_secret: str = SANDBOX_CREDENTIALS["WECOM_AGENT_SECRET"]

    token_ttl: int = Field(default=7200, gt=0)
    rate_limit_per_minute: int = Field(default=10_000, gt=0)
    rate_limits: dict[str, int] = Field(default_factory=dict)
    welcome_code_ttl: float = Field(default=20.0, gt=0)

    callback_url: str | None = None
    bot_callback_url: str | None = None
    callback_timeout: float = Field(default=5.0, gt=0)
    callback_retries: int = Field(default=3, ge=0)
    retry_delay: float = Field(default=1.0, ge=0)
    delivery_workers: int = Field(default=8, ge=1, le=64)
    delivery_log_size: int = Field(default=2000, ge=1)

    # Mass sends (add_msg_template): a member's task counts as confirmed this many seconds after
    # it was created (None or negative: only POST /sandbox/mass_send/confirm confirms); these
    # members never confirm by themselves; the per-customer receiving rule of the corp (WeCom's
    # default "month": as many per natural month as the month has days; "week": 7 per natural
    # week; "day": 1 per day; "month4": the older rule, 4 per natural month), in China time.
    mass_send_confirm_delay: float | None = 2.0
    mass_send_decline_userids: list[str] = Field(default_factory=list)
    mass_send_receive_rule: Literal["month", "week", "day", "month4"] = "month"

    # Seed for generated ids (external_userid, welcome codes, tag ids…): reproducible demos.
    seed: int | None = None

    @field_validator("rate_limits")
    @classmethod
    def _normalise_paths(cls, value: dict[str, int]) -> dict[str, int]:
        for path, limit in value.items():
            if limit <= 0:
                raise ValueError(f"rate limit for {path} must be positive")
        return {path.strip("/"): limit for path, limit in value.items()}

    def rate_limit_for(self, path: str) -> int:
        return self.rate_limits.get(path, self.rate_limit_per_minute)

    def changed(self, **changes: Any) -> SandboxConfig:
        """A validated copy with some fields replaced (model_copy would skip validation)."""
        return SandboxConfig.model_validate({**self.model_dump(), **changes})

    def public(self) -> dict[str, Any]:
        """The settings without secrets, for the control API."""
        return self.model_dump(
            exclude={"token", "aes_key", "bot_token", "bot_aes_key", "contact_secret", "agent_secret"}
        )
