"""What a handler gets: the event, its inbox row id, a session in the finishing transaction,
the app's services, and ``record`` to write interactions exactly once.

Call WeCom before writing anything: on SQLite the first write takes the database's single write
lock until the job commits, and the callback path needs that lock to store new events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.services import Services
from app.store import interactions
from app.wecom.events import CallbackEvent


@dataclass
class HandlerContext:
    inbox_id: int
    event: CallbackEvent
    session: Session
    services: Services
    _pending: list[interactions.NewInteraction] = field(default_factory=list)

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromtimestamp(self.event.create_time, UTC)

    def record(
        self,
        kind: str,
        *,
        advisor: str | None = None,
        customer: str | None = None,
        dealer: str | None = None,
        payload: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> None:
        """Queue an interaction. Its key is (event, kind, n-th of that kind), so a handler that
        runs again for the same event produces the same keys and nothing is written twice."""
        same_kind = sum(1 for item in self._pending if item.kind == kind)
        self._pending.append(
            interactions.NewInteraction(
                kind=kind,
                occurred_at=occurred_at or self.occurred_at,
                dedup_key=f"inbox:{self.inbox_id}:{kind}:{same_kind}",
                advisor_userid=advisor,
                external_userid=customer,
                dealer_code=dealer,
                payload=payload or {},
                source_event_id=self.inbox_id,
            )
        )

    def flush(self) -> int:
        written = interactions.append(self.session, self._pending, self.services.clock.now())
        self._pending.clear()
        return written
