"""Loading cards: versions by content hash, unchanged cards not stored again, a changed card a new
version while the old one stays, a broken file never replacing a good version, `scrm sop load`."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.sop import versions
from app.sop.loader import Library
from app.sop.versions import canonical_body, card_of, content_hash, current, load_cards
from app.store.models import CorpTag, SopCard, SopCardVersion

CARDS = Path(__file__).resolve().parents[2] / "sop_cards"
STARTERS = sorted(p.stem for p in CARDS.glob("*.yaml"))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A copy of the starter cards to edit."""
    target = tmp_path / "cards"
    shutil.copytree(CARDS, target)
    return target


def _rows(svc) -> int:
    with svc.sessions() as session:
        return session.scalar(select(func.count()).select_from(SopCardVersion))


def _current(svc, card_id: str) -> SopCardVersion | None:
    with svc.sessions() as session:
        return current(session, card_id)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_first_load_stores_version_1_of_every_card(svc, clock, folder: Path) -> None:
    report = load_cards(svc, [folder])
    assert report.ok and str(report) == "7 card file(s): 7 new"
    assert sorted((o.card_id, o.status, o.version) for o in report.outcomes) == [
        (card_id, "new", 1) for card_id in STARTERS
    ]
    assert _rows(svc) == 7
    stored = _current(svc, "lost-lead-recall")
    assert stored is not None
    assert (stored.version, stored.title, stored.loaded_at) == (1, "战败召回", clock.now())
    assert stored.source_path == str(folder / "lost-lead-recall.yaml")
    card = card_of(stored)
    assert card.id == "lost-lead-recall" and card.trigger.stage == "lost"
    assert stored.body == canonical_body(card) and stored.content_hash == content_hash(stored.body)
    with svc.sessions() as session:
        assert versions.get(session, stored.id).card_id == "lost-lead-recall"
        assert current(session, "no-such-card") is None


def test_an_unchanged_card_is_not_stored_again(svc, clock, folder: Path) -> None:
    load_cards(svc, [folder])
    # comments, key order and layout are not content
    _edit(folder / "referral.yaml", "id: referral\n", "# 注释\nid:   referral   # 同一张卡\n")
    clock.advance(60)
    report = load_cards(svc, [folder])
    assert report.ok and str(report) == "7 card file(s): 7 unchanged"
    assert _rows(svc) == 7
    assert _current(svc, "referral").loaded_at == clock.now() - timedelta(seconds=60)


def test_a_changed_card_is_version_2_and_version_1_stays(svc, clock, folder: Path) -> None:
    load_cards(svc, [folder])
    v1 = _current(svc, "referral")
    _edit(folder / "referral.yaml", "version_notes: 首版", "version_notes: 第二版：加了一句")
    clock.advance(3600)
    report = load_cards(svc, [folder])
    changed = [o for o in report.outcomes if o.status != "unchanged"]
    assert [(o.card_id, o.status, o.version) for o in changed] == [("referral", "new", 2)]
    v2 = _current(svc, "referral")
    assert v2.id != v1.id and v2.version == 2 and v2.content_hash != v1.content_hash
    assert card_of(v2).version_notes.startswith("第二版")
    with svc.sessions() as session:  # what a running enrollment pinned is still there, unchanged
        pinned = versions.get(session, v1.id)
        assert (pinned.version, pinned.body, pinned.loaded_at) == (1, v1.body, v1.loaded_at)
        assert [v.version for v in versions.versions(session, "referral")] == [1, 2]


def test_a_card_edited_back_points_at_its_old_version(svc, folder: Path) -> None:
    load_cards(svc, [folder])
    v1 = _current(svc, "referral")
    path = folder / "referral.yaml"
    original = path.read_text(encoding="utf-8")
    _edit(path, "title: 老带新", "title: 老带新（试行）")
    load_cards(svc, [folder])
    path.write_text(original, encoding="utf-8")
    report = load_cards(svc, [folder])
    outcome = next(o for o in report.outcomes if o.card_id == "referral")
    assert (outcome.status, outcome.version) == ("reverted", 1)
    assert str(outcome) == f"referral: back to version 1 (same content as that version; {path})"
    assert _current(svc, "referral").id == v1.id
    assert _rows(svc) == 8


def test_a_broken_file_never_replaces_a_good_version(svc, folder: Path) -> None:
    load_cards(svc, [folder])
    good = _current(svc, "test-drive-invite")
    _edit(folder / "test-drive-invite.yaml", "  - at: +1d 10:00", "  - at: +1d 25:00")
    (folder / "new-card.yaml").write_text(
        "id: new-card\ntitle: 新卡\ntrigger:\n  on: manual\nsteps:\n  - at: day 0\n    reminder: 提醒 {customer}\n",
        encoding="utf-8",
    )
    report = load_cards(svc, [folder])
    assert not report.ok
    assert [str(p) for p in report.problems] == [
        f"{folder / 'test-drive-invite.yaml'}:37: steps[1].at: bad time '25:00': hours are 00-23 and minutes 00-59"
    ]
    outcomes = {o.card_id: o for o in report.outcomes}
    assert (outcomes["test-drive-invite"].status, outcomes["test-drive-invite"].version) == ("rejected", 1)
    assert str(outcomes["test-drive-invite"]) == (
        f"test-drive-invite: rejected ({folder / 'test-drive-invite.yaml'}: 1 problem; current version stays 1)"
    )
    assert (outcomes["new-card"].status, outcomes["new-card"].version) == ("new", 1)  # good files still load
    assert _current(svc, "test-drive-invite").id == good.id
    assert str(report) == "8 card file(s): 1 new, 6 unchanged, 1 rejected"


def test_a_duplicated_id_stores_neither_file(svc, folder: Path) -> None:
    shutil.copy(folder / "referral.yaml", folder / "referral-copy.yaml")
    report = load_cards(svc, [folder])
    rejected = sorted(o.path for o in report.outcomes if o.status == "rejected")
    assert rejected == [str(folder / "referral-copy.yaml"), str(folder / "referral.yaml")]
    assert _current(svc, "referral") is None


def test_load_checks_tags_against_the_store(svc, folder: Path) -> None:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    with svc.sessions() as session, session.begin():
        session.add(CorpTag(tag_id="t1", group_id="g", group_name="意向车型", name="RAV4", synced_at=now))
    report = load_cards(svc, [folder])
    rejected = {o.card_id for o in report.outcomes if o.status == "rejected"}
    # every starter that names a tag other than 意向车型:RAV4 is rejected while the library lacks it
    assert rejected == {
        "prospect-welcome",
        "test-drive-invite",
        "lost-lead-recall",
        "new-owner-care",
        "first-maintenance",
        "referral",
    }
    assert _current(svc, "high-intent-follow-up").version == 1
    assert load_cards(svc, [folder], Library()).ok  # an explicit empty library checks syntax only


def test_pointer_and_versions_are_consistent(svc, folder: Path) -> None:
    load_cards(svc, [folder])
    with svc.sessions() as session:
        pointers = session.scalars(select(SopCard)).all()
        assert sorted(p.card_id for p in pointers) == STARTERS
        for pointer in pointers:
            assert session.get(SopCardVersion, pointer.current_version_id).card_id == pointer.card_id


def test_load_cli(scrm, folder: Path) -> None:
    first = scrm("sop", "load", str(folder))
    assert first.exit_code == 0
    lines = first.output.splitlines()
    assert f"referral: new version 1 ({folder / 'referral.yaml'})" in lines
    assert lines[-1] == "7 card file(s): 7 new"
    _edit(folder / "referral.yaml", "title: 老带新", "title: 老带新 2.0")
    _edit(folder / "first-maintenance.yaml", "on: tag_added", "on: tag_add")
    second = scrm("sop", "load", str(folder))
    assert second.exit_code == 1
    lines = second.output.splitlines()
    assert lines[0].startswith(f"{folder / 'first-maintenance.yaml'}:11: trigger: unknown on 'tag_add'")
    assert f"referral: new version 2 ({folder / 'referral.yaml'})" in lines
    assert "prospect-welcome: unchanged (version 1)" in lines
    assert (
        f"first-maintenance: rejected ({folder / 'first-maintenance.yaml'}: 1 problem; current version stays 1)"
        in lines
    )
    assert lines[-1] == "7 card file(s): 1 new, 5 unchanged, 1 rejected"


def test_concurrent_loads_store_each_version_once(svc, folder: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    library = Library()
    with ThreadPoolExecutor(4) as pool:
        reports = list(pool.map(lambda _: load_cards(svc, [folder], library), range(4)))
    assert all(report.ok for report in reports)
    assert sum(report.count("new") for report in reports) == 7
    assert _rows(svc) == 7
