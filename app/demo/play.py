"""Plays a Scenario: imports the demo roster into the demo's database (as ``scrm roster import``
does), seeds the sandbox corp (every roster advisor and manager, the store posters and the
advisors' own cards), posts the leads to the running server's /api/leads as HQ's CDP would, then
does what the scenario says through the sandbox's platform, which encrypts each event and POSTs
it to the callback server from its delivery pool (``wait=False``), as WeCom would. What the
player did (and what the engine's choices made it do) is kept for the report."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import select

from app.config import SANDBOX_CREDENTIALS
from app.demo.runner import http_session
from app.demo.scenario import (
    LEAD_LINK,
    LEAD_UNIONID,
    OWN,
    SHARED,
    Action,
    AdvisorDeletesCustomer,
    AdvisorTextsBot,
    CustomerAddsAdvisor,
    CustomerDeletesAdvisor,
    Scenario,
)
from app.intake import leads as lead_service
from app.intake.roster import DEMO_ROSTER, ImportSummary, import_roster
from app.sandbox import DeliveryReport, Emission, SandboxServer
from app.services import Services
from app.store.models import Lead

LEADS_PER_REQUEST = 500  # /api/leads takes at most 1000


class PlayError(RuntimeError):
    """The demo cannot go on (the roster or the leads were refused, the corp is not as expected)."""


@dataclass(frozen=True)
class PostedLead:
    """What /api/leads answered for a scenario lead, and its personal state from the database."""

    status: str  # created | duplicate | invalid
    lead_id: int | None
    advisor: str | None
    state: str | None  # ld.<token>
    errors: tuple[str, ...] = ()


@dataclass
class Played:
    """What the player did, for the report: the numbers the checks hold the system to."""

    adds: Counter[str] = field(default_factory=Counter)  # by way (scenario.WAYS)
    customers: dict[str, int] = field(default_factory=dict)  # external_userid → customer index
    skipped: list[int] = field(default_factory=list)  # lead customers whose lead got no advisor
    leads: list[PostedLead] = field(default_factory=list)  # in Scenario.leads order
    accepted: int = 0  # hand-overs WeCom completed
    refused: int = 0  # hand-overs the customer refused (transfer_fail)
    churned: list[tuple[str, str]] = field(default_factory=list)  # (external_userid, advisor)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    texts: int = 0

    @property
    def lead_adds(self) -> int:
        return self.adds[LEAD_LINK] + self.adds[LEAD_UNIONID]


class Player:
    def __init__(self, sandbox: SandboxServer, scenario: Scenario, svc: Services, web_url: str) -> None:
        self.sandbox = sandbox
        self.scenario = scenario
        self.svc = svc
        self.web_url = web_url
        self.shared_ways: dict[str, str] = {}  # qr.<DEALER>.<MODEL> → config_id
        self.own_ways: dict[str, str] = {}  # advisor userid → config_id of their own card
        self.external_ids: dict[int, str] = {}  # customer index → the external_userid WeCom gave
        self.deliveries: list[Future[DeliveryReport]] = []
        self.played = Played()

    # -- before playing ---------------------------------------------------------------------

    def seed_corp(self) -> ImportSummary:
        """The roster into the database, then the corp in the sandbox: the people and the codes."""
        result = import_roster(self.svc, DEMO_ROSTER)
        if not result.written or result.summary is None:
            raise PlayError(f"the demo roster {DEMO_ROSTER} was refused: " + "; ".join(result.errors))
        state = self.sandbox.state
        for dealer in self.scenario.dealers:
            if dealer.manager:
                state.add_employee(
                    dealer.manager,
                    f"{dealer.city}店经理",
                    department=[dealer.department_id],
                    position="店总经理",
                )
        for advisor in self.scenario.advisors:
            dealer = self.scenario.dealer(advisor.dealer)
            state.add_employee(
                advisor.userid, advisor.name, department=[dealer.department_id], position="销售顾问"
            )
        for dealer in self.scenario.dealers:
            members = [a.userid for a in self.scenario.advisors if a.dealer == dealer.code and a.active]
            for model, way_state in zip(dealer.models, dealer.shared_states, strict=True):
                way = state.add_contact_way(
                    {
                        "type": 2,
                        "scene": 2,
                        "state": way_state,
                        "user": members,
                        "remark": f"{dealer.city}门店海报 {model}",
                    }
                )
                self.shared_ways[way_state] = way.config_id
        for advisor in self.scenario.advisors:
            if not (advisor.active and advisor.model):
                continue
            way = state.add_contact_way(
                {
                    "type": 1,
                    "scene": 2,
                    "state": advisor.state,
                    "user": [advisor.userid],
                    "remark": f"{advisor.name}的名片 {advisor.model}",
                }
            )
            self.own_ways[advisor.userid] = way.config_id
        return result.summary

    def post_leads(self) -> list[PostedLead]:
        """POST the scenario's leads to /api/leads (HQ's token), then read each created lead's
        personal state (ld.<link token>) from the database."""
        answers: list[dict] = []
        leads = [lead.fields() for lead in self.scenario.leads]
        with http_session() as session:
            session.headers["Authorization"] = f"Bearer {SANDBOX_CREDENTIALS['HQ_API_TOKEN']}"
            for start in range(0, len(leads), LEADS_PER_REQUEST):
                response = session.post(
                    f"{self.web_url}/api/leads",
                    json={"leads": leads[start : start + LEADS_PER_REQUEST]},
                    timeout=60,
                )
                if response.status_code != 200:
                    raise PlayError(f"POST /api/leads answered {response.status_code}: {response.text[:200]}")
                answers += response.json()["results"]
        ids = [answer["lead_id"] for answer in answers if answer.get("lead_id")]
        with self.svc.sessions() as session:
            stored = {lead.id: lead for lead in session.scalars(select(Lead).where(Lead.id.in_(ids)))}
            states = {lead_id: lead_service.lead_state(lead) for lead_id, lead in stored.items()}
        posted = [
            PostedLead(
                answer["status"],
                answer.get("lead_id"),
                answer.get("advisor"),
                states.get(answer.get("lead_id")),
                tuple(answer.get("errors") or ()),
            )
            for answer in answers
        ]
        self.played.leads = posted
        return posted

    # -- callbacks --------------------------------------------------------------------------

    def emit(self, action: Action) -> bool:
        """Emit one scripted action; False when it cannot happen (a lead without an advisor)."""
        emission = self._emit(action)
        if emission is None:
            return False
        self._track(emission)
        return True

    def complete_hand_overs(self, refuse: bool) -> tuple[int, int]:
        """WeCom ends the pending transfer_customer requests: with ``refuse``, the scenario's
        refusers among them refuse (transfer_fail), the others accept. (accepted, refused)."""
        platform = self.sandbox.platform
        with self.sandbox.state.lock:
            pending = list(self.sandbox.state.transfers)
        refusing: list[str] = []
        if refuse:
            waiting = set(pending)
            for index in self.scenario.refusal_order:
                if len(refusing) == self.scenario.refusals:
                    break
                ext = self.external_ids.get(index)
                if ext in waiting:
                    refusing.append(ext)
        accepting = [ext for ext in pending if ext not in set(refusing)]
        emissions: list[Emission] = []
        if refusing:
            emissions += platform.complete_transfers(
                fail_reason="customer_refused", external_userids=refusing, wait=False
            )
        if accepting:
            emissions += platform.complete_transfers(external_userids=accepting, wait=False)
        for emission in emissions:
            self._track(emission)
        self.played.accepted += len(accepting)
        self.played.refused += len(refusing)
        return len(accepting), len(refusing)

    def pending_hand_overs(self) -> int:
        with self.sandbox.state.lock:
            return len(self.sandbox.state.transfers)

    def delivered(self) -> int:
        """Events whose delivery has finished (acknowledged or given up)."""
        return sum(future.done() for future in self.deliveries)

    def _track(self, emission: Emission) -> None:
        assert isinstance(emission.delivery, Future)  # wait=False always hands it to the pool
        self.deliveries.append(emission.delivery)

    def _emit(self, action: Action) -> Emission | None:
        platform = self.sandbox.platform
        if isinstance(action, CustomerAddsAdvisor):
            return self._add(action)
        if isinstance(action, CustomerDeletesAdvisor | AdvisorDeletesCustomer):
            ext = self.external_ids.get(action.customer)
            if ext is None:  # the customer never added anyone (their lead had no advisor)
                return None
            holder = self._holder(ext)
            if isinstance(action, CustomerDeletesAdvisor):
                self.played.churned.append((ext, holder))
                delete = platform.customer_deletes_advisor
            else:
                self.played.dropped.append((ext, holder))
                delete = platform.advisor_deletes_customer
            return delete(holder, ext, wait=False, duplicate=action.duplicate)
        if isinstance(action, AdvisorTextsBot):
            self.played.texts += 1
            return platform.advisor_texts_bot(
                action.advisor, action.content, wait=False, duplicate=action.duplicate
            )
        raise TypeError(f"unknown action {action!r}")

    def _add(self, action: CustomerAddsAdvisor) -> Emission | None:
        platform = self.sandbox.platform
        customer = self.scenario.customers[action.customer]
        common = {"name": customer.name, "wait": False, "duplicate": action.duplicate}
        if customer.way == SHARED:
            emission = platform.customer_adds(
                config_id=self.shared_ways[f"qr.{customer.dealer}.{customer.model}"], **common
            )
        elif customer.way == OWN:
            assert customer.advisor is not None
            emission = platform.customer_adds(config_id=self.own_ways[customer.advisor], **common)
        else:
            assert customer.lead is not None
            lead = self.scenario.leads[customer.lead]
            posted = self.played.leads[customer.lead]
            if not posted.advisor or not posted.state or posted.advisor not in self.own_ways:
                self.played.skipped.append(action.customer)
                return None
            if customer.way == LEAD_LINK:
                emission = platform.customer_adds(
                    userid=posted.advisor, state=posted.state, unionid=lead.unionid or "", **common
                )
            else:  # LEAD_UNIONID: the advisor's own card; the unionid finds the lead
                emission = platform.customer_adds(
                    config_id=self.own_ways[posted.advisor], unionid=lead.unionid or "", **common
                )
        ext = emission.data["external_userid"]
        self.external_ids[action.customer] = ext
        self.played.customers[ext] = action.customer
        self.played.adds[customer.way] += 1
        return emission

    def _holder(self, ext: str) -> str:
        """The advisor who has the customer now (after the hand-overs), as WeCom sees it."""
        with self.sandbox.state.lock:
            live = [r.userid for r in self.sandbox.state.relations_of(ext) if not r.deleted_by_customer]
        if len(live) != 1:
            raise PlayError(f"customer {ext} should follow exactly one advisor, follows {live}")
        return live[0]
