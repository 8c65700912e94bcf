"""Chinese matching (app/sop/search.py): advisors' questions → the expected top hit, synonyms,
partial words, full-width input, customers' names, deterministic ranking."""

from __future__ import annotations

import pytest

from app.sop import search
from tests.bot.seed import card

CARDS = [card("buying.yaml"), card("service.yaml"), card("owners-only.yaml")]
ENTRIES = [e for rank, c in enumerate(CARDS) for e in search.card_entries(c, rank=rank)]


def top(query: str) -> tuple[str, str, int, int]:
    hits = search.search(query, ENTRIES)
    assert hits, f"no hit for {query!r}"
    e = hits[0].entry
    return (e.kind, e.card_id, e.step, e.index)


# question → (kind, card, step, position in the step's qa / quick_replies)
EXPECTED = {
    "试驾": ("qa", "buying-questions", 0, 0),
    "保养多少钱": ("qa", "service-care", 0, 0),  # keywords [保养, 价格]: 多少钱 is a 价格 synonym
    "落地价": ("qa", "buying-questions", 0, 1),
    "能贷款吗": ("qa", "buying-questions", 1, 0),
    "旧车怎么置换": ("qa", "buying-questions", 1, 1),
    "首保免费吗": ("qa", "service-care", 0, 1),
    # synonyms
    "想开一下看看": ("qa", "buying-questions", 0, 0),
    "试乘试驾": ("qa", "buying-questions", 0, 0),
    "分期首付多少": ("qa", "buying-questions", 1, 0),
    "以旧换新": ("qa", "buying-questions", 1, 1),
    "二手车能抵吗": ("qa", "buying-questions", 1, 1),
    # partial and run-together words
    "落地": ("qa", "buying-questions", 0, 1),
    "报价单": ("qa", "buying-questions", 0, 1),
    "置换补": ("qa", "buying-questions", 1, 1),
    "保养价": ("qa", "service-care", 0, 0),
    # full-width letters and punctuation
    "ＲＡＶ４试驾？": ("qa", "buying-questions", 0, 0),
    # no Q&A keyword, but a reply's words
    "自驾活动": ("reply", "owners-only", 0, 0),
    "价目表": ("reply", "service-care", 0, 1),
}


@pytest.mark.parametrize("query", sorted(EXPECTED))
def test_top_hit(query: str) -> None:
    assert top(query) == EXPECTED[query]


def test_answers_before_replies_and_at_most_three() -> None:
    everything = search.search("保养", ENTRIES, limit=10)
    assert len(everything) > 3
    hits = search.search("保养", ENTRIES)
    assert hits == everything[:3]
    assert [h.entry.kind for h in hits] == ["qa", "qa", "reply"]  # answers whose keywords hit first
    assert all(h.keyword_hit for h in hits[:2])
    assert max(h.score for h in everything if h.entry.kind == "reply") > hits[1].score  # even so


def test_nothing_for_unrelated_words() -> None:
    assert search.search("哈哈哈", ENTRIES) == []
    assert search.search("", ENTRIES) == []
    assert search.search("？！。", ENTRIES) == []


def test_ranking_is_deterministic_and_follows_the_callers_order_on_ties() -> None:
    first = [h.entry for h in search.search("试驾", ENTRIES)]
    assert first == [h.entry for h in search.search("试驾", list(reversed(ENTRIES)))]
    # the same card twice at different ranks: the better-ranked copy wins the tie, once
    doubled = search.card_entries(CARDS[0], rank=5) + search.card_entries(CARDS[0], rank=1)
    hits = search.search("试驾", doubled, limit=10)
    assert hits[0].entry.order[0] == 1
    identities = [(h.entry.kind, h.entry.card_id, h.entry.step, h.entry.index) for h in hits]
    assert len(identities) == len(set(identities))


def test_the_current_step_wins_a_tie() -> None:
    entries = search.card_entries(CARDS[0], current_step=1)
    hit = search.search("分期", entries)[0]
    assert (hit.entry.step, hit.entry.bonus) == (1, 1.0)
    assert entries[0].step == 0 and entries[0].order[1] == 2  # other steps sort after the current one
    assert min(e.order for e in entries if e.step == 1)[1] == 0


def test_normalize() -> None:
    assert search.normalize("ＲＡＶ４ 多少钱？！") == "rav4多少钱"
    assert search.normalize("  Hello, 世界 ") == "hello世界"


@pytest.mark.parametrize(
    ("query", "expected", "rest"),
    [
        ("王建国保养多少钱", "wm_wang", "保养多少钱"),
        ("建国 试驾", "wm_wang", "试驾"),  # part of the name
        ("陈静", "wm_chen", ""),
        ("王建国的陈静", "wm_wang", "的陈静"),  # the longer name wins
        ("王 试驾", None, None),  # one character is no name
        ("保养多少钱", None, None),
    ],
)
def test_names(query: str, expected: str | None, rest: str | None) -> None:
    people = [("wm_chen", "陈静"), ("wm_wang", "王建国"), ("wm_liu", "刘洋")]
    found = search.match_name(query, people)
    assert (found.key if found else None) == expected
    if found is not None:
        assert found.rest == rest


def test_a_partial_name_shared_by_several_customers_names_nobody() -> None:
    people = [("a", "客户12"), ("b", "客户7")]
    assert search.match_name("客户要报价", people) is None
    assert search.match_name("客户7要报价", people).key == "b"  # a whole name is still a name


def test_words_of_the_synonym_table_are_not_part_of_a_name() -> None:
    assert search.match_name("报价", [("x", "张报价")]) is None
    assert search.match_name("张报价", [("x", "张报价")]).key == "x"
