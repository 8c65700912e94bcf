"""Callback delivery the way WeCom does it: encrypt and sign the plaintext, POST it with
msg_signature/timestamp/nonce in the query string, count only HTTP 200 within the timeout as
received, and otherwise re-deliver (up to ``callback_retries`` more times), re-encrypting the
same plaintext each time with a fresh random prefix, nonce and timestamp."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import requests

from app.sandbox.deliverylog import ACKNOWLEDGED, GAVE_UP, NO_URL, Attempt, DeliveryReport
from app.sandbox.state import SandboxState
from app.wecom.crypto import CallbackCrypto, signature
from app.wecom.events import parse_xml

CONTACT = "contact"
BOT = "bot"
_BODY_KEPT = 4000
_VERIFY_TIMEOUT = 1.0  # WeCom wants the echostr back within 1 s


class Deliverer:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[DeliveryReport]] = set()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def crypto(self, target: str) -> CallbackCrypto:
        c = self.state.config
        if target == BOT:
            return CallbackCrypto(c.bot_token or c.token, c.bot_aes_key or c.aes_key, c.corp_id)
        return CallbackCrypto(c.token, c.aes_key, c.corp_id)

    def deliver(
        self, target: str, plaintext: str, event_type: str, duplicate: bool = False
    ) -> DeliveryReport:
        """Deliver now, in this thread; returns when the receiver acknowledged or WeCom would give up.

        ``duplicate`` treats the first acknowledgement as lost, so the receiver gets one extra
        delivery after answering 200 (what happens when its answer does not reach WeCom)."""
        cfg = self.state.config
        url = cfg.callback_url if target == CONTACT else cfg.bot_callback_url
        log = self.state.delivery_log
        report = log.open(target, event_type, url, plaintext, duplicate)
        if not url:
            report.outcome = NO_URL
            log.closed(report)
            return report
        crypto = self.crypto(target)
        agent_id = str(cfg.agent_id) if target == BOT else ""
        answers_to_lose = 1 if duplicate else 0
        acknowledged_once = False
        for number in range(1, cfg.callback_retries + 2):
            if number > 1:
                self.state.clock.sleep(cfg.retry_delay)
            attempt = self._post(url, crypto, plaintext, agent_id, number, cfg.callback_timeout)
            report.attempts.append(attempt)
            log.attempted(attempt.acknowledged, duplicate=acknowledged_once)
            if attempt.acknowledged:
                acknowledged_once = True
                if answers_to_lose:
                    answers_to_lose -= 1
                    continue
                break
        report.outcome = ACKNOWLEDGED if acknowledged_once else GAVE_UP
        log.closed(report)
        return report

    def _post(
        self, url: str, crypto: CallbackCrypto, plaintext: str, agent_id: str, number: int, timeout: float
    ) -> Attempt:
        timestamp, nonce = str(self.state.now()), self.state.ids.nonce()
        msg_signature, body = crypto.seal_callback(plaintext, timestamp, nonce, agent_id)
        status: int | None = None
        error: str | None = None
        answer = ""
        started = time.perf_counter()
        try:
            response = self._session().post(
                url,
                params={"msg_signature": msg_signature, "timestamp": timestamp, "nonce": nonce},
                data=body.encode(),
                headers={"Content-Type": "text/xml; charset=utf-8"},
                timeout=timeout,
                allow_redirects=False,
            )
            status, answer = response.status_code, response.text[:_BODY_KEPT]
        except requests.Timeout:
            error = "timeout"
        except requests.RequestException as exc:
            error = type(exc).__name__
        latency = time.perf_counter() - started
        if status is not None and latency > timeout:
            error = "answered after the timeout"  # WeCom has already dropped the connection
        ok = status == 200 and error is None
        return Attempt(number, timestamp, nonce, status, error, round(latency * 1000, 2), ok, answer)

    def verify_url(self, target: str) -> dict[str, Any]:
        """The GET WeCom sends when an admin saves the callback URL: an encrypted echostr that the
        receiver must decrypt and answer verbatim, within 1 s."""
        cfg = self.state.config
        url = cfg.callback_url if target == CONTACT else cfg.bot_callback_url
        if not url:
            return {"url": None, "verified": False, "error": "no callback URL configured"}
        expected = str(self.state.ids.msg_id())
        timestamp, nonce = str(self.state.now()), self.state.ids.nonce()
        crypto = self.crypto(target)
        echostr = crypto.encrypt(expected)
        query = {"msg_signature": signature(crypto.token, timestamp, nonce, echostr), "timestamp": timestamp}
        query.update(nonce=nonce, echostr=echostr)
        try:
            response = self._session().get(url, params=query, timeout=_VERIFY_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            return {"url": url, "verified": False, "error": type(exc).__name__}
        verified = response.status_code == 200 and response.text == expected
        return {"url": url, "verified": verified, "status": response.status_code, "error": None}

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # never route callbacks to 127.0.0.1 through a proxy
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    # -- background delivery ----------------------------------------------------------------

    def submit(
        self, target: str, plaintext: str, event_type: str, duplicate: bool = False
    ) -> Future[DeliveryReport]:
        """Deliver on the sandbox's delivery pool; ``drain`` waits for everything submitted."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.state.config.delivery_workers, thread_name_prefix="sandbox-delivery"
                )
            future = self._pool.submit(self.deliver, target, plaintext, event_type, duplicate)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[DeliveryReport]) -> None:
        with self._lock:
            self._pending.discard(future)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted delivery finished; False if some are still running."""
        with self._lock:
            pending = set(self._pending)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            sessions, self._sessions = self._sessions, []
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for session in sessions:
            session.close()

    def open_reply(self, report: DeliveryReport) -> str | None:
        """The plaintext of a passive reply (the bot's encrypted answer) to the acknowledged
        delivery, or None when the receiver answered with an empty body or "success"."""
        answer = next((a.response_body for a in reversed(report.attempts) if a.acknowledged), "")
        if not answer.strip().startswith("<"):
            return None
        envelope = parse_xml(answer)
        fields = [envelope.get(name) for name in ("MsgSignature", "TimeStamp", "Nonce", "Encrypt")]
        if not all(isinstance(value, str) for value in fields):
            return None
        signature, timestamp, nonce, encrypt = (str(value).strip() for value in fields)
        return self.crypto(report.target).open(signature, timestamp, nonce, encrypt)
