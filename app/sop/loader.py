"""Read and validate SOP card files: every problem of every file, each as ``path:line: message``.

A file is read with its YAML nodes kept, so a pydantic error's location (``steps[1].at``) is
mapped back to the line of the offending key or list item. On top of the card model's checks
(app/sop/card.py) the loader checks what needs the whole file, the other files or the store:

- duplicate keys in a YAML mapping (YAML itself would keep the last one silently);
- steps in time order;
- step times of day inside working hours and outside quiet hours (when the hours are given);
- a card id used by two files (both are rejected: which one is meant is not ours to guess);
- tags unknown to the corp tag library, and dealers, regions, models unknown to the roster
  (when a ``Library`` is given with them; see ``library_from_store``).

YAML is read with YAML 1.2 booleans and numbers: only true/false are booleans (``on:``, ``no``,
``yes`` stay text) and ``10:00`` is not the number 600.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.sop import schedule, tagexpr
from app.sop.card import Card
from app.store.models import CorpTag, Dealer

CARD_SUFFIXES = (".yaml", ".yml")
DISCRIMINATORS = ("type", "on")
_CHINESE_NAMES = {
    "潜客": "prospect",
    "意向": "intent",
    "战败": "lost",
    "车主": "owner",
    "低": "low",
    "中": "medium",
    "高": "high",
}


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Library:
    """What names may be checked against. ``None`` (or empty) means: not known, not checked."""

    tags: set[str] | None = None  # live corp tags, "组名:标签名"
    dealers: set[str] | None = None
    regions: set[str] | None = None
    models: set[str] | None = None
    working_hours: schedule.Window | None = None
    quiet_hours: schedule.Window | None = None


@dataclass
class CardFile:
    """One file's outcome: the card when it is valid, else its problems."""

    path: Path
    name: str  # the path as shown in messages
    card: Card | None = None
    card_id: str | None = None  # as written, even when the card is invalid
    id_line: int = 1
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.card is not None and not self.problems

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.name, line, message))


# -- YAML ------------------------------------------------------------------------------------------


class CardYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, ints and floats (no yes/no/on/off, no 10:00 → 600)."""


CardYamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
CardYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
CardYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
CardYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _get(node: yaml.Node, key: Any) -> tuple[yaml.Node, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                return key_node, value_node
    return None


def _self_reference(node: yaml.Node, ancestors: tuple[int, ...] = ()) -> yaml.Node | None:
    """A node that holds itself (an alias ``*x`` inside its own anchor ``&x``), or None: every
    walk over such a card (and its validation) would never end."""
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        return None
    ancestors = (*ancestors, id(node))
    for child in children:
        if id(child) in ancestors:
            return child
        found = _self_reference(child, ancestors)
        if found is not None:
            return found
    return None


def _discriminator(node: yaml.Node) -> str | None:
    for key in DISCRIMINATORS:
        found = _get(node, key)
        if found is not None and isinstance(found[1], yaml.ScalarNode):
            return found[1].value
    return None


# -- the card model, walked beside the YAML --------------------------------------------------------


def _candidates(annotation: Any) -> list[Any]:
    """The concrete types an annotation allows (Annotated, Optional and unions unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _candidates(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [found for arg in get_args(annotation) for found in _candidates(arg)]
    return [annotation]


def _models(candidates: list[Any]) -> list[type[BaseModel]]:
    return [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]


def _tag_value(model: type[BaseModel]) -> tuple[str, str] | None:
    for key in DISCRIMINATORS:
        info = model.model_fields.get(key)
        if info is not None and get_origin(info.annotation) is Literal:
            return key, get_args(info.annotation)[0]
    return None


@dataclass
class _Where:
    line: int
    path: str  # steps[1].quick_replies[0].url
    models: list[type[BaseModel]]  # the models that could sit at the deepest node reached
    union_tags: list[str]  # the discriminator values allowed there, if a union
    node: yaml.Node | None  # the deepest node reached (None when a key is missing)


def _locate(root: yaml.Node, loc: Sequence[Any]) -> _Where:
    """Follow an error location through the YAML nodes and the card model together."""
    node: yaml.Node | None = root
    line = _line(root)
    path = ""
    candidates: list[Any] = [Card]
    for part in loc:
        models = _models(candidates)
        if isinstance(part, str):
            tagged = [m for m in models if (_tag_value(m) or ("", None))[1] == part]
            if tagged and len(models) > 1 and node is not None and _discriminator(node) == part:
                candidates = tagged  # pydantic names the union member: not a key of the YAML
                continue
            fields = {name: info for m in models for name, info in m.model_fields.items()}
            path += f".{part}" if path else part
            candidates = _candidates(fields[part].annotation) if part in fields else []
            found = _get(node, part) if node is not None else None
            if found is None:
                node = None  # a missing key: stay on the line of the mapping that lacks it
                continue
            line, node = _line(found[0]), found[1]
        else:
            path += f"[{part}]"
            lists = [c for c in candidates if get_origin(c) is list]
            candidates = _candidates(get_args(lists[0])[0]) if lists else []
            if isinstance(node, yaml.SequenceNode) and 0 <= part < len(node.value):
                node = node.value[part]
                line = _line(node)
            else:
                node = None
    models = _models(candidates)
    union_tags = [tag[1] for m in models if (tag := _tag_value(m))] if len(models) > 1 else []
    return _Where(line, path, models, union_tags, node)


def _or_list(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) < 2:
        return items[0] if items else "a known kind"
    return ", ".join(items[:-1]) + " or " + items[-1]


def _describe(error: dict[str, Any], where: _Where) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        name = str(error["loc"][-1])
        allowed = sorted({f for m in where.models for f in m.model_fields} - {name})  # the parent's
        return _unknown_field(name, allowed)
    if kind == "union_tag_invalid":
        disc = ctx["discriminator"].strip("'")
        return f"unknown {disc} {ctx['tag']!r}: use {_or_list(where.union_tags)}"
    if kind == "union_tag_not_found":
        disc = ctx["discriminator"].strip("'")
        if not isinstance(value, dict):
            return "must be a mapping of fields"
        return f"needs `{disc}:` ({_or_list(where.union_tags)})"
    if kind == "literal_error":
        expected = ctx["expected"].replace("'", "")
        hint = f" ({value} is {_CHINESE_NAMES[value]})" if value in _CHINESE_NAMES else ""
        return f"{value!r} is not one of: {expected}{hint}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters"
    if kind == "too_short":
        return "must not be empty" if ctx["min_length"] == 1 else f"must list at least {ctx['min_length']}"
    if kind == "too_long":
        return f"must list at most {ctx['max_length']}"
    if kind == "string_type":
        return "must be text (quote it in YAML)"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind == "list_type":
        return "must be a list"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of fields"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])


def _unknown_field(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown field{hint}; allowed here: {', '.join(allowed)}"


def _pydantic_problems(result: CardFile, root: yaml.Node, exc: ValidationError) -> None:
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            parent = _locate(root, loc[:-1])
            where = _locate(root, loc)
            where.models = parent.models
        else:
            where = _locate(root, loc)
        if error["type"].startswith("union_tag") and where.node is not None:
            disc = _get(where.node, error.get("ctx", {}).get("discriminator", "").strip("'"))
            if disc is not None:
                where.line = _line(disc[0])  # the `type:` line
        message = _describe(error, where)
        result.problem(where.line, f"{where.path}: {message}" if where.path else message)


# -- checks beyond the model -----------------------------------------------------------------------


def _duplicate_keys(result: CardFile, node: yaml.Node, path: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            here = f"{path}.{key}" if path else key
            if key in seen:
                result.problem(_line(key_node), f"{here}: duplicate key (first at line {seen[key]})")
            else:
                seen[key] = _line(key_node)
            _duplicate_keys(result, value_node, here)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(result, item, f"{path}[{index}]")


def _step_times(result: CardFile, root: yaml.Node, data: dict[str, Any], library: Library) -> None:
    steps = data.get("steps")
    if not isinstance(steps, list):
        return
    previous: tuple[schedule.StepOffset, int] | None = None
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        try:
            offset = schedule.parse_offset(step.get("at"))
        except ValueError:
            continue  # the model reports it
        where = _locate(root, ("steps", index, "at"))
        if previous is not None and offset.sort_minutes <= previous[0].sort_minutes:
            relation = (
                "is not later than" if offset.sort_minutes == previous[0].sort_minutes else "comes before"
            )
            result.problem(
                where.line,
                f"{where.path}: {offset} {relation} the previous step's {previous[0]} (line {previous[1]}); "
                "steps must be in time order",
            )
        previous = (offset, where.line)
        clock = offset.clock
        if clock is None:
            continue
        working, quiet = library.working_hours, library.quiet_hours
        if working is not None and not working.contains(clock):
            result.problem(
                where.line,
                f"{where.path}: {clock:%H:%M} is outside working hours {working} (SOP_WORKING_HOURS)",
            )
        elif quiet is not None and quiet.contains(clock):
            result.problem(
                where.line, f"{where.path}: {clock:%H:%M} is in quiet hours {quiet} (SOP_QUIET_HOURS)"
            )


def _unknown(name: str, known: set[str], what: str, where: str) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {what} {name} ({where}){hint}"


def _tag_uses(data: dict[str, Any]) -> Iterable[tuple[tuple[Any, ...], str, str]]:
    """(location, tag as written, how to name it in a message) of every corp tag the raw card names."""
    audience = data.get("audience")
    if isinstance(audience, dict) and isinstance(audience.get("tags"), str):
        try:
            expr = tagexpr.parse(audience["tags"])
        except tagexpr.TagExprError:
            expr = None
        for tag in expr.tags() if expr else ():
            yield ("audience", "tags"), tag.tag, f"column {tag.column}; "
    trigger = data.get("trigger")
    if isinstance(trigger, dict) and trigger.get("on") == "tag_added" and isinstance(trigger.get("tag"), str):
        yield ("trigger", "tag"), trigger["tag"], ""
    for s, step in enumerate(data.get("steps") or []):
        if not isinstance(step, dict) or not isinstance(step.get("actions"), list):
            continue
        for a, action in enumerate(step["actions"]):
            if not isinstance(action, dict) or action.get("type") != "tag":
                continue
            for key in ("add", "remove"):
                tags = action.get(key)
                for t, tag in enumerate(tags if isinstance(tags, list) else []):
                    if isinstance(tag, str):
                        yield ("steps", s, "actions", a, key, t), tag, ""


def _library_checks(result: CardFile, root: yaml.Node, data: dict[str, Any], library: Library) -> None:
    if library.tags:
        for loc, written, suffix in _tag_uses(data):
            try:
                tag = tagexpr.normalize_tag(written)
            except ValueError:
                continue  # the model reports it
            if tag not in library.tags:
                where = _locate(root, loc)
                unknown = _unknown(tag, library.tags, "tag", f"{suffix}not in the corp tag library")
                result.problem(where.line, f"{where.path}: {unknown}")
    audience = data.get("audience")
    if not isinstance(audience, dict):
        return
    for key, known, what in (
        ("dealers", library.dealers, "dealer"),
        ("regions", library.regions, "region"),
        ("models", library.models, "model"),
    ):
        values = audience.get(key)
        if not known or not isinstance(values, list):
            continue
        for index, value in enumerate(values):
            if isinstance(value, str) and value.strip() not in known:
                where = _locate(root, ("audience", key, index))
                unknown = _unknown(value.strip(), known, what, "not in the roster")
                result.problem(where.line, f"{where.path}: {unknown}")


# -- files -----------------------------------------------------------------------------------------


def card_paths(paths: Iterable[Path]) -> list[Path]:
    """The card files named: files as given, folders' *.yaml / *.yml (not recursive), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CARD_SUFFIXES))
        else:
            found.append(path)
    return found


def read_card(path: Path, library: Library | None = None, name: str | None = None) -> CardFile:
    """Read and validate one file (problems of this file alone; see ``read_cards`` for duplicates)."""
    library = library or Library()
    result = CardFile(path=path, name=name or str(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        result.problem(1, "no such file")
        return result
    except (OSError, UnicodeDecodeError) as exc:
        result.problem(1, f"cannot be read as UTF-8 text: {exc}")
        return result
    loader = CardYamlLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" (column {mark.column + 1})" if mark is not None else ""
        result.problem(mark.line + 1 if mark is not None else 1, f"not valid YAML{where}: {problem}")
        return result
    finally:
        loader.dispose()
    looped = _self_reference(root) if root is not None else None
    if looped is not None:
        result.problem(
            _line(looped),
            "an alias (*name) inside its own anchor (&name) makes this part endless: write it out instead",
        )
        return result
    if root is None or not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        result.problem(1, "expected a card: a mapping with id, title, trigger and steps")
        return result
    found = _get(root, "id")
    if found is not None and isinstance(data.get("id"), str):
        result.card_id, result.id_line = data["id"], _line(found[0])
    _duplicate_keys(result, root)
    try:
        card = Card.model_validate(data)
    except ValidationError as exc:
        card = None
        _pydantic_problems(result, root, exc)
    _step_times(result, root, data, library)
    _library_checks(result, root, data, library)
    result.problems.sort(key=lambda p: p.line)
    if not result.problems:
        result.card = card
    return result


def read_cards(paths: Iterable[Path], library: Library | None = None) -> list[CardFile]:
    """Read and validate every card file under ``paths``, then check ids across files."""
    files = [read_card(path, library) for path in card_paths(paths)]
    by_id: dict[str, list[CardFile]] = {}
    for card_file in files:
        if card_file.card_id is not None:
            by_id.setdefault(card_file.card_id, []).append(card_file)
    for same in by_id.values():
        if len(same) < 2:
            continue
        for card_file in same:
            others = ", ".join(f"{o.name}:{o.id_line}" for o in same if o is not card_file)
            card_file.problem(
                card_file.id_line, f"id: {card_file.card_id} is also the id of the card in {others}"
            )
            card_file.problems.sort(key=lambda p: p.line)
            card_file.card = None
    return files


def library_from_store(
    session: Session, working: schedule.Window | None = None, quiet: schedule.Window | None = None
) -> Library:
    """The corp tag library (live tags) and the roster's dealers, regions and models."""
    tags = {
        f"{group}:{name}"
        for group, name in session.execute(
            select(CorpTag.group_name, CorpTag.name).where(CorpTag.deleted.is_(False))
        )
    }
    dealers = list(session.scalars(select(Dealer)))
    return Library(
        tags=tags or None,
        dealers={d.code for d in dealers} or None,
        regions={d.region for d in dealers} or None,
        models={m for d in dealers for m in d.models} or None,
        working_hours=working,
        quiet_hours=quiet,
    )
