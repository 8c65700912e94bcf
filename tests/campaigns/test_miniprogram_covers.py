"""Campaigns with a mini-program whose cover is an address, against the live sandbox: the cover is
downloaded and uploaded as WeCom media once per campaign (not per batch or customer), every task
carries that media id, a cover older than the cache's 2.5 days is uploaded again; a bad cover
fails the batches with its reason (down to each customer's campaign_failed), a cover host that is
down releases the batch for a later try, and a spec's own pic_media_id passes through."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import responses
from sqlalchemy import select

from app.campaigns import results, states, store, submit
from app.campaigns.model import CampaignSpec
from app.sandbox.assets import cover_png
from app.sandbox.errors import ApiError
from app.store.campaign_models import Campaign, CampaignBatch, CampaignRecipient
from app.store.models import Interaction
from app.wecom import media
from app.wecom.client import contact_client
from app.wecom.errors import WeComUnavailable
from tests.campaigns.live import corp, customers, live_config, statuses, submitted_to_wecom, wecom

__all__ = ["corp", "wecom"]  # fixtures
CONFIRM = 601  # the sandbox's mass_send_confirm_delay (600 s) has passed
CARD = {"title": "预约 RAV4 试驾", "appid": "wx3f8a2b6c9d1e4f70", "page": "pages/testdrive/index.html"}


@pytest.fixture()
def app_config(app_config: dict[str, Any], wecom) -> dict[str, Any]:
    return live_config(app_config, wecom, CAMPAIGN_BATCH_SIZE=3)


@pytest.fixture()
def audience(svc, corp) -> list[str]:
    return sorted(
        customers(svc, corp, "sh_a", 5, prefix="a") + customers(svc, corp, "sh_b", 2, prefix="b")
    )  # sh_a: batches of 3 + 2, sh_b: 2 — three add_msg_template calls


def create(svc, cover: dict[str, str], name: str = "RAV4 试驾专场 · 小程序") -> int:
    spec = CampaignSpec.model_validate(
        {
            "name": name,
            "content": {
                "text": "您好，RAV4 试驾专场本周末开放预约",
                "attachments": [{"miniprogram": {**CARD, **cover}}],
            },
            "audience": "dealer(SH01)",
        }
    )
    now = svc.clock.now()
    with svc.sessions() as session:
        campaign = store.create(
            session, store.plan(session, spec, actor_dealer=None, now=now), actor_dealer=None, now=now
        )
        session.commit()
        return campaign.id


def covers_sent(wecom) -> list[dict[str, Any]]:
    """The mini-program attachment of every add_msg_template the sandbox recorded."""
    with wecom.state.lock:
        return [a["miniprogram"] for send in wecom.state.mass_sends.values() for a in send.attachments]


def uploads(wecom) -> int:
    """Media the sandbox accepted (a call refused for an expired token does not count)."""
    with wecom.state.lock:
        return len(wecom.state.media)


def failed_reasons(svc, campaign_id: int) -> set[str]:
    with svc.sessions() as session:
        rows = session.scalars(select(Interaction).where(Interaction.kind == "campaign_failed")).all()
    return {i.payload["reason"] for i in rows if i.payload["campaign"] == campaign_id}


def test_a_cover_address_is_uploaded_once_and_delivered_to_every_customer(svc, corp, audience, work) -> None:
    cover = f"{corp.url}/sandbox/assets/cover.png"
    campaign_id = create(svc, {"picurl": cover})
    work()  # the worker's maintenance sweeps: submit_campaign, then one job per batch
    assert len(corp.state.mass_sends) == 3
    assert sorted(submitted_to_wecom(corp)) == audience  # each customer once
    [uploaded] = corp.state.media.values()
    assert uploaded.type == "image" and uploaded.sha256 == hashlib.sha256(cover_png()).hexdigest()
    assert uploads(corp) == 1  # three batch jobs, one upload
    assert covers_sent(corp) == [{**CARD, "pic_media_id": uploaded.media_id}] * 3
    assert statuses(svc, campaign_id) == {"submitted": 7}

    svc.clock.advance(CONFIRM)  # the advisors confirm: WeCom delivers
    results.poll(svc, campaign_id)
    assert statuses(svc, campaign_id) == {"sent": 7}
    with svc.sessions() as session:
        assert session.get(Campaign, campaign_id).state == states.DONE
        delivered = session.scalars(select(Interaction).where(Interaction.kind == "campaign_delivered")).all()
    assert sorted(i.external_userid for i in delivered) == audience
    with corp.state.lock:
        results_by_customer = {
            r.external_userid: r.status
            for send in corp.state.mass_sends.values()
            for task in send.tasks.values()
            for r in task.results
        }
    assert results_by_customer == dict.fromkeys(audience, 1)


def test_the_cached_cover_serves_later_campaigns_until_it_ages_out(svc, corp, audience) -> None:
    cover = f"{corp.url}/sandbox/assets/cover.png"
    first = create(svc, {"picurl": cover})
    submit.run(svc, first)
    [media_id] = {c["pic_media_id"] for c in covers_sent(corp)}

    svc.clock.advance(2 * 24 * 3600)  # two days on: the cached media id is still good
    second = create(svc, {"picurl": cover}, name="第二轮")
    assert submit.run(svc, second) == {"submitted": 3}
    assert uploads(corp) == 1 and {c["pic_media_id"] for c in covers_sent(corp)} == {media_id}

    svc.clock.advance(13 * 3600)  # 2 days 13 h: past our 2.5 days, inside WeCom's 3
    third = create(svc, {"picurl": cover}, name="第三轮")
    assert submit.run(svc, third) == {"submitted": 3}
    assert uploads(corp) == 2
    fresh = {c["pic_media_id"] for c in covers_sent(corp)[-3:]}
    assert len(fresh) == 1 and fresh != {media_id}
    assert statuses(svc, third) == {"submitted": 7}

    # 3 days 1 h after the first upload WeCom has forgotten it; the cache had moved on before.
    svc.clock.advance(12 * 3600)
    with pytest.raises(ApiError) as info:
        corp.state.live_media(media_id)
    assert info.value.errcode == 40007
    fourth = create(svc, {"picurl": cover}, name="第四轮")
    assert submit.run(svc, fourth) == {"submitted": 3}
    assert uploads(corp) == 2 and {c["pic_media_id"] for c in covers_sent(corp)[-3:]} == fresh


def test_a_cached_cover_wecom_no_longer_knows_is_uploaded_again_and_sent(svc, corp, audience) -> None:
    """WeCom drops a media id before our cache does (40007 on add_msg_template): the batch
    forgets the cached id, uploads the cover again and is submitted; nobody is lost or doubled."""
    cover = f"{corp.url}/sandbox/assets/cover.png"
    first = create(svc, {"picurl": cover})
    submit.run(svc, first)
    [old] = {c["pic_media_id"] for c in covers_sent(corp)}
    with corp.state.lock:
        del corp.state.media[old]  # WeCom's side only: our cache still holds it

    second = create(svc, {"picurl": cover}, name="第二轮")
    assert submit.run(svc, second) == {"submitted": 3}
    assert uploads(corp) == 1  # the one upload the sandbox still has: the new one
    [new] = corp.state.media
    assert new != old
    assert {c["pic_media_id"] for c in covers_sent(corp)[-3:]} == {new}
    assert statuses(svc, second) == {"submitted": 7}
    assert corp.state.stats()["api_calls"]["externalcontact/add_msg_template"] == 3 + 1 + 3  # one refused


def test_a_missing_cover_fails_the_batches_with_its_reason(svc, corp, audience, work) -> None:
    cover = f"{corp.url}/sandbox/assets/missing.png"
    campaign_id = create(svc, {"picurl": cover})
    work()
    reason = f"cover {cover}: HTTP 404"
    assert corp.state.mass_sends == {} and uploads(corp) == 0
    with svc.sessions() as session:
        batches = session.scalars(select(CampaignBatch)).all()
        recipients = session.scalars(select(CampaignRecipient)).all()
    assert [(b.status, b.error) for b in batches] == [("failed", reason)] * 3
    assert {r.reason for r in recipients} == {reason}
    assert statuses(svc, campaign_id) == {"failed": 7}
    assert failed_reasons(svc, campaign_id) == {reason}
    with svc.sessions() as session:
        assert session.get(Campaign, campaign_id).state == states.WAITING  # nothing left to submit
    assert submit.run(svc, campaign_id) == {}  # not retried


def test_a_cover_address_that_is_not_a_valid_url_fails_the_batches_with_its_reason(svc, corp, audience) -> None:
    """A picurl the pattern lets through but no URL parser takes (a port out of range) fails
    the batches like a 404 does, without its query string; it used to raise requests'
    InvalidURL (production: a ValueError) out of every batch job and every retry."""
    cover = "https://cdn.example.com:99999/covers/rav4.png?Expires=1&Signature=SECRET"
    campaign_id = create(svc, {"picurl": cover})
    assert submit.run(svc, campaign_id) == {"failed": 3}
    reason = "cover https://cdn.example.com:99999/covers/rav4.png?…: not a valid address"
    assert failed_reasons(svc, campaign_id) == {reason}
    assert statuses(svc, campaign_id) == {"failed": 7}
    assert corp.state.mass_sends == {}


def test_wecom_refusing_the_cover_fails_the_batches(svc, corp, audience) -> None:
    corp.state.faults.add(
        {"path": "media/upload", "errcode": 40005, "errmsg": "invalid file type", "times": 5}
    )
    campaign_id = create(svc, {"picurl": f"{corp.url}/sandbox/assets/cover.png"})
    assert submit.run(svc, campaign_id) == {"failed": 3}
    reason = f"cover {corp.url}/sandbox/assets/cover.png: WeCom refused the upload (errcode 40005: invalid file type)"
    assert failed_reasons(svc, campaign_id) == {reason}
    assert corp.state.mass_sends == {}


def test_a_cover_host_that_is_down_releases_the_batch_for_a_later_try(svc, corp, audience) -> None:
    cover = "https://cdn.example.com/covers/rav4.png"
    campaign_id = create(svc, {"picurl": cover})
    [first, *_] = submit.start(svc, campaign_id)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        http.add_passthru(corp.url)  # WeCom (the sandbox) is up; the cover's host is not
        http.get(cover, status=503)
        with pytest.raises(WeComUnavailable) as info:  # what RQ retries (JOB_RETRY_INTERVALS)
            submit.submit_batch(svc, campaign_id, first.advisor_userid, first.batch_no)
        assert isinstance(info.value, media.CoverUnavailable)
        assert sum(c.request.url == cover for c in http.calls) == media.DOWNLOAD_ATTEMPTS
        with svc.sessions() as session:
            batch = session.get(CampaignBatch, first.id)
            assert (batch.status, batch.lease_until, batch.error) == (
                "pending",
                None,
                f"cover {cover}: HTTP 503",
            )
        assert corp.state.mass_sends == {}

        http.replace(responses.GET, cover, body=cover_png(), content_type="image/png")  # back up
        assert submit.submit_batch(svc, campaign_id, first.advisor_userid, first.batch_no) == "submitted"
    [sent] = covers_sent(corp)
    assert sent["pic_media_id"] in corp.state.media


def test_a_given_pic_media_id_passes_through(svc, corp, audience) -> None:
    given = contact_client(svc).media.upload("image", ("c.png", cover_png(), "image/png"))["media_id"]
    campaign_id = create(svc, {"pic_media_id": given})
    assert submit.run(svc, campaign_id) == {"submitted": 3}
    assert covers_sent(corp) == [{**CARD, "pic_media_id": given}] * 3
    assert uploads(corp) == 1  # the one made above

    stale = create(svc, {"pic_media_id": "1" + "z" * 43}, name="未上传")  # WeCom does not know it
    assert submit.run(svc, stale) == {"failed": 3}
    assert failed_reasons(svc, stale) == {"errcode 40007"}
