"""The contact-way ``state``: what a QR code tells us about the customer who scans it.

WeCom hands the state back in add_external_contact exactly as the contact way was created with it,
and allows at most 30 characters, so the format is compact and positional:

    <channel>.<dealer>.<model>.<campaign>      qr.SH01.RAV4.spring26   (trailing parts optional)
    ld.<lead token>                            ld.7K3F9Q2MXA            (a lead's personal link)

Parts are ``[A-Za-z0-9_-]``; ``-`` stands for "not given" in a middle position (``lp.-.RAV4``).

The channel decides who keeps the customer:

    qr  a dealer's shared store QR code       → match the best advisor and hand the customer over
    rc  a reception / front-desk code          → same
    ad  an advisor's own code                  → the advisor who was added keeps the customer
    lp  a landing-page dynamic code            → already matched when the page was shown: keep
    ld  a lead's link                          → keep, and link the lead to this customer

Any other state (a code made by hand in the admin console, another tool's) is kept as it is and the
customer stays with the advisor who was added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LENGTH = 30
SHARED_CHANNELS = frozenset({"qr", "rc"})
KNOWN_CHANNELS = frozenset({"qr", "rc", "ad", "lp", "ld"})
LEAD_CHANNEL = "ld"
_PART = re.compile(r"^[A-Za-z0-9_-]{1,24}$")


class StateError(ValueError):
    """A state we would create is not valid (too long, bad characters, unknown channel)."""


@dataclass(frozen=True)
class State:
    raw: str
    channel: str | None = None
    dealer: str | None = None
    model: str | None = None
    campaign: str | None = None
    lead_token: str | None = None

    @property
    def is_shared(self) -> bool:
        """A shared code: whoever was added only receives the customer; matching decides who keeps."""
        return self.channel in SHARED_CHANNELS

    @property
    def tags(self) -> dict[str, str]:
        """Corp tags this state implies, by tag group name (see app/intake/tagging.py)."""
        tags: dict[str, str] = {}
        if self.channel in KNOWN_CHANNELS:
            tags["渠道"] = CHANNEL_TAGS[self.channel]
        if self.model:
            tags["意向车型"] = self.model
        if self.campaign:
            tags["活动"] = self.campaign
        return tags


CHANNEL_TAGS = {
    "qr": "门店活码",
    "rc": "前台接待",
    "ad": "顾问名片",
    "lp": "落地页",
    "ld": "线索",
}


def parse(raw: str | None) -> State:
    """Read a state; never fails (a state we did not make is kept as ``raw`` with no channel)."""
    raw = (raw or "").strip()
    parts = raw.split(".")
    if not raw or parts[0] not in KNOWN_CHANNELS or not all(_PART.match(p) for p in parts):
        return State(raw=raw)
    channel = parts[0]
    if channel == LEAD_CHANNEL:
        return State(raw=raw, channel=channel, lead_token=parts[1] if len(parts) == 2 else None)
    values = [None if p == "-" else p for p in parts[1:4]]
    values += [None] * (3 - len(values))
    dealer, model, campaign = values
    return State(raw=raw, channel=channel, dealer=dealer, model=model, campaign=campaign)


def build(
    channel: str, dealer: str | None = None, model: str | None = None, campaign: str | None = None
) -> str:
    """The state for a new contact way; raises StateError when it cannot be made valid."""
    if channel not in KNOWN_CHANNELS or channel == LEAD_CHANNEL:
        raise StateError(f"channel must be one of qr, rc, ad, lp (got {channel!r})")
    parts = [channel, dealer or "-", model or "-", campaign or "-"]
    while parts[-1] == "-":
        parts.pop()
    return _checked(parts)


def for_lead(token: str) -> str:
    return _checked([LEAD_CHANNEL, token])


def _checked(parts: list[str]) -> str:
    for part in parts:
        if not _PART.match(part):
            raise StateError(f"state part {part!r} must be 1-24 of A-Z a-z 0-9 _ -")
    state = ".".join(parts)
    if len(state) > MAX_LENGTH:
        raise StateError(f"state {state!r} is {len(state)} characters; WeCom allows {MAX_LENGTH}")
    return state
