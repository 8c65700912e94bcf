"""SOP card analytics, per card and per step (``scrm sop stats``, ``GET /api/sop/stats``).

Every figure is a SQL aggregate (GROUP BY card and step), never a loop over rows in Python:

- ``enrolled``, ``active``, ``completed``, ``exited`` — enrollments by status (all versions);
- per step: ``waiting`` (active enrollments whose next step it is), ``due`` (of those, due now),
  ``ran`` / ``reminded`` / ``skipped`` (step runs; reminded = a reminder card went out),
  ``replies_sent``, ``links_opened``, ``answers_given`` (interactions ``reply_sent``,
  ``link_opened``, ``answer_given`` whose payload names the card and the step — written by the
  sidebar, tracked links and the bot), ``dropped`` (enrollments that exited before this step ran);
- ``stage_reached``: enrollments whose customer's stage changed after they were enrolled (any
  ``stage_changed`` interaction except the card's own stage actions), per card in all, by the
  stage reached, and per step credited to the last step that had run before the change (step
  ``null``: before the first step ran).

Steps are numbered as in the card's current version (``at`` is that version's); enrollments of
older versions count under the same step numbers.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, distinct, func, literal, select
from sqlalchemy.orm import Session

from app.sop import enrollment
from app.store.models import Interaction, SopCard, SopCardVersion
from app.store.sop_models import EnrollmentStatus, SopEnrollment, SopStepRun, StepRunStatus

E = SopEnrollment.__table__
R = SopStepRun.__table__
I = Interaction.__table__  # noqa: E741

# interaction kind → the per-step figure it counts (payload {"card": id, "step": index})
TOUCH_KINDS = {"reply_sent": "replies_sent", "link_opened": "links_opened", "answer_given": "answers_given"}
STEP_FIGURES = (
    "waiting",
    "due",
    "ran",
    "reminded",
    "skipped",
    "replies_sent",
    "links_opened",
    "answers_given",
    "stage_reached",
    "dropped",
)


def _card_step(rows) -> dict[tuple[str, int | None], int]:
    return {(card, step): int(n) for card, step, n in rows}


def card_stats(session: Session, now: datetime, card_id: str | None = None) -> dict[str, Any]:
    """``{"generated_at", "cards": [...]}`` (see the module notes); one card with ``card_id``."""
    cards = {c.card_id: c for c in enrollment.current_cards(session)}
    titles = dict(
        session.execute(
            select(SopCard.card_id, SopCardVersion.title).join(
                SopCardVersion, SopCard.current_version_id == SopCardVersion.id
            )
        ).all()
    )

    def only(column):
        return column == card_id if card_id else literal(True)

    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    for card, status, n in session.execute(
        select(E.c.card_id, E.c.status, func.count())
        .where(only(E.c.card_id))
        .group_by(E.c.card_id, E.c.status)
    ):
        by_status[card][status] = int(n)

    waiting = _card_step(
        session.execute(
            select(E.c.card_id, E.c.next_step, func.count())
            .where(E.c.status == EnrollmentStatus.ACTIVE, only(E.c.card_id))
            .group_by(E.c.card_id, E.c.next_step)
        )
    )
    due = _card_step(
        session.execute(
            select(E.c.card_id, E.c.next_step, func.count())
            .where(E.c.next_due_at <= now, only(E.c.card_id))
            .group_by(E.c.card_id, E.c.next_step)
        )
    )
    dropped = _card_step(
        session.execute(
            select(E.c.card_id, E.c.next_step, func.count())
            .where(E.c.status == EnrollmentStatus.EXITED, only(E.c.card_id))
            .group_by(E.c.card_id, E.c.next_step)
        )
    )
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    for card, reason, n in session.execute(
        select(E.c.card_id, E.c.exit_reason, func.count())
        .where(E.c.status == EnrollmentStatus.EXITED, only(E.c.card_id))
        .group_by(E.c.card_id, E.c.exit_reason)
    ):
        reasons[card][reason or "unknown"] = int(n)

    runs: dict[str, dict[tuple[str, int | None], int]] = {"ran": {}, "reminded": {}, "skipped": {}}
    for card, step, status, n, reminded in session.execute(
        select(R.c.card_id, R.c.step_index, R.c.status, func.count(), func.count(R.c.reminder_msgid))
        .where(only(R.c.card_id))
        .group_by(R.c.card_id, R.c.step_index, R.c.status)
    ):
        if status == StepRunStatus.SKIPPED:
            runs["skipped"][(card, step)] = int(n)
        else:
            runs["ran"][(card, step)] = runs["ran"].get((card, step), 0) + int(n)
            runs["reminded"][(card, step)] = runs["reminded"].get((card, step), 0) + int(reminded)

    touches: dict[str, dict[tuple[str, int | None], int]] = {name: {} for name in TOUCH_KINDS.values()}
    touch_card = Interaction.payload["card"].as_string()
    touch_step = Interaction.payload["step"].as_integer()
    for kind, card, step, n in session.execute(
        select(Interaction.kind, touch_card, touch_step, func.count())
        .where(Interaction.kind.in_(list(TOUCH_KINDS)), only(touch_card), touch_card.is_not(None))
        .group_by(Interaction.kind, touch_card, touch_step)
    ):
        touches[TOUCH_KINDS[kind]][(card, step)] = int(n)

    reached_total, reached_by_stage, reached_by_step = _stage_reached(session, only)

    result = []
    for card in sorted(set(cards) | set(by_status)):
        current = cards.get(card)
        steps_known = len(current.card.steps) if current else 0
        seen = [
            step
            for table in (waiting, due, dropped, *runs.values(), *touches.values(), reached_by_step)
            for (c, step) in table
            if c == card and step is not None
        ]
        count = max([steps_known, *(s + 1 for s in seen)])
        statuses = by_status.get(card, {})
        steps = []
        for index in range(count):
            key = (card, index)
            figures = {
                "waiting": waiting.get(key, 0),
                "due": due.get(key, 0),
                "ran": runs["ran"].get(key, 0),
                "reminded": runs["reminded"].get(key, 0),
                "skipped": runs["skipped"].get(key, 0),
                **{name: table.get(key, 0) for name, table in touches.items()},
                "stage_reached": reached_by_step.get(key, 0),
                "dropped": dropped.get(key, 0),
            }
            at = current.card.steps[index].at if current and index < steps_known else None
            steps.append({"index": index, "at": at, **figures})
        result.append(
            {
                "card_id": card,
                "title": titles.get(card, card),
                "version": current.version if current else None,
                "enrolled": sum(statuses.values()),
                "active": statuses.get(EnrollmentStatus.ACTIVE, 0),
                "completed": statuses.get(EnrollmentStatus.COMPLETED, 0),
                "exited": statuses.get(EnrollmentStatus.EXITED, 0),
                "due": sum(v for (c, _), v in due.items() if c == card),
                "reminded": sum(v for (c, _), v in runs["reminded"].items() if c == card),
                "replies_sent": sum(v for (c, _), v in touches["replies_sent"].items() if c == card),
                "stage_reached": reached_total.get(card, 0),
                "stage_reached_by_stage": reached_by_stage.get(card, {}),
                "exit_reasons": reasons.get(card, {}),
                "steps": steps,
            }
        )
    if card_id:
        result = [item for item in result if item["card_id"] == card_id]
    return {"generated_at": now.isoformat(), "cards": result}


def _stage_reached(session: Session, only) -> tuple[dict[str, int], dict[str, dict[str, int]], dict]:
    """(per card, per card and stage, per card and step) counts of enrollments whose customer's
    stage changed after enrollment (not by the card's own action)."""
    by = func.coalesce(Interaction.payload["by"].as_string(), "")
    stage = Interaction.payload["to"].as_string()
    last_step = (
        select(func.max(R.c.step_index))
        .where(R.c.enrollment_id == E.c.id, R.c.ran_at <= I.c.occurred_at)
        .correlate(E, I)
        .scalar_subquery()
    )
    changes = (
        select(
            E.c.id.label("enrollment_id"),
            E.c.card_id.label("card_id"),
            stage.label("stage"),
            last_step.label("step"),
        )
        .select_from(E)
        .join(
            I,
            and_(
                I.c.external_userid == E.c.external_userid,
                I.c.kind == "stage_changed",
                I.c.occurred_at > E.c.enrolled_at,
            ),
        )
        .where(by != literal("sop:") + E.c.card_id, only(E.c.card_id))
        .subquery()
    )
    total = {
        card: int(n)
        for card, n in session.execute(
            select(changes.c.card_id, func.count(distinct(changes.c.enrollment_id))).group_by(
                changes.c.card_id
            )
        )
    }
    by_stage: dict[str, dict[str, int]] = defaultdict(dict)
    for card, reached, n in session.execute(
        select(changes.c.card_id, changes.c.stage, func.count(distinct(changes.c.enrollment_id))).group_by(
            changes.c.card_id, changes.c.stage
        )
    ):
        by_stage[card][reached or "unknown"] = int(n)
    by_step = _card_step(
        session.execute(
            select(changes.c.card_id, changes.c.step, func.count(distinct(changes.c.enrollment_id))).group_by(
                changes.c.card_id, changes.c.step
            )
        )
    )
    return total, dict(by_stage), by_step


# -- text ------------------------------------------------------------------------------------------

_COLUMNS = (
    ("step", 4),
    ("at", 10),
    ("waiting", 7),
    ("due", 5),
    ("reminded", 8),
    ("skipped", 7),
    ("replies", 7),
    ("links", 5),
    ("answers", 7),
    ("stage", 5),
    ("dropped", 7),
)


def format_table(stats: dict[str, Any]) -> str:
    """The text ``scrm sop stats`` prints: a line per card, a row per step."""
    if not stats["cards"]:
        return "no SOP cards loaded and no enrollments (scrm sop load)"
    lines = []
    for card in stats["cards"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(card["exit_reasons"].items()))
        stages = ", ".join(f"{k} {v}" for k, v in sorted(card["stage_reached_by_stage"].items()))
        lines.append(
            f"{card['card_id']} · {card['title']} (version {card['version'] or '-'}): "
            f"{card['enrolled']} enrolled, {card['active']} active, {card['completed']} completed, "
            f"{card['exited']} exited{f' ({reasons})' if reasons else ''}; "
            f"stage reached {card['stage_reached']}{f' ({stages})' if stages else ''}"
        )
        lines.append("  " + " ".join(name.rjust(width) for name, width in _COLUMNS))
        for step in card["steps"]:
            values = (
                step["index"] + 1,
                step["at"] or "-",
                step["waiting"],
                step["due"],
                step["reminded"],
                step["skipped"],
                step["replies_sent"],
                step["links_opened"],
                step["answers_given"],
                step["stage_reached"],
                step["dropped"],
            )
            lines.append(
                "  " + " ".join(str(v).rjust(width) for v, (_, width) in zip(values, _COLUMNS, strict=True))
            )
    return "\n".join(lines)
