"""Mini-program covers → WeCom media ids (app/wecom/media.py): the download with ``responses``,
the upload through the real client (token, limiter, retries) and the Redis cache on the test's
clock."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest
import requests
import responses

from app.sandbox.assets import cover_png
from app.wecom import media
from app.wecom.errors import WeComUnavailable

from .conftest import API, CORP, calls_to, query

COVER = "https://cdn.example.com/covers/rav4.png"
PNG = cover_png()
JPG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 200
UPLOADED = {"errcode": 0, "errmsg": "ok", "type": "image", "created_at": "1764036000"}


class Uploads:
    """media/upload answering MEDIA-1, MEDIA-2 … (or ``errcode``), keeping what it received."""

    def __init__(self, http: responses.RequestsMock, errcode: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.errcode = errcode
        http.add_callback(responses.POST, API + "media/upload", callback=self._answer)

    def _answer(self, request: Any) -> tuple[int, dict, str]:
        self.bodies.append(request.body)
        if self.errcode:
            return 200, {}, json.dumps({"errcode": self.errcode, "errmsg": "invalid file type"})
        return 200, {}, json.dumps({**UPLOADED, "media_id": f"MEDIA-{len(self.bodies)}"})


@pytest.fixture()
def uploads(http: responses.RequestsMock, token_server) -> Uploads:
    return Uploads(http)


@pytest.fixture()
def covers(make_client, rconn, clock):
    def build(**kwargs: Any) -> media.Covers:
        client = make_client(max_attempts=kwargs.pop("max_attempts", 4))
        kwargs.setdefault("public_only", False)
        return media.Covers(rconn, clock, lambda: client, CORP, timeout=5, **kwargs)

    return build


def downloads(http: responses.RequestsMock, url: str = COVER) -> int:
    return sum(1 for c in http.calls if c.request.url == url)


def test_a_cover_is_downloaded_uploaded_as_an_image_and_cached(http, uploads, covers, rconn) -> None:
    http.get(COVER, body=PNG, content_type="image/png")
    assert covers().media_id(COVER) == "MEDIA-1"
    [upload] = calls_to(http, "media/upload")
    assert query(upload.request)["type"] == "image"
    assert query(upload.request)["access_token"].startswith("TOKEN-1")
    body = uploads.bodies[0]
    assert b'name="media"; filename="cover.png"' in body and b"Content-Type: image/png" in body
    assert PNG in body
    key = media.cache_key(CORP, COVER)
    assert json.loads(rconn.get(key))["media_id"] == "MEDIA-1"
    assert media.CACHE_TTL - 5 <= rconn.ttl(key) <= media.CACHE_TTL == 216000


def test_a_jpg_cover_goes_up_as_a_jpg(http, uploads, covers) -> None:
    http.get(COVER, body=JPG, content_type="application/octet-stream")  # judged by its bytes
    assert covers().media_id(COVER) == "MEDIA-1"
    assert b'filename="cover.jpg"' in uploads.bodies[0] and b"Content-Type: image/jpeg" in uploads.bodies[0]


def test_the_second_call_is_a_cache_hit_without_any_http(http, uploads, covers) -> None:
    http.get(COVER, body=PNG, content_type="image/png")
    first, second = covers(), covers()  # two workers sharing Redis
    assert first.media_id(COVER) == "MEDIA-1"
    made = len(http.calls)
    assert second.media_id(COVER) == "MEDIA-1"
    assert first.media_id(COVER) == "MEDIA-1"
    assert len(http.calls) == made  # no download, no gettoken, no upload
    assert downloads(http) == 1 and len(uploads.bodies) == 1


def test_a_cover_older_than_the_ttl_is_uploaded_again(http, uploads, covers, clock) -> None:
    http.get(COVER, body=PNG, content_type="image/png")
    resolver = covers()
    assert resolver.media_id(COVER) == "MEDIA-1"
    clock.advance(media.CACHE_TTL - 1)  # still inside 2.5 days
    assert resolver.media_id(COVER) == "MEDIA-1"
    clock.advance(2)  # WeCom keeps it half a day longer; we do not rely on that
    assert resolver.media_id(COVER) == "MEDIA-2"
    assert downloads(http) == 2 and len(uploads.bodies) == 2
    assert resolver.media_id(COVER) == "MEDIA-2"


def test_another_address_is_another_upload(http, uploads, covers) -> None:
    other = COVER.replace("rav4", "bz4x")
    http.get(COVER, body=PNG, content_type="image/png")
    http.get(other, body=PNG, content_type="image/png")
    resolver = covers()
    assert (resolver.media_id(COVER), resolver.media_id(other)) == ("MEDIA-1", "MEDIA-2")


def test_redirects_are_followed(http, uploads, covers) -> None:
    moved = "https://img.example.net/c/rav4.png"
    http.get(COVER, status=302, headers={"Location": moved})
    http.get(moved, body=PNG, content_type="image/png")
    assert covers().media_id(COVER) == "MEDIA-1"
    assert downloads(http, moved) == 1


# -- a bad cover: a clear reason, at once, never retried ----------------------------------------------


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"status": 404, "body": b"not found", "content_type": "text/plain"}, "HTTP 404"),
        ({"status": 403, "body": b""}, "HTTP 403"),
        (
            {"body": b"<html>login</html>", "content_type": "text/html"},
            "not a jpg or png image (Content-Type text/html)",
        ),
        ({"body": b"GIF89a" + b"\x00" * 100, "content_type": "image/png"}, "not a jpg or png image"),
        ({"body": b"", "content_type": "image/png"}, "empty body"),
        (
            {"body": PNG, "content_type": "image/png", "headers": {"Content-Length": str(11 * 1024 * 1024)}},
            f"larger than 10 MB ({11 * 1024 * 1024} bytes)",
        ),
        ({"body": PNG + b"\x00" * media.MAX_BYTES, "content_type": "image/png"}, "larger than 10 MB"),
    ],
    ids=["404", "403", "html", "gif", "empty", "content-length", "streamed"],
)
def test_a_bad_cover_fails_at_once_with_its_reason(http, uploads, covers, answer, problem) -> None:
    http.get(COVER, **answer)
    with pytest.raises(media.CoverError) as info:
        covers().media_id(COVER)
    assert info.value.reason == f"cover {COVER}: {problem}"
    assert not info.value.retryable and not isinstance(info.value, WeComUnavailable)
    assert downloads(http) == 1 and uploads.bodies == []


def test_a_refused_cover_is_remembered_for_a_while_then_tried_again(http, uploads, covers, rconn) -> None:
    """A campaign's other batches fail at once with the same reason, without downloading the
    bad cover again; once the memory lapses (the cover may have been fixed) it is tried again."""
    http.get(COVER, status=404)
    resolver = covers()
    for _ in range(3):
        with pytest.raises(media.CoverError) as info:
            resolver.media_id(COVER)
        assert info.value.reason == f"cover {COVER}: HTTP 404"
    assert downloads(http) == 1
    [key] = rconn.keys(media.REFUSED_PREFIX + "*")
    assert 0 < rconn.ttl(key) <= media.REFUSED_TTL

    rconn.delete(key)  # the memory lapsed; the cover is there now
    http.replace(responses.GET, COVER, body=cover_png(), content_type="image/png")
    assert resolver.media_id(COVER) == "MEDIA-1" and len(uploads.bodies) == 1
    assert downloads(http) == 2


def test_wecom_refusing_the_image_is_a_bad_cover(http, token_server, covers, rconn) -> None:
    refusing = Uploads(http, errcode=40005)
    http.get(COVER, body=PNG, content_type="image/png")
    with pytest.raises(media.CoverError) as info:
        covers().media_id(COVER)
    assert info.value.reason == f"cover {COVER}: WeCom refused the upload (errcode 40005: invalid file type)"
    assert len(refusing.bodies) == 1  # a refusal is not retried
    assert rconn.get(media.cache_key(CORP, COVER)) is None


def test_addresses_that_are_not_http_are_refused_without_a_request(http, uploads, covers) -> None:
    with pytest.raises(media.CoverError) as info:
        covers().media_id("ftp://cdn.example.com/c.png")
    assert info.value.reason == "cover ftp://cdn.example.com/c.png: not an http(s) address"
    moved = "https://cdn.example.com/moved.png"
    http.get(moved, status=301, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(media.CoverError) as info:
        covers().media_id(moved)
    assert info.value.problem == "not an http(s) address (redirected to file:///etc/passwd)"
    assert len(http.calls) == 1


def test_in_production_addresses_inside_the_network_are_refused(http, uploads, covers) -> None:
    public = "http://93.184.216.34/cover.png"  # an address literal: no DNS needed
    http.get(public, status=302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(media.CoverError) as info:
        covers(public_only=True).media_id("http://127.0.0.1:8080/cover.png")
    assert info.value.problem == "127.0.0.1 is not a public address"
    assert len(http.calls) == 0
    with pytest.raises(media.CoverError) as info:
        covers(public_only=True).media_id(public)
    assert info.value.problem == "169.254.169.254 is not a public address"
    assert len(http.calls) == 1  # the redirect was read, its target never fetched


@pytest.mark.parametrize("public_only", [False, True], ids=["demo", "production"])
@pytest.mark.parametrize(
    ("url", "redirect", "problem"),
    [
        ("https://cdn.example.com:99999/c.png?Signature=SECRET", None, "not a valid address"),
        ("http://[::1/c.png?Signature=SECRET", None, "not a valid address"),
        (
            COVER + "?Signature=SECRET",
            "http://cdn.example.com:abc/c.png?Signature=SECRET",
            "not a valid address (redirected to http://cdn.example.com:abc/c.png?…)",
        ),
        (
            COVER + "?Signature=SECRET",
            "http://[::1/c.png?Signature=SECRET",
            "not a valid address",  # requests fails on the Location before it is ours to check
        ),
    ],
    ids=["port", "ipv6", "redirect", "redirect-ipv6"],
)
def test_an_address_that_cannot_be_parsed_is_a_bad_cover(
    http, uploads, covers, monkeypatch, url, redirect, problem, public_only
) -> None:
    """A cover address (or a redirect's Location) that is not a valid URL is a bad cover with a
    reason, like a 404: not a ValueError or requests' InvalidURL, whose text (the whole address,
    query string too) went to the job's failure record and the logs, and which failed every retry."""
    real = socket.getaddrinfo
    public = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("93.184.216.34", 443))]

    def resolve(name, *args, **kwargs):
        return public if name == "cdn.example.com" else real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    if redirect:
        http.get(url, status=302, headers={"Location": redirect})
    with pytest.raises(media.CoverError) as info:
        covers(public_only=public_only).media_id(url)
    assert info.value.problem == problem
    assert "SECRET" not in info.value.reason and uploads.bodies == []


def test_a_body_that_cannot_be_decoded_is_a_bad_cover(http, uploads, covers) -> None:
    """A host answering Content-Encoding: gzip with a body that is not gzip (a misconfigured
    CDN) gives a reason, not requests' ContentDecodingError."""
    http.get(COVER, body=PNG, content_type="image/png", headers={"Content-Encoding": "gzip"})
    with pytest.raises(media.CoverError) as info:
        covers().media_id(COVER)
    assert info.value.reason == f"cover {COVER}: the body cannot be decoded (Content-Encoding gzip)"
    assert downloads(http) == 1 and uploads.bodies == []


def test_reasons_never_show_the_query_string(http, uploads, covers) -> None:
    signed = COVER + "?Expires=1&Signature=SECRET-SIGNATURE"
    http.get(signed, status=404)
    with pytest.raises(media.CoverError) as info:
        covers().media_id(signed)
    assert info.value.reason == f"cover {COVER}?…: HTTP 404"
    assert "SECRET" not in str(info.value)


# -- a transient problem: retried, then left to the job's retries -----------------------------------


def test_a_5xx_is_retried_and_then_succeeds(http, uploads, covers, clock) -> None:
    http.get(COVER, status=503)
    http.get(COVER, status=502)
    http.get(COVER, body=PNG, content_type="image/png")
    assert covers().media_id(COVER) == "MEDIA-1"
    assert downloads(http) == 3
    assert clock.slept[-2:] == [media.BACKOFF, 2 * media.BACKOFF]  # on the injected clock


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"status": 503}, "HTTP 503"),
        ({"status": 429}, "HTTP 429"),
        ({"body": requests.ReadTimeout("read timed out")}, "timed out"),
        ({"body": requests.ConnectionError("refused")}, "connection failed (ConnectionError)"),
    ],
    ids=["503", "429", "timeout", "refused"],
)
def test_a_transient_problem_that_stays_is_retryable(http, uploads, covers, answer, problem) -> None:
    http.get(COVER, **answer)
    with pytest.raises(media.CoverUnavailable) as info:
        covers().media_id(COVER)
    assert isinstance(info.value, WeComUnavailable) and info.value.retryable
    assert info.value.reason == f"cover {COVER}: {problem}"
    assert downloads(http) == media.DOWNLOAD_ATTEMPTS and uploads.bodies == []


def test_a_busy_wecom_during_the_upload_is_wecoms_unavailable(http, token_server, covers, rconn) -> None:
    http.post(API + "media/upload", json={"errcode": 45009, "errmsg": "api freq out of limit"})
    http.get(COVER, body=PNG, content_type="image/png")
    with pytest.raises(WeComUnavailable) as info:
        covers(max_attempts=2).media_id(COVER)
    assert not isinstance(info.value, media.CoverError) and info.value.api == "media/upload"
    assert len(calls_to(http, "media/upload")) == 2  # the client's own bounded retries
    assert rconn.get(media.cache_key(CORP, COVER)) is None


# -- a cover host on a real socket: the whole download's deadline, the address connected to --------


class SlowHost:
    """A cover host on a loopback socket that answers every connection with ``answer`` one byte
    every ``pace`` seconds (a congested or hostile host: each read gets a byte within its
    timeout). Keeps what each connection asked."""

    def __init__(self, answer: bytes, pace: float, at_once: bytes = b"") -> None:
        self.answer = answer
        self.at_once = at_once
        self.pace = pace
        self.requests: list[bytes] = []
        self.closed = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                self.requests.append(conn.recv(65536))
                conn.sendall(self.at_once)
                for byte in self.answer:
                    if self.closed.wait(self.pace):  # the test is over
                        return
                    conn.sendall(bytes([byte]))
            except OSError:  # the client gave up
                return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture()
def slow_host():
    made: list[SlowHost] = []

    def start(answer: bytes, pace: float = 0.1, at_once: bytes = b"") -> SlowHost:
        made.append(SlowHost(answer, pace, at_once))
        return made[-1]

    yield start
    for host in made:
        host.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 200\r\n\r\n" + PNG[:200],
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n",
    ],
    ids=["body", "headers"],
)
def test_a_host_sending_a_byte_at_a_time_is_cut_off_at_the_download_timeout(
    slow_host, rconn, clock, answer
) -> None:
    """COVER_DOWNLOAD_TIMEOUT is what one download may take in all: a host that keeps each read
    alive with a byte at a time (in the body, or in its headers) is cut off at it, not after
    its last byte."""
    host = slow_host(answer)
    resolver = media.Covers(rconn, clock, lambda: None, CORP, timeout=0.5, public_only=False)
    url = f"http://127.0.0.1:{host.port}/cover.png"
    started = time.monotonic()
    with pytest.raises(media.CoverUnavailable) as info:
        resolver.media_id(url)
    took = time.monotonic() - started
    assert info.value.reason == f"cover {url}: download took longer than 0.5 s"
    assert len(host.requests) == media.DOWNLOAD_ATTEMPTS
    # Each try ends at its 0.5 s (the byte-at-a-time answers last 20 s and more).
    assert took < media.DOWNLOAD_ATTEMPTS * 0.5 + 2


def test_a_body_cut_off_at_the_download_timeout_is_never_uploaded(slow_host, rconn, clock) -> None:
    """A body without a Content-Length ends when the connection does: one cut at the deadline
    (here between two chunks of the read) is a partial image, and must not go up as the cover."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"
    first = (PNG + b"\x00" * media.CHUNK)[: media.CHUNK]
    host = slow_host(b"\x00", pace=30, at_once=head + first)  # one chunk, then nothing
    uploaded: list[Any] = []
    resolver = media.Covers(rconn, clock, lambda: uploaded.append(1), CORP, timeout=0.5, public_only=False)
    url = f"http://127.0.0.1:{host.port}/cover.png"
    with pytest.raises(media.CoverUnavailable) as info:
        resolver.media_id(url)
    assert info.value.reason == f"cover {url}: download took longer than 0.5 s"
    assert uploaded == []


def test_a_name_that_resolves_to_a_private_address_when_connecting_is_refused(
    slow_host, rconn, clock, monkeypatch
) -> None:
    """DNS rebinding: the name resolves to a public address when checked and to one inside the
    network when the connection is made. The address connected to is what counts: the request
    is never sent."""
    host = slow_host(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 20\r\n\r\n" + PNG[:20], 0)
    real = socket.getaddrinfo
    answers = iter(["93.184.216.34"])

    def rebinding(name, port, *args, **kwargs):
        if name != "covers.example.com":
            return real(name, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")  # public first, then this machine
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    resolver = media.Covers(rconn, clock, lambda: None, CORP, timeout=5, public_only=True)
    with pytest.raises(media.CoverError) as info:
        resolver.media_id(f"http://covers.example.com:{host.port}/cover.png")
    assert info.value.problem == "covers.example.com is not a public address"
    assert not any(host.requests)  # nothing was asked of the address inside the network
