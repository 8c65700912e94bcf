"""Campaign audiences: a filter expression, compiled to one SQL query over the store.

The grammar (one string; keywords and atom names are case-insensitive)::

    expr    := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | atom
    atom    := NAME "(" value ("," value)* ")"        several values: any of them
    value   := text without , ( ) "  |  "quoted text"

    tag(组名:标签名)        a corp tag on the follow relation (app/sop/tagexpr.py's form)
    stage(prospect)        customers.profile.segment: prospect/intent/lost/owner (or 潜客/意向/战败/车主)
    intent(high)           intent band low/medium/high (profile.intent_band, else from profile.intent)
    model(RAV4)            profile.model (case-insensitive)
    dealer(SH01)           the dealer of the relation (else of its advisor)
    region(east)           that dealer's region
    added_since(2026-10-01)  relation added on/after that day (China time) or an ISO time with offset

    tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场) and region(east)
    (model(RAV4, BZ4X) or tag(意向车型:RAV4)) and intent(medium, high) and added_since(2026-10-01)

``not`` binds tighter than ``and``, ``and`` tighter than ``or``; full-width ``：（），`` are read as
half-width. Syntax errors (``AudienceError``) carry the 1-based column; so do unknown tags, dealers
and regions, found when the filter is resolved against the store.

What it selects: active follow relations (``follow_relations.status = 'active'``) whose advisor is
not deactivated, joined to their customer, dealer and corp tags; the filter is evaluated per
relation (the tags are the ones that advisor's relation carries). A customer matched through
several relations is taken once, through the most recently added one (``ROW_NUMBER() OVER
(PARTITION BY external_userid ORDER BY added_at DESC, id DESC)``). A scope dealer restricts the
relations to that dealer's before any of this. Tags are matched in SQL on both backends:
PostgreSQL ``tag_ids ?| ARRAY[ids]`` (jsonb), SQLite ``EXISTS (SELECT 1 FROM json_each(tag_ids)
WHERE value IN (ids))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.orm import Session

from app.sop.tagexpr import Token, TokenCursor, scan, split_tag
from app.store.models import Advisor, CorpTag, Customer, Dealer, FollowRelation, RelationStatus

CHINA = ZoneInfo("Asia/Shanghai")
STAGES = {"prospect": "prospect", "intent": "intent", "lost": "lost", "owner": "owner",
          "潜客": "prospect", "意向": "intent", "战败": "lost", "车主": "owner"}  # fmt: skip
BANDS = ("low", "medium", "high")
ATOMS = ("tag", "stage", "intent", "model", "dealer", "region", "added_since")
KEYWORDS = ("and", "or", "not")
DEFAULT_BAND_FLOORS = (40.0, 70.0)
_FULL_WIDTH = str.maketrans({"：": ":", "（": "(", "）": ")", "，": ","})


class AudienceError(ValueError):
    """A filter that cannot be used; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


# -- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """One follow relation as a filter sees it (for evaluating in Python: tests, previews)."""

    tags: frozenset[str] = frozenset()  # "组名:标签名"
    stage: str | None = None
    band: str | None = None
    model: str | None = None
    dealer: str | None = None
    region: str | None = None
    added_at: datetime | None = None


@dataclass(frozen=True)
class Atom:
    kind: str  # one of ATOMS
    values: tuple[str, ...]  # normalized: tags "组:名", stages English, models upper-case …
    column: int
    since: datetime | None = None  # added_since: the instant (UTC)

    def evaluate(self, facts: Facts) -> bool:
        if self.kind == "tag":
            return any(value in facts.tags for value in self.values)
        if self.kind == "added_since":
            return facts.added_at is not None and facts.added_at >= self.since
        have = {
            "stage": facts.stage,
            "intent": facts.band,
            "model": (facts.model or "").upper() or None,
            "dealer": facts.dealer,
            "region": facts.region,
        }[self.kind]
        return have in self.values

    def __str__(self) -> str:
        def show(value: str) -> str:
            return f'"{value}"' if any(c in value for c in ' ,()"') else value

        return f"{self.kind}({', '.join(show(v) for v in self.values)})"


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, facts: Facts) -> bool:
        return not self.operand.evaluate(facts)

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"not ({inner})" if isinstance(self.operand, And | Or) else f"not {inner}"


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]

    def evaluate(self, facts: Facts) -> bool:
        return all(operand.evaluate(facts) for operand in self.operands)

    def __str__(self) -> str:
        return " and ".join(f"({o})" if isinstance(o, Or) else str(o) for o in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]

    def evaluate(self, facts: Facts) -> bool:
        return any(operand.evaluate(facts) for operand in self.operands)

    def __str__(self) -> str:
        return " or ".join(str(o) for o in self.operands)


Node = Atom | Not | And | Or


@dataclass(frozen=True)
class Filter:
    """A parsed filter. ``str()`` is a canonical text that parses back to the same tree."""

    source: str
    root: Node

    def atoms(self, kind: str | None = None) -> list[Atom]:
        found: list[Atom] = []

        def walk(node: Node) -> None:
            if isinstance(node, Atom):
                if kind is None or node.kind == kind:
                    found.append(node)
            elif isinstance(node, Not):
                walk(node.operand)
            else:
                for operand in node.operands:
                    walk(operand)

        walk(self.root)
        return found

    def dealers(self) -> set[str]:
        """Every dealer code the filter names (scope enforcement looks at these)."""
        return {value for atom in self.atoms("dealer") for value in atom.values}

    def matches(self, facts: Facts) -> bool:
        return self.root.evaluate(facts)

    def __str__(self) -> str:
        return str(self.root)


# -- tokens and parsing ----------------------------------------------------------------------------


def _tokens(source: str) -> list[Token]:
    return scan(source, "(),", AudienceError, _FULL_WIDTH)


def _is(token: Token, keyword: str) -> bool:
    return token.kind == "word" and token.text.lower() == keyword


class _Parser(TokenCursor):
    def __init__(self, source: str) -> None:
        super().__init__(_tokens(source))

    def expression(self) -> Node:
        operands = [self.conjunction()]
        while _is(self.token, "or"):
            self.take()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Node:
        operands = [self.unary()]
        while _is(self.token, "and"):
            self.take()
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> Node:
        token = self.take()
        if _is(token, "not"):
            return Not(self.unary())
        if token.kind == "(":
            inner = self.expression()
            if self.token.kind != ")":
                raise AudienceError(f"expected ) to close the ( at column {token.column}", self.token.column)
            self.take()
            return inner
        if token.kind == "word" and token.text.lower() not in KEYWORDS:
            return self.atom(token)
        if token.kind == "end":
            raise AudienceError(
                "the filter ends where an atom such as tag(…), `not` or ( was expected", token.column
            )
        raise AudienceError(
            f"unexpected {token.text!r}: expected an atom such as tag(…), `not` or (", token.column
        )

    def atom(self, name: Token) -> Atom:
        kind = name.text.lower()
        if kind not in ATOMS:
            raise AudienceError(f"unknown atom {name.text!r}: use one of {', '.join(ATOMS)}", name.column)
        if self.token.kind != "(":
            raise AudienceError(f"expected ( after {kind}", self.token.column)
        self.take()
        raw: list[Token] = []
        while True:
            token = self.take()
            if token.kind not in ("word", "quoted") or not token.text.strip():
                raise AudienceError(f"expected a value in {kind}(…)", token.column)
            raw.append(token)
            token = self.take()
            if token.kind == ")":
                break
            if token.kind != ",":
                raise AudienceError(f"expected , or ) in {kind}(…)", token.column)
        values = tuple(dict.fromkeys(_value(kind, token) for token in raw))
        since = _since(raw[0]) if kind == "added_since" else None
        if kind == "added_since" and len(raw) != 1:
            raise AudienceError("added_since takes one date", raw[1].column)
        return Atom(kind, values, name.column, since)


def _value(kind: str, token: Token) -> str:
    text = token.text.strip()
    if kind == "tag":
        try:
            group, name = split_tag(text)
        except ValueError:
            raise AudienceError(
                f"{text!r} is not a tag: write tag(组名:标签名), e.g. tag(意向车型:RAV4)", token.column
            ) from None
        return f"{group}:{name}"
    if kind == "stage":
        stage = STAGES.get(text.lower(), STAGES.get(text))
        if stage is None:
            raise AudienceError(f"unknown stage {text!r}: prospect, intent, lost or owner", token.column)
        return stage
    if kind == "intent":
        if text.lower() not in BANDS:
            raise AudienceError(f"unknown intent band {text!r}: low, medium or high", token.column)
        return text.lower()
    if kind in ("model", "dealer"):
        return text.upper()
    return text


def _since(token: Token) -> datetime:
    text = token.text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), CHINA).astimezone(UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AudienceError(
            f"{text!r} is not a date: write YYYY-MM-DD (China time) or an ISO time with offset", token.column
        ) from None
    if moment.tzinfo is None:
        raise AudienceError(f"{text!r} needs a UTC offset (or write a date only: China time)", token.column)
    return moment.astimezone(UTC)


def parse(source: str) -> Filter:
    """Parse once; raises AudienceError (with the column) on a syntax error."""
    if not source or not source.strip():
        raise AudienceError("empty filter", 1)
    parser = _Parser(source)
    root = parser.expression()
    token = parser.token
    if token.kind != "end":
        expected = "`and`, `or` or the end" if token.kind != ")" else "no ) here (nothing to close)"
        raise AudienceError(f"unexpected {token.text!r}: expected {expected}", token.column)
    return Filter(source, root)


# -- SQL -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One customer of the audience and the advisor (relation) the campaign reaches them through."""

    external_userid: str
    advisor_userid: str
    dealer_code: str | None


@dataclass
class AudienceCounts:
    total: int = 0
    by_dealer: dict[str, int] = field(default_factory=dict)
    by_advisor: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"total": self.total, "by_dealer": self.by_dealer, "by_advisor": self.by_advisor}


NO_DEALER = "-"  # by_dealer's key for relations without a dealer (brand scope only)


def _relation_dealer() -> ColumnElement[str]:
    return func.coalesce(FollowRelation.dealer_code, Advisor.dealer_code)


def _tag_ids(session: Session, flt: Filter) -> dict[str, list[str]]:
    """ "组:名" → corp tag ids (deleted ones too: a relation may still carry them)."""
    wanted = {value for atom in flt.atoms("tag") for value in atom.values}
    if not wanted:
        return {}
    pairs = [tuple(value.split(":", 1)) for value in wanted]
    found: dict[str, list[str]] = {}
    groups = {group for group, _ in pairs}
    rows = session.execute(
        select(CorpTag.group_name, CorpTag.name, CorpTag.tag_id).where(CorpTag.group_name.in_(groups))
    )
    for group, name, tag_id in rows:
        if f"{group}:{name}" in wanted:
            found.setdefault(f"{group}:{name}", []).append(tag_id)
    return found


def check_names(session: Session, flt: Filter) -> dict[str, list[str]]:
    """Unknown tags, dealers and regions are errors (with the atom's column): a typo would
    otherwise select nobody, or, under ``not``, everybody. Returns the tag ids of each tag."""
    tag_ids = _tag_ids(session, flt)
    for atom in flt.atoms("tag"):
        for value in atom.values:
            if value not in tag_ids:
                raise AudienceError(
                    f"unknown tag {value!r} (not in the corp tag library; `scrm tags sync`?)", atom.column
                )
    named = flt.dealers()
    if named:
        known = set(session.scalars(select(Dealer.code).where(Dealer.code.in_(named))))
        for atom in flt.atoms("dealer"):
            for value in atom.values:
                if value not in known:
                    raise AudienceError(f"unknown dealer {value!r}", atom.column)
    if flt.atoms("region"):
        regions = set(session.scalars(select(Dealer.region).distinct()))
        for atom in flt.atoms("region"):
            for value in atom.values:
                if value not in regions:
                    raise AudienceError(
                        f"unknown region {value!r} (known: {', '.join(sorted(regions)) or 'none'})",
                        atom.column,
                    )
    return tag_ids


def _band(dialect: str, floors: tuple[float, float]) -> ColumnElement[str]:
    stored = Customer.profile["intent_band"].as_string()
    score = Customer.profile["intent"].as_float()
    if dialect == "postgresql":
        numeric = func.jsonb_typeof(Customer.profile["intent"]) == "number"
    else:
        numeric = func.json_type(Customer.profile, "$.intent").in_(("integer", "real"))
    medium_from, high_from = floors
    return case(
        (stored.in_(BANDS), stored),
        (and_(numeric, score >= high_from), literal("high")),
        (and_(numeric, score >= medium_from), literal("medium")),
        (numeric, literal("low")),
        else_=literal(""),
    )


def _tag_condition(dialect: str, ids: list[str]) -> ColumnElement[bool]:
    if not ids:
        return false()
    if dialect == "postgresql":
        return type_coerce(FollowRelation.tag_ids, JSONB).has_any(cast(array(ids), ARRAY(Text)))
    each = func.json_each(FollowRelation.tag_ids).table_valued("value").alias()
    return select(literal(1)).select_from(each).where(each.c.value.in_(ids)).exists()


def _condition(
    node: Node, dialect: str, tag_ids: dict[str, list[str]], floors: tuple[float, float]
) -> ColumnElement[bool]:
    if isinstance(node, Not):
        return not_(_condition(node.operand, dialect, tag_ids, floors))
    if isinstance(node, And):
        return and_(*(_condition(o, dialect, tag_ids, floors) for o in node.operands))
    if isinstance(node, Or):
        return or_(*(_condition(o, dialect, tag_ids, floors) for o in node.operands))
    values = list(node.values)
    if node.kind == "tag":
        return _tag_condition(dialect, [tag_id for value in values for tag_id in tag_ids.get(value, [])])
    if node.kind == "added_since":
        return FollowRelation.added_at >= node.since
    # Every column is coalesced to '' so that `not` of a missing value is true, never NULL.
    column = {
        "stage": lambda: func.coalesce(Customer.profile["segment"].as_string(), ""),
        "intent": lambda: _band(dialect, floors),
        "model": lambda: func.upper(func.coalesce(Customer.profile["model"].as_string(), "")),
        "dealer": lambda: func.coalesce(_relation_dealer(), ""),
        "region": lambda: func.coalesce(Dealer.region, ""),
    }[node.kind]()
    return column.in_(values)


def audience_select(
    session: Session,
    flt: Filter | str,
    scope_dealer: str | None,
    band_floors: tuple[float, float] = DEFAULT_BAND_FLOORS,
) -> Select:
    """The audience query: rows (external_userid, advisor_userid, dealer_code), one per customer.
    Raises AudienceError for unknown tags, dealers or regions."""
    flt = parse(flt) if isinstance(flt, str) else flt
    dialect = session.get_bind().dialect.name
    tag_ids = check_names(session, flt)
    dealer = _relation_dealer()
    ranked = (
        select(
            FollowRelation.external_userid,
            FollowRelation.advisor_userid,
            dealer.label("dealer_code"),
            func.row_number()
            .over(
                partition_by=FollowRelation.external_userid,
                order_by=(FollowRelation.added_at.desc(), FollowRelation.id.desc()),
            )
            .label("rank"),
        )
        .select_from(FollowRelation)
        .outerjoin(Advisor, Advisor.userid == FollowRelation.advisor_userid)
        .outerjoin(Customer, Customer.external_userid == FollowRelation.external_userid)
        .outerjoin(Dealer, Dealer.code == dealer)
        .where(
            FollowRelation.status == RelationStatus.ACTIVE,
            func.coalesce(Advisor.active, true()).is_(true()),
            _condition(flt.root, dialect, tag_ids, band_floors),
        )
    )
    if scope_dealer is not None:
        ranked = ranked.where(dealer == scope_dealer)
    sub = ranked.subquery("matched")
    return select(sub.c.external_userid, sub.c.advisor_userid, sub.c.dealer_code).where(sub.c.rank == 1)


def resolve_audience(
    session: Session,
    flt: Filter | str,
    scope_dealer: str | None,
    band_floors: tuple[float, float] = DEFAULT_BAND_FLOORS,
) -> list[Recipient]:
    """Every customer the campaign reaches, each once, with the advisor who sends to them
    (ordered by dealer, advisor, customer: the per-advisor split the submission makes)."""
    query = audience_select(session, flt, scope_dealer, band_floors).subquery("audience")
    rows = session.execute(
        select(query.c.external_userid, query.c.advisor_userid, query.c.dealer_code).order_by(
            query.c.dealer_code, query.c.advisor_userid, query.c.external_userid
        )
    )
    return [Recipient(ext, advisor, dealer) for ext, advisor, dealer in rows]


def count_audience(
    session: Session,
    flt: Filter | str,
    scope_dealer: str | None,
    band_floors: tuple[float, float] = DEFAULT_BAND_FLOORS,
) -> AudienceCounts:
    """The dry run: how many customers, per dealer and per advisor (aggregated in SQL)."""
    query = audience_select(session, flt, scope_dealer, band_floors).subquery("audience")
    rows = session.execute(
        select(query.c.dealer_code, query.c.advisor_userid, func.count())
        .group_by(query.c.dealer_code, query.c.advisor_userid)
        .order_by(query.c.dealer_code, query.c.advisor_userid)
    )
    return summarize((dealer, advisor, n) for dealer, advisor, n in rows)


def summarize(rows: Iterable[tuple[str | None, str, int]]) -> AudienceCounts:
    counts = AudienceCounts()
    for dealer, advisor, n in rows:
        counts.total += n
        key = dealer or NO_DEALER
        counts.by_dealer[key] = counts.by_dealer.get(key, 0) + n
        counts.by_advisor[advisor] = counts.by_advisor.get(advisor, 0) + n
    return counts
