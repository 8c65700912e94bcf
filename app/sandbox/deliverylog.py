"""What happened to each callback the platform sent: one report per event, with every HTTP
attempt, plus the running counters the demo and benchmarks read."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ACKNOWLEDGED = "acknowledged"
GAVE_UP = "gave_up"
NO_URL = "no_callback_url"


@dataclass
class Attempt:
    number: int
    timestamp: str
    nonce: str
    status: int | None  # HTTP status; None when the connection failed or timed out
    error: str | None
    latency_ms: float
    acknowledged: bool
    response_body: str = ""  # kept so a bot's passive reply can be read (Deliverer.open_reply)


@dataclass
class DeliveryReport:
    id: int
    target: str  # "contact" (customer-contact callback URL) or "bot"
    event_type: str
    url: str | None
    plaintext: str
    duplicate: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.outcome == ACKNOWLEDGED

    @property
    def latencies_ms(self) -> list[float]:
        return [attempt.latency_ms for attempt in self.attempts]

    def as_dict(self, with_plaintext: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_plaintext:
            data.pop("plaintext")
        data["acknowledged"] = self.acknowledged
        return data


COUNTERS = (
    "events_emitted",
    "deliveries_attempted",
    "deliveries_acknowledged",
    "duplicates_sent",
    "given_up",
    "not_delivered_no_url",
)


class DeliveryLog:
    def __init__(self, size: int = 2000) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._next_id = 1
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._reports: deque[DeliveryReport] = deque(maxlen=size)

    def open(
        self, target: str, event_type: str, url: str | None, plaintext: str, duplicate: bool
    ) -> DeliveryReport:
        with self._lock:
            report = DeliveryReport(self._next_id, target, event_type, url, plaintext, duplicate)
            self._next_id += 1
            self.counters["events_emitted"] += 1
            self._reports.append(report)
            return report

    def attempted(self, acknowledged: bool, duplicate: bool) -> None:
        with self._lock:
            self.counters["deliveries_attempted"] += 1
            self.counters["deliveries_acknowledged"] += int(acknowledged)
            self.counters["duplicates_sent"] += int(duplicate)

    def closed(self, report: DeliveryReport) -> None:
        with self._lock:
            if report.outcome == GAVE_UP:
                self.counters["given_up"] += 1
            elif report.outcome == NO_URL:
                self.counters["not_delivered_no_url"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)

    def reports(self, limit: int | None = None) -> list[DeliveryReport]:
        with self._lock:
            items = list(self._reports)
        return items[-limit:] if limit else items

    def clear(self) -> None:
        with self._lock:
            self.counters = dict.fromkeys(COUNTERS, 0)
            self._reports.clear()
