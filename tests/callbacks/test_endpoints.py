"""The callback endpoints' contract: URL verification, every rejection, deduplication."""

from __future__ import annotations

import logging

import pytest

from app.config import SANDBOX_CREDENTIALS
from app.store import inbox
from app.wecom.crypto import CallbackCrypto, signature
from tests.conftest import FIXTURES
from workers.queues import EVENTS, HIGH, queue
from workers.relay import pending_notices, relay_pending

ADD = (FIXTURES / "events/change_external_contact__add_external_contact.xml").read_text()
TOKEN = SANDBOX_CREDENTIALS["WECOM_TOKEN"]
AES_KEY = SANDBOX_CREDENTIALS["WECOM_AES_KEY"]
CORP = SANDBOX_CREDENTIALS["WECOM_CORP_ID"]


def _nothing_stored(svc) -> None:
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (0, 0)
    assert pending_notices(svc.redis) == {"high": 0, "events": 0}
    assert queue(EVENTS, svc.redis).count == 0


def _signed_post(
    client, body: bytes | str, encrypt: str, path: str = "/wecom/callback", ts: str = "1700000000"
):
    nonce = "4242"
    return client.post(
        path,
        query_string={"msg_signature": signature(TOKEN, ts, nonce, encrypt), "timestamp": ts, "nonce": nonce},
        data=body if isinstance(body, bytes) else body.encode(),
        content_type="text/xml",
    )


# -- URL verification ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/wecom/callback", "/wecom/bot"])
def test_url_verification_answers_the_plaintext(client, wecom: CallbackCrypto, path: str) -> None:
    echostr = wecom.encrypt("8123456789012345678")
    response = client.get(
        path,
        query_string={
            "msg_signature": signature(TOKEN, "1700000000", "77", echostr),
            "timestamp": "1700000000",
            "nonce": "77",
            "echostr": echostr,
        },
    )
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.data == b"8123456789012345678"


def test_url_verification_with_a_bad_signature_is_403(client, wecom: CallbackCrypto) -> None:
    echostr = wecom.encrypt("1")
    query = {"msg_signature": "0" * 40, "timestamp": "1", "nonce": "2", "echostr": echostr}
    assert client.get("/wecom/callback", query_string=query).status_code == 403


def test_url_verification_for_another_corp_is_403(client) -> None:
    other = CallbackCrypto(TOKEN, AES_KEY, "ww_some_other_corp")
    echostr = other.encrypt("1")
    query = {
        "msg_signature": signature(TOKEN, "1", "2", echostr),
        "timestamp": "1",
        "nonce": "2",
        "echostr": echostr,
    }
    assert client.get("/wecom/callback", query_string=query).status_code == 403


def test_url_verification_with_a_url_encoded_echostr(client, wecom: CallbackCrypto) -> None:
    # WeCom URL-encodes the echostr (it holds + / =); Flask's query parsing must hand us the raw value.
    echostr = wecom.encrypt("5927782489442352469")
    assert "+" in echostr or "/" in echostr or "=" in echostr
    sig = signature(TOKEN, "1411443780", "437374425", echostr)
    from urllib.parse import quote

    url = f"/wecom/callback?msg_signature={sig}&timestamp=1411443780&nonce=437374425&echostr={quote(echostr, safe='')}"
    assert client.get(url).data == b"5927782489442352469"


# -- rejections: none stores, none enqueues, each is logged once without secrets -------------------


def _rejections(wecom: CallbackCrypto):
    good_sig, good_body = wecom.seal_callback(ADD, "1700000000", "4242")
    other = CallbackCrypto(TOKEN, AES_KEY, "ww_some_other_corp")
    _, other_body = other.seal_callback(ADD, "1700000000", "4242")
    other_encrypt = other_body.split("<![CDATA[")[2].split("]]>")[0]
    dtd_inner = wecom.encrypt('<!DOCTYPE x [<!ENTITY a "aaaa">]><xml><MsgType>&a;</MsgType></xml>')
    broken_inner = wecom.encrypt("<xml><MsgType>event</MsgType>")
    no_type_inner = wecom.encrypt("<xml><Foo>1</Foo></xml>")
    return {
        "bad signature": (403, "sig", good_body, None),
        "wrong receive id": (403, "ok", other_body, other_encrypt),
        "undecryptable Encrypt": (
            400,
            "ok",
            "<xml><Encrypt>bm90IGEgdmFsaWQgYmxvY2s=</Encrypt></xml>",
            "bm90IGEgdmFsaWQgYmxvY2s=",
        ),
        "envelope not XML": (400, "ok", "this is not xml", "x"),
        "envelope without Encrypt": (400, "ok", "<xml><ToUserName>x</ToUserName></xml>", "x"),
        "envelope with a DTD": (
            400,
            "ok",
            '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>',
            "x",
        ),
        "plaintext with an entity": (400, "ok", f"<xml><Encrypt>{dtd_inner}</Encrypt></xml>", dtd_inner),
        "plaintext not well-formed": (
            400,
            "ok",
            f"<xml><Encrypt>{broken_inner}</Encrypt></xml>",
            broken_inner,
        ),
        "plaintext without MsgType": (
            400,
            "ok",
            f"<xml><Encrypt>{no_type_inner}</Encrypt></xml>",
            no_type_inner,
        ),
    }, good_sig


@pytest.mark.parametrize(
    "case",
    [
        "bad signature",
        "wrong receive id",
        "undecryptable Encrypt",
        "envelope not XML",
        "envelope without Encrypt",
        "envelope with a DTD",
        "plaintext with an entity",
        "plaintext not well-formed",
        "plaintext without MsgType",
    ],
)
def test_rejected_callbacks_store_nothing(client, svc, wecom: CallbackCrypto, caplog, case: str) -> None:
    cases, _ = _rejections(wecom)
    status, mode, body, encrypt = cases[case]
    caplog.set_level(logging.INFO)
    if mode == "sig":
        response = client.post(
            "/wecom/callback",
            query_string={"msg_signature": "f" * 40, "timestamp": "1700000000", "nonce": "4242"},
            data=body.encode(),
        )
    else:
        response = _signed_post(client, body, encrypt)
    assert response.status_code == status
    _nothing_stored(svc)
    rejections = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejections) == 1
    logged = caplog.text
    assert TOKEN not in logged and AES_KEY not in logged


def test_missing_signature_parameters_are_403(client, svc, wecom: CallbackCrypto) -> None:
    _, body = wecom.seal_callback(ADD, "1700000000", "1")
    assert client.post("/wecom/callback", data=body.encode()).status_code == 403
    _nothing_stored(svc)


def test_a_non_ascii_signature_is_403_not_a_crash(client, svc, wecom: CallbackCrypto) -> None:
    # hmac.compare_digest refuses str with non-ASCII characters (TypeError): that was a 500.
    _, body = wecom.seal_callback(ADD, "1700000000", "1")
    query = {"msg_signature": "é" * 40, "timestamp": "1700000000", "nonce": "1"}
    assert client.post("/wecom/callback", query_string=query, data=body.encode()).status_code == 403
    echostr = wecom.encrypt("1")
    assert client.get("/wecom/callback", query_string={**query, "echostr": echostr}).status_code == 403
    _nothing_stored(svc)


def test_deeply_nested_xml_is_400_not_a_crash(client, svc, wecom: CallbackCrypto) -> None:
    # Well-formed but nested thousands deep: reading it recursively was a RecursionError (500),
    # before the signature check for the envelope and after it for the plaintext.
    deep = "<a>" * 5000 + "</a>" * 5000
    query = {"msg_signature": "f" * 40, "timestamp": "1700000000", "nonce": "1"}
    envelope = f"<xml><Encrypt>x</Encrypt>{deep}</xml>"
    assert client.post("/wecom/callback", query_string=query, data=envelope.encode()).status_code == 400
    inner = wecom.encrypt(f"<xml><MsgType>event</MsgType><Event>x</Event>{deep}</xml>")
    assert _signed_post(client, f"<xml><Encrypt>{inner}</Encrypt></xml>", inner).status_code == 400
    _nothing_stored(svc)


def test_body_over_64_kib_is_413(client, svc, wecom: CallbackCrypto) -> None:
    padding = "<Pad>" + "x" * (70 * 1024) + "</Pad>"
    sig, body = wecom.seal_callback(ADD.replace("</xml>", padding + "</xml>"), "1700000000", "9")
    assert len(body) > 64 * 1024
    response = client.post(
        "/wecom/callback",
        query_string={"msg_signature": sig, "timestamp": "1700000000", "nonce": "9"},
        data=body,
    )
    assert response.status_code == 413
    _nothing_stored(svc)


def test_body_just_under_the_limit_is_accepted(client, svc, wecom: CallbackCrypto) -> None:
    # An event's plaintext grows by ~4/3 once encrypted and base64-encoded; stay under 64 KiB.
    padding = "<Pad>" + "x" * (46 * 1024) + "</Pad>"
    sig, body = wecom.seal_callback(ADD.replace("</xml>", padding + "</xml>"), "1700000000", "9")
    assert 60 * 1024 < len(body) <= 64 * 1024
    response = client.post(
        "/wecom/callback",
        query_string={"msg_signature": sig, "timestamp": "1700000000", "nonce": "9"},
        data=body,
    )
    assert response.status_code == 200
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (1, 1)


# -- deduplication ---------------------------------------------------------------------------------


def test_a_retried_event_is_stored_once_and_enqueued_once(poster, svc) -> None:
    # WeCom's retry re-encrypts the same event: new nonce, new random prefix, same plaintext.
    assert poster.post(ADD, timestamp="1700000000").data == b"success"
    assert poster.post(ADD, timestamp="1700000005").data == b"success"
    assert poster.post(ADD, timestamp="1700000011").data == b"success"
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (1, 3)
    # An add with a WelcomeCode jumps the queue: its notice goes to the high list, its job to HIGH.
    assert pending_notices(svc.redis) == {"high": 1, "events": 0}
    assert relay_pending(svc.redis, svc.settings) == 1
    assert queue(HIGH, svc.redis).count == 1


def test_two_customers_adding_one_advisor_in_the_same_second_are_two_events(poster, svc) -> None:
    second = ADD.replace("woAJ2GCAAAXtWyujaWJHDDGi0mAAAA", "woAJ2GCAAAXtWyujaWJHDDGi0mBBBB")
    assert second != ADD
    poster.post(ADD)
    poster.post(second)
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (2, 2)
    assert pending_notices(svc.redis) == {"high": 2, "events": 0}


def test_only_events_with_a_welcome_code_go_to_the_high_queue(poster, svc) -> None:
    poster.post(ADD)
    poster.post(ADD.replace("WelcomeCode", "NotAWelcomeCode").replace("mAAAA", "mCCCC"))
    poster.post((FIXTURES / "events" / "change_external_contact__edit_external_contact.xml").read_text())
    assert pending_notices(svc.redis) == {"high": 1, "events": 2}
    relay_pending(svc.redis, svc.settings)
    assert (queue(HIGH, svc.redis).count, queue(EVENTS, svc.redis).count) == (1, 2)


def test_the_same_message_id_to_the_bot_is_one_event(poster, svc) -> None:
    text = (FIXTURES / "events/msg__text.xml").read_text()
    poster.post(text, path="/wecom/bot")
    poster.post(text.replace("hello", "hello again"), path="/wecom/bot")  # same MsgId: a retry
    with svc.sessions() as session:
        assert inbox.delivery_totals(session) == (1, 2)
