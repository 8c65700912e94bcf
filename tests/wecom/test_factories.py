"""contact_client / agent_client built from the app's Services."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from app.config import SANDBOX_CREDENTIALS
from app.wecom.client import WeComClient, agent_client, contact_client
from app.wecom.errors import RateLimited
from app.wecom.tokens import token_key

BASE = "http://127.0.0.1:8900/cgi-bin/"
CORP = SANDBOX_CREDENTIALS["WECOM_CORP_ID"]


@pytest.fixture()
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **app_config,
        "WECOM_API_BASE": "http://127.0.0.1:8900/cgi-bin",  # no slash: settings add it
        "WECOM_RATE_LIMITS": "externalcontact/add_msg_template=1",
        "WECOM_RATE_LIMIT_MAX_WAIT": 0,
        "WECOM_HTTP_TIMEOUT": 3.5,
    }


def test_one_cached_client_per_app(svc) -> None:
    contact, agent = contact_client(svc), agent_client(svc)
    assert contact is contact_client(svc)
    assert agent is agent_client(svc)
    assert contact is not agent
    assert isinstance(contact, WeComClient)
    assert (contact.app_name, contact.secret) == ("contact", SANDBOX_CREDENTIALS["WECOM_CONTACT_SECRET"])
    assert (agent.app_name, agent.secret) == ("agent", SANDBOX_CREDENTIALS["WECOM_AGENT_SECRET"])
    assert agent.agent_id == int(SANDBOX_CREDENTIALS["WECOM_AGENT_ID"])
    assert contact.api_base == BASE
    assert contact.timeout == 3.5


def test_apps_have_separate_tokens_and_share_the_corp_rate_limit(svc) -> None:
    secrets = {
        SANDBOX_CREDENTIALS["WECOM_CONTACT_SECRET"]: "CONTACT-TOKEN",
        SANDBOX_CREDENTIALS["WECOM_AGENT_SECRET"]: "AGENT-TOKEN",
    }

    def gettoken(request: Any) -> tuple[int, dict, str]:
        import json
        from urllib.parse import parse_qs, urlsplit

        secret = parse_qs(urlsplit(request.url).query)["corpsecret"][0]
        return 200, {}, json.dumps({"errcode": 0, "access_token": secrets[secret], "expires_in": 7200})

    with responses.RequestsMock() as http:
        http.add_callback(responses.GET, BASE + "gettoken", callback=gettoken)
        http.post(BASE + "externalcontact/add_msg_template", json={"errcode": 0, "msgid": "g"})
        contact_client(svc).external_contact.add_msg_template({"external_userid": ["e"]})
        # The per-corp limit of 1/min is already used up, whichever app asks.
        with pytest.raises(RateLimited):
            agent_client(svc).external_contact.add_msg_template({"external_userid": ["e"]})
        assert svc.redis.get(token_key(CORP, "contact")) == b"CONTACT-TOKEN"
        assert svc.redis.get(token_key(CORP, "agent")) == b"AGENT-TOKEN"
        sent = [c.request.url for c in http.calls if "add_msg_template" in c.request.url]
        assert len(sent) == 1 and "access_token=CONTACT-TOKEN" in sent[0]
