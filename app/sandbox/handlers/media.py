"""Temporary media: media/upload (doc 90253), a multipart/form-data POST with the file in the part
named ``media`` and ``type`` in the query. The media id is valid for 3 days (``SandboxState.
live_media``: add_msg_template answers 40007 for an unknown or expired one).

WeCom's limits per type (every file larger than 5 bytes): image jpg/png ≤ 10 MB, voice amr ≤ 2 MB,
video mp4 ≤ 10 MB, file ≤ 20 MB. The format is judged by the file's first bytes, as WeCom does
(a renamed file does not pass). Answers: an unknown ``type`` 40004 (invalid media type); no
``media`` part, or an empty one, 44001 (empty media data); a size outside the limits 40009 for an
image, 40011 for a video, 40006 otherwise; content that is not of the type 40005 (invalid file
type).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from app.sandbox.errors import ApiError
from app.sandbox.handlers.base import Call, api
from app.sandbox.models import Media

MB = 1024 * 1024
MIN_BYTES = 6  # "all files must be larger than 5 bytes"


def _image(data: bytes) -> bool:
    return data.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"))


def _voice(data: bytes) -> bool:
    return data.startswith(b"#!AMR")


def _video(data: bytes) -> bool:
    return data[4:8] == b"ftyp"  # the ISO base media (mp4) file type box


# type → (largest size in bytes, errcode for a size outside the limits, format check, format name)
TYPES: dict[str, tuple[int, int, Callable[[bytes], bool] | None, str]] = {
    "image": (10 * MB, 40009, _image, "jpg or png"),
    "voice": (2 * MB, 40006, _voice, "amr"),
    "video": (10 * MB, 40011, _video, "mp4"),
    "file": (20 * MB, 40006, None, "any"),
}
LARGEST = max(limit for limit, _, _, _ in TYPES.values())


@api("media/upload", "POST", multipart=True, max_bytes=LARGEST)
def upload(call: Call) -> dict[str, Any]:
    kind = call.args.get("type", "")
    if kind not in TYPES:
        raise ApiError(40004, f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    limit, size_errcode, check, name = TYPES[kind]
    part = call.files.get("media")
    if part is None or not part.data:
        raise ApiError(
            44001, "no file in the multipart field `media`" if part is None else "the file is empty"
        )
    if part.truncated or len(part.data) > limit:
        raise ApiError(size_errcode, f"a {kind} is at most {limit // MB} MB")
    if len(part.data) < MIN_BYTES:
        raise ApiError(size_errcode, "a file must be larger than 5 bytes")
    if check is not None and not check(part.data):
        raise ApiError(40005, f"a {kind} must be {name} (judged by its content)")
    state = call.state
    media = Media(
        media_id=state.ids.media_id(),
        type=kind,
        filename=part.filename,
        size=len(part.data),
        sha256=hashlib.sha256(part.data).hexdigest(),
        created_at=state.now(),
    )
    state.media[media.media_id] = media
    # created_at is a string in WeCom's answer (doc 90253's example: "1380000000").
    return {"type": kind, "media_id": media.media_id, "created_at": str(media.created_at)}
