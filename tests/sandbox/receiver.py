"""A scripted callback receiver on a real socket: answers each POST from a script of
(status, body, delay) and keeps every request, decrypted like the app would."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from app.config import SANDBOX_CREDENTIALS
from app.wecom.crypto import CallbackCrypto
from app.wecom.events import parse_xml
from tests.sandbox.conftest import CORP_ID


@dataclass
class Received:
    path: str
    msg_signature: str
    timestamp: str
    nonce: str
    encrypt: str
    agent_id: str
    plaintext: str


class Receiver:
    def __init__(self, script: list[tuple[int, str, float]] | None = None) -> None:
        self.script = list(script or [])
        self.received: list[Received] = []
        self.crypto = CallbackCrypto(
            SANDBOX_CREDENTIALS["WECOM_TOKEN"], SANDBOX_CREDENTIALS["WECOM_AES_KEY"], CORP_ID
        )
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.port}"

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        envelope = parse_xml(request.get_data())
        encrypt = str(envelope["Encrypt"])
        args = request.args
        plaintext = self.crypto.open(args["msg_signature"], args["timestamp"], args["nonce"], encrypt)
        with self._lock:
            self.received.append(
                Received(
                    request.path,
                    args["msg_signature"],
                    args["timestamp"],
                    args["nonce"],
                    encrypt,
                    str(envelope.get("AgentID", "")),
                    plaintext,
                )
            )
            status, body, delay = self.script.pop(0) if self.script else (200, "success", 0.0)
        if delay:
            time.sleep(delay)
        return Response(body, status=status, mimetype="text/plain")(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
