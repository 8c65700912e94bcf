"""The corp tag library: sync from WeCom (upsert, deletion flag, idempotent), the tags intake needs
(known, created with add_corp_tag, and the 40071 "already exists" path), tag names. WeCom is
mocked with ``responses`` (a small stateful tag library); the database is real."""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import count
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from sqlalchemy import select

from app.config import DEFAULT_WECOM_API_BASE
from app.intake import tagging
from app.store.models import CorpTag
from workers.queues import DEFAULT, queue

API = DEFAULT_WECOM_API_BASE  # the test app talks to the real default base: `responses` answers


class FakeTagLibrary:
    """WeCom's tag APIs over an in-memory library, with WeCom's rules: get_corp_tag_list filters
    by tag_id (those tags only) or group_id (whole groups); add_corp_tag adds to a group by id
    (40068 if unknown), else by name (creating the group), and refuses a name already in the
    group (40071). ``requests`` keeps (api, body) of every API call."""

    def __init__(self, http: responses.RequestsMock) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._ids = count(1)
        http.get(API + "gettoken", json={"errcode": 0, "access_token": "TOKEN", "expires_in": 7200})
        http.add_callback(responses.POST, API + "externalcontact/get_corp_tag_list", callback=self._list)
        http.add_callback(responses.POST, API + "externalcontact/add_corp_tag", callback=self._add)

    def group(self, group_id: str, group_name: str, tags: dict[str, str], order: int = 0) -> None:
        """Put a group in the library: ``tags`` is tag id → name (order = position)."""
        self.groups[group_id] = {
            "group_id": group_id,
            "group_name": group_name,
            "create_time": 1700000000,
            "order": order,
            "tag": [
                {"id": tag_id, "name": name, "create_time": 1700000000, "order": n}
                for n, (tag_id, name) in enumerate(tags.items(), start=1)
            ],
        }

    def api_calls(self) -> list[str]:
        return [api for api, _ in self.requests]

    @staticmethod
    def _answer(body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({"errcode": 0, "errmsg": "ok", **body}, ensure_ascii=False)

    @staticmethod
    def _error(errcode: int, errmsg: str) -> tuple[int, dict[str, str], str]:
        return 200, {}, json.dumps({"errcode": errcode, "errmsg": errmsg})

    def _record(self, request: Any) -> dict[str, Any]:
        body = json.loads(request.body or b"{}")
        self.requests.append((urlsplit(request.url).path.rsplit("/", 1)[-1], body))
        return body

    def _list(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = self._record(request)
        tag_ids, group_ids = set(body.get("tag_id") or []), set(body.get("group_id") or [])
        answer = []
        for group in self.groups.values():
            tags = group["tag"]
            if tag_ids:
                tags = [t for t in tags if t["id"] in tag_ids]
                if not tags:
                    continue
            elif group_ids and group["group_id"] not in group_ids:
                continue
            answer.append({**group, "tag": tags})
        return self._answer({"tag_group": answer})

    def _add(self, request: Any) -> tuple[int, dict[str, str], str]:
        body = self._record(request)
        if body.get("group_id"):
            group = self.groups.get(body["group_id"])
            if group is None:
                return self._error(40068, "invalid tagid")
        else:
            group = next((g for g in self.groups.values() if g["group_name"] == body["group_name"]), None)
            if group is None:
                group_id = f"et-group-{next(self._ids)}"
                self.group(group_id, body["group_name"], {})
                group = self.groups[group_id]
        names = [t["name"] for t in body["tag"]]
        if any(t["name"] in names for t in group["tag"]):
            return self._error(40071, "UserTag Name Already Exist")
        created = [
            {"id": f"et-tag-{next(self._ids)}", "name": name, "create_time": 1700000001, "order": 0}
            for name in names
        ]
        group["tag"].extend(created)
        return self._answer({"tag_group": {**group, "tag": created}})


@pytest.fixture()
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture()
def library(http: responses.RequestsMock) -> FakeTagLibrary:
    return FakeTagLibrary(http)


def stored(svc) -> dict[str, tuple[str, str, str, int, bool]]:
    """tag id → (group id, group name, name, order, deleted)."""
    with svc.sessions() as session:
        return {
            t.tag_id: (t.group_id, t.group_name, t.name, t.sort_order, t.deleted)
            for t in session.scalars(select(CorpTag))
        }


def _seed(library: FakeTagLibrary) -> None:
    library.group("g-channel", "渠道", {"t-qr": "门店活码", "t-ad": "顾问名片"}, order=1)
    library.group("g-model", "意向车型", {"t-rav4": "RAV4"}, order=2)


# -- sync -------------------------------------------------------------------------------------------


def test_sync_upserts_every_tag(svc, clock, library: FakeTagLibrary) -> None:
    _seed(library)
    report = tagging.sync_corp_tags(svc)
    assert report.to_json() == {"groups": 2, "tags": 3, "created": 3, "updated": 0, "deleted": 0}
    assert library.requests == [("get_corp_tag_list", {})]  # an empty body: every group
    assert stored(svc) == {
        "t-qr": ("g-channel", "渠道", "门店活码", 1, False),
        "t-ad": ("g-channel", "渠道", "顾问名片", 2, False),
        "t-rav4": ("g-model", "意向车型", "RAV4", 1, False),
    }
    with svc.sessions() as session:
        assert {t.synced_at for t in session.scalars(select(CorpTag))} == {clock.now()}


def test_sync_is_idempotent_and_flags_what_wecom_no_longer_has(svc, clock, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    again = tagging.sync_corp_tags(svc)
    assert (again.created, again.updated, again.deleted) == (0, 0, 0)

    library.groups["g-channel"]["tag"] = [t for t in library.groups["g-channel"]["tag"] if t["id"] != "t-ad"]
    library.groups["g-model"]["group_name"] = "车型"  # a renamed group
    del library.groups["g-channel"]  # …and a whole group gone
    library.group("g-campaign", "活动", {"t-spring": "spring26"})
    clock.advance(60)
    report = tagging.sync_corp_tags(svc)
    assert report.to_json() == {"groups": 2, "tags": 2, "created": 1, "updated": 1, "deleted": 2}
    tags = stored(svc)
    assert tags["t-qr"] == ("g-channel", "渠道", "门店活码", 1, True)  # kept, flagged
    assert tags["t-ad"][4] is True
    assert tags["t-rav4"] == ("g-model", "车型", "RAV4", 1, False)
    assert tags["t-spring"] == ("g-campaign", "活动", "spring26", 1, False)

    last = tagging.sync_corp_tags(svc)
    assert (last.created, last.updated, last.deleted) == (0, 0, 0)


def test_sync_stores_tags_wecom_reports_deleted_as_deleted(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    library.groups["g-channel"]["tag"][1]["deleted"] = True
    library.groups["g-model"]["deleted"] = True
    report = tagging.sync_corp_tags(svc)
    assert (report.groups, report.tags) == (1, 1)
    assert {tag_id for tag_id, row in stored(svc).items() if row[4]} == {"t-ad", "t-rav4"}


def test_scrm_tags_sync(scrm, svc, library: FakeTagLibrary) -> None:
    _seed(library)
    result = scrm("tags", "sync")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "corp tags synced: 2 groups, 3 tags: 3 created, 0 updated, 0 flagged deleted"
    )
    assert len(stored(svc)) == 3


def test_sync_job(svc, work, library: FakeTagLibrary) -> None:
    _seed(library)
    job = queue(DEFAULT, svc.redis).enqueue("workers.tag_jobs.sync_corp_tags")
    work()
    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value() == {"groups": 2, "tags": 3, "created": 3, "updated": 0, "deleted": 0}
    assert len(stored(svc)) == 3


# -- tag_ids_for ------------------------------------------------------------------------------------


def test_known_tags_need_no_wecom_call(svc, http: responses.RequestsMock, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    http.calls.reset()
    ids = tagging.tag_ids_for(svc, [("意向车型", "RAV4"), ("渠道", "门店活码"), ("意向车型", "RAV4")])
    assert ids == ["t-rav4", "t-qr"]
    assert len(http.calls) == 0


def test_missing_tags_are_created_in_wecom_and_stored(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    library.requests.clear()
    wanted = [("渠道", "门店活码"), ("渠道", "前台接待"), ("活动", "spring26"), ("活动", "autumn26")]
    ids = tagging.tag_ids_for(svc, wanted)
    # Known group: added by its id; unknown group: by name (WeCom creates the group).
    assert library.requests == [
        ("add_corp_tag", {"tag": [{"name": "前台接待"}], "group_id": "g-channel"}),
        ("add_corp_tag", {"tag": [{"name": "spring26"}, {"name": "autumn26"}], "group_name": "活动"}),
    ]
    tags = stored(svc)
    assert ids[0] == "t-qr"
    assert [tags[i][1:3] for i in ids] == [
        ("渠道", "门店活码"),
        ("渠道", "前台接待"),
        ("活动", "spring26"),
        ("活动", "autumn26"),
    ]
    assert tags[ids[2]][0] == tags[ids[3]][0] != "g-channel"  # one new group
    library.requests.clear()
    assert tagging.tag_ids_for(svc, wanted) == ids
    assert library.requests == []


def test_already_exists_in_an_unknown_group_resyncs_everything(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    library.group("g-campaign", "活动", {"t-spring": "spring26"})  # made in the admin console, not synced
    ids = tagging.tag_ids_for(svc, [("活动", "spring26")])
    assert ids == ["t-spring"]
    assert library.api_calls() == ["add_corp_tag", "get_corp_tag_list"]
    assert library.requests[1][1] == {}  # the group's id was unknown: a full sync
    assert stored(svc)["t-spring"] == ("g-campaign", "活动", "spring26", 1, False)


def test_already_exists_in_a_known_group_resyncs_that_group(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    library.groups["g-channel"]["tag"].append({"id": "t-rc", "name": "前台接待", "order": 3})
    library.requests.clear()
    ids = tagging.tag_ids_for(svc, [("渠道", "前台接待"), ("渠道", "落地页")])
    # 40071 for the batch: re-read the group, then add only what is still missing.
    assert library.requests == [
        ("add_corp_tag", {"tag": [{"name": "前台接待"}, {"name": "落地页"}], "group_id": "g-channel"}),
        ("get_corp_tag_list", {"group_id": ["g-channel"]}),
        ("add_corp_tag", {"tag": [{"name": "落地页"}], "group_id": "g-channel"}),
    ]
    assert ids[0] == "t-rc"
    assert stored(svc)[ids[1]][1:3] == ("渠道", "落地页")


def test_a_group_gone_from_wecom_is_recreated_by_name(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    del library.groups["g-model"]  # deleted in the console; we have not heard yet
    library.requests.clear()
    [tag_id] = tagging.tag_ids_for(svc, [("意向车型", "BZ4X")])
    assert library.api_calls() == ["add_corp_tag", "get_corp_tag_list", "add_corp_tag"]
    assert library.requests[2][1] == {"tag": [{"name": "BZ4X"}], "group_name": "意向车型"}
    tags = stored(svc)
    assert tags["t-rav4"][4] is True
    assert tags[tag_id][1:] == ("意向车型", "BZ4X", 0, False)


def test_other_wecom_errors_are_raised(svc, http: responses.RequestsMock) -> None:
    from app.wecom.errors import WeComError

    http.get(API + "gettoken", json={"errcode": 0, "access_token": "TOKEN", "expires_in": 7200})
    http.post(API + "externalcontact/add_corp_tag", json={"errcode": 48002, "errmsg": "api forbidden"})
    with pytest.raises(WeComError) as raised:
        tagging.tag_ids_for(svc, [("渠道", "门店活码")])
    assert raised.value.errcode == 48002


def test_tag_names_must_fit_wecom(svc) -> None:
    with pytest.raises(ValueError, match="1-30"):
        tagging.tag_ids_for(svc, [("渠道", "x" * 31)])
    with pytest.raises(ValueError, match="group name"):
        tagging.tag_ids_for(svc, [(" ", "门店活码")])
    assert tagging.tag_ids_for(svc, []) == []


def test_tag_names(svc, library: FakeTagLibrary) -> None:
    _seed(library)
    tagging.sync_corp_tags(svc)
    with svc.sessions.begin() as session:
        tagging.mark_deleted(session, svc.clock.now(), tag_ids=["t-ad"])
    with svc.sessions() as session:
        names = tagging.tag_names(session, ["t-qr", "t-ad", "t-unknown", "t-qr"])
    assert names == {"t-qr": ("渠道", "门店活码"), "t-ad": ("渠道", "顾问名片")}
