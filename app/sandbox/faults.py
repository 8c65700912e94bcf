"""Fault injection and per-minute rate limiting for the sandbox API. Both are decided per API
path ("externalcontact/get"; a fault rule may use "*" for every path)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.sandbox.errors import SandboxError


@dataclass
class FaultRule:
    """What to do to matching calls: wait ``latency_ms``, then answer ``errcode`` (HTTP 200, JSON)
    or ``http_status`` (a non-JSON error page), or answer normally if neither is set. Applies to
    the next ``times`` matching calls (None: every call), each with ``probability`` (None: always).
    ``after_effect``: carry the call out first, then answer with the fault — WeCom acted but its
    answer was lost (a gateway's 5xx after the fact, a timeout seen by the client)."""

    id: int
    path: str = "*"
    errcode: int | None = None
    errmsg: str | None = None
    http_status: int | None = None
    latency_ms: int = 0
    times: int | None = None
    probability: float | None = None
    after_effect: bool = False
    hits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_rule(rule_id: int, spec: dict[str, Any]) -> FaultRule:
    """Build a rule from a control-API body, rejecting rules that would do nothing or cannot be served."""
    allowed = {f.name for f in dataclasses.fields(FaultRule)} - {"id", "hits"}
    unknown = set(spec) - allowed
    if unknown:
        raise SandboxError(f"unknown fault fields: {sorted(unknown)}")
    try:
        rule = FaultRule(id=rule_id, **spec)
        rule.path = str(rule.path).strip("/") or "*"
        rule.latency_ms = int(rule.latency_ms or 0)
        rule.errcode = None if rule.errcode is None else int(rule.errcode)
        rule.http_status = None if rule.http_status is None else int(rule.http_status)
        rule.times = None if rule.times is None else int(rule.times)
        rule.probability = None if rule.probability is None else float(rule.probability)
        rule.after_effect = bool(rule.after_effect)
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"bad fault rule: {exc}") from None
    if rule.errcode is None and rule.http_status is None and rule.latency_ms <= 0:
        raise SandboxError("a fault rule needs errcode, http_status or latency_ms")
    if rule.after_effect and rule.http_status is None and rule.latency_ms <= 0:
        raise SandboxError("after_effect needs http_status or latency_ms: an answer that is lost")
    if rule.errcode == 0:
        raise SandboxError("errcode 0 is success, not a fault")
    if rule.http_status is not None and not 400 <= rule.http_status <= 599:
        raise SandboxError("http_status must be an HTTP error status (400-599)")
    if rule.latency_ms < 0 or (rule.times is not None and rule.times < 1):
        raise SandboxError("latency_ms must be >= 0 and times >= 1")
    if rule.probability is not None and not 0.0 < rule.probability <= 1.0:
        raise SandboxError("probability must be in (0, 1]")
    return rule


class FaultBook:
    def __init__(self, chance: Callable[[float], bool]) -> None:
        self._chance = chance
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        with self._lock:
            rule = make_rule(self._next_id, spec)
            self._next_id += 1
            self._rules.append(rule)
            return dataclasses.replace(rule)

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return [dataclasses.replace(rule) for rule in self._rules]

    def pick(self, path: str) -> FaultRule | None:
        """The first rule that fires for this call; counts it against the rule's ``times``."""
        with self._lock:
            for rule in self._rules:
                if rule.path not in ("*", path) or rule.times == 0:
                    continue
                if rule.probability is not None and not self._chance(rule.probability):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                rule.hits += 1
                return dataclasses.replace(rule)
            return None


class RateLimiter:
    """WeCom's per-API frequency limit: calls are counted in a fixed one-minute window on the
    sandbox clock; the first call over the limit blocks the API for a minute from that call
    (WeCom's 45009: a per-minute block is lifted one minute after it was hit, not when the
    clock's minute ends), and every call until then answers 45009."""

    BLOCK_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}
        self._blocked_until: dict[str, float] = {}

    def allow(self, path: str, limit: int, now: float) -> bool:
        window = int(now // 60)
        with self._lock:
            if now < self._blocked_until.get(path, float("-inf")):
                return False
            start, count = self._windows.get(path, (window, 0))
            if start != window:
                count = 0
            if count >= limit:
                self._windows[path] = (window, count)
                self._blocked_until[path] = now + self.BLOCK_SECONDS
                return False
            self._windows[path] = (window, count + 1)
            return True

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
            self._blocked_until.clear()
