"""Mini-program covers as WeCom media: a cover's address → a ``pic_media_id``.

add_msg_template takes a mini-program card as ``{"title", "pic_media_id", "appid", "page"}``: the
cover must be an image uploaded with ``media/upload?type=image`` (temporary media, valid 3 days;
jpg or png, at most 10 MB; WeCom recommends 520x416). Campaigns and SOP cards name the cover by
its address (``picurl``), so before a send:

1. the address is looked up in Redis (``scrm:media:cover:<corp>:<sha256 of the address>``); an
   entry younger than ``CACHE_TTL`` (2.5 days, on the injected clock: safely inside WeCom's 3) is
   the answer, so a campaign of 500 batches uploads its cover once;
2. otherwise the image is downloaded with ``requests`` (http/https only, redirects followed by
   hand and each hop checked, a total deadline, at most 10 MB read as a stream, the content must
   start with the jpg or png signature whatever the Content-Type says) and uploaded through
   wechatpy's ``client.media.upload`` on the customer-contact client (app/wecom/client.py: shared
   token, shared rate limit, bounded retries), and the media id cached.

Two workers missing the cache at once both upload: WeCom hands out two media ids for the same
image, both valid for 3 days, and the later cache write wins. That is harmless, so there is no
lock. The cache is keyed by the address, not the content: a cover replaced at the same address is
picked up when the entry ages out (at most 2.5 days later). Should WeCom refuse a cached id
anyway (40007, invalid media_id: its clock or retention differs from ours), ``send_with_covers``
drops the entries the message used, uploads again and sends once more; a refused call created
nothing, so the second call cannot double a send.

Errors: ``CoverError`` is a problem with the cover that another try would only repeat (HTTP 4xx,
not a jpg/png, too big, WeCom refusing the upload): callers fail the send with its ``reason``
(``cover https://cdn.example.com/c.png: HTTP 404``). Such a refusal is remembered for
``REFUSED_TTL`` (10 min), so a campaign's other batches fail at once without downloading the
cover again. ``CoverUnavailable`` (a ``WeComUnavailable``) is one a later try may fix (timeout,
connection error, HTTP 5xx/429): callers treat it as a busy WeCom, and RQ retries the job. A busy
WeCom during the upload raises the client's own WeComUnavailable. Reasons and logs show the
address without its query string (signed CDN links carry secrets there) and never a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urljoin, urlsplit

import redis
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from app.clock import Clock
from app.wecom.errors import WeComApiFailure, WeComError, WeComUnavailable

if TYPE_CHECKING:
    from app.services import Services
    from app.wecom.client import WeComClient

log = logging.getLogger(__name__)

T = TypeVar("T")
INVALID_MEDIA_ID = 40007

MAX_BYTES = 10 * 1024 * 1024  # WeCom's limit for an image
MIN_BYTES = 6  # WeCom: every file must be larger than 5 bytes
CACHE_TTL = int(2.5 * 24 * 3600)  # media ids live 3 days; re-upload half a day before that
KEY_PREFIX = "scrm:media:cover:"
# A cover found unusable (404, not an image …) is remembered this long, so the other batches of
# a campaign fail at once with the same reason instead of each downloading it again; a cover
# fixed at its address is used after at most this long.
REFUSED_TTL = 600
REFUSED_PREFIX = "scrm:media:cover-refused:"
MAX_REDIRECTS = 3
DOWNLOAD_ATTEMPTS = 3  # tries of one download before CoverUnavailable (the job is retried later)
BACKOFF = 0.5  # seconds before the second try, doubled after each failed one
CHUNK = 64 * 1024
SIGNATURES = {b"\x89PNG\r\n\x1a\n": ("png", "image/png"), b"\xff\xd8\xff": ("jpg", "image/jpeg")}
# A Content-Type that rules the body out before it is read; anything else is judged by the bytes.
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/pjpeg")
_UNTYPED = ("application/octet-stream", "binary/octet-stream", "")
_NETWORK_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def shown(url: str) -> str:
    """The address as reasons and logs show it: no query string or fragment, at most 120 chars."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL (an unclosed [ of an IPv6 address): cut it up by hand
        base, question, _ = url.partition("#")[0].partition("?")
        scheme, sep, rest = base.rpartition("://")
        netloc, slash, path = rest.partition("/")
        text = f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{path}" + ("?…" if question else "")
    else:
        text = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        if parts.query:
            text += "?…"
    return text if len(text) <= 120 else text[:119] + "…"


class CoverError(WeComApiFailure):
    """The cover cannot be used and another try would not change that."""

    retryable = False

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        self.reason = f"cover {shown(url)}: {problem}"
        super().__init__(self.reason)


class CoverUnavailable(WeComUnavailable):
    """The cover's host failed in a way a later try may fix: retried like a busy WeCom."""

    def __init__(self, url: str, problem: str) -> None:
        WeComApiFailure.__init__(self, f"cover {shown(url)}: {problem}")
        self.url = url
        self.api = "cover download"
        self.reason = f"cover {shown(url)}: {problem}"
        self.errcode = None


def cache_key(scope: str, url: str) -> str:
    return f"{KEY_PREFIX}{scope}:{hashlib.sha256(url.encode()).hexdigest()}"


def image_kind(head: bytes) -> tuple[str, str] | None:
    """(extension, content type) when ``head`` starts with the png or jpg signature."""
    for signature, kind in SIGNATURES.items():
        if head.startswith(signature):
            return kind
    return None


@dataclass
class Covers:
    """Resolves cover addresses to media ids for one corp (see the module notes)."""

    redis: redis.Redis
    clock: Clock
    client: Callable[[], WeComClient]  # the customer-contact client, built on first upload
    scope: str  # the corp id: two corps sharing one Redis never share media
    timeout: float = 10.0  # seconds for one whole download
    public_only: bool = True  # refuse addresses of this network (production)
    session: requests.Session | None = None

    def media_id(self, url: str) -> str:
        """The media id of the cover at ``url``: cached, or downloaded and uploaded now."""
        key = cache_key(self.scope, url)
        now = self.clock.time()
        cached = self._cached(key, now)
        if cached is not None:
            return cached
        refused_key = REFUSED_PREFIX + key[len(KEY_PREFIX) :]
        refused = self.redis.get(refused_key)
        if refused is not None:
            raise CoverError(url, refused.decode() if isinstance(refused, bytes) else str(refused))
        try:
            media_id, extension, size = self._upload(url)
        except CoverError as exc:
            self.redis.set(refused_key, exc.problem, ex=REFUSED_TTL)
            raise
        # ``now`` was read before the download: the entry ages from no later than WeCom's own clock.
        record = json.dumps({"media_id": media_id, "uploaded_at": now})
        self.redis.set(key, record, ex=CACHE_TTL)
        log.info("cover %s uploaded as WeCom media (%s, %d bytes)", shown(url), extension, size)
        return media_id

    def _upload(self, url: str) -> tuple[str, str, int]:
        """Download the cover and upload it: (media id, extension, bytes)."""
        data, (extension, content_type) = self._download(url)
        try:
            answer = self.client().media.upload("image", (f"cover.{extension}", data, content_type))
        except WeComError as exc:  # a busy WeCom raised WeComUnavailable, which the caller retries
            raise CoverError(url, f"WeCom refused the upload (errcode {exc.errcode}: {exc.errmsg})") from None
        media_id = str(answer.get("media_id") or "") if isinstance(answer, dict) else ""
        if not media_id:
            raise CoverError(url, "WeCom answered the upload without a media_id")
        return media_id, extension, len(data)

    def forget(self, url: str) -> None:
        """Drop the cached media id of ``url``: the next ``media_id`` uploads the cover again."""
        self.redis.delete(cache_key(self.scope, url))

    def _cached(self, key: str, now: float) -> str | None:
        raw = self.redis.get(key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            age = now - float(entry["uploaded_at"])
            media_id = str(entry["media_id"])
        except (ValueError, KeyError, TypeError):
            return None
        # Redis' own expiry runs on real time; the clock may run ahead of it (the demo's simulated
        # days), so the age is judged on the clock too.
        return media_id if 0 <= age < CACHE_TTL and media_id else None

    # -- the download -------------------------------------------------------------------------------

    def _download(self, url: str) -> tuple[bytes, tuple[str, str]]:
        failures = 0
        while True:
            try:
                return self._download_once(url)
            except CoverUnavailable as exc:
                failures += 1
                if failures >= DOWNLOAD_ATTEMPTS:
                    raise
                delay = BACKOFF * 2 ** (failures - 1)
                log.warning("%s (attempt %d); retrying in %.1f s", exc.reason, failures, delay)
                self.clock.sleep(delay)

    def _download_once(self, url: str) -> tuple[bytes, tuple[str, str]]:
        # A deadline on real time: it bounds the network, which a test clock does not move.
        deadline = time.monotonic() + self.timeout
        session = self.session or _session()
        guard = _Guard(deadline, self.public_only)
        guarding = _current_guard.set(guard)
        try:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                self._check_address(url, current)
                try:
                    res = session.get(
                        current,
                        stream=True,
                        allow_redirects=False,
                        timeout=self.timeout,
                        headers={"Accept": "image/png, image/jpeg"},
                    )
                except _NotPublic:
                    raise CoverError(url, f"{urlsplit(current).hostname} is not a public address") from None
                except ValueError:  # requests' InvalidURL quotes the address, query string too; a
                    # redirect's Location requests cannot parse (it prepares the next hop) is one too
                    where = "" if current == url else f" (redirected to {shown(current)})"
                    raise CoverError(url, f"not a valid address{where}") from None
                except _NETWORK_ERRORS as exc:
                    raise CoverUnavailable(url, _network_problem(exc)) from None
                with res:
                    if res.is_redirect:
                        current = urljoin(current, res.headers["location"])
                        continue
                    return self._read(url, res, deadline)
            raise CoverError(url, f"more than {MAX_REDIRECTS} redirects")
        except CoverUnavailable:
            if guard.expired:  # the connection was cut at the deadline: say so
                raise CoverUnavailable(url, f"download took longer than {self.timeout:g} s") from None
            raise
        finally:
            guard.stop()
            _current_guard.reset(guarding)
            if self.session is None:
                session.close()

    def _check_address(self, url: str, current: str) -> None:
        where = "" if current == url else f" (redirected to {shown(current)})"
        try:
            parts = urlsplit(current)
            port = parts.port  # ValueError when out of range or not a number
        except ValueError:
            raise CoverError(url, f"not a valid address{where}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CoverError(url, f"not an http(s) address{where}")
        if not self.public_only:
            return
        # A worker inside the network must not fetch its neighbours for whoever writes a campaign
        # (a dealer token can). The name is resolved again when connecting; a DNS answer that
        # changes in between is caught there (_Guard.opened checks the address connected to).
        try:
            infos = socket.getaddrinfo(parts.hostname, port or None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise CoverUnavailable(url, f"cannot resolve {parts.hostname}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not address.is_global:
                raise CoverError(url, f"{parts.hostname} is not a public address")

    def _read(self, url: str, res: requests.Response, deadline: float) -> tuple[bytes, tuple[str, str]]:
        status = res.status_code
        if status >= 500 or status == 429:
            raise CoverUnavailable(url, f"HTTP {status}")
        if status != 200:
            raise CoverError(url, f"HTTP {status}")
        content_type = res.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in _IMAGE_TYPES and content_type not in _UNTYPED:
            raise CoverError(url, f"not a jpg or png image (Content-Type {content_type})")
        length = res.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BYTES:
            raise CoverError(url, f"larger than 10 MB ({int(length)} bytes)")
        data = bytearray()
        kind = None
        try:
            for chunk in res.iter_content(CHUNK):
                data += chunk
                if len(data) > MAX_BYTES:
                    raise CoverError(url, "larger than 10 MB")
                if kind is None and len(data) >= 8:
                    kind = image_kind(bytes(data[:8]))
                    if kind is None:
                        raise CoverError(url, "not a jpg or png image")
                if time.monotonic() > deadline:
                    raise CoverUnavailable(url, f"download took longer than {self.timeout:g} s")
        except requests.exceptions.ContentDecodingError:
            encoding = res.headers.get("content-encoding", "")
            raise CoverError(url, f"the body cannot be decoded (Content-Encoding {encoding})") from None
        except _NETWORK_ERRORS as exc:
            raise CoverUnavailable(url, _network_problem(exc)) from None
        if time.monotonic() >= deadline:  # cut at the deadline (_Guard): the body may be partial
            raise CoverUnavailable(url, f"download took longer than {self.timeout:g} s")
        if kind is None:
            kind = image_kind(bytes(data))
        if kind is None or len(data) < MIN_BYTES:
            raise CoverError(url, "not a jpg or png image" if data else "empty body")
        return bytes(data), kind


class _NotPublic(Exception):
    """A download's connection reached an address of this network (not an OSError: urllib3 and
    requests let it through as it is, without retrying)."""


class _Guard:
    """The connections of one download (``_download_once``): each is checked as it opens, and
    all are shut at the download's deadline.

    The check: the name was resolved when the address was checked and is resolved again when
    connecting; a DNS answer that changed in between (rebinding) would reach the network, so
    the address actually connected to must be public too (in production), before a byte is sent.
    The deadline: a socket timeout bounds each read, and a read of a chunk (or of a header line)
    waits for all of it, so a host sending a byte at a time would hold the download for as long
    as it likes; a timer shuts the sockets at the deadline, which ends any read at once."""

    def __init__(self, deadline: float, public_only: bool) -> None:
        self.public_only = public_only
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def opened(self, conn: HTTPConnection, sock: socket.socket) -> socket.socket:
        if self.public_only and not conn.proxy:  # through a proxy, the proxy is the peer
            address = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
            if not address.is_global:
                sock.close()
                raise _NotPublic(str(address))
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def stop(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_current_guard: ContextVar[_Guard | None] = ContextVar("cover_download_guard", default=None)


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        guard = _current_guard.get()
        return guard.opened(self, sock) if guard is not None else sock


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        guard = _current_guard.get()
        return guard.opened(self, sock) if guard is not None else sock


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


_GUARDED_POOLS = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections pass through the current download's _Guard."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_GUARDED_POOLS)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(_GUARDED_POOLS)
        return manager


def _session() -> requests.Session:
    session = requests.Session()
    adapter = _GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _network_problem(exc: Exception) -> str:
    """What went wrong, without the exception's text: it quotes the address, query string too."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke during the download"
    return f"connection failed ({type(exc).__name__})"


def covers(svc: Services) -> Covers:
    """The app's resolver: the customer-contact client the campaign code uses."""
    from app.wecom.client import contact_client

    s = svc.settings
    return Covers(
        svc.redis,
        svc.clock,
        lambda: contact_client(svc),
        s.WECOM_CORP_ID,
        timeout=s.COVER_DOWNLOAD_TIMEOUT,
        public_only=s.is_production,
    )


def send_with_covers(
    resolver: Covers, build: Callable[[Callable[[str], str]], dict], send: Callable[[dict], T]
) -> T:
    """``send(build(cover))`` where ``cover`` turns a cover address into a media id; when WeCom
    answers 40007 for a message that used cached covers, forget them, upload again and send
    once more (40007 means the call was refused: nothing was created)."""
    used: list[str] = []

    def cover(url: str) -> str:
        used.append(url)
        return resolver.media_id(url)

    body = build(cover)
    try:
        return send(body)
    except WeComError as exc:
        if exc.errcode != INVALID_MEDIA_ID or not used:
            raise
        log.warning("WeCom refused a cached cover media id (40007); uploading %d cover(s) again", len(used))
        for url in used:
            resolver.forget(url)
        return send(build(resolver.media_id))
