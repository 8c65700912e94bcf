"""The roster: dealers and their advisors' tag profiles, imported from YAML or CSV.

The roster is master data: a half-imported roster would send customers to the wrong advisors. So
a file is read and validated as a whole first (every error, each naming its line), and written
only when nothing is wrong, in one transaction. Writes are upserts by dealer code and advisor
userid; what the file does not mention is left alone, except that ``deactivate_missing`` turns
off the advisors of the file's dealers that the file no longer lists.

YAML::

    dealers:
      - {code: SH01, name: 一汽丰田上海浦东店, region: east, city: 上海, lat: 31.22, lon: 121.54,
         models: [RAV4, COROLLA], territory: [嘉兴], manager: sh01_mgr}
    advisors:
      - {userid: sh01_a01, name: 王芳, dealer: SH01, models: [RAV4], languages: [普通话, 上海话],
         segments: [prospect, intent], personas: [rational], seniority: 2}

CSV: one file holds dealers (columns ``code`` and ``lat``) or advisors (a ``userid`` column);
list cells are separated by ``|``; booleans are true/false, 1/0, yes/no or 是/否.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.services import Services
from app.store.models import Advisor, Dealer

SEGMENTS = {"prospect": "prospect", "intent": "intent", "lost": "lost", "owner": "owner"}
SEGMENTS.update({"潜客": "prospect", "意向": "intent", "战败": "lost", "车主": "owner"})
PERSONAS = {"rational": "rational", "emotional": "emotional", "理性": "rational", "感性": "emotional"}
LIST_SEPARATOR = "|"
_CHUNK = 500  # keys per IN (...) query

_ID_PATTERN = r"^[A-Za-z0-9_.@-]+$"
Code = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=_ID_PATTERN)
]
UserId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_ID_PATTERN)
]
Text64 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Text128 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Item = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]


# -- rows ---------------------------------------------------------------------------------------


def _as_list(value: Any) -> Any:
    """None → []; "a|b" → ["a", "b"] (CSV cells, or a YAML scalar where a list was meant)."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split(LIST_SEPARATOR)
    return value


def _clean(items: list[str]) -> list[str]:
    """Drop empty items, keep the first of repeated ones, in order."""
    return list(dict.fromkeys(item for item in items if item))


def _translated(items: list[str], names: dict[str, str], what: str) -> list[str]:
    result = []
    for item in _clean(items):
        key = item.lower() if item.isascii() else item
        if key not in names:
            raise ValueError(f"unknown {what} {item!r} (one of {', '.join(names)})")
        result.append(names[key])
    return _clean(result)


class DealerRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Code
    name: Text128
    region: Text64
    city: Text64
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    models: list[Item] = Field(default_factory=list)
    territory: list[Item] = Field(default_factory=list)
    manager: UserId | None = None

    _lists = field_validator("models", "territory", mode="before")(_as_list)

    @field_validator("models", "territory")
    @classmethod
    def _cleaned(cls, value: list[str]) -> list[str]:
        return _clean(value)


class AdvisorRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    userid: UserId
    name: Text64
    dealer: Code
    active: bool = True
    capacity_per_day: int = Field(default=20, ge=1)
    max_open_leads: int = Field(default=200, ge=1)
    models: list[Item] = Field(default_factory=list)
    languages: list[Item] = Field(default_factory=list)
    segments: list[Item] = Field(default_factory=list)
    personas: list[Item] = Field(default_factory=list)
    seniority: int = Field(default=0, ge=0, le=3)
    acceptance_rate: float | None = Field(default=None, ge=0, le=1)
    median_first_response_s: float | None = Field(default=None, ge=0)

    _lists = field_validator("models", "languages", "segments", "personas", mode="before")(_as_list)

    @field_validator("active", mode="before")
    @classmethod
    def _chinese_bool(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"是": True, "否": False}.get(value.strip(), value.strip())
        return value

    @field_validator("models", "languages")
    @classmethod
    def _cleaned(cls, value: list[str]) -> list[str]:
        return _clean(value)

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: list[str]) -> list[str]:
        return _translated(value, SEGMENTS, "segment")

    @field_validator("personas")
    @classmethod
    def _personas(cls, value: list[str]) -> list[str]:
        return _translated(value, PERSONAS, "persona")


RowT = TypeVar("RowT", DealerRow, AdvisorRow)


@dataclass(frozen=True)
class Located(Generic[RowT]):
    """A valid row and where it came from (for messages about it, such as duplicates)."""

    row: RowT
    where: str
    line: int


@dataclass
class RosterFile:
    """A parsed file: its valid rows, and an error message for every problem found."""

    name: str
    dealers: list[Located[DealerRow]] = field(default_factory=list)
    advisors: list[Located[AdvisorRow]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, message): sorted on output

    # (section, id) → line of its first row, valid or not; (line, where, dealer) of every advisor
    _first: dict[tuple[str, str], int] = field(default_factory=dict)
    _references: list[tuple[int, str, str]] = field(default_factory=list)

    def error(self, line: int, where: str, message: str) -> None:
        self.errors.append((line, f"{where}: {message}"))

    def take(
        self,
        section: str,
        raw: dict[str, Any],
        line: int,
        where: Callable[[int], str],
        field_line: Callable[[Sequence[Any]], int],
    ) -> None:
        """Validate one row (``raw``: field → value) and keep it, or record its errors. Duplicate
        ids and advisors' dealers are noted whether or not the rest of the row is valid."""
        model: type[DealerRow] | type[AdvisorRow] = DealerRow if section == "dealers" else AdvisorRow
        id_field = "code" if section == "dealers" else "userid"
        ident = raw.get(id_field)
        if isinstance(ident, str) and ident.strip():
            at = field_line((id_field,))
            first = self._first.setdefault((section, ident.strip()), at)
            if first != at:
                self.error(at, where(at), f"{id_field}: duplicate {ident.strip()} (first at line {first})")
        dealer = raw.get("dealer")
        if section == "advisors" and isinstance(dealer, str) and dealer.strip():
            at = field_line(("dealer",))
            self._references.append((at, where(at), dealer.strip()))
        try:
            row = model.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                at = field_line(error["loc"])
                self.error(at, where(at), f"{_field_path(error['loc'])}: {_describe(error)}")
            return
        if isinstance(row, DealerRow):
            self.dealers.append(Located(row, where(line), line))
        else:
            self.advisors.append(Located(row, where(line), line))

    @property
    def messages(self) -> list[str]:
        return [message for _, message in sorted(self.errors, key=lambda item: item[0])]

    @property
    def dealer_codes(self) -> set[str]:
        """The dealers this file speaks for: those it lists and those its advisors belong to."""
        return {d.row.code for d in self.dealers} | {a.row.dealer for a in self.advisors}


# -- pydantic errors, in words ------------------------------------------------------------------


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _describe(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "greater_than_equal":
        return f"must be ≥ {_number(ctx['ge'])}"
    if kind == "less_than_equal":
        return f"must be ≤ {_number(ctx['le'])}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "string_pattern_mismatch":
        return "may hold only letters, digits and _ . - @"
    if kind == "string_type":
        return "must be text (quote it in YAML)"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "must be a number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false (also 1/0, yes/no, 是/否)"
    if kind == "list_type":
        return "must be a list"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def _field_path(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- YAML -----------------------------------------------------------------------------------------


def _mapping_get(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """The last pair with this key: the one whose value the constructed mapping holds."""
    found = None
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                found = key_node, value_node
    return found


def _repeated_keys(node: yaml.Node) -> list[tuple[str, int, int]]:
    """(key, line, line of its first occurrence) for each key a mapping repeats. YAML keeps only
    the last value, so the earlier ones would be dropped without a word. Read before the
    document is constructed (which writes merged ``<<`` keys into the node)."""
    first: dict[str, int] = {}
    repeated = []
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                line = _line(key_node)
                if key_node.value in first:
                    repeated.append((key_node.value, line, first[key_node.value]))
                else:
                    first[key_node.value] = line
    return repeated


def _repeated_in_rows(root: yaml.Node | None) -> dict[int, list[tuple[str, int, int]]]:
    """_repeated_keys of every row of every section, by id of the row's node."""
    repeated: dict[int, list[tuple[str, int, int]]] = {}
    if isinstance(root, yaml.MappingNode):
        for _, section_node in root.value:
            if isinstance(section_node, yaml.SequenceNode):
                for item_node in section_node.value:
                    repeated[id(item_node)] = _repeated_keys(item_node)
    return repeated


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _yaml_field_line(item: yaml.Node, loc: Sequence[Any]) -> int:
    """The line of the field an error is about (of its list element, when it names one)."""
    if not loc or not isinstance(loc[0], str):
        return _line(item)
    found = _mapping_get(item, loc[0])
    if found is None:
        return _line(item)
    key_node, value_node = found
    if loc == (loc[0],) and value_node.start_mark.line > key_node.start_mark.line:
        return _line(key_node)  # `models:` followed by a block list: the key's line
    if (
        len(loc) > 1
        and isinstance(loc[1], int)
        and isinstance(value_node, yaml.SequenceNode)
        and loc[1] < len(value_node.value)
    ):
        return _line(value_node.value[loc[1]])
    return _line(value_node)


def _read_yaml(text: str, result: RosterFile) -> None:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        repeated_in_rows = _repeated_in_rows(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        result.error(line, f"{result.name} line {line}", f"not valid YAML: {problem}")
        return
    finally:
        loader.dispose()
    if root is None or data is None:
        result.error(1, result.name, "empty file: expected `dealers:` and/or `advisors:`")
        return
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        result.error(1, f"{result.name} line 1", "expected a mapping with `dealers:` and/or `advisors:`")
        return
    for key_node, _ in root.value:
        if key_node.value not in ("dealers", "advisors"):
            line = _line(key_node)
            result.error(line, f"{result.name} line {line}", f"unknown section {key_node.value!r}")
    for key, line, first in _repeated_keys(root):
        result.error(line, f"{result.name} line {line}", f"`{key}` appears twice (first at line {first})")
    for section, id_field in (("dealers", "code"), ("advisors", "userid")):
        found = _mapping_get(root, section)
        if found is None:
            continue
        section_node = found[1]
        items = data.get(section)
        if items is None:
            continue
        if not isinstance(items, list) or not isinstance(section_node, yaml.SequenceNode):
            line = _line(section_node)
            result.error(line, f"{result.name} line {line}", f"`{section}` must be a list")
            continue
        for index, (raw, item_node) in enumerate(zip(items, section_node.value, strict=True)):
            ident = raw.get(id_field) if isinstance(raw, dict) else None
            label = f"{section}[{index}]" + (f" {ident}" if isinstance(ident, str | int) else "")
            line = _line(item_node)
            if not isinstance(raw, dict):
                result.error(line, f"{result.name} line {line} ({label})", "must be a mapping of fields")
                continue
            for key, at, first in repeated_in_rows.get(id(item_node), []):
                message = f"{key}: given twice (first at line {first})"
                result.error(at, f"{result.name} line {at} ({label})", message)
            result.take(
                section,
                raw,
                line,
                lambda at, label=label: f"{result.name} line {at} ({label})",
                lambda loc, node=item_node: _yaml_field_line(node, loc),
            )


# -- CSV ----------------------------------------------------------------------------------------

_DEALER_COLUMNS = set(DealerRow.model_fields)
_ADVISOR_COLUMNS = set(AdvisorRow.model_fields)


def _csv_records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, cells) for each non-blank record; quoted cells may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    previous_end = 0
    for cells in reader:
        start = previous_end + 1
        previous_end = reader.line_num
        if any(cell.strip() for cell in cells):
            yield start, cells


def _read_csv(text: str, result: RosterFile) -> None:
    try:
        records = list(_csv_records(text))
    except csv.Error as exc:
        result.error(1, result.name, f"not valid CSV: {exc}")
        return
    if not records:
        result.error(1, result.name, "empty file: expected a header row")
        return
    header_line, header = records[0]
    columns = [cell.strip() for cell in header]
    where = f"{result.name} line {header_line}"
    if "userid" in columns:
        section, known = "advisors", _ADVISOR_COLUMNS
    elif "code" in columns and "lat" in columns:
        section, known = "dealers", _DEALER_COLUMNS
    else:
        result.error(
            header_line,
            where,
            "cannot tell dealers from advisors: an advisors file has a `userid` column, "
            "a dealers file `code` and `lat` columns",
        )
        return
    unknown = [c for c in columns if c not in known]
    if unknown:
        result.error(header_line, where, f"unknown column(s): {', '.join(map(repr, unknown))}")
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            result.error(header_line, where, f"column {column!r} appears twice")
        seen.add(column)
    if unknown or len(seen) < len(columns):
        return
    for line, cells in records[1:]:
        at = f"{result.name} line {line}"
        if len(cells) > len(columns):
            result.error(line, at, f"{len(cells)} cells but {len(columns)} columns")
            continue
        # An empty cell means "not given": the field's default applies (or it is reported missing).
        raw = {c: v.strip() for c, v in zip(columns, cells, strict=False) if v.strip()}
        result.take(section, raw, line, lambda _, at=at: at, lambda _, line=line: line)


# -- reading a file ---------------------------------------------------------------------------------


def read_roster_file(path: Path | str) -> RosterFile:
    """Parse and validate a roster file (.yaml, .yml or .csv, UTF-8 with or without BOM) on its
    own: fields, formats and duplicates. References to dealers in the database are checked by
    ``check_references``."""
    path = Path(path)
    result = RosterFile(name=path.name)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".csv"):
        result.error(0, result.name, "unsupported file type: use .yaml, .yml or .csv")
        return result
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.error(0, f"{result.name} line {line}", f"not UTF-8 text (byte {exc.start})")
        return result
    if suffix == ".csv":
        _read_csv(text, result)
    else:
        _read_yaml(text, result)
    return result


def check_references(session: Session, roster: RosterFile) -> None:
    """Every advisor's dealer must be in the file or already in the database."""
    in_file = {code for section, code in roster._first if section == "dealers"}
    wanted = {dealer for _, _, dealer in roster._references} - in_file
    known = in_file | set(_existing(session, Dealer, Dealer.code, wanted))
    for line, where, dealer in roster._references:
        if dealer not in known:
            roster.error(line, where, f"dealer: no dealer {dealer} in this file or in the database")


# -- writing --------------------------------------------------------------------------------------


@dataclass
class ImportSummary:
    dealers_created: int = 0
    dealers_updated: int = 0
    dealers_unchanged: int = 0
    advisors_created: int = 0
    advisors_updated: int = 0
    advisors_unchanged: int = 0
    advisors_deactivated: int = 0

    def __str__(self) -> str:
        return (
            f"dealers: {self.dealers_created} created, {self.dealers_updated} updated, "
            f"{self.dealers_unchanged} unchanged; advisors: {self.advisors_created} created, "
            f"{self.advisors_updated} updated, {self.advisors_unchanged} unchanged, "
            f"{self.advisors_deactivated} deactivated"
        )


M = TypeVar("M", Dealer, Advisor)


def _existing(session: Session, model: type[M], column: Any, keys: Iterable[str]) -> dict[str, M]:
    keys = sorted(set(keys))
    found: dict[str, M] = {}
    for start in range(0, len(keys), _CHUNK):
        for obj in session.scalars(select(model).where(column.in_(keys[start : start + _CHUNK]))):
            found[getattr(obj, column.key)] = obj
    return found


def _dealer_values(row: DealerRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "region": row.region,
        "city": row.city,
        "lat": row.lat,
        "lon": row.lon,
        "models": list(row.models),
        "territory": list(row.territory),
        "manager_userid": row.manager,
    }


def _advisor_values(row: AdvisorRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "dealer_code": row.dealer,
        "active": row.active,
        "capacity_per_day": row.capacity_per_day,
        "max_open_leads": row.max_open_leads,
        "models": list(row.models),
        "languages": list(row.languages),
        "segments": list(row.segments),
        "personas": list(row.personas),
        "seniority": row.seniority,
        "acceptance_rate": row.acceptance_rate,
        "median_first_response_s": row.median_first_response_s,
    }


def _upsert(obj: Any, values: dict[str, Any], now: datetime) -> bool:
    """Set what differs; return whether anything did (only then is updated_at moved)."""
    changed = {k: v for k, v in values.items() if getattr(obj, k) != v}
    for key, value in changed.items():
        setattr(obj, key, value)
    if changed:
        obj.updated_at = now
    return bool(changed)


def apply_roster(
    session: Session, roster: RosterFile, now: datetime, *, deactivate_missing: bool = False
) -> ImportSummary:
    """Upsert a valid roster into the session (the caller commits or rolls back)."""
    if roster.errors:
        raise ValueError("the roster has errors; nothing may be written")
    summary = ImportSummary()
    dealers = _existing(session, Dealer, Dealer.code, (d.row.code for d in roster.dealers))
    for located in roster.dealers:
        row, obj = located.row, dealers.get(located.row.code)
        if obj is None:
            session.add(Dealer(code=row.code, updated_at=now, **_dealer_values(row)))
            summary.dealers_created += 1
        elif _upsert(obj, _dealer_values(row), now):
            summary.dealers_updated += 1
        else:
            summary.dealers_unchanged += 1
    session.flush()  # dealers before the advisors that refer to them

    advisors = _existing(session, Advisor, Advisor.userid, (a.row.userid for a in roster.advisors))
    for located in roster.advisors:
        row, obj = located.row, advisors.get(located.row.userid)
        if obj is None:
            session.add(Advisor(userid=row.userid, updated_at=now, **_advisor_values(row)))
            summary.advisors_created += 1
        elif _upsert(obj, _advisor_values(row), now):
            summary.advisors_updated += 1
        else:
            summary.advisors_unchanged += 1
    session.flush()

    if deactivate_missing:
        listed = {a.row.userid for a in roster.advisors}
        codes = sorted(roster.dealer_codes)
        for start in range(0, len(codes), _CHUNK):
            query = select(Advisor).where(
                Advisor.dealer_code.in_(codes[start : start + _CHUNK]), Advisor.active.is_(True)
            )
            for advisor in session.scalars(query):
                if advisor.userid not in listed:
                    advisor.active = False
                    advisor.updated_at = now
                    summary.advisors_deactivated += 1
        session.flush()
    return summary


@dataclass
class ImportResult:
    errors: list[str]
    summary: ImportSummary | None  # None when there were errors
    written: bool


def import_roster(
    svc: Services, path: Path | str, *, dry_run: bool = False, deactivate_missing: bool = False
) -> ImportResult:
    """Validate ``path`` and, if it has no errors and this is not a dry run, write it in one
    transaction. A dry run computes the same summary and rolls back."""
    roster = read_roster_file(path)
    if deactivate_missing and not roster.advisors and not roster.errors:
        roster.error(
            0,
            roster.name,
            "--deactivate-missing needs a file that lists advisors (this one would deactivate "
            "every advisor of its dealers)",
        )
    with svc.sessions() as session:
        if not any(line == 0 for line, _ in roster.errors):
            check_references(session, roster)
        if roster.errors:
            return ImportResult(roster.messages, None, False)
        try:
            summary = apply_roster(session, roster, svc.clock.now(), deactivate_missing=deactivate_missing)
        except BaseException:
            session.rollback()
            raise
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return ImportResult([], summary, not dry_run)


# The demo's roster (also a worked example of the format).
DEMO_ROSTER = Path(__file__).resolve().parent.parent / "demo" / "roster.yaml"
