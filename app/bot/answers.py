"""What the bot answers an advisor: the customer they named (if any), the best three quick
replies and preset answers of the cards that apply, and a link to the sidebar.

Which cards apply:

- the message names a customer the advisor follows (an active relation; part of the name is
  enough) → that customer's active SOP enrollments (their pinned card versions), or, when the
  customer is enrolled in nothing, the current cards whose audience includes the customer;
- no customer named → the cards the advisor's customers are enrolled in (most recently added
  customers first);
- no enrollments at all → the current version of every loaded card.

The same card views feed the sidebar (app/sidebar/views.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.insight import intent
from app.sop import enrollment, search
from app.sop.card import Card, ImageReply, LinkReply, MiniProgramReply, TextReply, render
from app.store.models import Advisor, Customer, Dealer, FollowRelation, RelationStatus, SopCardVersion
from app.store.sop_models import EnrollmentStatus, SopEnrollment

LIMIT = 3
ADVISOR_ENROLLMENTS_SCANNED = 200  # enrollments whose cards an unnamed question searches
TEXT_MAX_BYTES = 2048  # WeCom's limit on a text message (and a passive reply's Content)
ITEM_MAX_BYTES = 420
SUGGESTIONS = "试驾、报价、保养、金融、置换"


@dataclass(frozen=True)
class CardView:
    """One card as it applies to one customer: the pinned (or current) version and the step the
    customer is at. ``enrolled`` is False for a card offered because its audience matches."""

    card: Card
    version_id: int
    version: int | None
    step: int
    enrolled: bool
    next_due_at: datetime | None = None


# -- who ------------------------------------------------------------------------------------


def followed_names(session: Session, advisor_userid: str) -> list[tuple[str, str]]:
    """(external_userid, name) of the customers the advisor follows now (active relations),
    most recently added first: what a name in a message is matched against."""
    rows = session.execute(
        select(Customer.external_userid, Customer.name)
        .join(FollowRelation, FollowRelation.external_userid == Customer.external_userid)
        .where(
            FollowRelation.advisor_userid == advisor_userid,
            FollowRelation.status == RelationStatus.ACTIVE,
        )
        .order_by(FollowRelation.added_at.desc(), FollowRelation.id.desc())
    )
    return [(ext, name) for ext, name in rows]


def active_relation(session: Session, advisor_userid: str, external_userid: str) -> FollowRelation | None:
    """The advisor's active relation with the customer, or None (the sidebar's access rule)."""
    return session.scalar(
        select(FollowRelation).where(
            FollowRelation.advisor_userid == advisor_userid,
            FollowRelation.external_userid == external_userid,
            FollowRelation.status == RelationStatus.ACTIVE,
        )
    )


# -- which cards ----------------------------------------------------------------------------


def current_step(next_step: int | None, steps: int) -> int:
    """The step the customer is at: the last one that ran (``next_step`` is the index of the
    next one to run), or the first while none has run; the last once all have."""
    if not next_step or next_step <= 0:
        return 0
    return min(next_step - 1, steps - 1)


def enrolled_cards(session: Session, external_userid: str, advisor_userid: str | None) -> list[CardView]:
    """The customer's active enrollments (with this advisor, when given), newest first."""
    rows = enrollment.active_enrollments(session, external_userid, advisor_userid)
    return [_enrolled_view(session, row, card) for row, card in reversed(rows)]


def _enrolled_view(session: Session, row: SopEnrollment, card: Card) -> CardView:
    stored = session.get(SopCardVersion, row.card_version_id)
    return CardView(
        card=card,
        version_id=row.card_version_id,
        version=stored.version if stored is not None else None,
        step=current_step(row.next_step, len(card.steps)),
        enrolled=True,
        next_due_at=row.next_due_at,
    )


def loaded_cards(session: Session) -> list[CardView]:
    """The current version of every loaded card, by card id, at its first step."""
    return [CardView(c.card, c.version_id, c.version, 0, False) for c in enrollment.current_cards(session)]


def customer_cards(
    session: Session, settings: Settings, external_userid: str, advisor_userid: str
) -> list[CardView]:
    """The cards for one customer of this advisor: their active enrollments, else the current
    cards whose audience includes them (``enrolled`` False)."""
    enrolled = enrolled_cards(session, external_userid, advisor_userid)
    if enrolled:
        return enrolled
    view = enrollment.customer_view(session, external_userid, advisor_userid, settings)
    return [card for card in loaded_cards(session) if view.in_audience(card.card)]


def advisor_cards(session: Session, advisor_userid: str) -> list[CardView]:
    """The cards the advisor's customers (active relations) are enrolled in with them, most
    recent enrollment first, each card version once (one query)."""
    rows = session.scalars(
        select(SopEnrollment)
        .join(
            FollowRelation,
            (FollowRelation.external_userid == SopEnrollment.external_userid)
            & (FollowRelation.advisor_userid == SopEnrollment.advisor_userid),
        )
        .where(
            SopEnrollment.advisor_userid == advisor_userid,
            SopEnrollment.status == EnrollmentStatus.ACTIVE,
            FollowRelation.status == RelationStatus.ACTIVE,
        )
        .order_by(SopEnrollment.enrolled_at.desc(), SopEnrollment.id.desc())
        .limit(ADVISOR_ENROLLMENTS_SCANNED)
    )
    seen: set[int] = set()
    views: list[CardView] = []
    for row in rows:
        if row.card_version_id in seen:
            continue
        seen.add(row.card_version_id)
        views.append(_enrolled_view(session, row, enrollment.card_for_version(session, row.card_version_id)))
    return views


# -- intent and placeholders ---------------------------------------------------------------


def intent_of(session: Session, settings: Settings, customer: Customer) -> dict[str, Any]:
    """{score, band}: the intent score's row when the customer has one, else the profile's."""
    row = intent.current(session, customer.external_userid)
    if row is not None:
        return {"score": row.score, "band": row.band}
    profile = customer.profile or {}
    return {"score": profile.get("intent"), "band": enrollment.band_of(profile, settings)}


def placeholder_values(
    session: Session, settings: Settings, customer: Customer | None, advisor_userid: str
) -> dict[str, str]:
    """Values of {customer} {advisor} {dealer} {model} for texts shown to this advisor; with no
    customer named, {customer} and {model} stay empty ("{customer}您好" reads "您好")."""
    if customer is not None:
        return enrollment.customer_view(session, customer.external_userid, advisor_userid, settings).values()
    advisor = session.get(Advisor, advisor_userid)
    dealer = session.get(Dealer, advisor.dealer_code) if advisor is not None else None
    return {
        "customer": "",
        "advisor": advisor.name if advisor is not None else "",
        "dealer": dealer.name if dealer is not None else "",
        "model": "",
    }


# -- the answer -------------------------------------------------------------------------------


@dataclass
class Answer:
    advisor: str
    dealer: str | None
    query: str
    customer: Customer | None
    hits: list[search.Hit] = field(default_factory=list)
    cards: list[CardView] = field(default_factory=list)
    text: str = ""

    def hits_payload(self) -> list[dict[str, Any]]:
        return [
            {"card": h.entry.card_id, "step": h.entry.step, "kind": h.entry.kind, "index": h.entry.index}
            for h in self.hits
        ]


def _entries(views: Iterable[CardView]) -> list[search.Entry]:
    return [
        entry
        for rank, view in enumerate(views)
        for entry in search.card_entries(view.card, rank=rank, current_step=view.step)
    ]


def _at_step(views: Sequence[CardView], limit: int) -> list[search.Hit]:
    """With no question (only a name): the replies, then answers, of the step they are at."""
    picked: list[search.Hit] = []
    for rank, view in enumerate(views):
        entries = search.card_entries(view.card, rank=rank, steps=[view.step], current_step=view.step)
        picked += [search.Hit(e, 0.0, False) for e in entries if e.kind == "reply"]
        picked += [search.Hit(e, 0.0, False) for e in entries if e.kind == "qa"]
    return picked[:limit]


def answer(session: Session, settings: Settings, advisor_userid: str, query: str) -> Answer:
    """The bot's answer to ``query`` from ``advisor_userid`` (read-only)."""
    advisor = session.get(Advisor, advisor_userid)
    named = search.match_name(query, followed_names(session, advisor_userid))
    customer = session.get(Customer, named.key) if named is not None else None
    result = Answer(advisor_userid, advisor.dealer_code if advisor else None, query, customer)

    if customer is not None:
        result.cards = customer_cards(session, settings, customer.external_userid, advisor_userid)
    else:
        result.cards = advisor_cards(session, advisor_userid)
    if not result.cards:
        result.cards = loaded_cards(session)

    rest = named.rest if named is not None else search.normalize(query)
    if customer is not None and not rest:
        result.hits = _at_step(result.cards, LIMIT)
    else:
        result.hits = search.search(rest, _entries(result.cards), LIMIT)
    values = placeholder_values(session, settings, customer, advisor_userid)
    result.text = format_answer(result, values, sidebar_link(settings, customer))
    return result


def sidebar_link(settings: Settings, customer: Customer | None) -> str:
    query = urlencode({"external_userid": customer.external_userid}) if customer is not None else ""
    return settings.public_url("/sidebar" + (f"?{query}" if query else ""))


# -- the message ------------------------------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, cut at a character, with an ellipsis when cut."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def describe(entry: search.Entry, values: dict[str, str]) -> str:
    """One line for a hit, placeholders filled."""
    if entry.kind == "qa":
        return f"问答「{'/'.join(entry.keywords[:3])}」：{render(entry.text, values)}"
    reply = entry.reply
    if isinstance(reply, TextReply):
        return f"话术：{render(reply.text, values)}"
    if isinstance(reply, LinkReply):
        return f"链接：{render(reply.title, values)} {render(reply.url, values)}"
    if isinstance(reply, MiniProgramReply):
        return f"小程序：{render(reply.title, values)}"
    if isinstance(reply, ImageReply):
        return f"图片：{reply.title or reply.url or '图片'}"
    return render(entry.text, values)


_NUMBERS = "①②③④⑤⑥⑦⑧⑨"


def format_answer(result: Answer, values: dict[str, str], link: str) -> str:
    """The text message: who, the hits (one line each), the sidebar link; ≤ 2048 bytes."""
    lines: list[str] = []
    if result.customer is not None:
        head = f"客户：{result.customer.name or result.customer.external_userid}"
        if result.cards:
            first = result.cards[0]
            head += f" · {first.card.title} 第{first.step + 1}步"
        lines.append(head)
    if result.hits:
        for number, hit in zip(_NUMBERS, result.hits, strict=False):
            lines.append(f"{number} {clip(describe(hit.entry, values), ITEM_MAX_BYTES)}")
    else:
        shown = clip(result.query.strip(), 60)
        lines.append(f"没有找到与「{shown}」相关的话术或问答。可以试试：{SUGGESTIONS}。")
    footer = f'<a href="{link}">在侧边栏查看全部话术</a>'
    body = "\n".join(lines)
    room = TEXT_MAX_BYTES - len(footer.encode()) - 1
    return f"{clip(body, room)}\n{footer}"
