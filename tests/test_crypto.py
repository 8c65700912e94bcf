"""WeCom callback crypto against every published and generated vector in shared/wecom."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote

import pytest

from app.wecom.crypto import CallbackCrypto, signature
from app.wecom.errors import BadSignature, Undecryptable, WrongReceiver

VECTORS = json.loads((Path(__file__).parent / "fixtures/vectors/crypto_vectors.json").read_text())["vectors"]
SAMPLES = json.loads((Path(__file__).parent / "fixtures/vectors/encrypted_samples.json").read_text())


def _crypto(v: dict) -> CallbackCrypto:
    return CallbackCrypto(v["token"], v["encoding_aes_key"], v["corp_id"])


@pytest.mark.parametrize("v", [v for v in VECTORS if v["kind"] == "get"], ids=lambda v: v["name"])
def test_url_verification_vectors(v: dict) -> None:
    echostr = unquote(v["echostr_urlencoded"]) if "echostr_urlencoded" in v else v["echostr"]
    assert echostr == v["echostr"]
    assert (
        _crypto(v).verify_url(v["msg_signature"], v["timestamp"], v["nonce"], echostr)
        == v["expected_echo_plaintext"]
    )


@pytest.mark.parametrize("v", [v for v in VECTORS if v["kind"] == "post"], ids=lambda v: v["name"])
def test_post_decryption_vectors(v: dict) -> None:
    plaintext = _crypto(v).open(v["msg_signature"], v["timestamp"], v["nonce"], v["encrypt"])
    assert plaintext == v["expected_plaintext_xml"]


@pytest.mark.parametrize("v", [v for v in VECTORS if v["kind"] in ("get", "post")], ids=lambda v: v["name"])
def test_tampered_nonce_is_rejected(v: dict) -> None:
    payload = v.get("encrypt") or v["echostr"]
    with pytest.raises(BadSignature):
        _crypto(v).open(v["msg_signature"], v["timestamp"], v["nonce"] + "1", payload)


@pytest.mark.parametrize("v", [v for v in VECTORS if v["kind"] in ("get", "post")], ids=lambda v: v["name"])
def test_wrong_corp_id_is_rejected(v: dict) -> None:
    crypto = CallbackCrypto(v["token"], v["encoding_aes_key"], "ww0000000000000000")
    payload = v.get("encrypt") or v["echostr"]
    with pytest.raises(WrongReceiver):
        crypto.open(v["msg_signature"], v["timestamp"], v["nonce"], payload)


def test_deterministic_reply_encryption_vector() -> None:
    v = next(v for v in VECTORS if v["kind"] == "encrypt")
    crypto = _crypto(v)
    assert crypto.encrypt(v["reply_plaintext"], v["random16"]) == v["expected_encrypt"]
    assert (
        signature(v["token"], v["timestamp"], v["nonce"], v["expected_encrypt"])
        == v["expected_msg_signature"]
    )
    envelope = crypto.seal(v["reply_plaintext"], v["nonce"], v["timestamp"], v["random16"])
    assert v["expected_encrypt"] in envelope and v["expected_msg_signature"] in envelope


def test_generated_samples_decrypt_to_their_plaintext() -> None:
    crypto = CallbackCrypto(SAMPLES["token"], SAMPLES["encoding_aes_key"], SAMPLES["corp_id"])
    from app.wecom.events import parse_xml

    assert len(SAMPLES["samples"]) >= 15
    for sample in SAMPLES["samples"].values():
        q = sample["query"]
        encrypt = parse_xml(sample["post_body"])["Encrypt"]
        assert crypto.open(q["msg_signature"], q["timestamp"], q["nonce"], encrypt) == sample["plaintext"]


def test_round_trip_and_garbage() -> None:
    v = VECTORS[0]
    crypto = _crypto(v)
    text = "<xml><Content><![CDATA[你好, 试驾]]></Content></xml>"
    assert crypto.decrypt(crypto.encrypt(text)) == text
    for garbage in ("not base64!", "AAAA", "", "QUJD" * 5):
        with pytest.raises(Undecryptable):
            crypto.decrypt(garbage)
