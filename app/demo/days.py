"""The demo's simulated days: once today's intake is played, the starter SOP cards are loaded and
every process's clock (the shared one, app.clock.SharedOffsetClock, and the sandbox's) jumps
forward from one due step time to the next, about a week, while the worker runs the due steps.

The demo process does what the worker's periodic sweep does (``workers.sop_jobs.sweep``: read
the interaction log, enroll and exit, enqueue the due steps) and waits, in real time, until the
worker has run them; then it moves the clock to the next due time (10:00, 19:00 … China time;
a few minutes past it, so enrollments made a few seconds apart fall due together). On simulated
day 5 a few customers show strong intent through the HQ API (POST
/api/customers/<id>/actions): high-intent-follow-up enrolls them, its first step moves them to
the intent stage, which enrolls them in test-drive-invite and ends their prospect-welcome."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from app.clock import SharedOffsetClock
from app.config import SANDBOX_CREDENTIALS
from app.demo.runner import http_session, repository_root
from app.intake import tagging
from app.sandbox import SandboxServer
from app.services import Services
from app.sop import runner as sop_runner
from app.sop import schedule, tagexpr
from app.sop.card import Card, TagAction
from app.sop.loader import Library, read_cards
from app.sop.versions import load_cards
from app.store.sop_models import EnrollmentStatus, SopEnrollment
from workers.sop_jobs import sweep

Echo = Callable[[str], None]
DAYS = 8  # simulated days after today's intake
SLACK = timedelta(minutes=10)  # past the earliest due time: enrollments seconds apart run together
POLL_SECONDS = 0.1
STALL_SECONDS = 8.0  # no step finished for this long while a step keeps failing: report it, go on
# The day a few customers show strong intent: after prospect-welcome's day-3 invite, and late
# enough that high-intent-follow-up's last step (+4d 15:00, a mass-send preparation) falls after
# the simulated week whenever the demo starts.
INTENT_DAY = 5
HIGH_INTENT_SHARE = 0.05  # customers who show strong intent on that day
# 5 opens (capped at 5 × 10) and a favourite (20): 70 of 100, the high band (INTENT_WEIGHTS).
HIGH_INTENT_ACTIONS = ("link_opened",) * 5 + ("favourite",)


def sop_cards_folder() -> Path:
    return repository_root() / "sop_cards"


@dataclass(frozen=True)
class Tick:
    at: datetime  # the simulated time (UTC)
    ran: int  # steps the worker ran at this time (done or skipped)


@dataclass
class Simulated:
    """What the simulated days did, for the report."""

    loaded: dict[str, str] = field(default_factory=dict)  # card id → load status (new, unchanged …)
    rejected: list[str] = field(default_factory=list)  # problems of rejected files
    tags_created: int = 0
    started: datetime | None = None  # simulated time when the days began (after the scenario)
    ended: datetime | None = None  # the final simulated time
    ticks: list[Tick] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)  # customer actions posted, by kind
    intent_changes: int = 0  # answers with changed: true
    high_intent: list[str] = field(default_factory=list)  # customers given the actions
    stuck: dict[int, str] = field(default_factory=dict)  # enrollment id → its step that keeps failing
    seconds: float = 0.0  # real time the days took
    finished: bool = False


def card_tags(card: Card) -> set[str]:
    """Every corp tag a card names (audience expression, tag trigger, tag actions)."""
    tags: set[str] = set()
    if card.audience.tags:
        tags |= {tag.tag for tag in tagexpr.parse(card.audience.tags).tags()}
    if card.trigger.on == "tag_added":
        tags.add(card.trigger.tag)  # type: ignore[union-attr]
    for step in card.steps:
        for action in step.actions:
            if isinstance(action, TagAction):
                tags |= set(action.add) | set(action.remove)
    return {tagexpr.normalize_tag(tag) for tag in tags}


def load_starter_cards(svc: Services, result: Simulated) -> None:
    """Create the tags the starter cards name in WeCom (the sandbox; as an admin would, then
    ``scrm tags sync``: here through the app's own add_corp_tag path, which stores them too),
    then load the cards against the store's tag library and roster, as ``scrm sop load`` does."""
    folder = sop_cards_folder()
    parsed = [f.card for f in read_cards([folder], Library()) if f.card is not None]
    wanted = sorted({tag for card in parsed for tag in card_tags(card)})
    with svc.sessions() as session:
        before = _tag_count(session)
    tagging.tag_ids_for(svc, [tuple(tag.split(":", 1)) for tag in wanted])  # type: ignore[misc]
    with svc.sessions() as session:
        result.tags_created = _tag_count(session) - before
    report = load_cards(svc, [folder])
    for outcome in report.outcomes:
        if outcome.status == "rejected":
            result.rejected += [str(problem) for problem in outcome.problems]
        else:
            result.loaded[outcome.card_id or outcome.path] = outcome.status


def _tag_count(session) -> int:
    from app.store.models import CorpTag

    live = select(func.count()).select_from(CorpTag).where(CorpTag.deleted.is_(False))
    return int(session.scalar(live) or 0)


def china(moment: datetime) -> str:
    return moment.astimezone(schedule.CHINA).strftime("%a %m-%d %H:%M")


class Days:
    def __init__(
        self, svc: Services, sandbox: SandboxServer, web_url: str, seed: int, deadline: float, echo: Echo
    ) -> None:
        if not isinstance(svc.clock, SharedOffsetClock):
            raise RuntimeError("the simulated days need CLOCK_OFFSET_KEY (a SharedOffsetClock)")
        self.svc = svc
        self.clock: SharedOffsetClock = svc.clock
        self.sandbox = sandbox
        self.web_url = web_url
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.echo = echo
        self.result = Simulated()

    def load_cards(self) -> None:
        """Headquarters' cards are in place before the first customer arrives: the worker's own
        periodic SOP sweep reads the interaction log whenever its interval comes round, and an
        add it reads before any card exists enrolls nobody (a trigger acts on the cards loaded
        when its interaction is read). Loading them after the scenario made the demo depend on
        that interval not falling inside the scenario."""
        result = self.result
        load_starter_cards(self.svc, result)
        new = sum(status == "new" for status in result.loaded.values())
        self.echo(
            f"SOP        {len(result.loaded)} starter cards loaded from sop_cards/ ({new} new), "
            f"{result.tags_created} tags they name created in WeCom"
            + (f"; {len(result.rejected)} problems: {result.rejected[0]}" if result.rejected else "")
        )

    def run(self) -> Simulated:
        """The simulated days, from now (the cards were loaded by ``load_cards``)."""
        started = time.monotonic()
        result = self.result
        now = self.clock.now()
        result.started = now
        end = now + timedelta(days=DAYS)
        self.echo(
            f"simulated days: the clock of the server, the worker and the sandbox jumps from due step "
            f"to due step, {china(now)} → {china(end)} (China time)"
        )
        # A few customers show strong intent at 10:30 China time on day INTENT_DAY (a clock stop
        # of its own), after prospect-welcome's day-3 invite and before its last step.
        local = (now + timedelta(days=INTENT_DAY)).astimezone(schedule.CHINA)
        intent_at = local.replace(hour=10, minute=30, second=0, microsecond=0).astimezone(now.tzinfo)
        acted = False
        while True:
            ran = self._settle()
            if ran is None:
                return self._done(started)
            now = self.clock.now()
            result.ticks.append(Tick(now, ran))
            self.echo(f"  {china(now)}  day {(now - result.started).days}: {ran} step(s) run")
            if not acted and now >= intent_at:
                acted = True
                self._show_intent()
                continue  # settle again at this time: the new enrollments' first steps
            following = self._next_due()
            if not acted and (following is None or following + SLACK > intent_at):
                self._advance(intent_at - now)
                continue
            if following is None or following > end:
                break
            target = min(max(following, now) + SLACK, end)
            self._advance(target - now)
        if self.clock.now() < end:
            self._advance(end - self.clock.now())
            if self._settle() is None:
                return self._done(started)
        result.ended = self.clock.now()
        result.finished = True
        return self._done(started)

    def _done(self, started: float) -> Simulated:
        self.result.seconds = time.monotonic() - started
        return self.result

    def advance(self, delta: timedelta) -> None:
        """Move every clock on after the days (the campaigns' reminders, app/demo/campaigns.py)."""
        self._advance(delta)

    def catch_up(self) -> bool:
        """After a later phase moved the clock: run the SOP steps that fell due meanwhile, and end
        the simulated time there (the SOP checks hold at that time). False at the deadline."""
        if self._settle() is None:
            return False
        self.result.ended = self.clock.now()
        return True

    def _advance(self, delta: timedelta) -> None:
        """The shared clock first (the server and the worker follow within 0.2 s), then the
        sandbox by the same amount, through its control API."""
        seconds = delta.total_seconds()
        self.clock.advance(seconds)
        with http_session() as session:
            url = f"{self.sandbox.url}/sandbox/clock/advance"
            answer = session.post(url, json={"seconds": seconds}, timeout=5)
            answer.raise_for_status()
        time.sleep(0.25)  # every process has read the new offset

    def _next_due(self) -> datetime | None:
        with self.svc.sessions() as session:
            found = session.scalar(
                select(func.min(SopEnrollment.next_due_at)).where(
                    SopEnrollment.status == EnrollmentStatus.ACTIVE,
                    SopEnrollment.id.not_in(list(self.result.stuck)),
                )
            )
        if found is not None and found.tzinfo is None:
            found = found.replace(tzinfo=self.clock.now().tzinfo)
        return found

    def _ran(self) -> int:
        from app.store.sop_models import SopStepRun

        with self.svc.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(SopStepRun)) or 0)

    def _settle(self) -> int | None:
        """Sweep (enroll from the log, enqueue what is due for the worker) until the log is read
        and nothing is due; the steps run meanwhile, or None at the deadline."""
        before = last = self._ran()
        progress = time.monotonic()
        while True:
            report = sweep(self.svc)
            with self.svc.sessions() as session:
                due = [
                    item
                    for item in sop_runner.due_steps(session, self.clock.now(), 1000)
                    if item[0] not in self.result.stuck
                ]
            if report.consumed.read == 0 and not due:
                return self._ran() - before
            if time.monotonic() > self.deadline:
                return None
            ran = self._ran()
            if ran != last:
                last, progress = ran, time.monotonic()
            elif due and time.monotonic() - progress > STALL_SECONDS:
                self._note_failing(due)
                progress = time.monotonic()
            if due:
                time.sleep(POLL_SECONDS)

    def _note_failing(self, due: list[tuple[int, int]]) -> None:
        """Steps the worker tried and gave back (a failed run): the check reports them (the
        worker's log says why); the days go on without them."""
        with self.svc.sessions() as session:
            rows = session.execute(
                select(SopEnrollment.id, SopEnrollment.card_id, SopEnrollment.next_step).where(
                    SopEnrollment.id.in_([eid for eid, _ in due]),
                    SopEnrollment.attempts > 0,
                    SopEnrollment.lease_until.is_(None),
                )
            ).all()
        for eid, card_id, step in rows:
            self.result.stuck[int(eid)] = f"{card_id} step {int(step) + 1}"
            self.echo(f"  enrollment {eid}: {card_id} step {int(step) + 1} keeps failing (logs/worker.log)")

    def _show_intent(self) -> None:
        """A few customers in prospect-welcome open links and favourite a car (HQ's CDP posts
        the actions): their intent score reaches the high band."""
        with self.svc.sessions() as session:
            rows = session.execute(
                select(SopEnrollment.external_userid, SopEnrollment.advisor_userid)
                .where(
                    SopEnrollment.card_id == "prospect-welcome",
                    SopEnrollment.status == EnrollmentStatus.ACTIVE,
                )
                .order_by(SopEnrollment.id)
            ).all()
        if not rows:
            return
        chosen = self.rng.sample(rows, max(1, round(len(rows) * HIGH_INTENT_SHARE)))
        headers = {"Authorization": f"Bearer {SANDBOX_CREDENTIALS['HQ_API_TOKEN']}"}
        with http_session() as session:
            for ext, advisor in chosen:
                for number, kind in enumerate(HIGH_INTENT_ACTIONS):
                    answer = session.post(
                        f"{self.web_url}/api/customers/{ext}/actions",
                        json={"kind": kind, "id": f"demo-{ext}-{number}", "advisor": advisor},
                        headers=headers,
                        timeout=10,
                    )
                    answer.raise_for_status()
                    self.result.actions[kind] += 1
                    self.result.intent_changes += bool(answer.json().get("changed"))
                self.result.high_intent.append(ext)
        self.echo(
            f"  {len(chosen)} customer(s) open links 5 times and favourite a car "
            f"(POST /api/customers/<id>/actions): intent → high"
        )
