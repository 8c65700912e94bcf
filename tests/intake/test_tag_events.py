"""change_external_tag events, one test per fixture (tests/fixtures/events/change_external_tag__*.xml):
POSTed encrypted through the real endpoint, processed by a real worker, WeCom mocked with
``responses``; the corp_tags table ends as WeCom says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses
from sqlalchemy import select

from app.intake import tagging
from app.store.models import InboxEvent, InboxStatus, Interaction
from tests.conftest import FIXTURES
from tests.intake.test_tagging import API, FakeTagLibrary, stored

EVENTS = FIXTURES / "events"
REALWORLD_ID = "etjmgTCQAAYIEtCEn30FEiMU9jH_HaaA"


@pytest.fixture()
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture()
def library(http: responses.RequestsMock) -> FakeTagLibrary:
    return FakeTagLibrary(http)


def _fixture(name: str) -> str:
    return (EVENTS / f"change_external_tag__{name}.xml").read_text()


def _deliver(poster, work, svc, plaintext: str) -> InboxEvent:
    response = poster.post(plaintext)
    assert response.status_code == 200 and response.data == b"success"
    work()
    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        written = list(session.scalars(select(Interaction)))
    assert row.status == InboxStatus.DONE, row.last_error
    assert row.attempts == 1
    assert len(written) == 1 and written[0].kind == "tag_library_changed"
    assert written[0].source_event_id == row.id
    return row


def _payload(svc) -> dict:
    with svc.sessions() as session:
        return session.scalars(select(Interaction)).one().payload


def _store(svc, library: FakeTagLibrary) -> None:
    """What we knew before the event: the library as it is now in WeCom."""
    tagging.sync_corp_tags(svc)
    library.requests.clear()


# -- one test per fixture ---------------------------------------------------------------------------


def test_create(poster, work, svc, library: FakeTagLibrary) -> None:
    library.group("g-model", "意向车型", {"t-rav4": "RAV4"})
    _store(svc, library)
    library.groups["g-model"]["tag"].append({"id": "TAG_ID", "name": "BZ4X", "order": 2})
    _deliver(poster, work, svc, _fixture("create"))
    assert library.requests == [("get_corp_tag_list", {"tag_id": ["TAG_ID"]})]
    assert stored(svc) == {
        "t-rav4": ("g-model", "意向车型", "RAV4", 1, False),
        "TAG_ID": ("g-model", "意向车型", "BZ4X", 2, False),
    }
    assert _payload(svc) == {"change": "create", "tag_type": "tag", "id": "TAG_ID"}


def test_create__realworld_no_strategy(poster, work, svc, library: FakeTagLibrary) -> None:
    library.group("g-campaign", "活动", {REALWORLD_ID: "双十一"})
    _deliver(poster, work, svc, _fixture("create__realworld_no_strategy"))
    assert library.requests == [("get_corp_tag_list", {"tag_id": [REALWORLD_ID]})]
    assert stored(svc) == {REALWORLD_ID: ("g-campaign", "活动", "双十一", 1, False)}
    assert _payload(svc) == {"change": "create", "tag_type": "tag", "id": REALWORLD_ID}


def test_update(poster, work, svc, library: FakeTagLibrary) -> None:
    library.group("g-channel", "渠道", {"TAG_ID": "门店活码", "t-ad": "顾问名片"})
    _store(svc, library)
    library.groups["g-channel"]["tag"][0].update(name="门店二维码", order=5)
    _deliver(poster, work, svc, _fixture("update"))
    assert library.requests == [("get_corp_tag_list", {"tag_id": ["TAG_ID"]})]
    assert stored(svc) == {
        "TAG_ID": ("g-channel", "渠道", "门店二维码", 5, False),
        "t-ad": ("g-channel", "渠道", "顾问名片", 2, False),
    }
    assert _payload(svc) == {"change": "update", "tag_type": "tag", "id": "TAG_ID"}


def test_delete(poster, work, svc, http: responses.RequestsMock, library: FakeTagLibrary) -> None:
    library.group("g-channel", "渠道", {"TAG_ID": "门店活码", "t-ad": "顾问名片"})
    _store(svc, library)
    http.calls.reset()
    _deliver(poster, work, svc, _fixture("delete"))
    assert len(http.calls) == 0  # the event says it all
    tags = stored(svc)
    assert tags["TAG_ID"] == ("g-channel", "渠道", "门店活码", 1, True)  # kept, flagged
    assert tags["t-ad"][4] is False
    assert _payload(svc) == {"change": "delete", "tag_type": "tag", "id": "TAG_ID"}


def test_shuffle(poster, work, svc, library: FakeTagLibrary) -> None:
    library.group("TAG_GROUP_ID", "渠道", {"t-qr": "门店活码", "t-ad": "顾问名片", "t-lp": "落地页"})
    library.group("g-model", "意向车型", {"t-rav4": "RAV4"})
    _store(svc, library)
    tags = library.groups["TAG_GROUP_ID"]["tag"]
    tags[0]["order"], tags[1]["order"] = 2, 1
    del tags[2]  # also gone meanwhile: a full sync notices
    _deliver(poster, work, svc, _fixture("shuffle"))
    assert library.requests == [("get_corp_tag_list", {})]
    assert stored(svc) == {
        "t-qr": ("TAG_GROUP_ID", "渠道", "门店活码", 2, False),
        "t-ad": ("TAG_GROUP_ID", "渠道", "顾问名片", 1, False),
        "t-lp": ("TAG_GROUP_ID", "渠道", "落地页", 3, True),
        "t-rav4": ("g-model", "意向车型", "RAV4", 1, False),
    }
    assert _payload(svc) == {"change": "shuffle", "tag_type": None, "id": "TAG_GROUP_ID"}


# -- the other shapes of the same events --------------------------------------------------------------


def test_a_tag_already_gone_when_we_ask_is_flagged_deleted(
    poster, work, svc, library: FakeTagLibrary
) -> None:
    library.group("g-channel", "渠道", {"TAG_ID": "门店活码", "t-ad": "顾问名片"})
    _store(svc, library)
    library.groups["g-channel"]["tag"].pop(0)
    _deliver(poster, work, svc, _fixture("update"))
    assert library.requests == [("get_corp_tag_list", {"tag_id": ["TAG_ID"]})]
    assert stored(svc)["TAG_ID"][4] is True
    assert stored(svc)["t-ad"][4] is False


def test_group_created_or_updated_reads_the_group(poster, work, svc, library: FakeTagLibrary) -> None:
    library.group("TAG_ID", "渠道", {"t-qr": "门店活码", "t-ad": "顾问名片"})
    library.group("g-model", "意向车型", {"t-rav4": "RAV4"})
    _store(svc, library)
    library.groups["TAG_ID"]["group_name"] = "来源渠道"
    library.groups["TAG_ID"]["tag"].pop(1)
    library.groups["g-model"]["tag"].pop(0)  # not this group: not looked at
    group_event = _fixture("update").replace("<![CDATA[tag]]>", "<![CDATA[tag_group]]>")
    _deliver(poster, work, svc, group_event)
    assert library.requests == [("get_corp_tag_list", {"group_id": ["TAG_ID"]})]
    assert stored(svc) == {
        "t-qr": ("TAG_ID", "来源渠道", "门店活码", 1, False),
        "t-ad": ("TAG_ID", "渠道", "顾问名片", 2, True),
        "t-rav4": ("g-model", "意向车型", "RAV4", 1, False),
    }
    assert _payload(svc) == {"change": "update", "tag_type": "tag_group", "id": "TAG_ID"}


def test_group_deleted_flags_all_its_tags(poster, work, svc, http: responses.RequestsMock, library) -> None:
    library.group("TAG_ID", "渠道", {"t-qr": "门店活码", "t-ad": "顾问名片"})
    library.group("g-model", "意向车型", {"t-rav4": "RAV4"})
    _store(svc, library)
    http.calls.reset()
    group_event = _fixture("delete").replace("<![CDATA[tag]]>", "<![CDATA[tag_group]]>")
    _deliver(poster, work, svc, group_event)
    assert len(http.calls) == 0
    assert {tag_id for tag_id, row in stored(svc).items() if row[4]} == {"t-qr", "t-ad"}


def test_wecom_unavailable_fails_the_attempt_and_writes_nothing(
    poster, work, svc, http: responses.RequestsMock
) -> None:
    http.get(API + "gettoken", json={"errcode": 0, "access_token": "TOKEN", "expires_in": 7200})
    http.post(API + "externalcontact/get_corp_tag_list", status=502)
    poster.post(_fixture("create"))
    work()
    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        assert list(session.scalars(select(Interaction))) == []
    assert row.status == InboxStatus.FAILED  # after the test app's retries (JOB_RETRY_INTERVALS 0,0)
    assert "WeComUnavailable" in (row.last_error or "")
    assert stored(svc) == {}
