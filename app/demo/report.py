"""What the demo shows at the end: counts from both sides of the wire (the sandbox platform that
sent the callbacks and received the app's API calls, the server's inbox, the intake tables and
the interaction log, the HQ feed), and the invariants that make the run a success.

Who keeps a customer is the engine's choice at run time, so the checks do not hard-code counts:
each one holds what the sandbox saw, what the database says and what the player did to each
other (every add welcomed once within the code's life, every hand-over resolved, one churn card
per churn, every lead linked whose customer added its advisor …)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import func, select

from app.demo.campaign_report import (
    CampaignsSeen,
    campaign_checks,
    campaign_lines,
    collect_campaigns,
    expected_campaign_interactions,
)
from app.demo.campaigns import CampaignsRun
from app.demo.days import Simulated
from app.demo.feed import FeedRead
from app.demo.play import Played
from app.demo.scenario import LEAD_LINK, LEAD_UNIONID, OWN, SHARED, Scenario
from app.demo.sop_report import SopSeen, collect_sop, expected_sop_interactions, sop_checks, sop_lines
from app.intake.assign import NOT_LOAD, start_of_day
from app.sandbox import SandboxServer
from app.services import Services
from app.store import inbox
from app.store.models import (
    Advisor,
    Assignment,
    Dealer,
    FollowRelation,
    InboxStatus,
    Interaction,
    Lead,
    LeadStatus,
    RelationStatus,
)

WELCOME_CODE_LIFE = 20.0  # seconds WeCom's WelcomeCode works (the sandbox's welcome_code_ttl)
CHURN_TITLE = "客户流失提醒"  # workers/handlers/contacts.py customer_deleted_advisor
LEAD_TITLE = "新线索"  # app/intake/leads.py card
ADD_REASONS = ("shared_code", "own_code", "lead")  # assignments written by an add
NONE = "(none)"  # no dealer: a lead nobody could take, a transfer made outside Dealer SCRM


@dataclass(frozen=True)
class AssignmentRow:
    key: str
    external_userid: str | None
    lead_id: int | None
    advisor: str | None
    dealer: str | None
    reason: str
    status: str
    rerouted: bool
    territory: tuple[str, ...]

    @property
    def from_add(self) -> bool:
        return self.key.startswith("event:") and self.reason in ADD_REASONS


@dataclass
class Observed:
    platform: dict[str, int]  # DeliveryLog counters
    statuses: dict[str, int]  # inbox rows by status
    rows: int  # distinct events stored
    deliveries: int  # callbacks the server accepted, duplicates included
    interactions: dict[str, int]  # by kind
    feed: FeedRead
    played: Played
    seconds: float = 0.0
    by_target: dict[str, int] = field(default_factory=dict)  # events emitted per callback app
    # the intake, from the database
    welcome_ages: list[float] = field(default_factory=list)  # welcomed: seconds_after_add
    assignments: list[AssignmentRow] = field(default_factory=list)
    # leads: (id, dealer, status, external_userid)
    leads: list[tuple[int, str | None, str, str | None]] = field(default_factory=list)
    linked_by: Counter[str] = field(default_factory=Counter)  # lead_linked: state | unionid
    by_dealer: dict[str, Counter[str]] = field(default_factory=dict)  # interaction kind → per dealer
    holders: dict[str, list[str]] = field(default_factory=dict)  # ext → advisors not handed over from
    advisors: dict[str, tuple[str, bool]] = field(default_factory=dict)  # userid → (dealer, active)
    dealer_models: dict[str, set[str]] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)  # dealer → manager userid
    # the sandbox's side
    welcomes: Counter[str] = field(default_factory=Counter)  # welcome messages per external_userid
    churn_cards: int = 0  # textcards to dealer managers titled 客户流失提醒
    lead_cards: int = 0  # textcards to advisors titled 新线索
    pending_transfers: int = 0
    # the engine's own choices (shared codes, leads, transfer retries) per (advisor, China day),
    # open leads per advisor, and each advisor's (capacity_per_day, max_open_leads)
    engine_load: Counter[tuple[str, str]] = field(default_factory=Counter)
    day_load: Counter[tuple[str, str]] = field(default_factory=Counter)  # every customer that counts
    open_leads: Counter[str] = field(default_factory=Counter)
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    sop: SopSeen | None = None  # the simulated days, when they ran
    campaigns: CampaignsSeen | None = None  # the campaigns, when they ran

    @property
    def processed(self) -> int:
        return self.statuses[InboxStatus.DONE] + self.statuses[InboxStatus.IGNORED]

    @property
    def pending(self) -> int:
        return sum(self.statuses[status] for status in InboxStatus.PENDING)

    @property
    def interactions_total(self) -> int:
        return sum(self.interactions.values())


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


def interactions_of(svc: Services, kind: str) -> int:
    with svc.sessions() as session:
        return int(session.scalar(select(func.count()).where(Interaction.kind == kind)) or 0)


def collect(
    svc: Services,
    sandbox: SandboxServer,
    feed: FeedRead,
    seconds: float,
    played: Played,
    days: Simulated | None = None,
    campaigns: CampaignsRun | None = None,
) -> Observed:
    with svc.sessions() as session:
        statuses = inbox.status_counts(session)
        rows, deliveries = inbox.delivery_totals(session)
        kinds = dict(session.execute(select(Interaction.kind, func.count()).group_by(Interaction.kind)).all())
        seen = Observed(
            platform=sandbox.state.delivery_log.snapshot(),
            statuses=statuses,
            rows=rows,
            deliveries=deliveries,
            interactions={str(kind): int(count) for kind, count in kinds.items()},
            feed=feed,
            played=played,
            seconds=seconds,
        )
        _collect_intake(session, seen)
    for report in sandbox.state.delivery_log.reports():
        seen.by_target[report.target] = seen.by_target.get(report.target, 0) + 1
    with sandbox.state.lock:
        seen.welcomes = Counter(sent.external_userid for sent in sandbox.state.welcome_messages)
        messages = [(list(m.touser), m.msgtype, m.content) for m in sandbox.state.app_messages]
        seen.pending_transfers = len(sandbox.state.transfers)
    managers = set(seen.managers.values())
    for touser, msgtype, content in messages:
        title = content.get("title", "") if msgtype == "textcard" and isinstance(content, dict) else ""
        if title.startswith(CHURN_TITLE) and set(touser) <= managers:
            seen.churn_cards += 1
        elif title.startswith(LEAD_TITLE) and set(touser) <= set(seen.advisors):
            seen.lead_cards += 1
    if days is not None and days.started is not None:
        seen.sop = collect_sop(svc, sandbox, days)
    if campaigns is not None and campaigns.ids:
        seen.campaigns = collect_campaigns(svc, sandbox, campaigns)
    return seen


def _collect_intake(session: Any, seen: Observed) -> None:
    for kind, payload in session.execute(
        select(Interaction.kind, Interaction.payload).where(Interaction.kind.in_(("welcomed", "lead_linked")))
    ):
        if kind == "welcomed":
            seen.welcome_ages.append(float(payload.get("seconds_after_add") or 0.0))
        else:
            seen.linked_by[str(payload.get("by"))] += 1
    for row in session.scalars(select(Assignment).order_by(Assignment.id)):
        explanation = row.explanation or {}
        if row.advisor_userid and row.status not in NOT_LOAD:
            day = start_of_day(row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC)).date()
            seen.day_load[(row.advisor_userid, day.isoformat())] += 1
            if row.dedup_key.startswith("lead:") or row.reason in ("shared_code", "transfer_retry"):
                seen.engine_load[(row.advisor_userid, day.isoformat())] += 1
        seen.assignments.append(
            AssignmentRow(
                row.dedup_key,
                row.external_userid,
                row.lead_id,
                row.advisor_userid,
                row.dealer_code,
                row.reason,
                row.status,
                bool(explanation.get("rerouted")),
                tuple(explanation.get("territory") or ()),
            )
        )
    seen.leads = [
        (lead.id, lead.dealer_code, lead.status, lead.external_userid)
        for lead in session.scalars(select(Lead))
    ]
    seen.open_leads = Counter(
        session.scalars(select(Lead.advisor_userid).where(Lead.status == LeadStatus.ASSIGNED))
    )
    for userid, dealer, active, capacity, max_open in session.execute(
        select(
            Advisor.userid,
            Advisor.dealer_code,
            Advisor.active,
            Advisor.capacity_per_day,
            Advisor.max_open_leads,
        )
    ):
        seen.advisors[userid] = (dealer, bool(active))
        seen.limits[userid] = (capacity, max_open)
    for dealer in session.scalars(select(Dealer)):
        seen.dealer_models[dealer.code] = set(dealer.models or ())
        if dealer.manager_userid:
            seen.managers[dealer.code] = dealer.manager_userid
    for kind, dealer, advisor, payload in session.execute(
        select(
            Interaction.kind, Interaction.dealer_code, Interaction.advisor_userid, Interaction.payload
        ).where(Interaction.kind.in_(("transfer_completed", "transfer_failed", "churn_alerted")))
    ):
        if kind == "transfer_failed":
            if "reason" not in (payload or {}):
                continue  # a hand-over WeCom refused to start, not a customer's refusal
            kind, dealer = "transfer_refused", seen.advisors.get(advisor or "", (None, False))[0]
        seen.by_dealer.setdefault(kind, Counter())[dealer or NONE] += 1
    for advisor, ext, status in session.execute(
        select(FollowRelation.advisor_userid, FollowRelation.external_userid, FollowRelation.status)
    ):
        if status != RelationStatus.TRANSFERRED:
            seen.holders.setdefault(ext, []).append(advisor)


# -- the numbers --------------------------------------------------------------------------------


def _transfer_rows(seen: Observed) -> dict[str, int]:
    started = sum(1 for a in seen.assignments if a.status in ("transferring", "transferred", "failed"))
    return {
        "started": started,
        "transferring": sum(1 for a in seen.assignments if a.status == "transferring"),
        "re-offered": sum(1 for a in seen.assignments if a.reason == "transfer_retry" and a.advisor),
        "not re-offered": sum(1 for a in seen.assignments if a.reason == "transfer_retry" and not a.advisor),
    }


def expected_interactions(seen: Observed) -> dict[str, int]:
    """The interaction log the run must have written, kind by kind: from what the player did,
    what the platform sent back (hand-overs ended) and what the API answered (leads), plus the
    engine's re-offers (one ``assigned`` each; how many is the engine's business)."""
    p = seen.played
    adds = sum(p.adds.values())
    created = [lead for lead in p.leads if lead.status == "created"]
    with_advisor = sum(1 for lead in created if lead.advisor)
    reoffers = sum(1 for a in seen.assignments if a.reason == "transfer_retry")
    expected = {
        "added": adds,
        "welcomed": adds,  # every add carries a WelcomeCode
        "tagged": adds,  # every demo state implies tags (渠道, 意向车型)
        "assigned": adds + with_advisor + reoffers,
        "unassigned": len(created) - with_advisor,
        "transferred": p.accepted + p.refused,  # each started hand-over ended once on the platform
        "transfer_completed": p.accepted,
        "transfer_failed": p.refused,
        "churned": len(p.churned),
        "churn_alerted": sum(1 for _, advisor in p.churned if _manager_of(seen, advisor)),
        "deleted": len(p.dropped),
        "lead_imported": len(created),
        "lead_card_sent": with_advisor,
        "lead_linked": p.lead_adds,
        "bot_answered": p.texts,  # each advisor's text to the bot gets one answer
    }
    if seen.sop is not None:  # the simulated days: enrollments, steps, their actions, intent
        for kind, count in expected_sop_interactions(seen.sop).items():
            expected[kind] = expected.get(kind, 0) + count
    if seen.campaigns is not None:  # campaign_* from the recipient rows (campaign_report.py)
        for kind, count in expected_campaign_interactions(seen.campaigns).items():
            expected[kind] = expected.get(kind, 0) + count
    return {kind: count for kind, count in expected.items() if count}


def _manager_of(seen: Observed, advisor: str) -> str | None:
    dealer = seen.advisors.get(advisor, (None, False))[0]
    return seen.managers.get(dealer or "")


def dealer_table(seen: Observed, scenario: Scenario) -> list[str]:
    """Per dealer: customers assigned by their add (kept by who was added, or handed over by the
    engine), hand-overs completed / refused / re-offered, churn alerts, leads imported / linked,
    and the engine's decisions that found no eligible advisor (daily capacity used up, or every
    other advisor refused): the customer stays with who has them."""
    columns = ("assigned", "kept", "handed over", "completed", "refused", "re-offered", "churn alerts",
               "leads", "linked", "no advisor")  # fmt: skip
    counts: dict[str, Counter[str]] = {dealer.code: Counter() for dealer in scenario.dealers}
    for row in seen.assignments:
        if row.advisor is None and (row.from_add or row.reason == "transfer_retry"):
            home = row.territory[0] if row.territory else NONE
            counts.setdefault(home, Counter())["no advisor"] += 1
            continue
        if row.from_add:
            c = counts.setdefault(row.dealer or NONE, Counter())
            c["assigned"] += 1
            if row.status in ("kept", "linked"):  # linked: kept, and the lead it fulfils is linked
                c["kept"] += 1
            elif row.reason == "shared_code":
                c["handed over"] += 1
        if row.reason == "transfer_retry":
            counts.setdefault(row.dealer or NONE, Counter())["re-offered"] += 1
    for kind, column in (
        ("transfer_completed", "completed"),
        ("transfer_refused", "refused"),
        ("churn_alerted", "churn alerts"),
    ):
        for dealer, count in seen.by_dealer.get(kind, Counter()).items():
            counts.setdefault(dealer, Counter())[column] += count
    for _, dealer, status, _ in seen.leads:
        counts.setdefault(dealer or NONE, Counter())["leads"] += 1
        if status == LeadStatus.LINKED:
            counts[dealer or NONE]["linked"] += 1
    total: Counter[str] = Counter()
    lines = [_table_row("dealer", columns, dict.fromkeys(columns, ""), header=True)]
    for dealer, c in counts.items():
        total.update(c)
        lines.append(_table_row(dealer, columns, c))
    lines.append(_table_row("total", columns, total))
    return lines


def _table_row(label: str, columns: tuple[str, ...], values: Any, header: bool = False) -> str:
    cells = "".join(f"{column if header else values[column]:>{len(column) + 2}}" for column in columns)
    return f"    {label:<8}{cells}"


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items())) or "none"


def summary_lines(scenario: Scenario, seen: Observed) -> list[str]:
    p = seen.platform
    played = seen.played
    targets = ", ".join(f"{target} {count}" for target, count in sorted(seen.by_target.items()))
    s = seen.statuses
    adds = sum(played.adds.values())
    in_time = sum(1 for age in seen.welcome_ages if age < WELCOME_CODE_LIFE)
    slowest = max(seen.welcome_ages, default=0.0)
    transfers = _transfer_rows(seen)
    created = [lead for lead in played.leads if lead.status == "created"]
    rerouted = sum(
        1 for a in seen.assignments if a.reason == "lead" and a.key.startswith("lead:") and a.rerouted
    )
    linked = sum(1 for _, _, status, _ in seen.leads if status == LeadStatus.LINKED)
    no_advisor = sum(1 for a in seen.assignments if a.from_add and a.advisor is None)
    shared = Counter(
        "kept" if a.status == "kept" else "handed"
        for a in seen.assignments
        if a.from_add and a.reason == "shared_code" and a.advisor
    )
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
        ("intake", None, ""),
        (
            "customers added",
            adds,
            f"store posters {played.adds[SHARED]}, advisors' cards {played.adds[OWN]}, "
            f"lead links {played.adds[LEAD_LINK]}, cards + lead unionid {played.adds[LEAD_UNIONID]}"
            + (f"; {len(played.skipped)} lead customers skipped (no advisor)" if played.skipped else ""),
        ),
        (
            "welcomes sent",
            seen.interactions.get("welcomed", 0),
            f"sandbox welcome_messages {sum(seen.welcomes.values())}; missed "
            f"{seen.interactions.get('welcome_missed', 0)}",
        ),
        (
            "  within the code's life",
            in_time,
            f"sent < {WELCOME_CODE_LIFE:.0f} s after the add; slowest {slowest:.1f} s",
        ),
        (
            "shared-code customers",
            played.adds[SHARED],
            f"handed over by the engine {shared.get('handed', 0)}, kept by the advisor scanned "
            f"{shared.get('kept', 0)}, no eligible advisor left {no_advisor} (kept by the one scanned)",
        ),
        (
            "transfers started",
            transfers["started"],
            f"{transfers['re-offered']} of them re-offers after a refusal "
            f"({transfers['not re-offered']} refusers not re-offered: no eligible advisor left)",
        ),
        (
            "  completed",
            seen.interactions.get("transfer_completed", 0),
            "del_external_contact DELETE_BY_TRANSFER",
        ),
        ("  refused", played.refused, "transfer_fail customer_refused → next-best advisor"),
        ("  still transferring", transfers["transferring"], f"sandbox pending {seen.pending_transfers}"),
        (
            "churn alert cards",
            seen.churn_cards,
            f"textcards to dealer managers for {len(played.churned)} churns",
        ),
        (
            "leads imported",
            len(created),
            f"POST /api/leads; re-routed {rerouted} (their dealer does not sell the model)",
        ),
        ("  linked", linked, f"by state {seen.linked_by['state']}, by unionid {seen.linked_by['unionid']}"),
        ("lead cards sent", seen.lead_cards, "textcards to the leads' advisors"),
        ("interaction log", None, ""),
        ("interactions total", seen.interactions_total, _kinds(seen.interactions)),
        ("HQ feed items", seen.feed.items, f"{seen.feed.pages} page(s) of GET /api/interactions"),
    ]
    lines = [f"Summary — seed {scenario.seed}, {len(scenario.customers)} customers, {seen.seconds:.1f} s"]
    for label, value, note in rows:
        if value is None:
            lines.append(f"  {label}")
            continue
        lines.append(f"    {label:<26}{value:>6}" + (f"   {note}" if note else ""))
    lines.append(f"    {'time taken':<26}{seen.seconds:>6.1f} s")
    lines.append("  per dealer (assignments by the add, hand-overs, churn alerts, leads)")
    lines += dealer_table(seen, scenario)
    if seen.sop is not None:
        lines += sop_lines(seen.sop)
    if seen.campaigns is not None:
        lines += campaign_lines(seen.campaigns)
    return lines


@dataclass(frozen=True)
class Check:
    ok: bool
    text: str


def checks(scenario: Scenario, seen: Observed, emitted_by_player: int) -> list[Check]:
    played = seen.played
    emitted = seen.platform["events_emitted"]
    written = seen.interactions_total
    failed = seen.statuses[InboxStatus.FAILED]
    adds = sum(played.adds.values())
    expected = expected_interactions(seen)
    results = [
        Check(
            emitted == emitted_by_player,
            f"the platform emitted every event the demo caused ({emitted} of {emitted_by_player}: "
            f"{scenario.events} scripted, {played.accepted + played.refused} hand-overs ended"
            + (
                f", {len(played.skipped)} adds skipped: their lead had no advisor)" if played.skipped else ")"
            ),
        ),
        Check(
            seen.rows == emitted,
            f"every distinct event stored exactly once ({seen.rows} rows for {emitted} events)",
        ),
        Check(failed == 0, f"nothing failed ({failed} failed; see `scrm inbox failed` with --keep)"),
        Check(seen.pending == 0, f"nothing pending ({seen.pending} still pending)"),
    ]
    twice = sum(1 for count in seen.welcomes.values() if count > 1)
    welcomed = seen.interactions.get("welcomed", 0)
    missed = seen.interactions.get("welcome_missed", 0)
    late = sum(1 for age in seen.welcome_ages if age >= WELCOME_CODE_LIFE)
    results.append(
        Check(
            twice == 0 and sum(seen.welcomes.values()) == adds == welcomed and missed == 0 and late == 0,
            f"every add welcomed exactly once within the code's life ({adds} adds, "
            f"{sum(seen.welcomes.values())} welcome messages, {twice} customers welcomed twice, "
            f"{missed} missed, {late} at {WELCOME_CODE_LIFE:.0f} s or later)",
        )
    )
    results.append(_shared_customers_check(scenario, seen))
    results.append(_capacity_check(seen))
    transfers = _transfer_rows(seen)
    results.append(
        Check(
            transfers["transferring"] == 0 and seen.pending_transfers == 0,
            f"every hand-over resolved ({transfers['transferring']} assignments still transferring, "
            f"{seen.pending_transfers} pending in the sandbox; {played.accepted} accepted, "
            f"{played.refused} refused)",
        )
    )
    alerts = sum(1 for _, advisor in played.churned if _manager_of(seen, advisor))
    results.append(
        Check(
            seen.churn_cards == alerts == seen.interactions.get("churn_alerted", 0),
            f"one churn alert card per churn whose dealer has a manager ({seen.churn_cards} cards, "
            f"{alerts} such churns of {len(played.churned)})",
        )
    )
    linked = {ext for _, _, status, ext in seen.leads if status == LeadStatus.LINKED and ext}
    lead_customers = {
        ext
        for ext, index in played.customers.items()
        if scenario.customers[index].way in (LEAD_LINK, LEAD_UNIONID)
    }
    by_unionid = seen.linked_by["unionid"]
    results.append(
        Check(
            linked == lead_customers and by_unionid == played.adds[LEAD_UNIONID],
            f"every lead linked whose customer added its advisor ({len(linked)} linked of "
            f"{len(lead_customers)}; by unionid {by_unionid} of {played.adds[LEAD_UNIONID]})",
        )
    )
    cards = expected.get("lead_card_sent", 0)
    results.append(
        Check(
            seen.lead_cards == cards,
            f"one card per lead with an advisor ({seen.lead_cards} cards for {cards} leads)",
        )
    )
    results.append(
        Check(
            seen.interactions == expected,
            f"the interaction log holds what happened, kind by kind ({written} written; expected "
            f"{sum(expected.values())}: {_kinds(expected)})"
            if seen.interactions != expected
            else f"the interaction log holds what happened, kind by kind ({written} written)",
        )
    )
    results.append(
        Check(
            seen.feed.items == written and seen.feed.distinct_ids == written,
            f"the HQ feed pages through each of them once ({seen.feed.items} items, "
            f"{seen.feed.distinct_ids} distinct, {written} in the log)",
        )
    )
    if seen.sop is not None:
        results += [Check(ok, text) for ok, text in sop_checks(seen.sop)]
    if seen.campaigns is not None:
        results += [Check(ok, text) for ok, text in campaign_checks(seen.campaigns)]
    return results


def _capacity_check(seen: Observed) -> Check:
    """The engine never gave an advisor more than capacity_per_day in a day, nor more open leads
    than max_open_leads, though the web's lead imports and the worker's adds decide at once.
    (Customers who scanned an advisor's own code count towards the load but are not limited.)"""
    over = [
        f"{advisor} got {count} on {day} (capacity {seen.limits.get(advisor, (0, 0))[0]})"
        for (advisor, day), count in sorted(seen.engine_load.items())
        if count > seen.limits.get(advisor, (0, 0))[0]
    ] + [
        f"{advisor} holds {count} open leads (at most {seen.limits.get(advisor, (0, 0))[1]})"
        for advisor, count in sorted(seen.open_leads.items())
        if advisor and count > seen.limits.get(advisor, (0, 0))[1]
    ]
    full = sum(
        1 for (advisor, _), count in seen.day_load.items() if count >= seen.limits.get(advisor, (0, 0))[0]
    )
    return Check(
        not over,
        f"no advisor given more than their daily capacity or open-lead limit "
        f"({sum(seen.engine_load.values())} engine choices, {full} advisor-days at capacity"
        + (f"; e.g. {over[0]})" if over else ")"),
    )


def _shared_customers_check(scenario: Scenario, seen: Observed) -> Check:
    """A shared-code customer ends with one advisor (the engine's choice, or the one who was
    scanned when nobody had capacity left) who is active at a dealer that sells their model."""
    wrong: list[str] = []
    shared = [
        (ext, scenario.customers[index])
        for ext, index in seen.played.customers.items()
        if scenario.customers[index].way == SHARED
    ]
    for ext, customer in shared:
        holders = seen.holders.get(ext, [])
        if len(holders) != 1:
            wrong.append(f"{ext} has {holders}")
            continue
        dealer, active = seen.advisors.get(holders[0], (None, False))
        if not active or customer.model not in seen.dealer_models.get(dealer or "", set()):
            wrong.append(f"{ext} ({customer.model}) is with {holders[0]} of {dealer}")
    return Check(
        not wrong,
        f"every shared-code customer is with an active advisor of a dealer selling their model "
        f"({len(shared) - len(wrong)} of {len(shared)}" + (f"; e.g. {wrong[0]})" if wrong else ")"),
    )
