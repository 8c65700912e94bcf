"""Plays a Scenario on the sandbox: seeds the corp (advisors, one contact way each), then does
what the scenario says through the sandbox's platform, which encrypts each event and POSTs it to
the callback server from its delivery pool (``wait=False``), as WeCom would."""

from __future__ import annotations

from concurrent.futures import Future

from app.demo.scenario import (
    Action,
    AdvisorDeletesCustomer,
    AdvisorTextsBot,
    CustomerAddsAdvisor,
    CustomerDeletesAdvisor,
    Phase,
    Scenario,
)
from app.sandbox import DeliveryReport, Emission, SandboxServer


class Player:
    def __init__(self, sandbox: SandboxServer, scenario: Scenario) -> None:
        self.sandbox = sandbox
        self.scenario = scenario
        self.config_ids: dict[str, str] = {}  # advisor userid → contact way config_id
        self.external_ids: dict[int, str] = {}  # customer index → the external_userid WeCom gave
        self.deliveries: list[Future[DeliveryReport]] = []

    def seed_corp(self) -> None:
        state = self.sandbox.state
        dealers = {dealer.code: dealer for dealer in self.scenario.dealers}
        for advisor in self.scenario.advisors:
            dealer = dealers[advisor.dealer]
            state.add_employee(
                advisor.userid, advisor.name, department=[dealer.department_id], position="销售顾问"
            )
            way = state.add_contact_way(
                {
                    "type": 1,
                    "scene": 2,
                    "state": advisor.state,
                    "user": [advisor.userid],
                    "remark": f"{dealer.city} {advisor.name} {advisor.model}",
                }
            )
            self.config_ids[advisor.userid] = way.config_id

    def play(self, phase: Phase) -> None:
        """Emit every action of the phase; deliveries run in the background (see ``deliveries``)."""
        for action in phase.actions:
            emission = self._emit(action)
            assert isinstance(emission.delivery, Future)  # wait=False always hands it to the pool
            self.deliveries.append(emission.delivery)

    def delivered(self) -> int:
        """Events whose delivery has finished (acknowledged or given up)."""
        return sum(future.done() for future in self.deliveries)

    def _emit(self, action: Action) -> Emission:
        platform = self.sandbox.platform
        if isinstance(action, CustomerAddsAdvisor):
            customer = self.scenario.customers[action.customer]
            emission = platform.customer_adds(
                config_id=self.config_ids[customer.advisor],
                name=customer.name,
                wait=False,
                duplicate=action.duplicate,
            )
            self.external_ids[action.customer] = emission.data["external_userid"]
            return emission
        if isinstance(action, CustomerDeletesAdvisor | AdvisorDeletesCustomer):
            customer = self.scenario.customers[action.customer]
            delete = (
                platform.customer_deletes_advisor
                if isinstance(action, CustomerDeletesAdvisor)
                else platform.advisor_deletes_customer
            )
            return delete(
                customer.advisor, self.external_ids[action.customer], wait=False, duplicate=action.duplicate
            )
        if isinstance(action, AdvisorTextsBot):
            return platform.advisor_texts_bot(
                action.advisor, action.content, wait=False, duplicate=action.duplicate
            )
        raise TypeError(f"unknown action {action!r}")
