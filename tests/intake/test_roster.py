"""scrm roster import: YAML and CSV rosters into the real database, every error with its line,
all or nothing, upserts, --deactivate-missing, --dry-run, and the demo's roster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.demo import scenario
from app.intake import matching
from app.intake.assign import load_roster
from app.intake.roster import DEMO_ROSTER, import_roster, read_roster_file
from app.store.models import Advisor, Dealer
from tests.conftest import FIXTURES

ROSTERS = FIXTURES / "roster"


def _dealers(svc) -> dict[str, Dealer]:
    with svc.sessions() as session:
        return {d.code: d for d in session.scalars(select(Dealer))}


def _advisors(svc) -> dict[str, Advisor]:
    with svc.sessions() as session:
        return {a.userid: a for a in session.scalars(select(Advisor))}


def _count(svc, model) -> int:
    with svc.sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def _assert_good_roster(svc, clock) -> None:
    """What good.yaml, or dealers.csv + advisors.csv, put in the database."""
    dealers = _dealers(svc)
    assert set(dealers) == {"SH01", "HZ01"}
    sh = dealers["SH01"]
    assert (sh.name, sh.region, sh.city) == ("一汽丰田上海浦东店", "east", "上海")
    assert (sh.lat, sh.lon) == (31.22, 121.54)
    assert isinstance(sh.lat, float)
    assert sh.models == ["RAV4", "COROLLA"]
    assert sh.territory == ["嘉兴"]
    assert sh.manager_userid == "sh01_mgr"
    assert sh.updated_at == clock.now()
    hz = dealers["HZ01"]
    assert (hz.models, hz.territory, hz.manager_userid) == (["RAV4"], [], None)

    advisors = _advisors(svc)
    assert set(advisors) == {"sh01_a01", "sh01_a02", "hz01_a01"}
    a1 = advisors["sh01_a01"]
    assert (a1.name, a1.dealer_code, a1.active) == ("王芳", "SH01", True)
    assert (a1.capacity_per_day, a1.max_open_leads, a1.seniority) == (20, 200, 2)
    assert a1.models == ["RAV4"]
    assert a1.languages == ["普通话", "上海话"]
    assert a1.segments == ["prospect", "intent"]
    assert a1.personas == ["rational"]
    assert (a1.acceptance_rate, a1.median_first_response_s) == (0.8, 300.0)
    # Defaults, and Chinese segment/persona names stored in English.
    a2 = advisors["sh01_a02"]
    assert (a2.active, a2.capacity_per_day, a2.max_open_leads, a2.seniority) == (True, 20, 200, 0)
    assert (a2.models, a2.languages) == ([], [])
    assert a2.segments == ["prospect", "lost", "owner"]
    assert a2.personas == ["emotional"]
    assert (a2.acceptance_rate, a2.median_first_response_s) == (None, None)
    # 否 is false; a repeated list item is kept once.
    h1 = advisors["hz01_a01"]
    assert (h1.active, h1.capacity_per_day, h1.models) == (False, 5, ["RAV4", "COROLLA"])
    assert h1.active is False and isinstance(h1.capacity_per_day, int)


def test_yaml_import(scrm, svc, clock) -> None:
    result = scrm("roster", "import", str(ROSTERS / "good.yaml"))
    assert result.exit_code == 0, result.output
    assert "dealers: 2 created, 0 updated" in result.output
    assert "advisors: 3 created, 0 updated, 0 unchanged, 0 deactivated" in result.output
    _assert_good_roster(svc, clock)


def test_csv_import_dealers_then_advisors(scrm, svc, clock) -> None:
    assert (ROSTERS / "dealers.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # with a BOM
    result = scrm("roster", "import", str(ROSTERS / "dealers.csv"))
    assert result.exit_code == 0, result.output
    assert "dealers: 2 created" in result.output
    result = scrm("roster", "import", str(ROSTERS / "advisors.csv"))  # no BOM, a blank line
    assert result.exit_code == 0, result.output
    assert "dealers: 0 created, 0 updated, 0 unchanged; advisors: 3 created" in result.output
    _assert_good_roster(svc, clock)


def test_yaml_errors_name_their_lines_and_nothing_is_written(scrm, svc) -> None:
    result = scrm("roster", "import", str(ROSTERS / "bad.yaml"))
    assert result.exit_code != 0
    assert result.stderr.splitlines() == [
        "bad.yaml line 6 (dealers[0] SH01): lat: must be ≤ 90",
        "bad.yaml line 8 (dealers[1] SH 02): code: may hold only letters, digits and _ . - @",
        "bad.yaml line 9 (dealers[2] SH01): code: duplicate SH01 (first at line 2)",
        "bad.yaml line 12 (advisors[1] sh01_a02): capacity_per_day: must be ≥ 1",
        "bad.yaml line 13 (advisors[2] sh01_a03): seniority: must be ≤ 3",
        "bad.yaml line 13 (advisors[2] sh01_a03): acceptance_rate: must be ≤ 1",
        "bad.yaml line 16 (advisors[3] sh01_a04): dealer: no dealer XX99 in this file or in the database",
        "bad.yaml line 17 (advisors[3] sh01_a04): segments: unknown segment 'vip' "
        "(one of prospect, intent, lost, owner, 潜客, 意向, 战败, 车主)",
        "bad.yaml line 18 (advisors[4] sh01_a01): userid: duplicate sh01_a01 (first at line 11)",
        "bad.yaml line 19 (advisors[5]): userid: required",
        "bad.yaml line 19 (advisors[5]): colour: unknown field",
        "bad.yaml line 20 (advisors[6]): must be a mapping of fields",
        "Error: 12 error(s) in bad.yaml; nothing was imported",
    ]
    assert _count(svc, Dealer) == 0
    assert _count(svc, Advisor) == 0


def test_csv_errors_name_their_lines_and_nothing_is_written(scrm, svc) -> None:
    assert scrm("roster", "import", str(ROSTERS / "dealers.csv")).exit_code == 0
    before = {code: d.updated_at for code, d in _dealers(svc).items()}
    result = scrm("roster", "import", str(ROSTERS / "bad_advisors.csv"))
    assert result.exit_code != 0
    assert result.stderr.splitlines() == [
        "bad_advisors.csv line 3: active: must be true or false (also 1/0, yes/no, 是/否)",
        "bad_advisors.csv line 3: capacity_per_day: must be ≥ 1",
        "bad_advisors.csv line 4: capacity_per_day: must be a whole number",
        "bad_advisors.csv line 4: personas: unknown persona 'romantic' (one of rational, emotional, 理性, 感性)",
        "bad_advisors.csv line 4: seniority: must be ≤ 3",
        "bad_advisors.csv line 4: dealer: no dealer NOPE in this file or in the database",
        "bad_advisors.csv line 5: userid: required",
        "bad_advisors.csv line 6: userid: duplicate sh01_a01 (first at line 2)",
        "Error: 8 error(s) in bad_advisors.csv; nothing was imported",
    ]
    assert _count(svc, Advisor) == 0  # line 2 is valid, and still not written
    assert {code: d.updated_at for code, d in _dealers(svc).items()} == before


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "bad_header.csv",
            "bad_header.csv line 1: cannot tell dealers from advisors: an advisors file has a `userid` "
            "column, a dealers file `code` and `lat` columns",
        ),
        ("dealers_bad.csv", "dealers_bad.csv line 1: unknown column(s): 'colour'"),
    ],
)
def test_csv_header_errors(scrm, svc, name: str, message: str) -> None:
    result = scrm("roster", "import", str(ROSTERS / name))
    assert result.exit_code != 0
    assert result.stderr.splitlines()[0] == message
    assert _count(svc, Dealer) == 0


def test_one_bad_advisor_keeps_the_valid_dealers_out_too(scrm, svc, tmp_path: Path) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text(
        "dealers:\n"
        "  - {code: SH01, name: 浦东店, region: east, city: 上海, lat: 31.2, lon: 121.5}\n"
        "advisors:\n"
        "  - {userid: a1, name: 甲, dealer: SH01}\n"
        "  - {userid: a2, name: 乙, dealer: SH01, median_first_response_s: -5}\n",
        encoding="utf-8",
    )
    result = scrm("roster", "import", str(path))
    assert result.exit_code != 0
    assert "roster.yaml line 5 (advisors[1] a2): median_first_response_s: must be ≥ 0" in result.stderr
    assert (_count(svc, Dealer), _count(svc, Advisor)) == (0, 0)


def test_more_file_level_errors(svc, tmp_path: Path) -> None:
    (tmp_path / "syntax.yaml").write_text("dealers:\n  - code: SH01\n\tname: x\n", encoding="utf-8")
    (tmp_path / "latin1.csv").write_bytes("userid,name,dealer\na1,Zoë,SH01\n".encode("latin-1"))
    (tmp_path / "roster.json").write_text("{}", encoding="utf-8")
    (tmp_path / "empty.yaml").write_text("# nothing\n", encoding="utf-8")
    (tmp_path / "sections.yaml").write_text("dealer:\n  - {code: SH01}\nadvisors: {a: 1}\n", encoding="utf-8")
    (tmp_path / "cells.csv").write_text("userid,name,dealer\na1,甲,SH01,extra\n", encoding="utf-8")
    messages = {
        name: read_roster_file(tmp_path / name).messages
        for name in sorted(p.name for p in tmp_path.iterdir())
    }
    assert messages["syntax.yaml"][0].startswith("syntax.yaml line 3: not valid YAML")
    assert messages["latin1.csv"] == ["latin1.csv line 2: not UTF-8 text (byte 24)"]
    assert messages["roster.json"] == ["roster.json: unsupported file type: use .yaml, .yml or .csv"]
    assert messages["empty.yaml"] == ["empty.yaml: empty file: expected `dealers:` and/or `advisors:`"]
    assert messages["sections.yaml"] == [
        "sections.yaml line 1: unknown section 'dealer'",
        "sections.yaml line 3: `advisors` must be a list",
    ]
    assert messages["cells.csv"] == ["cells.csv line 2: 4 cells but 3 columns"]


def test_reimport_is_idempotent_and_changes_are_updates(scrm, svc, clock, tmp_path: Path) -> None:
    assert scrm("roster", "import", str(ROSTERS / "good.yaml")).exit_code == 0
    first = clock.now()
    clock.advance(60)
    again = scrm("roster", "import", str(ROSTERS / "good.yaml"))
    assert again.exit_code == 0, again.output
    assert (
        "dealers: 0 created, 0 updated, 2 unchanged; "
        "advisors: 0 created, 0 updated, 3 unchanged, 0 deactivated" in again.output
    )
    assert {a.updated_at for a in _advisors(svc).values()} == {first}

    changed = tmp_path / "changed.csv"
    changed.write_text(
        "userid,name,dealer,capacity_per_day,models\nsh01_a01,王芳,SH01,30,RAV4\nsh01_a09,新人,HZ01,,\n",
        encoding="utf-8",
    )
    result = scrm("roster", "import", str(changed))
    assert result.exit_code == 0, result.output
    assert "advisors: 1 created, 1 updated, 0 unchanged, 0 deactivated" in result.output
    advisors = _advisors(svc)
    a1 = advisors["sh01_a01"]
    # Every field the file holds is set, defaults included: the row says what the advisor is now.
    assert (a1.capacity_per_day, a1.seniority, a1.languages, a1.updated_at) == (30, 0, [], clock.now())
    assert advisors["sh01_a02"].updated_at == first  # not in the file: left alone
    assert advisors["sh01_a09"].dealer_code == "HZ01"  # its dealer is already in the database


def test_deactivate_missing(scrm, svc, clock, tmp_path: Path) -> None:
    assert scrm("roster", "import", str(ROSTERS / "good.yaml")).exit_code == 0
    path = tmp_path / "sh01.yaml"
    path.write_text("advisors:\n  - {userid: sh01_a01, name: 王芳, dealer: SH01}\n", encoding="utf-8")
    clock.advance(5)

    plain = scrm("roster", "import", str(path))
    assert plain.exit_code == 0
    assert _advisors(svc)["sh01_a02"].active is True  # without the flag, absence changes nothing

    result = scrm("roster", "import", "--deactivate-missing", str(path))
    assert result.exit_code == 0, result.output
    assert "1 deactivated" in result.output
    advisors = _advisors(svc)
    assert advisors["sh01_a02"].active is False
    assert advisors["sh01_a02"].updated_at == clock.now()
    assert advisors["sh01_a01"].active is True
    assert advisors["hz01_a01"].dealer_code == "HZ01"  # another dealer's advisors: untouched

    again = scrm("roster", "import", "--deactivate-missing", str(path))
    assert "0 deactivated" in again.output


def test_deactivate_missing_needs_advisors_in_the_file(scrm, svc) -> None:
    assert scrm("roster", "import", str(ROSTERS / "good.yaml")).exit_code == 0
    result = scrm("roster", "import", "--deactivate-missing", str(ROSTERS / "dealers.csv"))
    assert result.exit_code != 0
    assert "--deactivate-missing needs a file that lists advisors" in result.stderr
    assert all(a.active for a in _advisors(svc).values() if a.userid != "hz01_a01")


def test_dry_run_validates_and_writes_nothing(scrm, svc) -> None:
    result = scrm("roster", "import", "--dry-run", str(ROSTERS / "good.yaml"))
    assert result.exit_code == 0, result.output
    assert "dry run, nothing written" in result.output
    assert "dealers: 2 created" in result.output
    assert (_count(svc, Dealer), _count(svc, Advisor)) == (0, 0)

    bad = scrm("roster", "import", "--dry-run", str(ROSTERS / "bad.yaml"))
    assert bad.exit_code != 0
    assert "bad.yaml line 6 (dealers[0] SH01): lat: must be ≤ 90" in bad.stderr


def test_import_roster_api(svc) -> None:
    result = import_roster(svc, ROSTERS / "good.yaml", dry_run=True)
    assert (result.errors, result.written) == ([], False)
    assert result.summary is not None and result.summary.advisors_created == 3
    result = import_roster(svc, ROSTERS / "good.yaml")
    assert result.written and result.summary.dealers_created == 2


def test_demo_roster_imports_and_shows_rerouting(scrm, svc, clock) -> None:
    result = scrm("roster", "import", str(DEMO_ROSTER))
    assert result.exit_code == 0, result.output
    assert "dealers: 3 created" in result.output
    assert "advisors: 13 created" in result.output

    dealers = _dealers(svc)
    assert {(d.code, d.name, d.city) for d in scenario.DEALERS} == {
        (d.code, d.name, d.city) for d in dealers.values()
    }
    assert {d.manager_userid for d in dealers.values()} == {"sh01_mgr", "hz01_mgr", "sz01_mgr"}
    assert "BZ4X" not in dealers["SZ01"].models
    advisors = _advisors(svc)
    for planned in scenario._advisors():
        stored = advisors[planned.userid]
        assert (stored.name, stored.dealer_code, stored.active) == (planned.name, planned.dealer, True)
        assert planned.model in stored.models
    assert advisors["sz01_a05"].active is False
    assert sum(a.active for a in advisors.values()) == 12

    with svc.sessions() as session:
        roster = load_roster(session)
    match = roster.match(matching.Customer(dealer_code="SZ01", model="BZ4X"), {})
    assert match.rerouted and match.dealer_codes == ("SH01",)
    match = roster.match(matching.Customer(dealer_code="SZ01", model="RAV4"), {})
    assert match.chosen is not None and match.chosen.userid == "zhoujie"
    assert match.excluded == {"sz01_a05": match.excluded["sz01_a05"]}  # inactive: filtered out

    clock.advance(timedelta(minutes=1))
    again = scrm("roster", "import", str(DEMO_ROSTER))
    assert "advisors: 0 created, 0 updated, 13 unchanged" in again.output


def test_a_section_or_field_given_twice_is_an_error_with_both_lines(scrm, svc, tmp_path: Path) -> None:
    """Two rosters pasted into one file repeat `dealers:`/`advisors:`; YAML keeps only the last
    of a repeated key, so the first section (or field) would be dropped without a word."""
    path = tmp_path / "pasted.yaml"
    path.write_text(
        "dealers:\n"
        "  - {code: SH01, name: 浦东店, region: east, city: 上海, lat: 31.2, lon: 121.5}\n"
        "advisors:\n"
        "  - {userid: a1, name: 甲, dealer: SH01}\n"
        "dealers:\n"
        "  - {code: HZ01, name: 杭州店, region: east, city: 杭州, lat: 30.2, lon: 120.1}\n"
        "advisors:\n"
        "  - {userid: b1, name: 乙, dealer: HZ01, userid: b2}\n"
        "  - {userid: b3, name: 丙, dealer: HZ01}\n",
        encoding="utf-8",
    )
    assert read_roster_file(path).messages == [
        "pasted.yaml line 5: `dealers` appears twice (first at line 1)",
        "pasted.yaml line 7: `advisors` appears twice (first at line 3)",
        "pasted.yaml line 8 (advisors[0] b2): userid: given twice (first at line 8)",
    ]
    result = scrm("roster", "import", str(path))
    assert result.exit_code != 0
    assert (_count(svc, Dealer), _count(svc, Advisor)) == (0, 0)
