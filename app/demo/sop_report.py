"""The SOP part of the demo's summary and checks: what the simulated days enrolled, ran, reminded
and ended, from the store (enrollments, step runs), the sandbox (the reminder textcards advisors
got) and what the demo itself did (app/demo/days.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from app.demo.days import Simulated, china
from app.sandbox import SandboxServer
from app.services import Services
from app.sop import enrollment
from app.sop.card import Card, StageAction, TagAction
from app.store.sop_models import EnrollmentStatus, SopEnrollment, SopStepRun, StepRunStatus

REMINDER_TITLE = "SOP提醒"  # app/sop/runner.py reminder_content


@dataclass(frozen=True)
class EnrollmentRow:
    id: int
    card_id: str
    status: str
    exit_reason: str | None
    next_step: int
    next_due_at: datetime | None
    due: tuple[datetime, ...]  # each step's due time for this enrollment


@dataclass
class SopSeen:
    days: Simulated
    now: datetime  # the simulated time at the end
    cards: dict[str, Card] = field(default_factory=dict)  # by version id's card: id → card
    enrollments: list[EnrollmentRow] = field(default_factory=list)
    runs: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # enrollment → (step, status)
    run_twice: int = 0  # (enrollment, step) pairs with more than one run row
    reminders: int = 0  # SOP提醒 textcards the sandbox delivered to advisors
    reminders_to_others: int = 0  # … to anyone but the enrollment's advisors

    # -- derived ---------------------------------------------------------------------------

    def all_runs(self) -> list[tuple[EnrollmentRow, int, str]]:
        by_id = {row.id: row for row in self.enrollments}
        return [(by_id[eid], step, status) for eid, items in self.runs.items() for step, status in items]

    def done(self) -> int:
        return sum(1 for _, _, status in self.all_runs() if status == StepRunStatus.DONE)

    def skipped(self) -> int:
        return sum(1 for _, _, status in self.all_runs() if status == StepRunStatus.SKIPPED)

    def statuses(self) -> Counter[str]:
        return Counter(row.status for row in self.enrollments)

    def exits(self) -> Counter[str]:
        exited = [row for row in self.enrollments if row.status == EnrollmentStatus.EXITED]
        return Counter(row.exit_reason or "?" for row in exited)

    def action_runs(self, kind: type) -> int:
        """Done step runs whose step has an action of ``kind``."""
        return sum(
            sum(isinstance(action, kind) for action in self.cards[row.card_id].steps[step].actions)
            for row, step, status in self.all_runs()
            if status == StepRunStatus.DONE
        )

    def wrong_runs(self) -> list[str]:
        """Enrollments whose step runs are not exactly their steps due by the end: each once,
        in order, none due and not run (an exited one: a prefix, then nothing more)."""
        wrong: list[str] = []
        for row in self.enrollments:
            steps = sorted(step for step, _ in self.runs.get(row.id, []))
            due = [i for i, at in enumerate(row.due) if at <= self.now]
            if row.status == EnrollmentStatus.EXITED:
                ok = steps == list(range(len(steps))) and len(steps) <= len(due) and row.next_due_at is None
            else:
                ok = steps == due and steps == list(range(row.next_step))
                ok = ok and (row.next_due_at is None or row.next_due_at > self.now)
            if not ok:
                wrong.append(f"enrollment {row.id} ({row.card_id}) ran {steps}, due {due}")
        return wrong


def collect_sop(svc: Services, sandbox: SandboxServer, days: Simulated) -> SopSeen:
    seen = SopSeen(days=days, now=days.ended or svc.clock.now())
    with svc.sessions() as session:
        cards: dict[int, Card] = {}
        for row in session.scalars(select(SopEnrollment).order_by(SopEnrollment.id)):
            card = cards.get(row.card_version_id)
            if card is None:
                card = cards[row.card_version_id] = enrollment.card_for_version(session, row.card_version_id)
            seen.cards[row.card_id] = card
            due = tuple(
                enrollment.step_due_at(svc.settings, row.enrolled_at, card, i) for i in range(len(card.steps))
            )
            seen.enrollments.append(
                EnrollmentRow(
                    row.id, row.card_id, row.status, row.exit_reason, row.next_step, row.next_due_at, due
                )
            )
        for eid, step, status in session.execute(
            select(SopStepRun.enrollment_id, SopStepRun.step_index, SopStepRun.status)
        ):
            seen.runs.setdefault(int(eid), []).append((int(step), str(status)))
        seen.run_twice = len(
            session.execute(
                select(SopStepRun.enrollment_id, SopStepRun.step_index)
                .group_by(SopStepRun.enrollment_id, SopStepRun.step_index)
                .having(func.count() > 1)
            ).all()
        )
        advisors = set(session.scalars(select(SopEnrollment.advisor_userid).distinct()))
    with sandbox.state.lock:
        messages = [(list(m.touser), m.msgtype, m.content) for m in sandbox.state.app_messages]
    for touser, msgtype, content in messages:
        title = content.get("title", "") if msgtype == "textcard" and isinstance(content, dict) else ""
        if title.startswith(REMINDER_TITLE):
            seen.reminders += 1
            seen.reminders_to_others += not set(touser) <= advisors
    return seen


def expected_sop_interactions(sop: SopSeen) -> dict[str, int]:
    """The interactions the simulated days must have written, from the store's enrollments and
    step runs, the cards' steps and what the demo posted (not from the log itself)."""
    statuses = sop.statuses()
    days = sop.days
    expected = {
        "sop_enrolled": len(sop.enrollments),
        "sop_reminded": sop.done(),  # one reminder per step run done
        "sop_step_done": sop.done(),
        "sop_step_skipped": sop.skipped(),
        "sop_completed": statuses[EnrollmentStatus.COMPLETED],
        "sop_exited": statuses[EnrollmentStatus.EXITED],
        # the demo's customers are prospects until a stage action moves them (once per customer)
        "stage_changed": sop.action_runs(StageAction),
        "tagged": sop.action_runs(TagAction),
        "intent_changed": days.intent_changes,
        **days.actions,
    }
    return {kind: count for kind, count in expected.items() if count}


def _per_card(sop: SopSeen) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for card_id in sorted({*sop.days.loaded, *sop.cards}):
        table[card_id] = {"enrolled": 0, "steps": Counter(), "skipped": 0, "completed": 0, "exited": 0}
    for row in sop.enrollments:
        entry = table[row.card_id]
        entry["enrolled"] += 1
        entry["completed"] += row.status == EnrollmentStatus.COMPLETED
        entry["exited"] += row.status == EnrollmentStatus.EXITED
    for row, step, status in sop.all_runs():
        if status == StepRunStatus.DONE:
            table[row.card_id]["steps"][step] += 1
        else:
            table[row.card_id]["skipped"] += 1
    return table


def sop_lines(sop: SopSeen) -> list[str]:
    days = sop.days
    start = days.started or sop.now
    statuses = sop.statuses()
    exits = ", ".join(f"{reason} {count}" for reason, count in sorted(sop.exits().items())) or "none"
    loaded = Counter(days.loaded.values())
    rows: list[tuple[str, int, str]] = [
        ("cards loaded", len(days.loaded), ", ".join(f"{s} {n}" for s, n in sorted(loaded.items()))),
        ("enrollments", len(sop.enrollments), f"active {statuses[EnrollmentStatus.ACTIVE]}"),
        ("steps run", sop.done(), f"skipped {sop.skipped()} (their next step was due already)"),
        ("reminders sent", sop.reminders, f"{REMINDER_TITLE} textcards to the advisors (message/send)"),
        ("enrollments finished", statuses[EnrollmentStatus.COMPLETED], "every step run"),
        ("exits", statuses[EnrollmentStatus.EXITED], exits),
        ("customer actions", sum(days.actions.values()), f"{len(days.high_intent)} customer(s), "
         f"{days.intent_changes} intent band changes (POST /api/customers/<id>/actions)"),
    ]  # fmt: skip
    lines = [
        f"  SOP — {(sop.now - start).days} simulated days, {china(start)} → {china(sop.now)} China time, "
        f"{len(days.ticks)} clock stops, {days.seconds:.1f} s"
    ]
    for label, value, note in rows:
        lines.append(f"    {label:<26}{value:>6}" + (f"   {note}" if note else ""))
    lines.append("  per card (enrolled, steps run by step number, skipped, finished, exited)")
    for card_id, entry in _per_card(sop).items():
        card = sop.cards.get(card_id)
        width = len(card.steps) if card else (max(entry["steps"], default=-1) + 1)
        steps = " ".join(f"{i + 1}:{entry['steps'][i]}" for i in range(width)) or "-"
        lines.append(
            f"    {card_id:<22}{entry['enrolled']:>5} enrolled   steps {steps:<28}"
            f" skipped {entry['skipped']}  finished {entry['completed']}  exited {entry['exited']}"
        )
    return lines


def sop_checks(sop: SopSeen) -> list[tuple[bool, str]]:
    days = sop.days
    wrong = sop.wrong_runs()
    welcome = [row for row in sop.enrollments if row.card_id == "prospect-welcome"]
    through = sum(1 for row in welcome if row.status == EnrollmentStatus.COMPLETED)
    return [
        (
            not days.rejected and len(days.loaded) > 0,
            f"every starter SOP card loaded ({len(days.loaded)} loaded, {len(days.rejected)} problems)",
        ),
        (
            not wrong and sop.run_twice == 0,
            f"every enrollment's due steps ran exactly once by {china(sop.now)} ({len(sop.enrollments)} "
            f"enrollments, {sop.done() + sop.skipped()} step runs, {sop.run_twice} run twice, "
            f"{len(wrong)} wrong"
            + (f"; e.g. {wrong[0]}" if wrong else "")
            + (
                f"; {len(days.stuck)} stuck on a failing step, e.g. {next(iter(days.stuck.values()))}: "
                "see logs/worker.log)"
                if days.stuck
                else ")"
            ),
        ),
        (
            sop.reminders == sop.done() and sop.reminders_to_others == 0,
            f"one reminder per step run, to its advisor ({sop.reminders} reminder cards, {sop.done()} steps "
            f"run, {sop.reminders_to_others} to someone else)",
        ),
        (
            bool(welcome) and through > 0,
            f"prospect-welcome ran through all its steps ({through} of {len(welcome)} enrollments finished)",
        ),
    ]
