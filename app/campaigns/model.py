"""The campaign file / request body (``CampaignSpec``), validated with pydantic.

    name: RAV4 试驾专场 10 月
    content:
      text: 您好，RAV4 试驾专场本周末开放预约……
      attachments:                      # at most 9 (WeCom's limit), in this order
        - image: {media_id: MEDIA_ID}   # or {pic_url: https://…}
        - link: {title: …, url: https://…, desc: …, picurl: https://…}
        - miniprogram: {title: …, appid: wx…, page: pages/index.html, picurl: https://…/cover.png}
                                        # or pic_media_id: an image uploaded within 3 days
    audience: tag(意向车型:RAV4) and stage(prospect) and not tag(活动:试驾专场)
    scope: {dealer: SH01}               # null / omitted: the whole brand (HQ only)
    schedule: {send_at: 2026-10-20T10:00:00+08:00}   # null / omitted: now

Byte limits are WeCom's (``externalcontact/add_msg_template``): text 4000 bytes, link title 128,
desc 512, url 2048, mini-program title 64. ``audience`` is the filter of app/campaigns/audience.py;
it is parsed here too, so a syntax error is reported with the spec's other errors.

A mini-program's cover: WeCom takes only ``pic_media_id``, an image uploaded as temporary media
(valid 3 days). A ``picurl`` (jpg or png, at most 10 MB; WeCom recommends 520x416) is downloaded
and uploaded when the batches are submitted (app/wecom/media.py; the media id is cached for 2.5
days, so a campaign uploads its cover once), and ``to_wecom`` sends the media id in its place. A
cover that cannot be used fails the batches with the reason (``cover https://…: HTTP 404``). A
``pic_media_id`` given here passes through as it is: it must still be valid when the campaign is
submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.campaigns import audience

MAX_ATTACHMENTS = 9


def _max_bytes(limit: int):
    def check(value: str | None) -> str | None:
        if value is not None and len(value.encode()) > limit:
            raise ValueError(f"at most {limit} bytes (UTF-8), got {len(value.encode())}")
        return value

    return check


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError("must be an http(s):// URL")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Image(_Strict):
    media_id: str | None = None
    pic_url: str | None = None

    _url = field_validator("pic_url")(_http_url)

    @model_validator(mode="after")
    def _one(self) -> Image:
        if bool(self.media_id) == bool(self.pic_url):
            raise ValueError("an image needs exactly one of media_id or pic_url")
        return self


class Link(_Strict):
    title: Annotated[str, Field(min_length=1)]
    url: str
    desc: str | None = None
    picurl: str | None = None

    _title = field_validator("title")(_max_bytes(128))
    _desc = field_validator("desc")(_max_bytes(512))
    _url_len = field_validator("url")(_max_bytes(2048))
    _urls = field_validator("url", "picurl")(_http_url)


class MiniProgram(_Strict):
    title: Annotated[str, Field(min_length=1)]
    appid: Annotated[str, Field(min_length=1)]
    page: Annotated[str, Field(min_length=1)]
    pic_media_id: str | None = None
    picurl: str | None = None

    _title = field_validator("title")(_max_bytes(64))
    _url = field_validator("picurl")(_http_url)

    @model_validator(mode="after")
    def _one(self) -> MiniProgram:
        if bool(self.pic_media_id) == bool(self.picurl):
            raise ValueError("a mini-program needs exactly one of pic_media_id or picurl (its cover)")
        return self


class Attachment(_Strict):
    """One attachment: exactly one of ``image``, ``link``, ``miniprogram``."""

    image: Image | None = None
    link: Link | None = None
    miniprogram: MiniProgram | None = None

    @model_validator(mode="after")
    def _one(self) -> Attachment:
        given = [name for name in ("image", "link", "miniprogram") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("an attachment is exactly one of image, link or miniprogram")
        return self

    @property
    def msgtype(self) -> str:
        return next(name for name in ("image", "link", "miniprogram") if getattr(self, name) is not None)

    def to_wecom(self, cover: Callable[[str], str] | None = None) -> dict[str, Any]:
        """WeCom's form: ``{"msgtype": "link", "link": {...}}`` (unset fields left out). A
        mini-program's ``picurl`` becomes ``pic_media_id``: ``cover`` turns the address into a
        media id (app/wecom/media.py); without one such an attachment is a ValueError."""
        body = getattr(self, self.msgtype).model_dump(exclude_none=True)
        if self.miniprogram is not None and self.miniprogram.picurl:
            if cover is None:
                raise ValueError(
                    "a mini-program cover given by address must be uploaded first (pic_media_id)"
                )
            del body["picurl"]
            body["pic_media_id"] = cover(self.miniprogram.picurl)
        return {"msgtype": self.msgtype, self.msgtype: body}


class Content(_Strict):
    text: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)

    _text = field_validator("text")(_max_bytes(4000))

    @field_validator("attachments")
    @classmethod
    def _count(cls, value: list[Attachment]) -> list[Attachment]:
        if len(value) > MAX_ATTACHMENTS:
            raise ValueError(f"at most {MAX_ATTACHMENTS} attachments (WeCom's limit), got {len(value)}")
        return value

    @model_validator(mode="after")
    def _something(self) -> Content:
        if not self.text and not self.attachments:
            raise ValueError("content needs a text or at least one attachment")
        return self


class Scope(_Strict):
    dealer: str | None = None  # None: the whole brand


class Schedule(_Strict):
    send_at: datetime | None = None  # None: as soon as possible

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at needs a UTC offset, e.g. 2026-10-20T10:00:00+08:00")
        return value


class CampaignSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    content: Content
    audience: Annotated[str, Field(min_length=1, max_length=4000)]
    scope: Scope = Field(default_factory=Scope)
    schedule: Schedule = Field(default_factory=Schedule)

    @field_validator("audience")
    @classmethod
    def _parses(cls, value: str) -> str:
        audience.parse(value)  # AudienceError is a ValueError: reported with its column
        return value

    @property
    def filter(self) -> audience.Filter:
        return audience.parse(self.audience)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def spec_errors(exc: Exception) -> list[str]:
    """Readable messages from a pydantic ValidationError: ``field.path: message``."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return [str(exc)]
    messages = []
    for error in errors():
        where = ".".join(str(part) for part in error["loc"]) or "(body)"
        message = error["msg"].removeprefix("Value error, ")
        messages.append(f"{where}: {message}")
    return messages
