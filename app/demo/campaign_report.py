"""The campaigns part of the demo's summary and checks: the store's recipients and batches, the
sandbox's mass sends (what add_msg_template was given, each customer's result, the reminders)
and the interaction log, held against each other."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.campaigns import states
from app.demo.campaigns import CampaignsRun
from app.sandbox import SandboxServer
from app.services import Services
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient
from app.store.models import Interaction

# the sandbox's per-customer result (app/sandbox/massend.py) → our recipient status
SANDBOX_STATUS = {0: "not_sent", 1: "sent", 2: "not_friend", 3: "over_limit"}
FAILED = ("not_sent", "not_friend", "over_limit", "failed")  # a campaign_failed interaction each


@dataclass(frozen=True)
class Recipient:
    campaign: int
    ext: str
    advisor: str
    dealer: str | None
    status: str
    reason: str | None
    msgid: str | None


@dataclass
class CampaignsSeen:
    run: CampaignsRun
    states: dict[int, str] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)
    # (campaign, advisor, batch_no) → (msgid, reminded_count, task_state)
    batches: dict[tuple[int, str, int], tuple[str | None, int, str | None]] = field(default_factory=dict)
    logged: Counter[tuple[int, str]] = field(default_factory=Counter)  # (campaign, kind) → interactions
    logged_twice: int = 0  # (campaign, customer, kind) written more than once
    # the sandbox: msgid → (sender, customers given, fail_list, {ext: result}, reminders)
    sends: dict[str, tuple[str, list[str], list[str], dict[str, int], int]] = field(default_factory=dict)
    covers: dict[str, list[str]] = field(default_factory=dict)  # msgid → its mini-programs' pic_media_id
    media: dict[str, str] = field(default_factory=dict)  # the sandbox's uploaded media: id → type

    def cover_check(self) -> tuple[bool, str]:
        """HQ's campaign carries one mini-program: its cover went up once (the sandbox holds one
        image) and every one of the campaign's add_msg_template calls names that media id."""
        hq = self.run.ids.get("hq")
        owner = self.campaign_of()
        calls = [msgid for msgid in self.sends if owner.get(msgid) == hq]
        named = [self.covers.get(msgid, []) for msgid in calls]
        ids = {media_id for names in named for media_id in names}
        images = [media_id for media_id, kind in self.media.items() if kind == "image"]
        ok = bool(calls) and all(len(names) == 1 for names in named) and ids == set(images) and len(ids) == 1
        return ok, (
            f"HQ's mini-program cover uploaded as WeCom media once and named by each of its "
            f"{len(calls)} add_msg_template calls ({len(images)} image(s) uploaded, "
            f"{len(ids)} media id(s) named)"
        )

    def campaign_of(self) -> dict[str, int]:
        return {msgid: key[0] for key, (msgid, _, _) in self.batches.items() if msgid}

    def by_status(self, campaign: int | None = None) -> Counter[str]:
        return Counter(r.status for r in self.recipients if campaign is None or r.campaign == campaign)

    def submitted(self, campaign: int | None = None) -> int:
        """Customers handed to WeCom and accepted (not in fail_list)."""
        return sum(
            1
            for r in self.recipients
            if r.msgid and r.reason != "fail_list" and (campaign is None or r.campaign == campaign)
        )

    def reminders(self) -> dict[str, int]:
        """advisor → reminders the sandbox received for their tasks."""
        return {who: sum(counts) for who, counts in self.reminders_per_task().items()}

    def reminders_per_task(self) -> dict[str, list[int]]:
        """advisor → reminders per reminded task (one task per campaign and batch)."""
        out: dict[str, list[int]] = {}
        for sender, _, _, _, reminded in self.sends.values():
            if reminded:
                out.setdefault(sender, []).append(reminded)
        return out

    def expected(self, campaign: int) -> dict[str, int]:
        """The campaign_* interactions the recipient rows call for (app/campaigns/submit.py,
        results.py): targeted each, submitted each accepted, delivered each sent, failed each
        not sent / not a friend / over limit / failed (fail_list or a refused batch) and each
        cancelled after it was handed over."""
        rows = [r for r in self.recipients if r.campaign == campaign]
        return {
            "campaign_targeted": len(rows),
            "campaign_submitted": self.submitted(campaign),
            "campaign_delivered": sum(r.status == "sent" for r in rows),
            "campaign_failed": sum(
                r.status in FAILED or (r.status == "cancelled" and bool(r.msgid)) for r in rows
            ),
        }


def collect_campaigns(svc: Services, sandbox: SandboxServer, run: CampaignsRun) -> CampaignsSeen:
    seen = CampaignsSeen(run=run)
    ids = list(run.ids.values())
    R, B = CampaignRecipient, CampaignBatch
    with svc.sessions() as session:
        for cid, state, name in session.execute(
            select(Campaign.id, Campaign.state, Campaign.name).where(Campaign.id.in_(ids))
        ):
            seen.states[cid], seen.names[cid] = state, name
        for row in session.execute(
            select(
                R.campaign_id, R.external_userid, R.advisor_userid, R.dealer_code, R.status, R.reason, R.msgid
            )
            .where(R.campaign_id.in_(ids))
            .order_by(R.campaign_id, R.external_userid)
        ):
            seen.recipients.append(Recipient(*row))
        for cid, advisor, n, msgid, reminded, task_state in session.execute(
            select(
                B.campaign_id, B.advisor_userid, B.batch_no, B.msgid, B.reminded_count, B.task_state
            ).where(B.campaign_id.in_(ids))
        ):
            seen.batches[(cid, advisor, n)] = (msgid, int(reminded or 0), task_state)
        keys: Counter[tuple[int, str, str]] = Counter()
        for kind, ext, payload in session.execute(
            select(Interaction.kind, Interaction.external_userid, Interaction.payload).where(
                Interaction.kind.like("campaign_%")
            )
        ):
            cid = int((payload or {}).get("campaign", 0))
            seen.logged[(cid, kind)] += 1
            keys[(cid, ext or "", kind)] += 1
        seen.logged_twice = sum(1 for n in keys.values() if n > 1)
    with sandbox.state.lock:
        for msgid, send in sandbox.state.mass_sends.items():
            results = {r.external_userid: r.status for task in send.tasks.values() for r in task.results}
            seen.sends[msgid] = (send.sender, list(send.external_userids), list(send.fail_list), results,
                                 len(send.reminders))  # fmt: skip
            seen.covers[msgid] = [
                item["miniprogram"].get("pic_media_id", "")
                for item in send.attachments
                if item.get("msgtype") == "miniprogram"
            ]
        seen.media = {media_id: item.type for media_id, item in sandbox.state.media.items()}
    return seen


def expected_campaign_interactions(seen: CampaignsSeen) -> dict[str, int]:
    total: Counter[str] = Counter()
    for cid in seen.run.ids.values():
        total.update(seen.expected(cid))
    return {kind: n for kind, n in total.items() if n}


def _row(label: str, values: list[Any], widths: tuple[int, ...]) -> str:
    return f"    {label:<14}" + "".join(f"{v!s:>{w}}" for v, w in zip(values, widths, strict=True))


def campaign_lines(seen: CampaignsSeen) -> list[str]:
    run = seen.run
    status = seen.by_status()
    calls = sum(1 for msgid, _, _ in seen.batches.values() if msgid)
    dry = ", ".join(f"{who} {audience['total']}" for who, audience in run.dry_runs.items())
    reminded = seen.reminders()
    per_task = seen.reminders_per_task()
    rows: list[tuple[str, int, str]] = [
        ("audience", len(seen.recipients), f"frozen at submission; dry runs: {dry}"),
        ("submitted", seen.submitted(), f"{calls} add_msg_template call(s), one per advisor batch; "
                                        f"fail_list {sum(r.reason == 'fail_list' for r in seen.recipients)}"),
        ("sent", status["sent"], "the advisors confirmed; WeCom delivered"),
        ("not sent", status["not_sent"], ""),
        ("not a friend", status["not_friend"], "the relation was gone when the advisor confirmed"),
        ("over limit", status["over_limit"], "WeCom's per-customer receiving limit"),
        ("covers uploaded", len(seen.media),
         f"the mini-program's cover as WeCom media (media/upload), named in "
         f"{sum(1 for names in seen.covers.values() if names)} add_msg_template call(s)"),
        ("advisors reminded", sum(reminded.values()),
         ", ".join(f"{who} {'+'.join(map(str, n))} ({len(n)} tasks)" for who, n in sorted(per_task.items()))
         + "; remind_groupmsg_send, at most 3 per task"),
    ]  # fmt: skip
    states_text = ", ".join(f"#{cid} {state}" for cid, state in sorted(seen.states.items()))
    lines = [f"  campaigns — {len(run.ids)} via POST /api/campaigns ({states_text}), {run.seconds:.1f} s"]
    for label, value, note in rows:
        lines.append(f"    {label:<26}{value:>6}" + (f"   {note}" if note else ""))
    columns = ("audience", "submitted", "sent", "not sent", "not a friend", "over limit", "reminders")
    widths = tuple(len(c) + 2 for c in columns)
    lines.append("  per campaign and dealer")
    lines.append(_row("campaign", list(columns), widths))
    reminders_of: Counter[tuple[int, str]] = Counter()
    advisor_dealer = {(r.campaign, r.advisor): r.dealer or "-" for r in seen.recipients}
    for (cid, advisor, _), (_, reminded_count, _) in seen.batches.items():
        reminders_of[(cid, advisor_dealer.get((cid, advisor), "-"))] += reminded_count
    by: dict[tuple[int, str], Counter[str]] = {}
    for r in seen.recipients:
        c = by.setdefault((r.campaign, r.dealer or "-"), Counter())
        c["audience"] += 1
        c["submitted"] += bool(r.msgid) and r.reason != "fail_list"
        c[r.status.replace("_", " ").replace("not friend", "not a friend")] += 1
    for (cid, dealer), c in sorted(by.items()):
        values = [c[col] for col in columns[:-1]] + [reminders_of[(cid, dealer)]]
        lines.append(_row(f"#{cid} {dealer}", values, widths))
    return lines


def campaign_checks(seen: CampaignsSeen) -> list[tuple[bool, str]]:
    run = seen.run
    ids = list(run.ids.values())
    owner = seen.campaign_of()
    given: Counter[tuple[int, str]] = Counter()
    for msgid, (_, customers, fail_list, _, _) in seen.sends.items():
        for ext in customers + fail_list:
            given[(owner.get(msgid, 0), ext)] += 1
    targeted = {(r.campaign, r.ext) for r in seen.recipients}
    twice = sum(1 for n in given.values() if n > 1)
    calls = [msgid for msgid, _, _ in seen.batches.values() if msgid]
    ours = [msgid for msgid in seen.sends if msgid in owner]
    once = set(given) == targeted and twice == 0 and len(calls) == len(set(calls)) == len(ours)

    open_rows = sum(r.status in ("targeted", "submitted") for r in seen.recipients)
    wrong: list[str] = []
    for r in seen.recipients:
        if r.msgid and r.reason != "fail_list":
            result = seen.sends.get(r.msgid, ("", [], [], {}, 0))[3].get(r.ext)
            if SANDBOX_STATUS.get(result if result is not None else -1) != r.status:
                wrong.append(f"{r.ext} of #{r.campaign}: {r.status}, WeCom says {result}")
    done = all(seen.states.get(cid) == states.DONE for cid in ids)

    reminded = seen.reminders()
    batch_reminders = sum(n for _, n, _ in seen.batches.values())
    decliner = run.decliner
    reminders_ok = (
        set(reminded) <= {decliner}
        and 1 <= reminded.get(decliner or "", 0)
        and all(n <= 3 for _, _, _, _, n in seen.sends.values())
        and sum(reminded.values()) == batch_reminders
    )

    mismatched = [
        f"#{cid} {kind} {seen.logged[(cid, kind)]} for {n}"
        for cid in ids
        for kind, n in seen.expected(cid).items()
        if seen.logged[(cid, kind)] != n
    ]
    strays = sum(n for (cid, _), n in seen.logged.items() if cid not in ids)
    return [
        (
            run.finished and once and len(targeted) > 0,
            f"every targeted customer handed to WeCom exactly once ({len(targeted)} targeted in {len(ids)} "
            f"campaigns, {len(ours)} add_msg_template calls for {len(calls)} batches, {twice} customers "
            f"given twice)",
        ),
        (
            done and open_rows == 0 and not wrong,
            f"results recorded for every submitted customer once the tasks settled ({seen.submitted()} "
            f"submitted, {open_rows} without a result, {len(wrong)} unlike WeCom's"
            + (f"; e.g. {wrong[0]})" if wrong else ")"),
        ),
        (
            reminders_ok,
            f"only the advisor who did not confirm was reminded, at most 3 times per task ({decliner}: "
            f"{'+'.join(map(str, seen.reminders_per_task().get(decliner or '', []))) or 0} reminders; "
            f"{batch_reminders} recorded on the batches)",
        ),
        (
            not mismatched and not strays and seen.logged_twice == 0,
            "the campaign_* interactions match the recipient rows (targeted, submitted, delivered, failed"
            + (f"; {', '.join(mismatched[:3])}" if mismatched else "")
            + (f"; {strays} of other campaigns" if strays else "")
            + (f"; {seen.logged_twice} written twice" if seen.logged_twice else "")
            + ")",
        ),
        seen.cover_check(),
    ]
