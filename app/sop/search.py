"""Chinese matching of an advisor's words against SOP cards: quick replies (话术) and preset
answers (Q&A), and customers' names. Pure functions, no I/O.

Hand-written on purpose. What advisors type to the bot is a phrase of two to ten characters
("试驾", "保养多少钱", "能贷款吗"), so segmentation buys little: substring tests against a small
synonym table find the concept ("多少钱" → 价格), and character bigrams find partial and
run-together words ("落地" in "落地价", "保养多" in "保养多少钱"). jieba would add a 20 MB
dictionary load to every worker for no better result on phrases this short, and its
segmentation of brand-specific words (RAV4, 首保, 以旧换新) would still need this table.

Scoring of one query against one entry (all text normalised: full-width → half-width, lower
case, punctuation and spaces removed):

- concepts: the synonym groups the query mentions (any member as a substring); each group that
  the entry also mentions counts ``CONCEPT`` (a Q&A's keywords) or ``REPLY_CONCEPT`` (a reply's
  text);
- literal hits: a Q&A keyword inside the query, or the query (2+ characters) inside a keyword
  ("落地" → 落地价) counts ``LITERAL`` each; for replies, the query inside the text;
- bigram coverage: the share of the query's character bigrams found in the entry, × ``BIGRAM``.

A Q&A whose keywords were hit (by concept or literally) ranks before every quick reply; then
higher scores first; ties by the caller's order (card rank, step, position): deterministic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.sop.card import Card, ImageReply, LinkReply, MiniProgramReply, QuickReply, TextReply

# Synonym groups: the first word names the group; any member found in a text means the text
# speaks of that concept. Extend freely (members are matched as substrings after normalising,
# so keep single characters out unless they are unambiguous in a dealer's chat).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "试驾": ("试驾", "试乘试驾", "试乘", "试车", "体验", "开一下", "开一开", "开开看", "摸车"),
    "价格": (
        "价格",
        "报价",
        "多少钱",
        "优惠",
        "落地价",
        "落地",
        "售价",
        "价钱",
        "便宜",
        "折扣",
        "几万",
        "裸车价",
    ),
    "保养": ("保养", "首保", "维修", "保养费", "维保", "养护", "机油", "售后"),
    "金融": ("金融", "贷款", "贷", "分期", "首付", "月供", "利息", "贴息", "按揭", "全款"),
    "置换": ("置换", "以旧换新", "二手车", "旧车", "换购", "评估"),
    "配置": ("配置", "参数", "续航", "油耗", "动力", "马力", "尺寸", "空间", "性能", "版本"),
    "提车": ("提车", "现车", "交车", "交付", "等车", "库存", "到货"),
    "到店": ("到店", "门店", "地址", "在哪", "营业时间", "导航", "看车"),
    "活动": ("活动", "礼包", "到店礼", "赠品", "福利", "促销", "专场"),
    "保险": ("保险", "车险", "上牌", "购置税", "手续"),
    "推荐": ("推荐", "老带新", "转介绍", "介绍朋友"),
}

CONCEPT = 10.0
REPLY_CONCEPT = 6.0
LITERAL = 4.0
BIGRAM = 5.0
MIN_SCORE = 1.5  # below this (no concept, no literal hit, under 30 % of the bigrams) is noise
NAME_MIN_CHARS = 2  # a partial name must share at least this many characters with the query

_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Full-width → half-width (NFKC), lower case, without punctuation, symbols or spaces."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text or "").lower())


_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (name, tuple(dict.fromkeys(normalize(m) for m in members if normalize(m))))
    for name, members in SYNONYMS.items()
)


def concepts(text: str) -> frozenset[str]:
    """The synonym groups a (normalised) text mentions."""
    return frozenset(name for name, members in _GROUPS if any(m in text for m in members))


def bigrams(text: str) -> frozenset[str]:
    if len(text) < 2:
        return frozenset([text]) if text else frozenset()
    return frozenset(text[i : i + 2] for i in range(len(text) - 1))


# -- entries ----------------------------------------------------------------------------------


Kind = Literal["qa", "reply"]


@dataclass(frozen=True)
class Entry:
    """One thing the bot can offer: a Q&A answer or a quick reply of one step of one card.

    ``index`` is the position in the step's ``qa`` or ``quick_replies`` list; ``order`` is the
    caller's tie-break (lower first); ``bonus`` is added to a score above zero (the step the
    customer is at, say)."""

    kind: Kind
    card_id: str
    card_title: str
    step: int
    index: int
    text: str  # the answer, or the reply's text / title (placeholders not filled)
    keywords: tuple[str, ...] = ()
    reply: QuickReply | None = None
    order: tuple[int, ...] = ()
    bonus: float = 0.0
    _norm_text: str = field(default="", repr=False, compare=False)
    _norm_keywords: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_norm_text", normalize(self.text))
        object.__setattr__(self, "_norm_keywords", tuple(k for k in map(normalize, self.keywords) if k))


def reply_text(reply: QuickReply) -> str:
    """What a quick reply says, for matching and for a one-line summary."""
    if isinstance(reply, TextReply):
        return reply.text
    if isinstance(reply, LinkReply):
        return " ".join(part for part in (reply.title, reply.desc) if part)
    if isinstance(reply, MiniProgramReply):
        return reply.title
    if isinstance(reply, ImageReply):
        return reply.title or ""
    return ""


def card_entries(
    card: Card,
    *,
    rank: int = 0,
    steps: Iterable[int] | None = None,
    current_step: int | None = None,
    current_bonus: float = 1.0,
) -> list[Entry]:
    """The Q&A answers and quick replies of ``card`` (of ``steps``, default all), in order.
    ``rank`` orders cards against each other; entries of ``current_step`` get ``current_bonus``
    and sort before the other steps of the same card."""
    wanted = range(len(card.steps)) if steps is None else steps
    out: list[Entry] = []
    for step_index in wanted:
        if not 0 <= step_index < len(card.steps):
            continue
        step = card.steps[step_index]
        is_current = step_index == current_step
        distance = 0 if is_current else 1 + abs(step_index - (current_step or 0))
        bonus = current_bonus if is_current else 0.0
        for i, qa in enumerate(step.qa):
            out.append(
                Entry(
                    "qa",
                    card.id,
                    card.title,
                    step_index,
                    i,
                    qa.answer,
                    tuple(qa.keywords),
                    order=(rank, distance, step_index, 0, i),
                    bonus=bonus,
                )
            )
        for i, reply in enumerate(step.quick_replies):
            out.append(
                Entry(
                    "reply",
                    card.id,
                    card.title,
                    step_index,
                    i,
                    reply_text(reply),
                    reply=reply,
                    order=(rank, distance, step_index, 1, i),
                    bonus=bonus,
                )
            )
    return out


# -- scoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    entry: Entry
    score: float
    keyword_hit: bool  # a Q&A whose keywords matched (these rank first)

    def sort_key(self) -> tuple[int, float, tuple[int, ...]]:
        return (0 if self.keyword_hit else 1, -round(self.score, 6), self.entry.order)


def score(query: str, entry: Entry) -> Hit:
    """How well ``entry`` answers ``query`` (already normalised)."""
    if not query:
        return Hit(entry, 0.0, False)
    asked = concepts(query)
    query_bigrams = bigrams(query)
    if entry.kind == "qa":
        keywords = entry._norm_keywords
        literal = sum(1 for k in keywords if k in query or (len(query) >= 2 and query in k))
        shared = asked & concepts("|".join(keywords))
        haystack = "|".join((*keywords, entry._norm_text))
        value = CONCEPT * len(shared) + LITERAL * literal
        keyword_hit = bool(shared or literal)
    else:
        haystack = entry._norm_text
        shared = asked & concepts(haystack)
        literal = 1 if len(query) >= 2 and query in haystack else 0
        value = REPLY_CONCEPT * len(shared) + LITERAL * literal
        keyword_hit = False
    coverage = len(query_bigrams & bigrams(haystack)) / len(query_bigrams) if query_bigrams else 0.0
    value += BIGRAM * coverage
    if value < MIN_SCORE:
        return Hit(entry, 0.0, False)
    return Hit(entry, value + entry.bonus, keyword_hit)


def search(query: str, entries: Iterable[Entry], limit: int = 3) -> list[Hit]:
    """The best ``limit`` entries for ``query``: Q&A answers whose keywords hit first, then the
    rest by score; an entry offered twice (the same card step in two enrollments) once."""
    q = normalize(query)
    hits = [hit for hit in (score(q, e) for e in entries) if hit.score > 0]
    hits.sort(key=Hit.sort_key)
    seen: set[tuple[str, str, int, int]] = set()
    best: list[Hit] = []
    for hit in hits:
        e = hit.entry
        identity = (e.kind, e.card_id, e.step, e.index)
        if identity in seen:
            continue
        seen.add(identity)
        best.append(hit)
        if len(best) == limit:
            break
    return best


# -- customers' names -------------------------------------------------------------------------


@dataclass(frozen=True)
class NameMatch:
    key: str  # the caller's id of the candidate (an external_userid)
    name: str
    matched: str  # the normalised part of the query that named them
    rest: str  # the query without it (normalised)


def _longest_common(a: str, b: str) -> str:
    """The longest common substring (first found on ties)."""
    best = ""
    for i in range(len(a)):
        for j in range(i + len(best) + 1, len(a) + 1):
            if a[i:j] in b:
                best = a[i:j]
            else:
                break
    return best


def match_name(query: str, candidates: Sequence[tuple[str, str]]) -> NameMatch | None:
    """The candidate (key, name) the query names: the whole name, or at least NAME_MIN_CHARS of
    it ("建国" for 王建国). Longer matches win, then whole names; on a tie the earlier candidate
    (callers list the most recent customer first). A partial match that fits several customers
    (two names sharing "客户") names nobody, and words of the synonym table never count as part
    of a name."""
    q = normalize(query)
    if not q:
        return None
    found: list[tuple[tuple[int, int, int], NameMatch]] = []
    for position, (key, name) in enumerate(candidates):
        n = normalize(name)
        if not n:
            continue
        whole = n in q
        common = n if whole else _longest_common(n, q)
        if len(common) < min(NAME_MIN_CHARS, len(n)) or (not whole and concepts(common)):
            continue
        rank = (-len(common), 0 if whole else 1, position)
        found.append((rank, NameMatch(key, name, common, q.replace(common, "", 1))))
    if not found:
        return None
    found.sort(key=lambda item: item[0])
    (length, partial, _), best = found[0]
    if partial and any(r[0] == length and m.matched == best.matched for r, m in found[1:]):
        return None
    return best
