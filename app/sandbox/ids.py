"""Identifiers shaped like WeCom's. One generator per sandbox, optionally seeded so a demo run
produces the same ids every time."""

from __future__ import annotations

import random
import string
import threading

_URLSAFE = string.ascii_letters + string.digits + "-_"
_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


class IdFactory:
    def __init__(self, seed: int | None = None) -> None:
        self._rng: random.Random = random.Random(seed) if seed is not None else random.SystemRandom()
        self._lock = threading.Lock()
        self._msg_ids: set[int] = set()

    def _chars(self, alphabet: str, n: int) -> str:
        with self._lock:
            return "".join(self._rng.choice(alphabet) for _ in range(n))

    def external_userid(self) -> str:
        return "wm" + self._chars(_URLSAFE, 30)

    def welcome_code(self) -> str:
        return self._chars(_URLSAFE, 43)

    def access_token(self) -> str:
        return self._chars(_URLSAFE, 86)

    def config_id(self) -> str:
        return self._chars(_HEX, 32)

    def tag_id(self) -> str:
        return "et" + self._chars(_ALNUM, 30)

    def app_msgid(self) -> str:
        return self._chars(_URLSAFE, 40)

    def media_id(self) -> str:
        """Shaped like WeCom's (e.g. 1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0)."""
        return "1" + self._chars(_URLSAFE, 43)

    def nonce(self) -> str:
        return str(self.randint(10**8, 10**10 - 1))

    def msg_id(self) -> int:
        """A unique 64-bit message id (19 digits, like 4561255354251345929)."""
        with self._lock:
            while True:
                value = self._rng.randint(10**18, 2**63 - 1)
                if value not in self._msg_ids:
                    self._msg_ids.add(value)
                    return value

    def randint(self, low: int, high: int) -> int:
        with self._lock:
            return self._rng.randint(low, high)

    def chance(self, probability: float) -> bool:
        with self._lock:
            return self._rng.random() < probability
