"""Chinese mobile numbers: normalised, hashed, masked. A phone number is never stored, logged or
written into an interaction or a card in full: only its keyed hash (to find and deduplicate
leads) and its masked form (for people to recognise it) are kept."""

from __future__ import annotations

import hashlib
import hmac
import re

from app.config import Settings

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_SEPARATORS = re.compile(r"[\s\-()（）]")


class PhoneError(ValueError):
    """Not a Chinese mobile number. The message never quotes the number."""


def normalise(raw: str) -> str:
    """``+86 138-0000-0001`` → ``13800000001``. Accepts +86 / 86 / 0086 prefixes, spaces, dashes
    and brackets; the rest must be 11 digits starting 1[3-9]."""
    digits = _SEPARATORS.sub("", str(raw))
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix) :]
            break
    if not _MOBILE.match(digits):
        raise PhoneError("must be a Chinese mobile number: 11 digits starting 13-19 (+86 allowed)")
    return digits


def phone_hash(settings: Settings, phone: str) -> str:
    """HMAC-SHA256 (hex) of the normalised number under PHONE_HASH_KEY."""
    return hmac.new(settings.phone_hash_key, normalise(phone).encode(), hashlib.sha256).hexdigest()


def mask(phone: str) -> str:
    """``13800000001`` → ``138****0001``."""
    digits = normalise(phone)
    return f"{digits[:3]}****{digits[-4:]}"
