"""Stored SOP card versions (``sop_card_versions``) and each card's current one (``sop_cards``).

``load_cards`` validates every file first (app/sop/loader.py), then stores each valid card:

- a card whose content is new gets the next version number (1, 2, …) and becomes current;
- a card identical to its current version is left alone (``unchanged``);
- a card edited back to the text of an older version points at that version again (``reverted``);
- a file with any problem is ``rejected``: nothing of it is stored and the card's current version
  stays what it was — a broken file never replaces a good version.

Content is compared by the sha256 of the card's canonical JSON (validated, defaults filled, keys
sorted), so comments, key order and YAML layout do not make new versions. Versions are never
changed or removed: an enrollment pins ``sop_card_versions.id`` and keeps its version whatever
happens to the file later; new enrollments take ``current``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.services import Services
from app.sop.card import Card
from app.sop.loader import CardFile, Library, Problem, library_from_store, read_cards
from app.store.models import SopCard, SopCardVersion

CardVersion = SopCardVersion
Status = Literal["new", "unchanged", "reverted", "rejected"]
_ATTEMPTS = 3  # a concurrent load of the same card can win a race for a version number


def canonical_body(card: Card) -> dict[str, Any]:
    """The card as stored: validated, with defaults, without unset optional fields."""
    return card.model_dump(mode="json", exclude_none=True)


def content_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class CardOutcome:
    path: str
    card_id: str | None
    status: Status
    version: int | None = None  # the card's current version after the load
    version_id: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        name = self.card_id or "(no id)"
        if self.status == "new":
            return f"{name}: new version {self.version} ({self.path})"
        if self.status == "unchanged":
            return f"{name}: unchanged (version {self.version})"
        if self.status == "reverted":
            return f"{name}: back to version {self.version} (same content as that version; {self.path})"
        count = len(self.problems)
        kept = f"; current version stays {self.version}" if self.version else ""
        return f"{name}: rejected ({self.path}: {count} problem{'s' if count != 1 else ''}{kept})"


@dataclass
class LoadReport:
    outcomes: list[CardOutcome] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for outcome in self.outcomes for p in outcome.problems]

    @property
    def ok(self) -> bool:
        return all(outcome.status != "rejected" for outcome in self.outcomes)

    def count(self, status: Status) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def __str__(self) -> str:
        parts = [
            f"{self.count(s)} {s}" for s in ("new", "unchanged", "reverted", "rejected") if self.count(s)
        ]
        return f"{len(self.outcomes)} card file(s): " + (", ".join(parts) or "nothing to load")


def current(session: Session, card_id: str) -> SopCardVersion | None:
    """The version new enrollments of ``card_id`` get (None if the card was never loaded)."""
    return session.scalar(
        select(SopCardVersion)
        .join(SopCard, SopCard.current_version_id == SopCardVersion.id)
        .where(SopCard.card_id == card_id)
    )


def get(session: Session, version_id: int) -> SopCardVersion | None:
    """One stored version by id (what an enrollment pins)."""
    return session.get(SopCardVersion, version_id)


def versions(session: Session, card_id: str) -> list[SopCardVersion]:
    """Every stored version of a card, oldest first."""
    return list(
        session.scalars(
            select(SopCardVersion).where(SopCardVersion.card_id == card_id).order_by(SopCardVersion.version)
        )
    )


def card_of(version: SopCardVersion) -> Card:
    """The card a stored version holds."""
    return Card.model_validate(version.body)


def store_card(svc: Services, card: Card, source_path: str) -> CardOutcome:
    """Store one valid card (its own transaction): new version, unchanged, or reverted."""
    body = canonical_body(card)
    digest = content_hash(body)
    for attempt in range(_ATTEMPTS):
        try:
            with svc.sessions() as session, session.begin():
                return _store(session, card, body, digest, source_path, svc.clock.now())
        except IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _store(session: Session, card: Card, body: dict[str, Any], digest: str, source: str, now) -> CardOutcome:
    pointer = session.get(SopCard, card.id)
    existing = session.scalar(
        select(SopCardVersion).where(SopCardVersion.card_id == card.id, SopCardVersion.content_hash == digest)
    )
    if existing is not None:
        if pointer is not None and pointer.current_version_id == existing.id:
            return CardOutcome(source, card.id, "unchanged", existing.version, existing.id)
        _point(session, pointer, card.id, existing.id, now)
        return CardOutcome(source, card.id, "reverted", existing.version, existing.id)
    number = (
        session.scalar(select(func.max(SopCardVersion.version)).where(SopCardVersion.card_id == card.id)) or 0
    ) + 1
    version = SopCardVersion(
        card_id=card.id,
        version=number,
        content_hash=digest,
        title=card.title[:128],
        body=body,
        source_path=source[-255:],
        loaded_at=now,
    )
    session.add(version)
    session.flush()
    _point(session, pointer, card.id, version.id, now)
    return CardOutcome(source, card.id, "new", number, version.id)


def _point(session: Session, pointer: SopCard | None, card_id: str, version_id: int, now) -> None:
    if pointer is None:
        session.add(SopCard(card_id=card_id, current_version_id=version_id, updated_at=now))
    else:
        pointer.current_version_id = version_id
        pointer.updated_at = now
    session.flush()


def store_library(svc: Services) -> Library:
    """What to check card names against: the store's tag library and roster, the SOP hours."""
    with svc.sessions() as session:
        return library_from_store(session, svc.settings.sop_working_hours, svc.settings.sop_quiet_hours)


def load_cards(svc: Services, paths: Iterable[Path], library: Library | None = None) -> LoadReport:
    """Validate every card file under ``paths`` (against ``library``, by default the store's),
    then store each valid card. Files with problems are rejected and change nothing."""
    library = store_library(svc) if library is None else library
    files: list[CardFile] = read_cards(paths, library)
    report = LoadReport()
    for card_file in files:
        if card_file.ok and card_file.card is not None:
            report.outcomes.append(store_card(svc, card_file.card, card_file.name))
            continue
        kept = None
        if card_file.card_id is not None:
            with svc.sessions() as session:
                version = current(session, card_file.card_id)
                kept = version.version if version is not None else None
        report.outcomes.append(
            CardOutcome(
                card_file.name, card_file.card_id, "rejected", kept, problems=list(card_file.problems)
            )
        )
    return report
