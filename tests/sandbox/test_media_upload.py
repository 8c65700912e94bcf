"""Temporary media in the sandbox: media/upload's answers and WeCom's rules (type, format by
content, size, the 3-day life on the sandbox clock), add_msg_template's 40007 for a media id that
is unknown or expired, the gate (token, method, rate limit, faults) and the sample cover."""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

from app.clock import FrozenClock
from app.sandbox import Sandbox
from app.sandbox.assets import COVER_SIZE, cover_png
from tests.sandbox.conftest import WeComApi

UPLOAD = "/cgi-bin/media/upload"
ADD = "externalcontact/add_msg_template"
PNG = cover_png()
JPG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 100
MB = 1024 * 1024


def upload(
    api: WeComApi,
    data: bytes | None,
    kind: str | None = "image",
    *,
    field: str = "media",
    filename: str = "cover.png",
    token: str | None = None,
) -> dict[str, Any]:
    query = {"access_token": api.token if token is None else token}
    if kind is not None:
        query["type"] = kind
    form = {} if data is None else {field: (io.BytesIO(data), filename, "application/octet-stream")}
    answer = api.client.post(UPLOAD, query_string=query, data=form, content_type="multipart/form-data")
    assert answer.status_code == 200
    return answer.json


def miniprogram(pic_media_id: str) -> dict[str, Any]:
    card = {"title": "预约试驾", "appid": "wx3f8a2b6c9d1e4f70", "page": "pages/td/index.html"}
    return {"msgtype": "miniprogram", "miniprogram": {**card, "pic_media_id": pic_media_id}}


def add(api: WeComApi, ext: str, *attachments: dict[str, Any]) -> dict[str, Any]:
    body = {"sender": "zhangsan", "external_userid": [ext], "text": {"content": "试驾"}}
    return api.post(ADD, {**body, "attachments": list(attachments)})


@pytest.fixture()
def ext(sandbox: Sandbox, corp: dict[str, Any]) -> str:
    return sandbox.platform.customer_adds(userid="zhangsan").data["external_userid"]


def test_an_image_upload_answers_like_wecom(
    sandbox: Sandbox, wecom_api: WeComApi, clock: FrozenClock
) -> None:
    answer = upload(wecom_api, PNG)
    assert list(answer) == ["errcode", "errmsg", "type", "media_id", "created_at"]
    assert (answer["errcode"], answer["errmsg"], answer["type"]) == (0, "ok", "image")
    assert answer["created_at"] == str(int(clock.time()))  # a string, as WeCom answers it
    media_id = answer["media_id"]
    assert len(media_id) == 44
    stored = sandbox.state.media[media_id]
    assert (stored.type, stored.filename, stored.size) == ("image", "cover.png", len(PNG))
    assert upload(wecom_api, JPG, filename="c.jpg")["errcode"] == 0
    assert upload(wecom_api, PNG)["media_id"] != media_id  # every upload is a new media id


@pytest.mark.parametrize(
    ("data", "kind", "field", "errcode"),
    [
        (PNG, None, "media", 40004),  # no type
        (PNG, "gif", "media", 40004),  # not a type WeCom knows
        (None, "image", "media", 44001),  # no file at all
        (PNG, "image", "file", 44001),  # the file under another field name
        (b"", "image", "media", 44001),  # an empty file
        (b"GIF89a" + b"\x00" * 100, "image", "media", 40005),  # not jpg or png
        (b"<html>" + b" " * 100, "image", "media", 40005),
        (PNG[:5], "image", "media", 40009),  # not larger than 5 bytes
        (PNG + b"\x00" * (10 * MB), "image", "media", 40009),  # over 10 MB
        (b"RIFF" + b"\x00" * 100, "voice", "media", 40005),  # voice must be amr
        (b"#!AMR\n" + b"\x00" * (2 * MB), "voice", "media", 40006),
        (b"\x00" * 100, "video", "media", 40005),  # video must be mp4
        (b"\x00" * (20 * MB + 1), "file", "media", 40006),
    ],
    ids=[
        "no-type",
        "bad-type",
        "no-file",
        "wrong-field",
        "empty",
        "gif",
        "html",
        "tiny",
        "too-big",
        "voice-not-amr",
        "voice-too-big",
        "video-not-mp4",
        "file-too-big",
    ],
)
def test_uploads_wecom_refuses(
    sandbox: Sandbox, wecom_api: WeComApi, data: bytes | None, kind: str | None, field: str, errcode: int
) -> None:
    answer = upload(wecom_api, data, kind, field=field)
    assert answer["errcode"] == errcode, answer
    assert "media_id" not in answer
    assert sandbox.state.media == {}


def test_other_types_within_their_limits(wecom_api: WeComApi) -> None:
    assert upload(wecom_api, b"#!AMR\n" + b"\x00" * 100, "voice")["type"] == "voice"
    assert upload(wecom_api, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "video")["type"] == "video"
    assert upload(wecom_api, b"any bytes at all", "file", filename="报价.pdf")["type"] == "file"
    assert upload(wecom_api, PNG + b"\x00" * (10 * MB - len(PNG)))["errcode"] == 0  # exactly 10 MB


def test_the_gate_applies_to_uploads(sandbox: Sandbox, wecom_api: WeComApi, control) -> None:
    assert upload(wecom_api, PNG, token="")["errcode"] == 41001
    assert upload(wecom_api, PNG, token="nope")["errcode"] == 40014
    assert wecom_api.get("media/upload", type="image")["errcode"] == 43002
    control.post("/sandbox/faults", json={"path": "media/upload", "errcode": -1, "times": 1})
    assert upload(wecom_api, PNG)["errcode"] == -1
    assert upload(wecom_api, PNG)["errcode"] == 0
    control.post("/sandbox/config", json={"rate_limits": {"media/upload": 2}})
    assert upload(wecom_api, PNG)["errcode"] == 0  # the second counted in this minute
    assert upload(wecom_api, PNG)["errcode"] == 45009  # (refused and faulted calls do not count)
    assert control.get("/sandbox/stats").json["errors_by_path"]["media/upload:45009"] == 1


def test_add_msg_template_wants_media_it_knows_and_that_is_live(
    sandbox: Sandbox, wecom_api: WeComApi, ext: str, clock: FrozenClock, control
) -> None:
    assert add(wecom_api, ext, miniprogram("1" + "x" * 43))["errcode"] == 40007
    assert add(wecom_api, ext, {"msgtype": "image", "image": {"media_id": "nope"}})["errcode"] == 40007
    assert add(wecom_api, ext, {"msgtype": "file", "file": {"media_id": "nope"}})["errcode"] == 40007
    assert sandbox.state.mass_sends == {}

    cover = upload(wecom_api, PNG)["media_id"]
    answer = add(wecom_api, ext, miniprogram(cover), {"msgtype": "image", "image": {"media_id": cover}})
    assert answer["errcode"] == 0, answer
    [send] = sandbox.state.mass_sends.values()
    assert send.attachments[0]["miniprogram"]["pic_media_id"] == cover
    # A picture by its address needs no upload.
    by_address = {"msgtype": "image", "image": {"pic_url": "https://p.example.com/1.png"}}
    assert add(wecom_api, ext, by_address)["errcode"] == 0

    clock.advance(3 * 24 * 3600 - 1)
    wecom_api._token = None  # the access token expired long ago
    assert add(wecom_api, ext, miniprogram(cover))["errcode"] == 0
    assert control.get("/sandbox/media").json[0]["valid"] is True
    clock.advance(1)  # three days after the upload
    answer = add(wecom_api, ext, miniprogram(cover))
    assert answer["errcode"] == 40007 and answer["errmsg"].startswith("invalid media_id")
    assert control.get("/sandbox/media").json[0]["valid"] is False
    fresh = upload(wecom_api, PNG)["media_id"]
    assert add(wecom_api, ext, miniprogram(fresh))["errcode"] == 0
    assert control.get("/sandbox/stats").json["media"] == {"image": 2}


def test_the_sample_cover(control) -> None:
    answer = control.get("/sandbox/assets/cover.png")
    assert answer.status_code == 200 and answer.mimetype == "image/png"
    data = answer.data
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == COVER_SIZE == (520, 416)
    assert data == PNG
    assert control.get("/sandbox/assets/other.png").status_code == 404


def test_the_sample_cover_uploads(wecom_api: WeComApi, control) -> None:
    cover = control.get("/sandbox/assets/cover.png").data
    assert upload(wecom_api, cover)["errcode"] == 0
