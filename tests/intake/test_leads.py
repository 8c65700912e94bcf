"""Lead import (线索导入): phones, validation, idempotent import, assignment, the advisor's card,
the CSV command, and linking a lead to the WeCom customer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from sqlalchemy import func, select

from app.config import load_settings
from app.intake import assign, leads, phones
from app.intake import state as states
from app.store.models import Assignment, Effect, Interaction, Lead, LeadStatus
from tests.support import roster as rows
from workers.lead_jobs import notify_lead_advisor
from workers.queues import DEFAULT, queue

FIXTURES = Path(__file__).parent.parent / "fixtures" / "leads"
API = "https://qyapi.weixin.qq.com/cgi-bin/"
PHONE = "13800000001"


# -- roster and WeCom helpers (also used by tests/api) ----------------------------------------------


def seed_roster(svc) -> None:
    """SH01 (上海, also serves 苏州) sells RAV4 and CAMRY; HZ01 (杭州) RAV4 and BZ4X; BJ01 (北京)
    sells CAMRY and has no advisors. zhang.wei is SH01's RAV4 expert, li.na its CAMRY expert."""
    now = svc.clock.now()

    def advisor(userid, name, dealer_code, models):
        return rows.advisor(
            userid, now, name=name, dealer=dealer_code, models=models, languages=["zh"], segments=["prospect"],
            seniority=1,
        )  # fmt: skip

    rows.store(
        svc,
        [
            rows.dealer("SH01", now, name="上海店", city="上海", lat=31.23, lon=121.47, models=["RAV4", "CAMRY"],
                        territory=["苏州"]),
            rows.dealer("HZ01", now, name="杭州店", city="杭州", lat=30.27, lon=120.15, models=["RAV4", "BZ4X"]),
            rows.dealer("BJ01", now, name="北京店", city="北京", lat=39.90, lon=116.40, models=["CAMRY"]),
        ],
        [
            advisor("zhang.wei", "张伟", "SH01", ["RAV4"]),
            advisor("li.na", "李娜", "SH01", ["CAMRY"]),
            advisor("wang.fang", "王芳", "HZ01", ["BZ4X", "RAV4"]),
        ],
    )  # fmt: skip


@pytest.fixture()
def roster(svc) -> None:
    seed_roster(svc)


@pytest.fixture()
def wecom_http() -> Iterator[responses.RequestsMock]:
    """WeCom's API, mocked: gettoken and message/send (which echoes a msgid)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(API + "gettoken", json={"errcode": 0, "access_token": "TOKEN", "expires_in": 7200})
        mock.post(API + "message/send", json={"errcode": 0, "errmsg": "ok", "msgid": "MSG-1"})
        yield mock


def sent_cards(http: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(c.request.body) for c in http.calls if c.request.url.startswith(API + "message/send")]


def lead_row(**fields: Any) -> dict[str, Any]:
    row = {"source": "cdp", "name": "张三", "phone": PHONE, "model": "RAV4", "city": "上海", "dealer": "SH01"}
    row.update(fields)
    return {k: v for k, v in row.items() if v is not None}


def run(svc, *rows: Any, **kwargs: Any) -> leads.ImportReport:
    return leads.import_leads(svc, enumerate(rows, start=1), **kwargs)


def everything_stored(svc) -> str:
    """Every lead, assignment, interaction and effect as text: to look for a phone number."""
    with svc.sessions() as session:
        parts = []
        for model in (Lead, Assignment, Interaction, Effect):
            for row in session.scalars(select(model)):
                parts.append(repr({c.key: getattr(row, c.key) for c in model.__table__.columns}))
    return "\n".join(parts)


# -- phones -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "13800000001",
        "+86 138 0000 0001",
        "86-138-0000-0001",
        "+8613800000001",
        "0086 13800000001",
        "138-0000-0001",
    ],
)
def test_phone_normalise_accepts_prefixes_spaces_and_dashes(raw: str) -> None:
    assert phones.normalise(raw) == PHONE


@pytest.mark.parametrize(
    "raw", ["", "12800000001", "1380000000", "138000000012", "+1 13800000001", "1380000000a"]
)
def test_phone_normalise_rejects_what_is_not_a_mobile_number(raw: str) -> None:
    with pytest.raises(phones.PhoneError) as exc:
        phones.normalise(raw)
    assert raw not in str(exc.value) or not raw


def test_phone_hash_is_keyed_and_mask_hides_the_middle() -> None:
    one = load_settings({"SCRM_MODE": "test", "PHONE_HASH_KEY": "k1"}, environ={})
    two = load_settings({"SCRM_MODE": "test", "PHONE_HASH_KEY": "k2"}, environ={})
    assert phones.phone_hash(one, "+86 138-0000-0001") == phones.phone_hash(one, PHONE)
    assert phones.phone_hash(one, PHONE) != phones.phone_hash(two, PHONE)
    assert len(phones.phone_hash(one, PHONE)) == 64
    assert phones.mask("+86 13800000001") == "138****0001"


# -- validation -------------------------------------------------------------------------------------


def test_each_invalid_field_is_reported_and_good_rows_still_import(svc, roster) -> None:
    report = run(
        svc,
        lead_row(phone="12345"),
        lead_row(dealer="XX99", intent=150, campaign="spring 26"),
        lead_row(model="SUPRA", external_ref="R-1"),
        lead_row(phone=None),
        lead_row(source=None),
        lead_row(budget="x" * 33, favourite_colour="red"),
        "not an object",
        lead_row(),
    )
    errors = [r.errors for r in report.results]
    assert errors[0] == ["phone: must be a Chinese mobile number: 11 digits starting 13-19 (+86 allowed)"]
    assert errors[1] == [
        "dealer: unknown dealer 'XX99'",
        "intent: Input should be less than or equal to 100",
        "campaign: must be 1-24 of A-Z a-z 0-9 _ -",
    ]
    assert errors[2] == ["model: unknown model 'SUPRA': no dealer sells it"]
    assert errors[3] == ["lead: needs a phone, a unionid or an external_ref"]
    assert errors[4] == ["source: is required (e.g. cdp, autohome, dongchedi, website)"]
    assert errors[5] == [
        "budget: String should have at most 32 characters",
        "favourite_colour: Extra inputs are not permitted",
    ]
    assert errors[6] == ["lead: must be an object of lead fields"]
    assert [r.status for r in report.results] == ["invalid"] * 7 + ["created"]
    assert (report.created, report.duplicates, report.invalid) == (1, 0, 7)
    assert "12345" not in json.dumps(report.to_json())


def test_codes_are_matched_case_insensitively_and_numbers_become_text(svc, roster) -> None:
    report = run(
        svc, lead_row(model="rav4", dealer="sh01", external_ref=12345, phone=13800000001, intent="85")
    )
    assert report.results[0].status == "created", report.results[0].errors
    with svc.sessions() as session:
        lead = session.get(Lead, report.results[0].lead_id)
    assert (lead.model, lead.external_ref, lead.intent, lead.lead_key) == ("RAV4", "12345", 85.0, "cdp:12345")


# -- import -----------------------------------------------------------------------------------------


def test_a_lead_is_stored_assigned_and_its_card_enqueued(svc, roster) -> None:
    report = run(svc, lead_row(phone="+86 138-0000-0001", budget="20-25万", intent=85, campaign="spring26"))
    result = report.results[0]
    assert (result.status, result.advisor, result.errors) == ("created", "zhang.wei", [])
    with svc.sessions() as session:
        lead = session.get(Lead, result.lead_id)
        assignment = session.scalar(select(Assignment).where(Assignment.lead_id == lead.id))
        kinds = {row.kind: row for row in session.scalars(select(Interaction))}
    assert lead.status == LeadStatus.ASSIGNED
    assert (lead.advisor_userid, lead.dealer_code) == ("zhang.wei", "SH01")
    assert lead.phone_hash == phones.phone_hash(svc.settings, PHONE)
    assert lead.phone_masked == "138****0001"
    assert lead.lead_key == f"cdp:phone:{lead.phone_hash}:RAV4"
    assert len(lead.link_token) == 10 and set(lead.link_token) <= set(leads.LINK_ALPHABET)
    assert leads.lead_state(lead) == f"ld.{lead.link_token}"
    assert (assignment.dedup_key, assignment.reason, assignment.status) == (
        f"lead:{lead.id}",
        "lead",
        "assigned",
    )
    assert assignment.advisor_userid == "zhang.wei"
    assert assignment.explanation["chosen"]["breakdown"]["model"] == 3.0

    imported, assigned = kinds["lead_imported"], kinds["assigned"]
    assert imported.dedup_key == f"lead:{lead.id}:imported"
    assert imported.payload == {
        "lead_id": lead.id,
        "source": "cdp",
        "external_ref": None,
        "model": "RAV4",
        "city": "上海",
        "campaign": "spring26",
        "phone_masked": "138****0001",
    }
    assert (assigned.advisor_userid, assigned.dealer_code) == ("zhang.wei", "SH01")
    assert assigned.payload["subject"] == "lead" and assigned.payload["lead_id"] == lead.id
    assert assigned.payload["score"] == assignment.score
    assert assigned.payload["explanation"] == assignment.explanation

    jobs = queue(DEFAULT, svc.redis).jobs
    assert [(j.id, j.func_name, j.args) for j in jobs] == [
        (f"lead-card-{lead.id}", "workers.lead_jobs.notify_lead_advisor", [lead.id])
    ]
    assert PHONE not in everything_stored(svc)


def test_importing_the_same_lead_again_changes_nothing(svc, roster) -> None:
    first = run(svc, lead_row(), lead_row(external_ref="R-1"))
    with svc.sessions() as session:
        before = session.scalar(select(func.count()).select_from(Interaction))
    svc.redis.delete(*[f"rq:job:{j.id}" for j in queue(DEFAULT, svc.redis).jobs])  # as if they ran …
    queue(DEFAULT, svc.redis).empty()
    with svc.sessions.begin() as session:  # … and sent their cards
        for result in first.results:
            session.add(
                Effect(key=leads.card_effect_key(result.lead_id), result={}, created_at=svc.clock.now())
            )

    again = run(
        svc, lead_row(name="改了名字", phone="+86 13800000001"), lead_row(external_ref="R-1", model="CAMRY")
    )
    assert [r.status for r in again.results] == ["duplicate", "duplicate"]
    assert [r.lead_id for r in again.results] == [r.lead_id for r in first.results]
    assert [r.advisor for r in again.results] == ["zhang.wei", "zhang.wei"]
    assert (again.created, again.duplicates, again.invalid) == (0, 2, 0)
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 2
        assert session.scalar(select(func.count()).select_from(Assignment)) == 2
        assert session.scalar(select(func.count()).select_from(Interaction)) == before
        assert {lead.name for lead in session.scalars(select(Lead))} == {"张三"}
    assert queue(DEFAULT, svc.redis).count == 0


def test_one_request_with_the_same_lead_twice_stores_it_once(svc, roster) -> None:
    report = run(svc, lead_row(), lead_row(phone="138 0000 0001"))
    assert [r.status for r in report.results] == ["created", "duplicate"]
    assert report.results[0].lead_id == report.results[1].lead_id


def test_the_lead_key_tells_leads_apart(svc, roster) -> None:
    report = run(
        svc,
        lead_row(),  # phone + RAV4
        lead_row(model="CAMRY"),  # same phone, another model: another lead
        lead_row(source="autohome"),  # another source
        lead_row(phone=None, unionid="o-union-1"),
        lead_row(external_ref="R-9"),  # the source's own id wins over the phone
    )
    assert [r.status for r in report.results] == ["created"] * 5
    with svc.sessions() as session:
        keys = [session.get(Lead, r.lead_id).lead_key for r in report.results]
    phone_hash = phones.phone_hash(svc.settings, PHONE)
    assert keys == [
        f"cdp:phone:{phone_hash}:RAV4",
        f"cdp:phone:{phone_hash}:CAMRY",
        f"autohome:phone:{phone_hash}:RAV4",
        "cdp:unionid:o-union-1:RAV4",
        "cdp:R-9",
    ]


def test_a_lead_nobody_can_take_is_unassigned_without_a_card(svc, roster) -> None:
    report = run(svc, lead_row(dealer="BJ01", city="北京", model="CAMRY"), lead_row(dealer=None, city="拉萨"))
    assert [(r.status, r.advisor) for r in report.results] == [("created", None), ("created", None)]
    with svc.sessions() as session:
        statuses = [session.get(Lead, r.lead_id).status for r in report.results]
        rows = list(session.scalars(select(Assignment).order_by(Assignment.id)))
        kinds = sorted(i.kind for i in session.scalars(select(Interaction)))
    assert statuses == [LeadStatus.UNASSIGNED, LeadStatus.UNASSIGNED]
    assert [(a.status, a.advisor_userid) for a in rows] == [("unassigned", None), ("unassigned", None)]
    assert rows[0].explanation["reason"] == "no eligible advisor in the territory"
    assert kinds == ["lead_imported", "lead_imported", "unassigned", "unassigned"]
    assert queue(DEFAULT, svc.redis).count == 0


def test_a_lead_rerouted_to_the_nearest_seller(svc, roster) -> None:
    report = run(svc, lead_row(model="BZ4X"))  # SH01 does not sell it; HZ01 does
    assert report.results[0].advisor == "wang.fang"
    with svc.sessions() as session:
        lead = session.get(Lead, report.results[0].lead_id)
    assert (lead.dealer_code, lead.status) == ("HZ01", LeadStatus.ASSIGNED)


def test_a_lead_left_new_by_a_crash_is_finished_by_the_next_import(svc, roster, monkeypatch) -> None:
    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(leads.assign.LoadBook, "decide", crash)  # while deciding the chunk
        with pytest.raises(RuntimeError):
            run(svc, lead_row())
    with svc.sessions() as session:
        assert session.scalar(select(Lead.status)) == LeadStatus.NEW

    report = run(svc, lead_row())
    assert [(r.status, r.advisor) for r in report.results] == [("duplicate", "zhang.wei")]
    with svc.sessions() as session:
        assert session.scalar(select(Lead.status)) == LeadStatus.ASSIGNED
        assert session.scalar(select(func.count()).select_from(Interaction)) == 2
    assert queue(DEFAULT, svc.redis).count == 1


def test_a_card_whose_job_was_lost_is_enqueued_again_on_reimport(svc, roster) -> None:
    lead_id = run(svc, lead_row()).results[0].lead_id
    queue(DEFAULT, svc.redis).empty()  # the job is gone, the card never went
    assert run(svc, lead_row()).results[0].status == "duplicate"
    assert [j.id for j in queue(DEFAULT, svc.redis).jobs] == [f"lead-card-{lead_id}"]
    assert run(svc, lead_row()).results[0].status == "duplicate"  # the job is there: not twice
    assert queue(DEFAULT, svc.redis).count == 1


# -- the advisor's card -----------------------------------------------------------------------------


def test_the_card_tells_the_advisor_who_and_why_once(app, svc, roster, wecom_http, work) -> None:
    lead_id = run(svc, lead_row(budget="20-25万", intent=85, source="autohome")).results[0].lead_id
    work()
    cards = sent_cards(wecom_http)
    assert len(cards) == 1
    card = cards[0]
    assert card["touser"] == "zhang.wei" and card["msgtype"] == "textcard"
    assert card["enable_duplicate_check"] == 1
    assert card["textcard"]["title"] == "新线索：张三 · RAV4"
    assert card["textcard"]["url"] == f"http://localhost:5000/leads/{lead_id}"
    description = card["textcard"]["description"]
    for text in ("上海", "20-25万", "意向分：85", "138****0001", "汽车之家", "空闲度 +12.0", "车型专长 +3.0"):
        assert text in description
    assert PHONE not in json.dumps(card, ensure_ascii=False)

    with app.app_context():
        assert notify_lead_advisor(lead_id) == "already sent"
    assert len(sent_cards(wecom_http)) == 1
    with svc.sessions() as session:
        sent = list(session.scalars(select(Interaction).where(Interaction.kind == "lead_card_sent")))
    assert len(sent) == 1
    assert (sent[0].advisor_userid, sent[0].payload) == ("zhang.wei", {"lead_id": lead_id, "msgid": "MSG-1"})
    assert PHONE not in everything_stored(svc)


def test_a_run_that_died_after_sending_records_the_interaction_without_sending_again(
    app, svc, roster, wecom_http
) -> None:
    lead_id = run(svc, lead_row()).results[0].lead_id
    with svc.sessions.begin() as session:
        session.add(
            Effect(
                key=leads.card_effect_key(lead_id),
                result={"advisor": "zhang.wei", "msgid": "MSG-0", "sent_at": "2026-11-24T02:00:00+00:00"},
                created_at=svc.clock.now(),
            )
        )
    with app.app_context():
        assert notify_lead_advisor(lead_id) == "already sent"
    assert sent_cards(wecom_http) == []
    with svc.sessions() as session:
        sent = session.scalar(select(Interaction).where(Interaction.kind == "lead_card_sent"))
    assert sent.payload == {"lead_id": lead_id, "msgid": "MSG-0"}


def test_why_lists_the_largest_components() -> None:
    explanation = {
        "chosen": {"breakdown": {"model": 3.0, "spare_capacity": 11.4, "acceptance": 0.5, "language": 0.0}},
        "rerouted": False,
    }
    assert leads.why(explanation) == "空闲度 +11.4 · 车型专长 +3.0 · 接待率 +0.5"
    assert leads.why({"chosen": None}) == "—"
    assert leads.why({**explanation, "rerouted": True}).endswith("本店无此车型，转至最近门店")


# -- CSV import -------------------------------------------------------------------------------------


def test_csv_with_chinese_headers(svc, roster, scrm) -> None:
    result = scrm("leads", "import", str(FIXTURES / "good.csv"), "--source", "cdp")
    assert result.exit_code == 0, result.output
    assert f"{FIXTURES / 'good.csv'}: 3 created, 0 duplicates, 0 invalid (3 rows)" in result.output
    with svc.sessions() as session:
        rows = {lead.name: lead for lead in session.scalars(select(Lead))}
    assert rows["张三"].source == "autohome" and rows["张三"].campaign == "spring26"
    assert rows["李四"].source == "cdp"  # --source fills rows without one
    assert (rows["张三"].advisor_userid, rows["李四"].advisor_userid, rows["王五"].advisor_userid) == (
        "zhang.wei",
        "li.na",
        "wang.fang",
    )
    again = scrm("leads", "import", str(FIXTURES / "good.csv"), "--source", "cdp")
    assert again.exit_code == 0
    assert "0 created, 3 duplicates, 0 invalid" in again.output


def test_csv_import_while_assignment_is_busy_says_so_and_running_it_again_finishes(
    svc, roster, scrm, monkeypatch
) -> None:
    monkeypatch.setattr(assign, "LOCK_WAIT_SECONDS", 0.05)
    svc.redis.set(assign.LOCK_NAME, "another importer", px=10_000)
    path = FIXTURES / "good.csv"
    busy = scrm("leads", "import", str(path), "--source", "cdp")
    assert busy.exit_code == 1
    assert f"Error: {path}: advisor assignment is busy" in busy.output
    assert "Traceback" not in busy.output

    svc.redis.delete(assign.LOCK_NAME)
    again = scrm("leads", "import", str(path), "--source", "cdp")
    assert again.exit_code == 0, again.output
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).where(Lead.status == LeadStatus.ASSIGNED)) == 3


def test_csv_errors_name_file_line_and_field_and_good_rows_import(svc, roster, scrm) -> None:
    path = FIXTURES / "mixed.csv"
    result = scrm("leads", "import", str(path), "--source", "cdp")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{path} line 1: column 'shoe_size' is not a lead field; ignored" in lines
    assert (
        f"{path} line 3: phone: must be a Chinese mobile number: 11 digits starting 13-19 (+86 allowed)"
        in lines
    )
    assert f"{path} line 5: model: unknown model 'SUPRA': no dealer sells it" in lines
    assert f"{path} line 7: dealer: unknown dealer 'XX99'" in lines
    assert f"{path} line 7: intent: Input should be less than or equal to 100" in lines
    assert f"{path} line 8: lead: needs a phone, a unionid or an external_ref" in lines
    assert f"{path}: 2 created, 0 duplicates, 4 invalid (6 rows)" in lines
    with svc.sessions() as session:
        assert sorted(session.scalars(select(Lead.external_ref))) == ["A-1", "A-6"]


def test_csv_without_a_source_and_in_gb18030(svc, roster, scrm, tmp_path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("姓名,手机号,车型\n赵六,13800000021,RAV4\n".encode("gb18030"))
    result = scrm("leads", "import", str(path))
    assert result.exit_code == 1
    assert f"{path} line 2: source: is required (e.g. cdp, autohome, dongchedi, website)" in result.output
    result = scrm("leads", "import", str(path), "--source", "website")
    assert result.exit_code == 0, result.output
    with svc.sessions() as session:
        lead = session.scalar(select(Lead))
    assert (lead.name, lead.source, lead.status) == (
        "赵六",
        "website",
        LeadStatus.UNASSIGNED,
    )  # no city/dealer


# -- linking ----------------------------------------------------------------------------------------


def _link(svc, external_userid: str, unionid: str | None, raw_state: str, advisor: str = "zhang.wei"):
    with svc.sessions.begin() as session:
        lead = leads.link_on_add(
            session,
            external_userid=external_userid,
            unionid=unionid,
            state=states.parse(raw_state),
            advisor_userid=advisor,
            now=svc.clock.now(),
        )
        return None if lead is None else (lead.id, lead.status, lead.external_userid, lead.advisor_userid)


def test_link_by_the_leads_own_code(svc, roster) -> None:
    lead_id = run(svc, lead_row()).results[0].lead_id
    with svc.sessions() as session:
        token_state = leads.lead_state(session.get(Lead, lead_id))
    assert _link(svc, "wm-1", None, token_state) == (lead_id, LeadStatus.LINKED, "wm-1", "zhang.wei")
    assert _link(svc, "wm-1", None, token_state) == (lead_id, LeadStatus.LINKED, "wm-1", "zhang.wei")
    assert _link(svc, "wm-2", None, token_state) is None  # the code was passed on: not this lead
    with svc.sessions() as session:
        lead = session.get(Lead, lead_id)
        assert lead.linked_at == svc.clock.now()
        assert leads.lead_for_customer(session, "wm-1").id == lead_id
        assert leads.lead_for_customer(session, "wm-2") is None


def test_link_by_unionid_takes_the_most_recent_open_lead(svc, roster, clock) -> None:
    older = run(svc, lead_row(phone=None, unionid="o-u1", model="CAMRY")).results[0].lead_id
    clock.advance(60)
    newer = run(svc, lead_row(phone=None, unionid="o-u1")).results[0].lead_id
    unassigned = (
        run(svc, lead_row(phone=None, unionid="o-u2", dealer="BJ01", model="CAMRY")).results[0].lead_id
    )

    assert _link(svc, "wm-1", "o-u1", "qr.SH01.RAV4")[0] == newer
    assert _link(svc, "wm-1", "o-u1", "qr.SH01.RAV4")[0] == newer  # again: the same lead
    assert _link(svc, "wm-9", "o-u9", "qr.SH01.RAV4") is None
    assert _link(svc, "wm-9", None, "ld.NOSUCHTOKN") is None
    # A lead without an advisor takes the one who was added (and that advisor's dealer).
    assert _link(svc, "wm-2", "o-u2", "lp.SH01", advisor="li.na") == (
        unassigned,
        LeadStatus.LINKED,
        "wm-2",
        "li.na",
    )
    with svc.sessions() as session:
        assert session.get(Lead, older).status == LeadStatus.ASSIGNED
        assert session.get(Lead, unassigned).dealer_code == "SH01"
