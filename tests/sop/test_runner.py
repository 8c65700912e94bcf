"""Due steps against the WeCom sandbox: the reminder card's content, the schedule across days,
each step exactly once (duplicate jobs, concurrent runs, a run killed after its WeCom calls),
actions (tag, stage, send), stale steps, customers who left, a step that keeps failing, the
sweep that enqueues due steps, `scrm sop run-due`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rq import Queue
from sqlalchemy import delete, select

from app.intake import tagging
from app.sandbox import SandboxConfig, SandboxServer, run_sandbox
from app.sandbox.assets import cover_png
from app.sandbox.handlers.msg_templates import msg_templates
from app.sandbox.models import Customer as SandboxCustomer
from app.sandbox.models import Relation as SandboxRelation
from app.sop import runner, triggers
from app.sop.enrollment import enroll
from app.store import customers
from app.store.models import Customer, Effect, FollowRelation, Interaction, RelationStatus
from app.store.sop_models import SopEnrollment, SopStepRun
from app.wecom import media
from tests.sop.test_enrollment import (
    TAGS,
    add_customer,
    card_body,
    enrollments,
    kinds,
    load,
    record,
    seed_roster,
)
from workers import sop_jobs
from workers.queues import DEFAULT, queue


@pytest.fixture()
def wecom(clock) -> Iterator[SandboxServer]:
    # On the test's clock: WeCom's send list (by time) must agree with ours.
    with run_sandbox(SandboxConfig(seed=5, retry_delay=0.05), clock) as server:
        yield server


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom: SandboxServer) -> dict[str, Any]:
    return {**app_config, "WECOM_API_BASE": wecom.api_base, "PUBLIC_BASE_URL": "https://scrm.example.com"}


@pytest.fixture()
def corp(svc, wecom: SandboxServer) -> SandboxServer:
    for userid, name in (("sh_a", "王芳"), ("sh_b", "李强"), ("gz_a", "陈明")):
        wecom.state.add_employee(userid, name)
    for group, names in TAGS.items():
        wecom.state.add_tags(None, group, [{"name": name} for name in names])
    tagging.sync_corp_tags(svc)
    seed_roster(svc, tag_ids={})
    return wecom


def ids_of(svc, names: list[str]) -> list[str]:
    with svc.sessions() as session:
        found = {f"{g}:{n}": t for t, (g, n) in tagging.tag_names(session, _all_tag_ids(session)).items()}
    return [found[name] for name in names]


def _all_tag_ids(session) -> list[str]:
    from app.store.models import CorpTag

    return list(session.scalars(select(CorpTag.tag_id)))


def customer(
    svc, corp: SandboxServer, ext: str, advisor: str = "sh_a", *, tags: list[str] = (), **kw: Any
) -> None:
    """The customer on both sides: the sandbox (customer, relation with tags) and the store."""
    tag_ids = ids_of(svc, list(tags))
    with corp.state.lock:
        corp.state.customers[ext] = SandboxCustomer(ext, kw.get("name", "张先生"))
        corp.state.relations[(advisor, ext)] = SandboxRelation(
            advisor, ext, corp.state.now(), tag_ids=list(tag_ids)
        )
    add_customer(svc, ext, advisor, tag_ids=tag_ids, **kw)


def cards_to(corp: SandboxServer, userid: str) -> list[Any]:
    return [m for m in corp.state.app_messages if m.touser == [userid] and m.msgtype == "textcard"]


def step_runs(svc) -> list[SopStepRun]:
    with svc.sessions() as session:
        return list(session.scalars(select(SopStepRun).order_by(SopStepRun.id)))


# -- the reminder and the schedule -------------------------------------------------------------------


def test_a_due_step_sends_the_advisor_a_reminder_card(svc, corp, clock) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    row = enroll(svc, "welcome", "wm1")
    report = runner.run_due(svc)
    assert (report.selected, report.done, report.failed) == (1, 1, 0)

    [card] = cards_to(corp, "sh_a")
    content = card.content
    assert content["title"] == "SOP提醒：张先生 · 新客欢迎"
    assert '<div class="gray">新客欢迎 · 第1/3步 · 一汽丰田上海浦东店</div>' in content["description"]
    assert "<div>问候 张先生，介绍 RAV4</div>" in content["description"]
    assert "建议话术：张先生您好，我是一汽丰田上海浦东店的王芳 / [链接] RAV4 亮点" in content["description"]
    assert content["url"] == "https://scrm.example.com/sidebar?external_userid=wm1&card=welcome&step=0"
    assert content["btntxt"] == "查看话术"

    [done] = enrollments(svc)
    assert (done.next_step, done.next_due_at, done.status) == (
        1,
        datetime(2026, 11, 25, 2, tzinfo=UTC),
        "active",
    )
    [run] = step_runs(svc)
    assert (run.enrollment_id, run.step_index, run.status, run.reminder_msgid) == (
        row.id,
        0,
        "done",
        card.msgid,
    )
    assert kinds(svc, "wm1") == ["sop_enrolled", "sop_reminded", "sop_step_done"]
    with svc.sessions() as session:
        reminded = session.scalars(select(Interaction).where(Interaction.kind == "sop_reminded")).one()
    assert reminded.payload == {
        "card": "welcome",
        "version": 1,
        "step": 0,
        "enrollment": row.id,
        "msgid": card.msgid,
    }
    assert runner.run_due(svc).selected == 0


def test_steps_fall_due_across_days(svc, corp, clock) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    enroll(svc, "welcome", "wm1")
    runner.run_due(svc)

    clock.advance(timedelta(hours=23, minutes=59))  # 09:59 the next day: +1d 10:00 not yet
    assert runner.run_due(svc).selected == 0
    clock.advance(timedelta(minutes=1))
    assert runner.run_due(svc).done == 1
    [row] = enrollments(svc)
    assert row.next_due_at == datetime(2026, 11, 27, 2, tzinfo=UTC)  # +3d: 72 h after enrollment

    clock.advance(timedelta(days=2))
    report = runner.run_due(svc)
    assert (report.done, report.completed) == (1, 1)
    [row] = enrollments(svc)
    assert (row.status, row.next_step, row.next_due_at) == ("completed", 3, None)
    assert [c.content["url"][-6:] for c in cards_to(corp, "sh_a")] == ["step=0", "step=1", "step=2"]
    assert kinds(svc, "wm1")[-2:] == ["sop_step_done", "sop_completed"]


def test_an_evening_enrollment_is_reminded_the_next_morning(svc, corp, clock) -> None:
    load(svc, card_body(steps=[{"at": "+2h", "reminder": "跟进 {customer}"}]))
    customer(svc, corp, "wm1")
    clock.advance(timedelta(hours=10, minutes=30))  # 20:30 in Shanghai
    enroll(svc, "welcome", "wm1")
    clock.advance(timedelta(hours=12))  # 08:30: quiet until 09:00
    assert runner.run_due(svc).selected == 0
    clock.advance(timedelta(minutes=30))
    assert runner.run_due(svc).completed == 1


# -- exactly once ----------------------------------------------------------------------------------


def test_duplicate_jobs_for_a_step_run_it_once(svc, corp, work) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    row = enroll(svc, "welcome", "wm1")
    jobs = queue(DEFAULT, svc.redis)
    for n in range(3):
        jobs.enqueue_call(sop_jobs.RUN_STEPS, args=([[row.id, 0]],), job_id=f"dup-{n}")
    work()
    assert len(cards_to(corp, "sh_a")) == 1
    assert [r.step_index for r in step_runs(svc)] == [0]
    results = [Queue.fetch_job(jobs, f"dup-{n}").return_value() for n in range(3)]
    assert sum("1 done" in r for r in results) == 1, results


def test_concurrent_runs_of_a_step_run_it_once(svc, corp) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    row = enroll(svc, "welcome", "wm1")
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        outcomes.append(runner.run_step(svc, row.id, 0))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(set(outcomes) - {"done"}) in ([], ["busy"], ["not_due"], ["busy", "not_due"]), outcomes
    assert outcomes.count("done") == 1
    assert len(cards_to(corp, "sh_a")) == 1
    assert len(step_runs(svc)) == 1


def test_a_run_killed_after_its_wecom_calls_does_not_repeat_them(svc, corp, clock, monkeypatch) -> None:
    load(
        svc,
        card_body(
            steps=[
                {"at": "day 0", "reminder": "问候 {customer}", "actions": [{"type": "send", "text": "您好"}]},
                {"at": "+3d", "reminder": "r"},
            ]
        ),
    )
    customer(svc, corp, "wm1")
    row = enroll(svc, "welcome", "wm1")
    finish = runner._finish

    def killed(*args: Any, **kwargs: Any):
        raise KeyboardInterrupt("the work horse died")

    # 1. Dies after WeCom, before the store: the lease is given back, the next run reuses the ledger.
    monkeypatch.setattr(runner, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_step(svc, row.id, 0)
    assert len(cards_to(corp, "sh_a")) == 1 and len(msg_templates(corp.state)) == 1
    assert step_runs(svc) == []
    monkeypatch.setattr(runner, "_finish", finish)
    assert runner.run_step(svc, row.id, 0) == "done"
    assert len(cards_to(corp, "sh_a")) == 1 and len(msg_templates(corp.state)) == 1

    # 2. Killed for real (no release): the lease keeps others off until it runs out.
    customer(svc, corp, "wm2")
    row2 = enroll(svc, "welcome", "wm2")
    monkeypatch.setattr(runner, "_finish", killed)
    monkeypatch.setattr(runner, "release", lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        runner.run_step(svc, row2.id, 0)
    monkeypatch.setattr(runner, "_finish", finish)
    assert runner.run_step(svc, row2.id, 0) == "busy"
    clock.advance(timedelta(seconds=svc.settings.JOB_TIMEOUT + 31))
    # ... and it died even before writing the ledger: WeCom's duplicate check keeps the card single.
    with svc.sessions.begin() as session:
        session.execute(delete(Effect).where(Effect.key == f"sop-step:{row2.id}:0:reminder"))
    assert runner.run_step(svc, row2.id, 0) == "done"
    assert len(cards_to(corp, "sh_a")) == 2  # one per customer
    assert len(msg_templates(corp.state)) == 2
    assert [(r.enrollment_id, r.step_index) for r in step_runs(svc)] == [(row.id, 0), (row2.id, 0)]


# -- actions ----------------------------------------------------------------------------------------


def test_actions_tag_stage_and_send(svc, corp) -> None:
    actions = [
        {"type": "tag", "add": ["活动:试驾专场", "活动:新活动"], "remove": ["客户阶段:潜客"]},
        {"type": "stage", "to": "intent"},
        {
            "type": "send",
            "text": "{customer}您好，{dealer}本周末有{model}试驾专场",
            "attachments": [{"type": "link", "title": "报名", "url": "https://brand.example.com/e/{model}"}],
        },
    ]
    load(
        svc, card_body("actions", steps=[{"at": "day 0", "reminder": "邀约 {customer}", "actions": actions}])
    )
    load(
        svc,
        card_body(
            "on-intent", trigger={"on": "stage_changed", "stage": "intent"}, audience={"stages": ["intent"]}
        ),
    )
    load(svc, card_body("on-tag", trigger={"on": "tag_added", "tag": "活动:试驾专场"}, audience={}))
    customer(svc, corp, "wm1", tags=["客户阶段:潜客", "意向车型:RAV4"])
    enroll(svc, "actions", "wm1")
    assert runner.run_due(svc).completed == 1

    relation = corp.state.relations[("sh_a", "wm1")]
    names = {
        f"{corp.state.tag_groups[corp.state.tags[t].group_id].group_name}:{corp.state.tags[t].name}"
        for t in relation.tag_ids
    }
    assert names == {"活动:试驾专场", "活动:新活动", "意向车型:RAV4"}
    with svc.sessions() as session:
        stored = session.scalars(select(FollowRelation)).one()
        assert set(stored.tag_ids) == set(relation.tag_ids)
        assert session.get(Customer, "wm1").profile["segment"] == "intent"
        written = {
            i.kind: i.payload
            for i in session.scalars(
                select(Interaction).where(Interaction.kind.in_(["tagged", "stage_changed", "sop_step_done"]))
            )
        }
    assert written["stage_changed"]["from"] == "prospect" and written["stage_changed"]["by"] == "sop:actions"
    assert written["tagged"]["tags"] == ["活动:试驾专场", "活动:新活动"] and written["tagged"]["removed"] == [
        "客户阶段:潜客"
    ]
    assert [a["status"] for a in written["sop_step_done"]["actions"]] == ["marked", "changed", "prepared"]
    [template] = msg_templates(corp.state)
    assert (template.sender, template.external_userids) == ("sh_a", ["wm1"])
    assert template.text == "张先生您好，一汽丰田上海浦东店本周末有RAV4试驾专场"
    assert template.attachments == [
        {"msgtype": "link", "link": {"title": "报名", "url": "https://brand.example.com/e/RAV4"}}
    ]

    # What the step did triggers other cards through the feed.
    triggers.consume_all(svc)
    assert {e.card_id for e in enrollments(svc)} == {"actions", "on-intent", "on-tag"}


# -- mini-program covers ----------------------------------------------------------------------------


def _mini_send(picurl: str) -> dict[str, Any]:
    card = {"type": "miniprogram", "title": "{model} 预约试驾", "appid": "wx3f8a2b6c9d1e4f70"}
    return {
        "type": "send",
        "text": "{customer}您好，点击预约试驾",
        "attachments": [{**card, "page": "pages/td/index.html?model={model}", "picurl": picurl}],
    }


def test_a_send_with_a_mini_program_uploads_its_cover_once(svc, corp) -> None:
    send = _mini_send(f"{corp.url}/sandbox/assets/cover.png")
    load(svc, card_body("mini", steps=[{"at": "day 0", "reminder": "邀约 {customer}", "actions": [send]}]))
    for ext in ("wm1", "wm2"):
        customer(svc, corp, ext)
        enroll(svc, "mini", ext)
    assert runner.run_due(svc).completed == 2

    [uploaded] = corp.state.media.values()  # two steps, one upload (the cache)
    assert uploaded.type == "image" and uploaded.sha256 == hashlib.sha256(cover_png()).hexdigest()
    first, second = msg_templates(corp.state)
    assert first.external_userids == ["wm1"] and second.external_userids == ["wm2"]
    assert first.attachments == [
        {
            "msgtype": "miniprogram",
            "miniprogram": {
                "title": "RAV4 预约试驾",
                "pic_media_id": uploaded.media_id,
                "appid": "wx3f8a2b6c9d1e4f70",
                "page": "pages/td/index.html?model=RAV4",
            },
        }
    ]
    assert second.attachments == first.attachments
    with svc.sessions() as session:
        done = session.scalars(select(Interaction).where(Interaction.kind == "sop_step_done")).all()
    assert [[a["status"] for a in i.payload["actions"]] for i in done] == [["prepared"], ["prepared"]]


def test_a_send_whose_cover_is_missing_fails_with_its_reason_and_the_step_goes_on(svc, corp) -> None:
    cover = f"{corp.url}/sandbox/assets/missing.png"
    actions = [{"type": "stage", "to": "intent"}, _mini_send(cover)]
    load(svc, card_body("mini", steps=[{"at": "day 0", "reminder": "邀约 {customer}", "actions": actions}]))
    customer(svc, corp, "wm1")
    enroll(svc, "mini", "wm1")
    report = runner.run_due(svc)
    assert (report.completed, report.failed) == (1, 0)
    assert msg_templates(corp.state) == [] and corp.state.media == {}
    assert len(cards_to(corp, "sh_a")) == 1  # the reminder went out
    with svc.sessions() as session:
        done = session.scalars(select(Interaction).where(Interaction.kind == "sop_step_done")).one()
        assert session.get(Customer, "wm1").profile["segment"] == "intent"
    assert done.payload["actions"][1] == {
        "type": "send",
        "status": "failed",
        "reason": f"cover {cover}: HTTP 404",
    }
    assert runner.run_due(svc).selected == 0  # not retried


def test_a_cover_host_that_is_down_fails_the_run_for_a_retry(svc, corp, monkeypatch) -> None:
    load(
        svc,
        card_body(
            "mini",
            steps=[{"at": "day 0", "reminder": "r", "actions": [_mini_send("http://127.0.0.1:9/c.png")]}],
        ),
    )
    monkeypatch.setattr(media, "DOWNLOAD_ATTEMPTS", 1)
    customer(svc, corp, "wm1")
    enroll(svc, "mini", "wm1")
    report = runner.run_due(svc)
    assert report.failed == 1 and "cover http://127.0.0.1:9/c.png: connection failed" in report.errors[0]
    [row] = enrollments(svc)
    assert (row.status, row.next_step, row.lease_until) == ("active", 0, None)  # released: due again
    assert step_runs(svc) == [] and msg_templates(corp.state) == []


# -- when not to run ------------------------------------------------------------------------------


def test_a_step_whose_next_step_is_due_is_skipped(svc, corp, clock) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    enroll(svc, "welcome", "wm1")
    clock.advance(timedelta(days=1, hours=1))  # the worker was down: step 2 (+1d 10:00) is due too
    assert runner.run_due(svc).skipped == 1
    assert runner.run_due(svc).done == 1
    assert [(r.step_index, r.status) for r in step_runs(svc)] == [(0, "skipped"), (1, "done")]
    assert [c.content["url"][-6:] for c in cards_to(corp, "sh_a")] == ["step=1"]
    assert "sop_step_skipped" in kinds(svc, "wm1")


def test_steps_that_quiet_hours_make_due_together_both_run(svc, corp, clock) -> None:
    # Enrolled at 22:30: day 0 and +2h (00:30) are both moved to 09:00. Day 0 is not stale (the
    # system was not behind): it runs, then +2h; neither is skipped.
    steps = [{"at": "day 0", "reminder": "30 分钟内联系 {customer}"}, {"at": "+2h", "reminder": "联系上了吗"}]
    load(svc, card_body(steps=steps))
    customer(svc, corp, "wm1")
    clock.advance(timedelta(hours=12, minutes=30))  # 22:30 in Shanghai
    enroll(svc, "welcome", "wm1")
    clock.advance(timedelta(hours=10, minutes=30))  # 09:00 the next morning
    assert runner.run_due(svc).done == 1
    assert runner.run_due(svc).completed == 1
    assert [(r.step_index, r.status) for r in step_runs(svc)] == [(0, "done"), (1, "done")]
    assert [c.content["url"][-6:] for c in cards_to(corp, "sh_a")] == ["step=0", "step=1"]


def test_a_customer_no_longer_followed_is_not_reminded(svc, corp) -> None:
    load(svc, card_body("leave"))
    load(svc, card_body("stay", exit={"on_customer_left": False}))
    for ext in ("lost", "removed", "moving"):
        customer(svc, corp, ext)
        enroll(svc, "leave", ext)
    enroll(svc, "stay", "lost")
    now = svc.clock.now()
    with svc.sessions.begin() as session:
        customers.end_relation(session, "sh_a", "lost", RelationStatus.LOST, "customer_deleted_advisor", now)
        customers.end_relation(session, "sh_a", "removed", RelationStatus.REMOVED, "advisor", now)
        customers.end_relation(session, "sh_a", "moving", RelationStatus.TRANSFERRED, "transfer", now)
    customer(svc, corp, "moving", "sh_b")  # the hand-over: sh_b has the customer now
    customer(svc, corp, "gone")
    enroll(svc, "leave", "gone")
    with svc.sessions.begin() as session:  # handed over outside Dealer SCRM: nobody we know has them
        customers.end_relation(session, "sh_a", "gone", RelationStatus.TRANSFERRED, "transfer", now)
    report = runner.run_due(svc)
    assert (report.exited, report.waiting, report.done) == (3, 1, 1)
    reasons = {(e.card_id, e.external_userid): (e.status, e.exit_reason) for e in enrollments(svc)}
    assert reasons == {
        ("leave", "lost"): ("exited", "customer_left"),
        ("leave", "removed"): ("exited", "removed"),
        ("leave", "moving"): ("active", None),
        ("leave", "gone"): ("exited", "transferred"),
        ("stay", "lost"): ("active", None),
    }
    assert [c.content["title"] for c in cards_to(corp, "sh_a")] == ["SOP提醒：张先生 · 新客欢迎"]
    [moving] = enrollments(svc, external_userid="moving")
    assert (moving.advisor_userid, moving.lease_until) == ("sh_b", None)  # moved, waiting, not held
    assert runner.run_due(svc).done == 1
    assert len(cards_to(corp, "sh_b")) == 1


def test_a_customer_who_leaves_while_the_last_step_runs_is_not_also_completed(svc, corp, monkeypatch) -> None:
    load(svc, card_body(steps=[{"at": "day 0", "reminder": "问候 {customer}"}]))
    customer(svc, corp, "wm1")
    enroll(svc, "welcome", "wm1")
    send = runner._send_reminder

    def reminded_then_left(*args: Any, **kwargs: Any):
        result = send(*args, **kwargs)
        now = svc.clock.now()  # meanwhile the consumer reads the customer's deletion
        with svc.sessions.begin() as session:
            customers.end_relation(session, "sh_a", "wm1", RelationStatus.LOST, "customer_deleted_advisor", now)
        record(svc, "churned", "wm1")
        assert triggers.consume(svc).exited == 1
        return result

    monkeypatch.setattr(runner, "_send_reminder", reminded_then_left)
    runner.run_due(svc)
    [row] = enrollments(svc)
    assert (row.status, row.exit_reason) == ("exited", "customer_left")
    assert kinds(svc, "wm1") == ["sop_enrolled", "sop_exited", "sop_reminded", "sop_step_done"]


def test_a_step_that_keeps_failing_ends_the_enrollment(svc, corp) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    row = enroll(svc, "welcome", "wm1")
    del corp.state.employees["sh_a"]  # WeCom no longer knows the advisor: message/send fails
    for _ in range(runner.MAX_STEP_ATTEMPTS):
        report = runner.run_due(svc)
        assert report.failed == 1 and "81013" in report.errors[0]
    assert runner.run_due(svc).exited == 1
    [ended] = enrollments(svc)
    assert (ended.id, ended.status, ended.exit_reason) == (row.id, "exited", "step_failed")


# -- the sweep ------------------------------------------------------------------------------------


def test_the_sweep_enrolls_and_enqueues_each_due_step_once(svc, corp, work) -> None:
    load(svc, card_body())
    for n in range(25):
        customer(svc, corp, f"wm{n}", name=f"客户{n}")
        record(svc, "added", f"wm{n}")
    report = sop_jobs.sweep(svc)
    assert (report.consumed.enrolled, report.due, report.enqueued) == (25, 25, 25)
    assert queue(DEFAULT, svc.redis).count == 3  # 10 steps per job
    assert sop_jobs.sweep(svc).enqueued == 0  # queued already
    work()
    assert len(cards_to(corp, "sh_a")) == 25
    with svc.sessions() as session:
        assert {e.next_step for e in session.scalars(select(SopEnrollment))} == {1}


def test_scrm_sop_run_due(svc, corp, scrm) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    record(svc, "added", "wm1")
    result = scrm("sop", "run-due")
    assert result.exit_code == 0, result.output
    assert "1 enrolled" in result.output and "run here: 1 due step(s), 1 done" in result.output
    assert len(cards_to(corp, "sh_a")) == 1


def test_workers_enqueue_one_sweep_job_per_interval(svc, corp, work) -> None:
    load(svc, card_body())
    customer(svc, corp, "wm1")
    record(svc, "added", "wm1")
    assert sop_jobs.sweep_if_due(svc) is True
    assert sop_jobs.sweep_if_due(svc) is False  # within the interval
    svc.redis.delete(sop_jobs.LOCK_KEY)
    assert sop_jobs.sweep_if_due(svc) is False  # the last one is still queued
    assert queue(DEFAULT, svc.redis).job_ids == [sop_jobs.SWEEP_JOB_ID]
    work()  # the sweep job enrolls and enqueues the day-0 step, which runs in the same burst
    assert len(cards_to(corp, "sh_a")) == 1
    svc.redis.delete(sop_jobs.LOCK_KEY)
    assert sop_jobs.sweep_if_due(svc) is True  # finished: the next interval sweeps again


def test_a_send_wecom_finds_nobody_to_send_to_is_recorded_and_the_step_goes_on(svc, corp) -> None:
    """WeCom answers 41048 (no customers to send to) for a customer it will not send to: a retry
    would meet the same answer, so the step completes with the send marked not sendable."""
    send = {"type": "send", "text": "{customer}您好，本周末有试驾专场"}
    load(svc, card_body("nobody", steps=[{"at": "day 0", "reminder": "邀约 {customer}", "actions": [send]}]))
    customer(svc, corp, "wm1", tags=["意向车型:RAV4"])
    enroll(svc, "nobody", "wm1")
    corp.state.faults.add({"path": "externalcontact/add_msg_template", "errcode": 41048, "times": 5})

    assert runner.run_due(svc).completed == 1
    assert msg_templates(corp.state) == []
    assert len(cards_to(corp, "sh_a")) == 1  # the advisor's reminder still went out
    with svc.sessions() as session:
        [done] = session.scalars(select(Interaction).where(Interaction.kind == "sop_step_done")).all()
    [action] = done.payload["actions"]
    assert (action["status"], action["errcode"]) == ("not_sendable", 41048)


def test_a_send_whose_answer_was_lost_is_adopted_not_sent_again(svc, corp, clock) -> None:
    """WeCom made the customer's task but the answer was lost (a 502 after the fact): the run
    fails for a retry, and the retry finds that task in WeCom instead of making a second one."""
    send = {"type": "send", "text": "{customer}您好，本周末有试驾专场"}
    load(svc, card_body("lost", steps=[{"at": "day 0", "reminder": "邀约 {customer}", "actions": [send]}]))
    customer(svc, corp, "wm1", tags=["意向车型:RAV4"])
    enroll(svc, "lost", "wm1")
    corp.state.faults.add(
        {"path": "externalcontact/add_msg_template", "http_status": 502, "after_effect": True, "times": 1}
    )
    first = runner.run_due(svc)
    assert first.completed == 0
    [made] = msg_templates(corp.state)  # WeCom holds it; we never heard

    for _ in range(5):  # the step comes back after its retry delay
        clock.advance(timedelta(minutes=30))
        if runner.run_due(svc).completed:
            break
    assert msg_templates(corp.state) == [made]  # not sent again
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 1
    with svc.sessions() as session:
        [done] = session.scalars(select(Interaction).where(Interaction.kind == "sop_step_done")).all()
        markers = session.scalars(select(Effect.key).where(Effect.key.like("%:attempt"))).all()
    [action] = done.payload["actions"]
    assert (action["status"], action["msgid"]) == ("prepared", made.msgid)
    assert markers == []  # the attempt marker went once the answer was in the ledger
