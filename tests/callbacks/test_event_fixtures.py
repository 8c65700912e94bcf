"""One test per event fixture (tests/fixtures/events/<Event>__<ChangeType>.xml): POSTed encrypted
through the real endpoint, processed by a real worker, ending in the expected state."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.store.models import InboxEvent, InboxStatus, Interaction
from tests.conftest import FIXTURES

EVENTS = FIXTURES / "events"

# fixture file → (final inbox status, interaction kind written, or None)
EXPECTED: dict[str, tuple[str, str | None]] = {
    "change_external_chat__create": (InboxStatus.IGNORED, None),
    "change_external_chat__update": (InboxStatus.IGNORED, None),
    "change_external_chat__dismiss": (InboxStatus.IGNORED, None),
}


# Fixtures whose handlers call WeCom are tested, one test per fixture, beside their handlers.
TESTED_ELSEWHERE: dict[str, str] = {
    f"change_external_contact__{change}": "tests/intake/test_contact_events.py"
    for change in (
        "add_external_contact",
        "add_half_external_contact",
        "edit_external_contact",
        "del_external_contact",
        "del_follow_user",
        "transfer_fail",
    )
}
TESTED_ELSEWHERE["msg__text"] = "tests/bot/test_bot_flow.py"
TESTED_ELSEWHERE.update(
    {
        f"change_external_tag__{change}": "tests/intake/test_tag_events.py"
        for change in ("create", "create__realworld_no_strategy", "update", "delete", "shuffle")
    }
)


def test_every_fixture_has_an_expectation() -> None:
    assert not set(EXPECTED) & set(TESTED_ELSEWHERE)
    assert sorted(path.stem for path in EVENTS.glob("*.xml")) == sorted({*EXPECTED, *TESTED_ELSEWHERE})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event_fixture(name: str, poster, work, svc) -> None:
    status, kind = EXPECTED[name]
    path = "/wecom/bot" if name.startswith("msg__") else "/wecom/callback"
    response = poster.post((EVENTS / f"{name}.xml").read_text(), path=path)
    assert response.status_code == 200
    assert response.data == b"success"

    work()

    with svc.sessions() as session:
        row = session.scalars(select(InboxEvent)).one()
        written = list(session.scalars(select(Interaction)))
    assert row.status == status, row.last_error
    assert row.source == ("bot" if path == "/wecom/bot" else "contact")
    assert row.attempts == 1
    if status == InboxStatus.IGNORED:
        assert row.status_reason  # a known-but-ignored type always says why
    if kind is None:
        assert written == []
    else:
        assert [i.kind for i in written] == [kind]
        assert written[0].source_event_id == row.id
        assert written[0].advisor_userid == "zhangsan"
        assert written[0].external_userid.startswith("woAJ2GCAAA")
        assert written[0].occurred_at.timestamp() == 1403610513
