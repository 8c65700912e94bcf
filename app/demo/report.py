"""What the demo shows at the end: counts from both sides of the wire (the sandbox platform that
sent the callbacks, the server's inbox and interaction log, the HQ feed), and the invariants that
make the run a success."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from app.demo.feed import FeedRead
from app.demo.scenario import Scenario
from app.sandbox import SandboxServer
from app.services import Services
from app.store import inbox
from app.store.models import InboxStatus, Interaction


@dataclass
class Observed:
    platform: dict[str, int]  # DeliveryLog counters
    statuses: dict[str, int]  # inbox rows by status
    rows: int  # distinct events stored
    deliveries: int  # callbacks the server accepted, duplicates included
    interactions: dict[str, int]  # by kind
    feed: FeedRead
    seconds: float = 0.0
    by_target: dict[str, int] = field(default_factory=dict)  # events emitted per callback app

    @property
    def processed(self) -> int:
        return self.statuses[InboxStatus.DONE] + self.statuses[InboxStatus.IGNORED]

    @property
    def pending(self) -> int:
        return sum(self.statuses[status] for status in InboxStatus.PENDING)


def inbox_progress(svc: Services) -> tuple[int, int]:
    """(stored rows, rows finished one way or another): cheap enough to poll."""
    with svc.sessions() as session:
        counts = inbox.status_counts(session)
    finished = sum(counts[s] for s in (InboxStatus.DONE, InboxStatus.IGNORED, InboxStatus.FAILED))
    return sum(counts.values()), finished


def inbox_pending(svc: Services) -> int:
    with svc.sessions() as session:
        counts = inbox.status_counts(session)
    return sum(counts[status] for status in InboxStatus.PENDING)


def collect(svc: Services, sandbox: SandboxServer, feed: FeedRead, seconds: float) -> Observed:
    with svc.sessions() as session:
        statuses = inbox.status_counts(session)
        rows, deliveries = inbox.delivery_totals(session)
        kinds = dict(session.execute(select(Interaction.kind, func.count()).group_by(Interaction.kind)).all())
    by_target: dict[str, int] = {}
    for report in sandbox.state.delivery_log.reports():
        by_target[report.target] = by_target.get(report.target, 0) + 1
    return Observed(
        platform=sandbox.state.delivery_log.snapshot(),
        statuses=statuses,
        rows=rows,
        deliveries=deliveries,
        interactions={str(kind): int(count) for kind, count in kinds.items()},
        feed=feed,
        seconds=seconds,
        by_target=by_target,
    )


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())) or "none"


def summary_lines(scenario: Scenario, seen: Observed) -> list[str]:
    p = seen.platform
    targets = ", ".join(f"{target} {count}" for target, count in sorted(seen.by_target.items()))
    s = seen.statuses
    rows = [
        ("WeCom sandbox (platform)", None, ""),
        ("events emitted", p["events_emitted"], targets),
        ("delivery attempts", p["deliveries_attempted"], ""),
        ("acknowledged (HTTP 200)", p["deliveries_acknowledged"], ""),
        ("duplicates sent", p["duplicates_sent"], "after a 200, as if WeCom lost the answer"),
        ("given up", p["given_up"], ""),
        ("callback server (inbox)", None, ""),
        ("deliveries received", seen.deliveries, ""),
        ("rows stored", seen.rows, ""),
        ("deduplicated", seen.deliveries - seen.rows, "deliveries - rows"),
        ("processed", seen.processed, f"done {s[InboxStatus.DONE]}, ignored {s[InboxStatus.IGNORED]}"),
        ("failed", s[InboxStatus.FAILED], ""),
        ("still pending", seen.pending, ""),
        ("interaction log", None, ""),
        ("interactions total", sum(seen.interactions.values()), _kinds(seen.interactions)),
        ("HQ feed items", seen.feed.items, f"{seen.feed.pages} page(s) of GET /api/interactions"),
    ]
    lines = [f"Summary — seed {scenario.seed}, {len(scenario.customers)} customers, {seen.seconds:.1f} s"]
    for label, value, note in rows:
        if value is None:
            lines.append(f"  {label}")
            continue
        lines.append(f"    {label:<26}{value:>6}" + (f"   {note}" if note else ""))
    lines.append(f"    {'time taken':<26}{seen.seconds:>6.1f} s")
    return lines


@dataclass(frozen=True)
class Check:
    ok: bool
    text: str


def checks(scenario: Scenario, seen: Observed) -> list[Check]:
    expected = scenario.expected_interactions()
    total = sum(expected.values())
    emitted = seen.platform["events_emitted"]
    written = sum(seen.interactions.values())
    failed = seen.statuses[InboxStatus.FAILED]
    return [
        Check(
            emitted == scenario.events,
            f"the platform emitted every scripted event ({emitted} of {scenario.events})",
        ),
        Check(
            seen.rows == emitted,
            f"every distinct event stored exactly once ({seen.rows} rows for {emitted} events)",
        ),
        Check(failed == 0, f"nothing failed ({failed} failed; see `scrm inbox failed` with --keep)"),
        Check(seen.pending == 0, f"nothing pending ({seen.pending} still pending)"),
        Check(
            seen.interactions == expected,
            f"one interaction per contact event ({written} written: {_kinds(seen.interactions)}; "
            f"expected {total}: {_kinds(expected)})",
        ),
        Check(
            seen.feed.items == written and seen.feed.distinct_ids == written,
            f"the HQ feed pages through each of them once ({seen.feed.items} items, "
            f"{seen.feed.distinct_ids} distinct, {written} in the log)",
        ),
    ]
