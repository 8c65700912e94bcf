"""What the bot answers (app/bot/answers.py), against the store: the customer named, their
enrolled cards, the advisor's customers' cards, all loaded cards, and the message text."""

from __future__ import annotations

from app.bot import answers
from app.store.models import RelationStatus
from tests.bot import seed


def _answer(svc, advisor: str, query: str) -> answers.Answer:
    with svc.sessions() as session:
        return answers.answer(session, svc.settings, advisor, query)


def _hits(result: answers.Answer) -> list[tuple[str, str, int, int]]:
    return [(h.entry.kind, h.entry.card_id, h.entry.step, h.entry.index) for h in result.hits]


def test_a_named_customer_gets_their_cards_with_their_values(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "王建国 试驾")
    assert result.customer is not None and result.customer.external_userid == "wm_wang"
    assert [v.card.id for v in result.cards] == ["buying-questions"]
    assert result.cards[0].step == 1 and result.cards[0].enrolled  # next_step 2: step 2 ran last
    assert _hits(result)[0] == ("qa", "buying-questions", 0, 0)
    assert result.text.startswith("客户：王建国 · 购车咨询 第2步\n① 问答「试驾/试车」：试驾请带驾驶证原件")
    assert "https://brand.example.com/testdrive?model=RAV4" in result.text  # {model} filled
    assert f'<a href="{svc.settings.public_url("/sidebar?external_userid=wm_wang")}">' in result.text
    assert result.dealer == "SH01"


def test_a_partial_name_is_enough(svc) -> None:
    seed.corp(svc)
    assert _answer(svc, "sh_a", "建国想贷款").customer.external_userid == "wm_wang"
    assert _hits(_answer(svc, "sh_a", "建国想贷款"))[0] == ("qa", "buying-questions", 1, 0)


def test_only_the_name_shows_the_step_they_are_at(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "王建国")
    assert _hits(result) == [
        ("reply", "buying-questions", 1, 0),
        ("reply", "buying-questions", 1, 1),
        ("qa", "buying-questions", 1, 0),
    ]
    assert "② 小程序：在线获取专属报价" in result.text
    assert "王建国您好，给您算了全款和分期两种方案" in result.text


def test_another_advisors_customer_is_not_named(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "刘洋 试驾")  # 刘洋 follows sh_b
    assert result.customer is None


def test_an_ended_relation_is_not_named(svc) -> None:
    seed.corp(svc)
    seed.customer(svc, "wm_gone", "赵磊", "sh_a", status=RelationStatus.LOST)
    assert _answer(svc, "sh_a", "赵磊 试驾").customer is None


def test_without_a_name_the_advisors_enrolled_cards_most_recent_customer_first(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "保养多少钱")
    assert result.customer is None
    assert [v.card.id for v in result.cards] == ["service-care", "buying-questions"]  # 陈静 newer
    assert _hits(result)[0] == ("qa", "service-care", 0, 0)
    assert result.text.startswith("① 问答「保养/价格」：常规小保养约 600-900 元")
    assert result.hits_payload()[0] == {"card": "service-care", "step": 0, "kind": "qa", "index": 0}


def test_no_enrollments_searches_every_loaded_card(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_b", "车主自驾活动")  # sh_b's customer is enrolled in nothing
    assert {v.card.id for v in result.cards} == {"buying-questions", "owners-only", "service-care"}
    assert _hits(result)[0] == ("reply", "owners-only", 0, 0)
    assert "{customer}" not in result.text and "您好，本周末有车主自驾活动" in result.text


def test_a_named_customer_without_enrollments_gets_the_cards_of_their_audience(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_b", "刘洋 活动")
    assert result.customer.external_userid == "wm_liu"
    assert [v.enrolled for v in result.cards] == [False, False]
    assert {v.card.id for v in result.cards} == {"buying-questions", "service-care"}  # not owners-only


def test_someone_outside_the_roster_gets_answers_from_every_card(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "hq_zhang", "落地价")
    assert result.customer is None and result.dealer is None
    assert _hits(result)[0] == ("qa", "buying-questions", 0, 1)


def test_no_match_says_so_and_suggests(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "今天天气怎么样")
    assert result.hits == []
    assert result.text.startswith("没有找到与「今天天气怎么样」相关的话术或问答。可以试试：试驾")
    assert result.text.endswith(f'<a href="{svc.settings.public_url("/sidebar")}">在侧边栏查看全部话术</a>')


def test_no_cards_loaded_at_all(svc) -> None:
    seed.roster(svc)
    result = _answer(svc, "sh_a", "试驾")
    assert result.cards == [] and result.hits == []
    assert "没有找到" in result.text


def test_the_message_fits_wecoms_text_limit(svc) -> None:
    seed.corp(svc)
    result = _answer(svc, "sh_a", "试驾" * 2000)
    assert len(result.text.encode()) <= answers.TEXT_MAX_BYTES
    assert answers.clip("保养" * 10, 10) == "保养…"  # 9 bytes
    assert answers.clip("保养", 6) == "保养"
