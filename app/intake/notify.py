"""Cards to advisors and dealer managers through the bot app (message/send, textcard).

A job that sends a card may run again after the send succeeded; WeCom's own duplicate check
(``enable_duplicate_check``: the same content to the same people within the interval is sent
once) closes that window, so the card's content must be a pure function of what it reports.
"""

from __future__ import annotations

from typing import Any

from app.services import Services
from app.wecom.client import agent_client

DUPLICATE_CHECK_SECONDS = 4 * 3600  # WeCom's maximum
TITLE_MAX_BYTES = 128
DESCRIPTION_MAX_BYTES = 512


def _clip(text: str, limit: int) -> str:
    """WeCom counts bytes of UTF-8; cut at a character boundary, with an ellipsis."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def send_card(
    svc: Services, touser: list[str], title: str, description: str, url: str, button: str = "详情"
) -> dict[str, Any]:
    """Send a textcard to members of the corp; returns WeCom's answer (msgid, invaliduser …).
    ``description`` may use WeCom's textcard markup (<div class="gray">…</div>)."""
    settings = svc.settings
    return agent_client(svc).post(
        "message/send",
        data={
            "touser": "|".join(touser),
            "msgtype": "textcard",
            "agentid": int(settings.WECOM_AGENT_ID),
            "textcard": {
                "title": _clip(title, TITLE_MAX_BYTES),
                "description": _clip(description, DESCRIPTION_MAX_BYTES),
                "url": url,
                "btntxt": button,
            },
            "enable_duplicate_check": 1,
            "duplicate_check_interval": DUPLICATE_CHECK_SECONDS,
        },
    )
