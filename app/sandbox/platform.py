"""The WeCom platform side: things people do in WeCom clients. Each action changes the sandbox
state and emits the callback WeCom would send for it (change_external_contact events to the
customer-contact callback URL, advisors' texts to the bot's URL).

Every action takes ``wait``: True delivers in the calling thread and the returned Emission holds
the DeliveryReport; False hands delivery to the sandbox's pool (``drain`` waits for it), which
is how the demo pushes a few hundred customers quickly."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from app.sandbox import events, massend
from app.sandbox.delivery import BOT, CONTACT, Deliverer
from app.sandbox.deliverylog import DeliveryReport
from app.sandbox.errors import ApiError, SandboxError
from app.sandbox.models import Customer, PendingTransfer, Relation
from app.sandbox.state import SandboxState

# Optional event fields, as they appear in Emission.data.
_DATA_KEYS = {
    "State": "state",
    "WelcomeCode": "welcome_code",
    "Source": "source",
    "FailReason": "fail_reason",
}


@dataclass
class Emission:
    """One emitted callback: the plaintext sent and its delivery (a report, or a future of one)."""

    event_type: str
    plaintext: str
    delivery: DeliveryReport | Future[DeliveryReport]
    data: dict[str, Any] = field(default_factory=dict)

    def report(self, timeout: float | None = None) -> DeliveryReport:
        if isinstance(self.delivery, Future):
            return self.delivery.result(timeout)
        return self.delivery


class Platform:
    def __init__(self, state: SandboxState, deliverer: Deliverer) -> None:
        self.state = state
        self.deliverer = deliverer

    def _emit(
        self, target: str, plaintext: str, event_type: str, wait: bool, duplicate: bool, **data: Any
    ) -> Emission:
        if wait:
            delivery: Any = self.deliverer.deliver(target, plaintext, event_type, duplicate)
        else:
            delivery = self.deliverer.submit(target, plaintext, event_type, duplicate)
        return Emission(event_type, plaintext, delivery, data)

    def _contact_event(
        self, change_type: str, relation: Relation, wait: bool, duplicate: bool, **extra: Any
    ) -> Emission:
        plaintext = events.external_contact_event(
            self.state.config.corp_id,
            change_type,
            self.state.now(),
            relation.userid,
            relation.external_userid,
            **extra,
        )
        data = {"userid": relation.userid, "external_userid": relation.external_userid}
        data.update({_DATA_KEYS[name]: value for name, value in extra.items() if value})
        return self._emit(
            CONTACT, plaintext, f"change_external_contact:{change_type}", wait, duplicate, **data
        )

    def _live_relation(self, userid: str, external_userid: str) -> Relation:
        try:
            return self.state.relation(userid, external_userid)
        except ApiError as exc:
            raise SandboxError(f"no relation {userid} ↔ {external_userid} ({exc.errcode})") from None

    # -- customers ----------------------------------------------------------------------------

    def customer_adds(
        self,
        config_id: str | None = None,
        userid: str | None = None,
        state: str = "",
        name: str = "",
        external_userid: str | None = None,
        welcome_code: bool = True,
        wait: bool = True,
        duplicate: bool = False,
        unionid: str = "",
    ) -> Emission:
        """A customer adds an advisor, by scanning a contact way (``config_id``: its advisor and
        state) or directly (``userid`` and ``state``). A new customer gets a fresh external_userid;
        pass ``external_userid`` for a known customer adding one more advisor. ``welcome_code``
        False leaves WelcomeCode out (an admin-configured welcome message exists). ``unionid``: the
        customer's WeChat unionid (WeCom returns it when the corp has a bound official account)."""
        with self.state.lock:
            if config_id:
                userid, state = self._pick_from_contact_way(config_id)
            if not userid:
                raise SandboxError("customer_adds needs config_id or userid")
            employee = self.state.employees.get(userid)
            if employee is None:
                raise SandboxError(f"unknown advisor {userid!r}")
            if len(state) > 30:
                raise SandboxError("state is at most 30 characters")
            if external_userid is None:
                external_userid = self.state.ids.external_userid()
                customer = Customer(
                    external_userid, name or f"客户{len(self.state.customers) + 1}", unionid=unionid
                )
                self.state.customers[external_userid] = customer
            elif external_userid not in self.state.customers:
                raise SandboxError(f"unknown customer {external_userid!r}")
            key = (userid, external_userid)
            if key in self.state.relations and not self.state.relations[key].deleted_by_customer:
                raise SandboxError(f"{external_userid} already follows {userid}")
            relation = Relation(
                userid, external_userid, self.state.now(), state=state, oper_userid=external_userid
            )
            self.state.relations[key] = relation
            code = self.state.issue_welcome_code(userid, external_userid) if welcome_code else None
        return self._contact_event(
            "add_external_contact", relation, wait, duplicate, State=state or None, WelcomeCode=code
        )

    def _pick_from_contact_way(self, config_id: str) -> tuple[str, str]:
        way = self.state.contact_ways.get(config_id)
        if way is None:
            raise SandboxError(f"unknown contact way {config_id!r}")
        candidates = list(way.user) or sorted(
            e.userid for e in self.state.employees.values() if set(e.department) & set(way.party)
        )
        if not candidates:
            raise SandboxError(f"contact way {config_id} has no advisor")
        # A multi-member way (type 2) hands customers to its members in turn.
        userid = candidates[way.adds % len(candidates)]
        way.adds += 1
        return userid, way.state

    def customer_deletes_advisor(
        self, userid: str, external_userid: str, wait: bool = True, duplicate: bool = False
    ) -> Emission:
        """The customer deletes the advisor (del_follow_user). WeCom keeps the relation on the
        advisor's side, so the APIs still answer for it."""
        with self.state.lock:
            relation = self._live_relation(userid, external_userid)
            relation.deleted_by_customer = True
        return self._contact_event("del_follow_user", relation, wait, duplicate)

    # -- advisors -----------------------------------------------------------------------------

    def advisor_deletes_customer(
        self, userid: str, external_userid: str, wait: bool = True, duplicate: bool = False
    ) -> Emission:
        """The advisor deletes the customer (del_external_contact): the relation ends (84061)."""
        with self.state.lock:
            relation = self._live_relation(userid, external_userid)
            del self.state.relations[(userid, external_userid)]
        return self._contact_event("del_external_contact", relation, wait, duplicate)

    def advisor_edits_customer(
        self,
        userid: str,
        external_userid: str,
        remark: str | None = None,
        description: str | None = None,
        add_tags: list[str] | None = None,
        remove_tags: list[str] | None = None,
        wait: bool = True,
        duplicate: bool = False,
    ) -> Emission:
        """The advisor edits the remark, description or corp tags in the client (edit_external_contact)."""
        with self.state.lock:
            relation = self._live_relation(userid, external_userid)
            for tag_id in [*(add_tags or []), *(remove_tags or [])]:
                if tag_id not in self.state.tags:
                    raise SandboxError(f"unknown tag {tag_id!r}")
            if remark is not None:
                relation.remark = remark
            if description is not None:
                relation.description = description
            relation.tag_ids = [t for t in relation.tag_ids if t not in set(remove_tags or [])]
            relation.tag_ids += [t for t in add_tags or [] if t not in relation.tag_ids]
        return self._contact_event("edit_external_contact", relation, wait, duplicate)

    def advisor_texts_bot(
        self, userid: str, content: str, wait: bool = True, duplicate: bool = False
    ) -> Emission:
        """An advisor sends the self-built app a text (MsgType=text, to the bot callback URL)."""
        with self.state.lock:
            if userid not in self.state.employees:
                raise SandboxError(f"unknown advisor {userid!r}")
            msg_id = self.state.ids.msg_id()
        cfg = self.state.config
        plaintext = events.app_text_message(
            cfg.corp_id, userid, self.state.now(), content, msg_id, cfg.agent_id
        )
        return self._emit(BOT, plaintext, "msg:text", wait, duplicate, userid=userid, msg_id=msg_id)

    # -- transfers ----------------------------------------------------------------------------

    def complete_transfers(
        self,
        fail_reason: str | None = None,
        wait: bool = True,
        external_userids: list[str] | None = None,
    ) -> list[Emission]:
        """End every pending transfer_customer, as WeCom does 24 h later. Accepted: the relation
        moves to the takeover advisor and the handover advisor gets del_external_contact with
        Source=DELETE_BY_TRANSFER. Refused (``fail_reason`` customer_refused or
        customer_limit_exceed): the relation stays and a transfer_fail event is sent.
        ``external_userids``: end only the pending transfers of these customers (the others stay
        pending), so one call can refuse some customers and another accept the rest."""
        if fail_reason not in (None, "", "customer_refused", "customer_limit_exceed"):
            raise SandboxError("fail_reason is customer_refused or customer_limit_exceed")
        if isinstance(external_userids, str) or (
            external_userids is not None and not all(isinstance(e, str) for e in external_userids)
        ):
            raise SandboxError("external_userids is a list of external_userid strings")
        emissions = []
        with self.state.lock:
            chosen = None if external_userids is None else set(external_userids)
            pending = [
                t for t in self.state.transfers.values() if chosen is None or t.external_userid in chosen
            ]
            for transfer in pending:
                del self.state.transfers[transfer.external_userid]
            moved: list[tuple[PendingTransfer, Relation]] = []
            for transfer in pending:
                key = (transfer.handover_userid, transfer.external_userid)
                relation = self.state.relations.get(key)
                if relation is None:
                    continue
                if not fail_reason:
                    del self.state.relations[key]
                    new_key = (transfer.takeover_userid, transfer.external_userid)
                    self.state.relations[new_key] = Relation(
                        transfer.takeover_userid,
                        transfer.external_userid,
                        self.state.now(),
                        state=relation.state,
                        remark=relation.remark,
                        description=relation.description,
                        tag_ids=list(relation.tag_ids),
                        add_way=relation.add_way,
                        oper_userid=transfer.handover_userid,
                    )
                moved.append((transfer, relation))
        for transfer, relation in moved:
            if fail_reason:
                # UserID of transfer_fail is the advisor who did not get the customer.
                takeover = Relation(transfer.takeover_userid, transfer.external_userid, relation.createtime)
                emissions.append(
                    self._contact_event("transfer_fail", takeover, wait, False, FailReason=fail_reason)
                )
            else:
                emissions.append(
                    self._contact_event(
                        "del_external_contact", relation, wait, False, Source="DELETE_BY_TRANSFER"
                    )
                )
        return emissions

    def advisor_confirms_mass_send(self, userid: str, msgid: str | None = None) -> dict[str, Any]:
        """The advisor confirms their pending mass-send tasks in the client (all of them, or the
        one of ``msgid``): each customer is sent to, or reported not a friend (2) or over the
        receiving limit (3). No callback: WeCom sends none for it."""
        with self.state.lock:
            return {"confirmed": massend.confirm(self.state, userid=userid, msgid=msgid)}

    def verify_callback_url(self, target: str = CONTACT) -> dict[str, Any]:
        """Send WeCom's URL verification GET to the ``contact`` or ``bot`` callback URL."""
        if target not in (CONTACT, BOT):
            raise SandboxError("target is contact or bot")
        return self.deliverer.verify_url(target)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for every background delivery; False if some are still running after ``timeout``."""
        return self.deliverer.drain(timeout)
