"""The sandbox's in-memory WeCom corp: apps and tokens, employees, customers and follow relations,
contact ways, welcome codes, the corp tag library, what was sent, and counters.

One re-entrant lock guards it all: API handlers and platform actions run a whole read-check-write
under ``state.lock``, so concurrent requests see WeCom's rules applied atomically. Nothing does
I/O while holding it."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from app.clock import Clock
from app.sandbox.config import SandboxConfig
from app.sandbox.deliverylog import DeliveryLog
from app.sandbox.errors import ApiError, SandboxError
from app.sandbox.faults import FaultBook, RateLimiter
from app.sandbox.ids import IdFactory
from app.sandbox.massend import counts as mass_send_counts
from app.sandbox.models import (
    AGENT_APP,
    CONTACT_APP,
    AccessToken,
    App,
    ContactWay,
    Customer,
    Employee,
    MassSend,
    Media,
    PendingTransfer,
    Relation,
    SentAppMessage,
    SentWelcome,
    Tag,
    TagGroup,
    WelcomeCode,
)


class SandboxState:
    def __init__(self, config: SandboxConfig, clock: Clock) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.config = config
        self.ids = IdFactory(config.seed)
        self.faults = FaultBook(lambda probability: self.ids.chance(probability))
        self.limiter = RateLimiter()
        self.delivery_log = DeliveryLog(config.delivery_log_size)
        self._clear()

    def _clear(self) -> None:
        c = self.config
        self.ids = IdFactory(c.seed)  # a seeded sandbox repeats its ids after every reset
        self.apps: dict[str, App] = {
            CONTACT_APP: App(CONTACT_APP, c.contact_secret, None),
            AGENT_APP: App(AGENT_APP, c.agent_secret, c.agent_id),
        }
        self.tokens: dict[str, AccessToken] = {}
        self.employees: dict[str, Employee] = {}
        self.customers: dict[str, Customer] = {}
        self.relations: dict[tuple[str, str], Relation] = {}
        self.contact_ways: dict[str, ContactWay] = {}
        self.welcome_codes: dict[str, WelcomeCode] = {}
        self.tag_groups: dict[str, TagGroup] = {}
        self.tags: dict[str, Tag] = {}
        self.welcome_messages: list[SentWelcome] = []
        self.app_messages: list[SentAppMessage] = []
        self.transfers: dict[str, PendingTransfer] = {}
        self.mass_sends: dict[str, MassSend] = {}  # by msgid, oldest first (app.sandbox.massend)
        self.mass_received: dict[str, list[int]] = {}  # external_userid → mass messages' send times
        self.media: dict[str, Media] = {}  # temporary media by media_id (media/upload)
        self.api_calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # errcode, or "http_502" for an HTTP fault
        self.errors_by_path: Counter[str] = Counter()

    def reset(self, keep_config: bool = True) -> None:
        with self.lock:
            if not keep_config:
                self.config = SandboxConfig()
            self._clear()
            self.faults.clear()
            self.limiter.clear()
            self.delivery_log.clear()

    def configure(self, **changes: Any) -> SandboxConfig:
        with self.lock:
            try:
                self.config = self.config.changed(**changes)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise SandboxError(str(exc)) from None
            self.apps[CONTACT_APP].secret = self.config.contact_secret
            self.apps[AGENT_APP].secret = self.config.agent_secret
            self.apps[AGENT_APP].agent_id = self.config.agent_id
            return self.config

    def now(self) -> int:
        return int(self.clock.time())

    # -- tokens ---------------------------------------------------------------------------

    def issue_token(self, app: App) -> tuple[str, int]:
        """WeCom hands out the same token while it is valid; the answer's expires_in is what is
        left of it, so a client caching for expires_in never holds an expired token."""
        with self.lock:
            now = self.clock.time()
            for token in self.tokens.values():
                if token.app == app.name and token.expires_at > now:
                    return token.token, int(token.expires_at - now)
            token = AccessToken(self.ids.access_token(), app.name, now + self.config.token_ttl)
            self.tokens[token.token] = token
            return token.token, self.config.token_ttl

    def app_for_token(self, token: str) -> App:
        with self.lock:
            if not token:
                raise ApiError(41001)
            issued = self.tokens.get(token)
            if issued is None:
                raise ApiError(40014)
            if issued.expires_at <= self.clock.time():
                raise ApiError(42001)
            return self.apps[issued.app]

    def invalidate_tokens(self) -> int:
        """WeCom may revoke tokens early (secret reset): afterwards they answer 40014."""
        with self.lock:
            count = len(self.tokens)
            self.tokens.clear()
            return count

    # -- directory ------------------------------------------------------------------------

    def employee(self, userid: str) -> Employee:
        employee = self.employees.get(userid)
        if employee is None:
            raise ApiError(60111, f"userid {userid!r} not found")
        return employee

    def add_employee(self, userid: str, name: str, **fields: Any) -> Employee:
        if not userid or not name:
            raise SandboxError("an employee needs userid and name")
        with self.lock:
            employee = Employee(userid=userid, name=name, **fields)
            self.employees[userid] = employee
            return employee

    def relation(self, userid: str, external_userid: str) -> Relation:
        """The live relation, or the WeCom error for its absence."""
        if external_userid not in self.customers:
            raise ApiError(40096)
        relation = self.relations.get((userid, external_userid))
        if relation is None:
            raise ApiError(84061)
        return relation

    def relations_of(self, external_userid: str) -> list[Relation]:
        return [r for (_, ext), r in self.relations.items() if ext == external_userid]

    def add_contact_way(self, spec: dict[str, Any]) -> ContactWay:
        """add_contact_way's validation (doc 92228): type 1 single / 2 multi, scene 1 mini program
        / 2 QR code, state and remark at most 30 characters, members that exist."""
        kind, scene = spec.get("type"), spec.get("scene")
        if kind not in (1, 2) or scene not in (1, 2) or isinstance(kind, bool) or isinstance(scene, bool):
            raise ApiError(40058, "type and scene must be 1 or 2")
        state, remark = spec.get("state", ""), spec.get("remark", "")
        if not isinstance(state, str) or len(state) > 30:
            raise ApiError(40058, "state must be a string of at most 30 characters")
        if not isinstance(remark, str) or len(remark) > 30:
            raise ApiError(40058, "remark must be a string of at most 30 characters")
        users, parties = spec.get("user") or [], spec.get("party") or []
        if isinstance(users, str):
            users = [users]
        if not isinstance(users, list) or not isinstance(parties, list) or not (users or parties):
            raise ApiError(40058, "user or party is required")
        if kind == 1 and len(users) + len(parties) != 1:
            raise ApiError(40058, "a single (type 1) contact way takes exactly one member")
        with self.lock:
            for userid in users:
                self.employee(str(userid))
            way = ContactWay(
                config_id=self.ids.config_id(),
                type=kind,
                scene=scene,
                state=state,
                user=[str(u) for u in users],
                party=[int(p) for p in parties],
                remark=remark,
                skip_verify=bool(spec.get("skip_verify", True)),
                created_at=self.now(),
                style=int(spec.get("style") or 0),
            )
            if scene == 2:
                way.qr_code = f"https://wework.qpic.cn/wwpic/sandbox/{way.config_id}/0"
            self.contact_ways[way.config_id] = way
            return way

    def issue_welcome_code(self, userid: str, external_userid: str) -> str:
        with self.lock:
            code = WelcomeCode(
                self.ids.welcome_code(),
                userid,
                external_userid,
                self.clock.time() + self.config.welcome_code_ttl,
            )
            self.welcome_codes[code.code] = code
            return code.code

    # -- corp tags ------------------------------------------------------------------------

    def add_tags(
        self, group_id: str | None, group_name: str, tags: list[dict[str, Any]], order: int = 0
    ) -> TagGroup:
        """WeCom's add_corp_tag rule: a known group_id gets the tags; otherwise a group_name that
        exists gets them; otherwise a new group is created."""
        with self.lock:
            now = self.now()
            if group_id:
                group = self.tag_groups.get(group_id)
                if group is None or group.deleted:
                    raise ApiError(40068, f"group_id {group_id!r} not found")
            else:
                group = next((g for g in self.tag_groups.values() if g.group_name == group_name), None)
                if group is None:
                    if not group_name or len(group_name) > 30:
                        raise ApiError(40058, "group_name must be 1-30 characters")
                    group = TagGroup(self.ids.tag_id(), group_name, now, order)
                    self.tag_groups[group.group_id] = group
            existing = {tag.name for tag in group.tags if not tag.deleted}
            created = []
            for spec in tags:
                name = str(spec.get("name", ""))
                if not name or len(name) > 30:
                    raise ApiError(40058, "tag name must be 1-30 characters")
                if name in existing:
                    raise ApiError(40071, f"tag {name!r} already exists in the group")
                existing.add(name)
                created.append(Tag(self.ids.tag_id(), name, group.group_id, now, int(spec.get("order", 0))))
            for tag in created:
                group.tags.append(tag)
                self.tags[tag.id] = tag
            return TagGroup(group.group_id, group.group_name, group.create_time, group.order, tags=created)

    def live_tag(self, tag_id: str) -> Tag:
        tag = self.tags.get(tag_id)
        if tag is None or tag.deleted:
            raise ApiError(40068, f"tag_id {tag_id!r} not found")
        return tag

    # -- media ----------------------------------------------------------------------------

    MEDIA_TTL = 3 * 24 * 3600  # WeCom: a temporary media id is valid for 3 days

    def live_media(self, media_id: str) -> Media:
        """Uploaded media that has not expired on the sandbox clock, or 40007."""
        with self.lock:
            item = self.media.get(media_id)
            if item is None:
                raise ApiError(40007, f"media_id {media_id!r} was never uploaded")
            if self.now() >= item.created_at + self.MEDIA_TTL:
                raise ApiError(40007, f"media_id {media_id!r} expired 3 days after its upload")
            return item

    # -- counters -------------------------------------------------------------------------

    def count_call(self, path: str) -> None:
        with self.lock:
            self.api_calls[path] += 1

    def count_error(self, path: str, code: int | str) -> None:
        with self.lock:
            self.errors[str(code)] += 1
            self.errors_by_path[f"{path}:{code}"] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "api_calls": dict(self.api_calls),
                "api_calls_total": sum(self.api_calls.values()),
                "errors": dict(self.errors),
                "errors_by_path": dict(self.errors_by_path),
                "deliveries": self.delivery_log.snapshot(),
                "employees": len(self.employees),
                "customers": len(self.customers),
                "relations": len(self.relations),
                "contact_ways": len(self.contact_ways),
                "tags": sum(1 for tag in self.tags.values() if not tag.deleted),
                "welcome_messages": len(self.welcome_messages),
                "app_messages": len(self.app_messages),
                "pending_transfers": len(self.transfers),
                "media": dict(Counter(item.type for item in self.media.values())),
                **mass_send_counts(self),
            }
