"""Tracked links: made once per url/customer/advisor/card/step, only http(s), and /r/<token>
records every open (link_opened) and redirects to the stored URL only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.insight import links
from tests.insight.conftest import logged
from tests.support import roster

URL = "https://www.toyota.com.cn/rav4/offer?utm_source=scrm&phone=13800000001"


def make(svc, url: str = URL, **kw) -> str:
    args = {
        "external_userid": "wm_c1",
        "advisor_userid": "sh01_a01",
        "card_id": "test_drive",
        "step_index": 1,
    }
    args.update(kw)
    with svc.sessions.begin() as session:
        return links.make_link(session, svc.settings, url=url, now=svc.clock.now(), **args)


def path_of(link: str) -> str:
    assert link.startswith("http://localhost:5000/r/")
    return link.removeprefix("http://localhost:5000")


def test_make_link_gives_a_short_public_link_and_reuses_it(svc) -> None:
    link = make(svc)
    token = path_of(link).removeprefix("/r/")
    assert links.TOKEN_PATTERN.fullmatch(token) and len(token) == 11
    assert make(svc) == link
    others = {
        make(svc, url=URL + "&x=1"),
        make(svc, external_userid="wm_c2"),
        make(svc, advisor_userid="sh01_a02"),
        make(svc, card_id="welcome"),
        make(svc, step_index=2),
        make(svc, card_id=None, step_index=None),
    }
    assert len(others) == 6 and link not in others
    assert make(svc, card_id=None, step_index=None) in others


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://example.com/file",
        "//evil.example.com/",
        "/relative/path",
        "https://",
        "https://user:pw@evil.example.com/",
        "https://good.example.com@evil.example.com/",
        "https://example.com/a b",
        "https://example.com/\r\nSet-Cookie: x=1",
        "https://example.com:99999/",
        "https://example.com/" + "a" * 2100,
        "",
    ],
)
def test_only_http_and_https_urls_can_be_tracked(svc, url: str) -> None:
    with pytest.raises(links.InvalidLink):
        make(svc, url=url)


def test_opening_redirects_and_records_each_open(svc, client, customer) -> None:
    now = svc.clock.now()
    roster.store(svc, [roster.dealer("SH01", now, name="浦东店")], [roster.advisor("sh01_a01", now, name="王芳")])
    path = path_of(make(svc))
    token = path.removeprefix("/r/")
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"] == URL
        assert response.headers["Cache-Control"] == "no-store"
    rows = logged(svc, "link_opened", "wm_c1")
    assert len(rows) == 3 and len({r.dedup_key for r in rows}) == 3
    assert rows[0].payload == {"token": token, "url": URL, "card": "test_drive", "step": 1}
    assert (rows[0].advisor_userid, rows[0].dealer_code) == ("sh01_a01", "SH01")


def test_opens_move_the_intent_score(svc, client, customer) -> None:
    path = path_of(make(svc))
    for _ in range(7):
        client.get(path)
    changes = logged(svc, "intent_changed", "wm_c1")
    assert [(c.payload["previous_band"], c.payload["band"]) for c in changes] == [("low", "medium")]
    response = client.get("/api/customers/wm_c1/intent", headers={"Authorization": "Bearer sandbox-hq-token"})
    assert response.json == {"score": 50.0, "band": "medium", "counts": {"link_opened": 7}}


def test_query_parameters_cannot_change_the_target(svc, client) -> None:
    path = path_of(make(svc, url="https://example.com/page"))
    for query in ("?url=https://evil.example.com/", "?next=//evil.example.com", "?redirect=javascript:x"):
        response = client.get(path + query)
        assert response.status_code == 302
        assert response.headers["Location"] == "https://example.com/page"


@pytest.mark.parametrize(
    "token", ["AAAAAAAAAAA", "short", "has.dot.in.it", "x" * 40, "..%2F..%2Fetc", "a/b", ""]
)
def test_unknown_tokens_are_a_plain_404(svc, client, token: str) -> None:
    response = client.get(f"/r/{token}")
    assert response.status_code == 404
    assert response.mimetype == "text/plain"
    assert logged(svc, "link_opened") == []


def test_a_head_request_redirects_without_counting_as_an_open(svc, client) -> None:
    path = path_of(make(svc))
    response = client.head(path)
    assert response.status_code == 302
    assert logged(svc, "link_opened") == []


def test_an_expired_link_is_gone(svc, client, clock) -> None:
    path = path_of(make(svc, expires_at=svc.clock.now() + timedelta(days=7)))
    assert client.get(path).status_code == 302
    clock.advance(timedelta(days=7))
    response = client.get(path)
    assert response.status_code == 410 and response.mimetype == "text/plain"
    assert len(logged(svc, "link_opened")) == 1
    make(svc, expires_at=None)  # sent again without an expiry: the same link lives again
    assert client.get(path).status_code == 302


def test_the_open_is_logged_without_the_query_string(svc, client, caplog) -> None:
    path = path_of(make(svc))
    with caplog.at_level("INFO", logger="app.insight"):
        client.get(path)
    text = caplog.text
    assert "opened" in text and "https://www.toyota.com.cn/rav4/offer" in text
    assert "13800000001" not in text and "utm_source" not in text


def test_an_iri_is_stored_and_redirected_to_as_ascii(svc, client) -> None:
    link = make(svc, url="https://例子.cn/车型?q=汉字")
    response = client.get(path_of(link))
    assert response.headers["Location"] == "https://xn--fsqu00a.cn/%E8%BD%A6%E5%9E%8B?q=%E6%B1%89%E5%AD%97"
    assert make(svc, url="https://xn--fsqu00a.cn/%E8%BD%A6%E5%9E%8B?q=%E6%B1%89%E5%AD%97") == link
