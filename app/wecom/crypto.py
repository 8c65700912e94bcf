"""WeCom callback crypto (WXBizMsgCrypt): signature, AES-256-CBC decrypt/encrypt, receive id.

The AES layer is wechatpy's ``PrpCrypto``. The signature is computed and compared here because
wechatpy compares with ``!=`` (not constant-time) and its ``decrypt_message`` parses the
envelope with xmltodict; this project parses XML only with defusedxml (app/wecom/events.py).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from wechatpy.enterprise.crypto import PrpCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException

from app.wecom.errors import BadSignature, Undecryptable, WrongReceiver

REPLY_ENVELOPE = (
    "<xml>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<MsgSignature><![CDATA[{signature}]]></MsgSignature>\n"
    "<TimeStamp>{timestamp}</TimeStamp>\n<Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>"
)


class _FixedRandomPrpCrypto(PrpCrypto):
    """PrpCrypto with a given 16-byte random prefix, for reproducible test vectors."""

    def __init__(self, key: bytes, random16: str) -> None:
        super().__init__(key)
        self._random16 = random16

    def get_random_string(self) -> str:
        return self._random16


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """sha1 over the four strings sorted lexicographically (WeCom's msg_signature)."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()  # noqa: S324


class CallbackCrypto:
    """One app's callback credentials: token, EncodingAESKey and the expected receive id."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        import base64

        self.token = token
        self.receive_id = receive_id
        self.key = base64.b64decode(encoding_aes_key + "=")
        if len(self.key) != 32:
            raise ValueError("EncodingAESKey must decode to 32 bytes")

    def check(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = signature(self.token, timestamp, nonce, encrypt)
        # As bytes: compare_digest raises TypeError on a str with non-ASCII characters.
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode()):
            raise BadSignature("msg_signature does not match")

    def decrypt(self, encrypt: str) -> str:
        try:
            return PrpCrypto(self.key).decrypt(encrypt, self.receive_id)
        except InvalidCorpIdException:
            raise WrongReceiver("receive id is not this corp") from None
        except Exception as exc:  # base64, block size, padding, length prefix, UTF-8: all "cannot decrypt"
            raise Undecryptable(f"cannot decrypt: {type(exc).__name__}") from None

    def verify_url(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """GET URL verification: the decrypted echostr, to be answered verbatim."""
        self.check(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr)

    def open(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> str:
        """POST: check the signature over the Encrypt value, then decrypt it."""
        self.check(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)

    def encrypt(self, plaintext: str, random16: str | None = None) -> str:
        crypto = _FixedRandomPrpCrypto(self.key, random16) if random16 else PrpCrypto(self.key)
        return crypto.encrypt(plaintext, self.receive_id).decode()

    def seal_callback(
        self, plaintext: str, timestamp: str, nonce: str, agent_id: str = "", random16: str | None = None
    ) -> tuple[str, str]:
        """What the WeCom platform sends: (msg_signature for the query string, the POST body)."""
        encrypt = self.encrypt(plaintext, random16)
        agent = f"<AgentID><![CDATA[{agent_id}]]></AgentID>" if agent_id else ""
        body = (
            f"<xml><ToUserName><![CDATA[{self.receive_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>{agent}</xml>"
        )
        return signature(self.token, timestamp, nonce, encrypt), body

    def seal(
        self, plaintext: str, nonce: str, timestamp: str | None = None, random16: str | None = None
    ) -> str:
        """The encrypted passive-reply envelope (also what the sandbox POSTs as a callback body)."""
        timestamp = timestamp or str(int(time.time()))
        encrypt = self.encrypt(plaintext, random16)
        return REPLY_ENVELOPE.format(
            encrypt=encrypt,
            signature=signature(self.token, timestamp, nonce, encrypt),
            timestamp=timestamp,
            nonce=nonce,
        )
