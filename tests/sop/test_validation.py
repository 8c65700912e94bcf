"""Card validation: one bad fixture per kind of problem with its exact file:line: message, the
starter cards, the README's example and schema, and `scrm sop validate`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.sop import card as card_module
from app.sop.card import Card, render
from app.sop.loader import CardYamlLoader, Library, read_card, read_cards
from app.sop.schedule import parse_window
from app.store.models import CorpTag
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "sop_cards"
SOP = FIXTURES / "sop"
HOURS = {"working_hours": parse_window("09:00-21:00"), "quiet_hours": parse_window("22:00-08:00")}
LIBRARY = Library(
    tags={"意向车型:RAV4", "客户阶段:车主", "客户阶段:意向", "客户阶段:潜客", "活动:老带新x"},
    dealers={"SH01"},
    regions={"east"},
    models={"RAV4"},
    **HOURS,
)

# Tags intake creates (app/intake/state.py, profile.py) and the three campaign tags the starters set.
STARTER_TAGS = {
    *(f"意向车型:{m}" for m in ("RAV4", "COROLLA", "AVALON", "BZ4X")),
    *(f"客户阶段:{s}" for s in ("潜客", "意向", "战败", "车主")),
    *(f"客户性格:{p}" for p in ("理性", "感性")),
    *(f"渠道:{c}" for c in ("门店活码", "前台接待", "顾问名片", "落地页", "线索")),
    *(f"活动:{c}" for c in ("试驾专场", "战败召回", "老带新")),
}

BAD = {
    "yaml_syntax.yaml": [
        "8: not valid YAML (column 4): expected <block end>, but found '<block mapping start>'",
    ],
    "not_a_mapping.yaml": ["1: expected a card: a mapping with id, title, trigger and steps"],
    "duplicate_key.yaml": ["8: steps[0].reminder: duplicate key (first at line 7)"],
    "unknown_field.yaml": [
        "8: steps[0].quick_reply: unknown field (did you mean quick_replies?); "
        "allowed here: actions, at, qa, quick_replies, reminder",
    ],
    "missing_field.yaml": ["1: trigger: required"],
    "bad_id.yaml": [
        "1: id: 'Test_Drive': ids are lowercase letters, digits and single dashes (at most 64), "
        "e.g. lost-lead-recall",
    ],
    "bad_time.yaml": ["8: steps[1].at: bad time '25:00': hours are 00-23 and minutes 00-59"],
    "bad_offset.yaml": ["6: steps[0].at: bad step time '第二天': write `day 0`, `+1d 10:00`, `+3d` or `+2h`"],
    "step_order.yaml": [
        "10: steps[2].at: +1d 10:00 comes before the previous step's +3d (line 8); steps must be in time order",
    ],
    "working_hours.yaml": ["8: steps[1].at: 08:00 is outside working hours 09:00-21:00 (SOP_WORKING_HOURS)"],
    "empty_steps.yaml": ["5: steps: must not be empty"],
    "empty_reply.yaml": ["10: steps[0].quick_replies[0].text: must not be empty"],
    "empty_qa.yaml": [
        "9: steps[0].qa[0].keywords: must not be empty",
        "11: steps[0].qa[1].keywords[1]: must not be empty",
        "12: steps[0].qa[1].answer: must not be empty",
    ],
    "too_long.yaml": ["10: steps[0].actions[0].text: is 4200 bytes of UTF-8; WeCom allows at most 4000"],
    "unknown_placeholder.yaml": [
        "7: steps[0].reminder: unknown placeholder {customer_name}: use {customer}, {advisor}, {dealer}, {model}",
        "10: steps[0].quick_replies[0].text: a { or } without its pair: placeholders are written {customer}",
    ],
    "tag_syntax.yaml": [
        "4: audience.tags: column 26: expression ends where a tag, `not` or ( was expected",
        "12: steps[0].actions[0].add[0]: 'RAV4' is not a tag: write 组名:标签名, e.g. 意向车型:RAV4",
    ],
    "unknown_tag.yaml": [
        "4: audience.tags: unknown tag 意向车型:RAV5 (column 1; not in the corp tag library); did you mean 意向车型:RAV4?",
        "7: trigger.tag: unknown tag 客户阶段:意问 (not in the corp tag library); did you mean 客户阶段:意向?",
        "13: steps[0].actions[0].add[0]: unknown tag 活动:老带新 (not in the corp tag library); did you mean 活动:老带新x?",
    ],
    "unknown_roster.yaml": [
        "4: audience.dealers[1]: unknown dealer SH99 (not in the roster)",
        "5: audience.regions[1]: unknown region moon (not in the roster)",
        "6: audience.models[1]: unknown model PRIUS (not in the roster)",
    ],
    "unknown_stage.yaml": [
        "4: audience.stages[1]: 'buyer' is not one of: prospect, intent, lost or owner",
        "5: audience.intent_bands[0]: 'hot' is not one of: low, medium or high",
        "8: trigger.stage: '战败' is not one of: prospect, intent, lost or owner (战败 is lost)",
        "14: steps[0].actions[0].to: 'customer' is not one of: prospect, intent, lost or owner",
    ],
    "trigger_fields.yaml": [
        "3: trigger.days: required",
        "5: trigger.stage: unknown field; allowed here: days, on",
    ],
    "unknown_trigger.yaml": [
        "4: trigger: unknown on 'birthday': use contact_added, tag_added, stage_changed, intent_band, "
        "lead_assigned, no_reply or manual",
    ],
    "reply_type.yaml": [
        "9: steps[0].quick_replies[0]: unknown type 'video': use text, image, link or miniprogram",
        "11: steps[0].quick_replies[1]: needs `type:` (text, image, link or miniprogram)",
    ],
    "bad_links.yaml": [
        "11: steps[0].quick_replies[0].url: 'brand.example.com/quote' is not a web address: write http:// or https://…",
        "14: steps[0].quick_replies[1].appid: 'wx123' is not a mini-program appid (wx and 16 hex digits)",
        "15: steps[0].quick_replies[1].page: 'pages/testdrive/index': WeCom wants the mini-program page path "
        "to end in .html",
        "17: steps[0].quick_replies[2]: give exactly one of url or media_id",
    ],
}


def test_every_bad_fixture_has_its_expected_problems() -> None:
    assert sorted(p.name for p in (SOP / "bad").iterdir()) == sorted(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_card(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SOP)
    result = read_card(Path("bad") / name, LIBRARY)
    assert [str(p) for p in result.problems] == [f"bad/{name}:{line}" for line in BAD[name]]
    assert result.card is None and not result.ok


def test_a_card_id_in_two_files_rejects_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SOP)
    files = read_cards([Path("duplicate")], LIBRARY)
    assert [[str(p) for p in f.problems] for f in files] == [
        ["duplicate/a.yaml:1: id: same-card is also the id of the card in duplicate/b.yaml:2"],
        ["duplicate/b.yaml:2: id: same-card is also the id of the card in duplicate/a.yaml:1"],
    ]
    assert all(f.card is None for f in files)


def test_every_problem_of_every_file_is_reported_not_just_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SOP)
    files = read_cards([Path("bad"), Path("duplicate")], LIBRARY)
    assert len(files) == len(BAD) + 2
    assert sum(len(f.problems) for f in files) == sum(len(v) for v in BAD.values()) + 2


def test_without_a_library_names_are_not_checked_but_syntax_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SOP)
    assert read_card(Path("bad/unknown_tag.yaml")).ok
    assert read_card(Path("bad/unknown_roster.yaml")).ok
    assert read_card(Path("bad/working_hours.yaml")).ok  # hours are checked when given
    assert [p.line for p in read_card(Path("bad/tag_syntax.yaml")).problems] == [4, 12]


# -- the starter cards -------------------------------------------------------------------------------


def test_the_starter_cards_validate_against_the_tags_intake_uses() -> None:
    files = read_cards(
        [CARDS], Library(tags=STARTER_TAGS, models={"RAV4", "COROLLA", "AVALON", "BZ4X"}, **HOURS)
    )
    assert [str(p) for f in files for p in f.problems] == []
    cards = {f.card.id: f.card for f in files if f.card}
    assert sorted(cards) == [
        "first-maintenance",
        "high-intent-follow-up",
        "lost-lead-recall",
        "new-owner-care",
        "prospect-welcome",
        "referral",
        "test-drive-invite",
    ]
    assert {f.path.stem for f in files} == set(cards)  # one card a file, named by its id
    triggers = {card_id: card.trigger.on for card_id, card in cards.items()}
    assert triggers["prospect-welcome"] == "contact_added"
    assert triggers["high-intent-follow-up"] == "intent_band"
    assert cards["lost-lead-recall"].trigger.stage == "lost"
    assert cards["new-owner-care"].trigger.stage == "owner"
    kinds, actions, qa_keywords = set(), set(), set()
    for card in cards.values():
        assert 2 <= len(card.steps) <= 5
        assert any("{customer}" in step.reminder for step in card.steps)
        assert any(step.qa for step in card.steps)
        for step in card.steps:
            kinds |= {reply.type for reply in step.quick_replies}
            actions |= {action.type for action in step.actions}
            qa_keywords |= {k for qa in step.qa for k in qa.keywords}
    assert kinds == {"text", "image", "link", "miniprogram"}
    assert actions == {"tag", "stage", "send"}
    assert {"价格", "优惠", "试驾", "首保", "金融", "置换"} <= qa_keywords


def _readme() -> str:
    return (CARDS / "README.md").read_text(encoding="utf-8")


def test_the_readme_example_card_validates(tmp_path: Path) -> None:
    example = re.search(r"```yaml\n(.*?)```", _readme(), re.S)
    assert example is not None
    (tmp_path / "example.yaml").write_text(example.group(1), encoding="utf-8")
    result = read_card(tmp_path / "example.yaml", Library(**HOURS))
    assert result.problems == []
    assert result.card is not None and len(result.card.steps[0].quick_replies) == 4


def test_the_readme_schema_is_the_generated_one() -> None:
    embedded = card_module.schema_block(_readme())
    assert embedded is not None, "the schema markers are missing from sop_cards/README.md"
    assert embedded == card_module.schema_text(), "run: scrm sop schema --readme sop_cards/README.md"


def test_with_schema_replaces_only_the_block() -> None:
    markdown = f"before\n{card_module.SCHEMA_BEGIN}\nold\n{card_module.SCHEMA_END}\nafter\n"
    updated = card_module.with_schema(markdown)
    assert updated.startswith("before\n") and updated.endswith(f"{card_module.SCHEMA_END}\nafter\n")
    assert card_module.schema_block(updated) == card_module.schema_text()
    with pytest.raises(ValueError, match="markers"):
        card_module.with_schema("no markers")


# -- the model --------------------------------------------------------------------------------------


def _card(**changes) -> Card:
    body = {"id": "x", "title": "t", "trigger": {"on": "manual"}, "steps": [{"at": "day 0", "reminder": "r"}]}
    return Card.model_validate({**body, **changes})


def test_a_send_may_carry_a_mini_program() -> None:
    mini = {
        "type": "miniprogram",
        "title": "预约到店",
        "appid": "wx3f8a2b6c9d1e4f70",
        "page": "pages/booking/index.html?model={model}",
        "picurl": "https://brand.example.com/static/mp/booking-cover.jpg",
    }
    send = {"type": "send", "text": "{customer}您好，点击预约到店。", "attachments": [mini]}
    card = _card(steps=[{"at": "day 0", "reminder": "r", "actions": [send]}])
    [attachment] = card.steps[0].actions[0].attachments
    assert isinstance(attachment, card_module.MiniProgramReply)
    assert attachment.picurl == "https://brand.example.com/static/mp/booking-cover.jpg"
    with pytest.raises(ValueError, match="picurl"):  # the cover is still required
        _card(
            steps=[
                {
                    "at": "day 0",
                    "reminder": "r",
                    "actions": [{**send, "attachments": [{**mini, "picurl": None}]}],
                }
            ]
        )


def test_audience_matches_every_given_part() -> None:
    audience = _card(
        audience={
            "tags": "意向车型:RAV4 and not 客户阶段:车主",
            "stages": ["prospect", "intent"],
            "models": ["RAV4"],
        }
    ).audience
    assert audience.matches({"意向车型:RAV4"}, stage="intent", model="RAV4")
    assert not audience.matches({"意向车型:RAV4", "客户阶段:车主"}, stage="intent", model="RAV4")
    assert not audience.matches({"意向车型:RAV4"}, stage="owner", model="RAV4")
    assert not audience.matches({"意向车型:RAV4"}, stage="intent", model="BZ4X")
    assert _card().audience.matches()  # empty: everyone


def test_render_fills_known_placeholders() -> None:
    values = {"customer": "张先生", "advisor": "王芳", "dealer": "浦东店", "model": "RAV4"}
    assert (
        render("{customer}您好，我是{dealer}的{advisor}，{model}", values)
        == "张先生您好，我是浦东店的王芳，RAV4"
    )
    assert render("{customer}", {}) == ""


def test_texts_are_stripped_and_times_and_tags_canonical() -> None:
    card = _card(
        trigger={"on": "tag_added", "tag": " 客户阶段 ： 车主 "},
        steps=[
            {
                "at": "+1D  10:00",
                "reminder": "  提醒\n",
                "actions": [{"type": "tag", "add": ["活动：老带新"]}],
            }
        ],
    )
    assert card.trigger.tag == "客户阶段:车主"
    assert card.steps[0].at == "+1d 10:00" and card.steps[0].offset.days == 1
    assert card.steps[0].reminder == "提醒"
    assert card.tags_used() == ["客户阶段:车主", "活动:老带新"]


def test_cards_are_read_as_yaml_1_2() -> None:
    import yaml

    text = "on: contact_added\nat: 10:00\nyes: no\nflag: true\nn: 3\nf: 1.5\n"
    data = yaml.load(text, Loader=CardYamlLoader)  # noqa: S506 - a SafeLoader subclass
    assert data == {"on": "contact_added", "at": "10:00", "yes": "no", "flag": True, "n": 3, "f": 1.5}


def test_the_schema_describes_the_discriminated_parts() -> None:
    schema = card_module.json_schema()
    assert schema["title"] == "SOP card"
    assert set(schema["required"]) == {"id", "title", "trigger", "steps"}
    assert schema["properties"]["trigger"]["discriminator"]["propertyName"] == "on"
    assert set(schema["$defs"]["NoReply"]["required"]) == {"on", "days"}
    assert "pattern" in schema["$defs"]["Step"]["properties"]["at"]


# -- scrm sop validate ------------------------------------------------------------------------------


def test_validate_cli_prints_every_problem_and_exits_1(scrm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SOP)
    result = scrm("sop", "validate", "--no-db", "bad/step_order.yaml", "bad/empty_qa.yaml")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"bad/step_order.yaml:{BAD['step_order.yaml'][0]}",
        *(f"bad/empty_qa.yaml:{line}" for line in BAD["empty_qa.yaml"]),
        "2 card file(s): 0 valid, 2 with problems (4 in all)",
    ]


def test_validate_cli_defaults_to_the_sop_cards_folder(scrm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = scrm("sop", "validate", "--no-db")
    assert (result.exit_code, result.output) == (0, "7 card file(s): 7 valid\n")


def test_validate_cli_checks_tags_against_the_store(scrm, svc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    empty = scrm("sop", "validate")
    assert empty.exit_code == 0
    assert empty.output.startswith("note: the corp tag library is empty")
    now = datetime(2026, 11, 24, tzinfo=UTC)
    with svc.sessions() as session, session.begin():
        for n, tag in enumerate(sorted(STARTER_TAGS - {"活动:老带新"})):
            group, name = tag.split(":")
            session.add(CorpTag(tag_id=f"t{n}", group_id=group, group_name=group, name=name, synced_at=now))
        session.add(
            CorpTag(
                tag_id="gone", group_id="活动", group_name="活动", name="老带新", deleted=True, synced_at=now
            )
        )
    result = scrm("sop", "validate")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "sop_cards/referral.yaml:35: steps[0].actions[0].add[0]: unknown tag 活动:老带新 (not in the corp tag library)",
        "7 card file(s): 6 valid, 1 with problems (1 in all)",
    ]
    assert scrm("sop", "validate", "--no-db").exit_code == 0


def test_validate_cli_no_db_reads_the_hours_from_the_environment(
    scrm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SOP_WORKING_HOURS", "11:00-18:00")
    result = scrm("sop", "validate", "--no-db", "sop_cards/prospect-welcome.yaml")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "sop_cards/prospect-welcome.yaml:46: steps[1].at: 10:00 is outside working hours 11:00-18:00 (SOP_WORKING_HOURS)",
        "sop_cards/prospect-welcome.yaml:74: steps[3].at: 19:00 is outside working hours 11:00-18:00 (SOP_WORKING_HOURS)",
        "1 card file(s): 0 valid, 1 with problems (2 in all)",
    ]
    monkeypatch.setenv("SOP_WORKING_HOURS", "soon")
    assert "SOP_WORKING_HOURS / SOP_QUIET_HOURS" in scrm("sop", "validate", "--no-db").output


def test_schema_cli_prints_the_schema(scrm) -> None:
    result = scrm("sop", "schema")
    assert result.exit_code == 0 and result.output == card_module.schema_text()


def test_an_alias_inside_its_own_anchor_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    looped = tmp_path / "looped.yaml"
    looped.write_text(
        "id: looped\ntitle: t\ntrigger:\n  on: manual\nsteps: &steps\n  - at: day 0\n    reminder: hi\n"
        "    qa: *steps\n",
        encoding="utf-8",
    )
    good = tmp_path / "good.yaml"
    good.write_text("id: good\ntitle: t\ntrigger:\n  on: manual\nsteps:\n  - at: day 0\n    reminder: hi\n")
    files = read_cards([tmp_path], LIBRARY)
    assert [[str(p) for p in f.problems] for f in files] == [
        [],
        [
            f"{looped}:5: an alias (*name) inside its own anchor (&name) makes this part endless: "
            "write it out instead"
        ],
    ]
    assert files[0].ok and files[1].card is None
