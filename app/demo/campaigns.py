"""The demo's campaigns (群发, issue #5): after the simulated days, HQ sends the RAV4 prospects who
have not signed up for the test-drive event a mass message, and SH01's manager sends one to the
dealer's other prospects, both through POST /api/campaigns (a dry run first, then for real).

HQ's message carries a mini-program card whose cover is the sandbox's sample image
(``/sandbox/assets/cover.png``): the worker downloads it and uploads it as WeCom media once, and
every advisor's task gets its media id (app/wecom/media.py).

The demo process sweeps as the worker's maintenance does (``workers.campaign_jobs.sweep``: submit
the due campaigns, their batches, poll results); the worker runs the jobs. Advisors confirm their
tasks in the sandbox after its confirm delay, except one decliner (``mass_send_decline_userids``):
the shared clock moves an hour at a time (CAMPAIGN_REMIND_AFTER) so the worker reminds them, three
times at most, then they confirm (POST /sandbox/mass_send/confirm) and both campaigns finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from app.campaigns import states
from app.config import SANDBOX_CREDENTIALS
from app.demo.days import Days
from app.demo.environment import DEALER_TOKEN
from app.demo.runner import http_session
from app.sandbox import SandboxServer
from app.services import Services
from app.store.campaign_models import Campaign, CampaignBatch
from workers.campaign_jobs import sweep

Echo = Callable[[str], None]
POLL_SECONDS = 0.2
DEALER = "SH01"
REMINDER_ROUNDS = 3  # hours the clock moves while the decliner does not confirm (one reminder each)
COVER_PATH = "/sandbox/assets/cover.png"  # the sandbox's sample mini-program cover (520x416 PNG)


def hq_campaign(sandbox_url: str) -> dict[str, Any]:
    """HQ's campaign: a text, a link and a mini-program whose cover is an address on the sandbox."""
    return {
        "name": "RAV4 试驾专场 · 华东",
        "content": {
            "text": "您好！RAV4 荣放试驾专场本周末开放预约，到店试驾即送精美礼品一份。",
            "attachments": [
                {
                    "link": {
                        "title": "RAV4 荣放试驾专场预约",
                        "url": "https://example.com/rav4/test-drive",
                        "desc": "本周末 · 华东各店 · 到店有礼",
                    }
                },
                {
                    "miniprogram": {
                        "title": "RAV4 荣放 · 预约试驾",
                        "appid": "wx3f8a2b6c9d1e4f70",
                        "page": "pages/testdrive/index.html?model=RAV4",
                        "picurl": sandbox_url + COVER_PATH,
                    }
                },
            ],
        },
        # RAV4 prospects in East China who have not signed up for the test drive
        # (test-drive-invite tags the customers it reached; high intent moved a few to intent)
        "audience": "tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场) and region(east)",
        "scope": {"dealer": None},
        "schedule": {"send_at": None},
    }


DEALER_CAMPAIGN = {
    "name": "浦东店 · 周末到店礼",
    "content": {"text": "您好，浦东店本周末到店看车即送保养券一张，欢迎预约。"},
    "audience": "stage(prospect) and not tag(意向车型:RAV4)",
    "scope": {"dealer": DEALER},
    "schedule": {"send_at": None},
}


@dataclass
class CampaignsRun:
    """What the campaign phase did, for the report."""

    ids: dict[str, int] = field(default_factory=dict)  # who made it (hq, SH01) → campaign id
    dry_runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # who → the dry run's audience
    decliner: str | None = None
    reminder_rounds: int = 0
    seconds: float = 0.0
    finished: bool = False


class Campaigns:
    def __init__(
        self, svc: Services, sandbox: SandboxServer, web_url: str, days: Days, deadline: float, echo: Echo
    ) -> None:
        self.svc = svc
        self.sandbox = sandbox
        self.web_url = web_url
        self.days = days
        self.deadline = deadline
        self.echo = echo
        self.result = CampaignsRun()

    def run(self) -> CampaignsRun:
        started = time.monotonic()
        result = self.result
        hq = {"Authorization": f"Bearer {SANDBOX_CREDENTIALS['HQ_API_TOKEN']}"}
        dealer = {"Authorization": f"Bearer {DEALER_TOKEN}"}
        self.echo("campaigns: POST /api/campaigns (群发), a dry run first, then for real")
        bodies = (("hq", hq_campaign(self.sandbox.url), hq), (DEALER, DEALER_CAMPAIGN, dealer))
        for who, body, headers in bodies:
            dry = self._post(body, headers, dry_run=True)["audience"]
            result.dry_runs[who] = dry
            self._show_dry_run(who, body, dry)
        # The advisor with the most HQ recipients never confirms by themselves: reminders show.
        by_advisor = result.dry_runs["hq"]["by_advisor"]
        if by_advisor:
            result.decliner = min(by_advisor, key=lambda userid: (-by_advisor[userid], userid))
            self.sandbox.state.configure(mass_send_decline_userids=[result.decliner])
            self.echo(f"  {result.decliner} will not confirm the task until reminded {REMINDER_ROUNDS} times")
        self.echo(
            f"  HQ's message carries a mini-program; its cover {COVER_PATH} goes up as WeCom media "
            "when the batches are submitted"
        )
        for who, body, headers in bodies:
            made = self._post(body, headers)
            result.ids[who] = made["id"]
            self.echo(f"  campaign {made['id']} {made['name']!r}: {made['state']} (by {made['created_by']})")
        ids = list(result.ids.values())
        # Submitted, and every advisor but the decliner confirmed (the sandbox's confirm delay).
        if not self._until(
            lambda: self._open_tasks(ids, exclude=result.decliner) == 0 and self._waiting(ids)
        ):
            return self._done(started)
        self.echo(f"  submitted; every advisor but {result.decliner} confirmed: {self._line(ids)}")
        if result.decliner and self._open_tasks(ids):
            for number in range(1, REMINDER_ROUNDS + 1):
                self._advance(timedelta(hours=1, minutes=1))
                if not self._until(lambda n=number: self._reminded(ids) >= n):
                    return self._done(started)
                result.reminder_rounds = number
                self.echo(f"  +{number} h: {result.decliner} reminded (remind_groupmsg_send), {number} of 3")
            with http_session() as session:
                answer = session.post(
                    f"{self.sandbox.url}/sandbox/mass_send/confirm",
                    json={"userid": result.decliner},
                    timeout=5,
                )
                answer.raise_for_status()
            self.echo(f"  {result.decliner} confirms (POST /sandbox/mass_send/confirm)")
        if not self._until(lambda: self._states(ids) <= {states.DONE}):
            return self._done(started)
        if not self.days.catch_up():  # SOP steps that fell due while the clock moved
            return self._done(started)
        self.echo(f"  both campaigns done: {self._line(ids)}")
        result.finished = True
        return self._done(started)

    # -- helpers -----------------------------------------------------------------------------------

    def _post(self, body: dict[str, Any], headers: dict[str, str], dry_run: bool = False) -> dict[str, Any]:
        url = f"{self.web_url}/api/campaigns" + ("?dry_run=1" if dry_run else "")
        with http_session() as session:
            answer = session.post(url, json=body, headers=headers, timeout=10)
        if answer.status_code >= 400:
            raise RuntimeError(f"POST /api/campaigns answered {answer.status_code}: {answer.text[:300]}")
        return answer.json()

    def _show_dry_run(self, who: str, body: dict[str, Any], audience: dict[str, Any]) -> None:
        by = "HQ" if who == "hq" else f"{who}'s manager (dealer token)"
        self.echo(f"  dry run by {by}: {body['audience']}  → {audience['total']} customer(s)")
        for code, n in sorted(audience["by_dealer"].items()):
            advisors = ", ".join(
                f"{userid} {count}"
                for userid, count in sorted(audience["by_advisor"].items())
                if self._dealer_of(userid) == code
            )
            self.echo(f"    {code} {n:>4}   {advisors}")

    def _dealer_of(self, userid: str) -> str | None:
        from app.store.models import Advisor

        with self.svc.sessions() as session:
            return session.scalar(select(Advisor.dealer_code).where(Advisor.userid == userid))

    def _until(self, condition: Callable[[], bool]) -> bool:
        """Sweep as the worker's maintenance does until ``condition``; False at the deadline."""
        while True:
            sweep(self.svc)
            if condition():
                return True
            if time.monotonic() > self.deadline:
                return False
            time.sleep(POLL_SECONDS)

    def _states(self, ids: list[int]) -> set[str]:
        with self.svc.sessions() as session:
            return set(session.scalars(select(Campaign.state).where(Campaign.id.in_(ids))))

    def _waiting(self, ids: list[int]) -> bool:
        return self._states(ids) <= {states.WAITING, states.DONE}

    def _open_tasks(self, ids: list[int], exclude: str | None = None) -> int:
        with self.svc.sessions() as session:
            query = select(func.count()).where(
                CampaignBatch.campaign_id.in_(ids),
                (CampaignBatch.status.in_(("pending", "submitting")))
                | (CampaignBatch.task_state == "unsent"),
            )
            if exclude:
                query = query.where(CampaignBatch.advisor_userid != exclude)
            return int(session.scalar(query) or 0)

    def _reminded(self, ids: list[int]) -> int:
        """The fewest reminders among the decliner's open tasks."""
        with self.svc.sessions() as session:
            return int(
                session.scalar(
                    select(func.min(CampaignBatch.reminded_count)).where(
                        CampaignBatch.campaign_id.in_(ids), CampaignBatch.task_state == "unsent"
                    )
                )
                or 0
            )

    def _line(self, ids: list[int]) -> str:
        from app.campaigns import progress

        parts = []
        with self.svc.sessions() as session:
            for cid in ids:
                figures = progress.figures(session, cid) or {"targeted": 0}
                parts.append(
                    f"#{cid} {figures['targeted']} targeted, {figures.get('sent', 0)} sent, "
                    f"{figures.get('submitted', 0)} awaiting"
                )
        return "; ".join(parts)

    def _advance(self, delta: timedelta) -> None:
        self.days.advance(delta)

    def _done(self, started: float) -> CampaignsRun:
        self.result.seconds = time.monotonic() - started
        return self.result
