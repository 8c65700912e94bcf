"""Tag expressions: parsing, precedence, evaluation, canonical text, errors with their column."""

from __future__ import annotations

import pytest

from app.sop import tagexpr
from app.sop.tagexpr import And, Not, Or, Tag, TagExprError, parse

RAV4 = "意向车型:RAV4"
OWNER = "客户阶段:车主"


def test_a_single_tag() -> None:
    expr = parse(RAV4)
    assert expr.root == Tag("意向车型", "RAV4", 1)
    assert expr.matches({RAV4, "客户性格:理性"})
    assert not expr.matches({"意向车型:BZ4X"})
    assert not expr.matches(set())


def test_the_design_example() -> None:
    expr = parse("意向车型:RAV4 and not 客户阶段:车主")
    assert expr.matches({RAV4, "客户阶段:潜客"})
    assert not expr.matches({RAV4, OWNER})
    assert not expr.matches({OWNER})


def test_not_binds_tighter_than_and_and_and_tighter_than_or() -> None:
    expr = parse("a:1 or b:1 and not c:1")
    assert isinstance(expr.root, Or)
    left, right = expr.root.operands
    assert left == Tag("a", "1", 1)
    assert isinstance(right, And) and isinstance(right.operands[1], Not)
    assert expr.matches({"a:1", "c:1"})  # a alone is enough
    assert expr.matches({"b:1"})
    assert not expr.matches({"b:1", "c:1"})
    assert str(expr) == "a:1 or b:1 and not c:1"


def test_parentheses_override_precedence() -> None:
    expr = parse("(a:1 or b:1) and not (c:1 or d:1)")
    assert expr.matches({"b:1"})
    assert not expr.matches({"a:1", "d:1"})
    assert not expr.matches({"c:1"})
    assert str(expr) == "(a:1 or b:1) and not (c:1 or d:1)"
    assert parse(str(expr)).root == expr.root


def test_chains_flatten_and_double_negation() -> None:
    expr = parse("a:1 and b:1 and c:1")
    assert isinstance(expr.root, And) and len(expr.root.operands) == 3
    assert parse("not not a:1").matches({"a:1"})


def test_keywords_any_case_full_width_punctuation_and_quotes() -> None:
    expr = parse("（意向车型：RAV4 OR 意向车型:BZ4X） And NOT 客户阶段：车主")
    assert expr.matches({"意向车型:BZ4X"})
    assert not expr.matches({"意向车型:BZ4X", OWNER})
    quoted = parse('"活动:Spring Sale (2026)" or a:1')
    assert quoted.matches({"活动:Spring Sale (2026)"})
    assert quoted.tags()[0].tag == "活动:Spring Sale (2026)"
    assert str(quoted) == '"活动:Spring Sale (2026)" or a:1'


def test_tags_lists_every_tag_with_its_column() -> None:
    expr = parse("意向车型:RAV4 and not (客户阶段:车主 or 客户阶段:战败)")
    assert [(t.tag, t.column) for t in expr.tags()] == [
        ("意向车型:RAV4", 1),
        ("客户阶段:车主", 20),
        ("客户阶段:战败", 31),
    ]


def test_matches_takes_any_iterable() -> None:
    assert tagexpr.matches("a:1 and b:2", ["b:2", "a:1"])
    assert not tagexpr.matches(parse("a:1"), iter(["a:2"]))


@pytest.mark.parametrize(
    ("source", "column", "message"),
    [
        ("", 1, "empty expression"),
        ("   ", 1, "empty expression"),
        ("a:1 and", 8, "expression ends where a tag, `not` or ( was expected"),
        ("(a:1 or b:1", 12, "expected ) to close the ( at column 1"),
        ("a:1 b:1", 5, "unexpected 'b:1': expected `and`, `or` or the end"),
        ("a:1 )", 5, "unexpected ')': expected no ) here (nothing to close)"),
        ("and a:1", 1, "unexpected 'and': expected a tag, `not` or ("),
        ("RAV4", 1, "'RAV4' is not a tag: write 组名:标签名, e.g. 意向车型:RAV4"),
        ("a:1 or :x", 8, "':x' is not a tag: write 组名:标签名, e.g. 意向车型:RAV4"),
        ('a:1 or "b:2', 8, 'unclosed quote "'),
        ("a:1 and ()", 10, "unexpected ')': expected a tag, `not` or ("),
    ],
)
def test_syntax_errors_name_the_column(source: str, column: int, message: str) -> None:
    with pytest.raises(TagExprError) as caught:
        parse(source)
    assert (caught.value.column, caught.value.message) == (column, message)
    assert str(caught.value) == f"column {column}: {message}"


def test_normalize_tag() -> None:
    assert tagexpr.normalize_tag(" 意向车型 ： RAV4 ") == "意向车型:RAV4"
    with pytest.raises(ValueError, match="is not a tag"):
        tagexpr.normalize_tag("意向车型")
    with pytest.raises(ValueError, match="is not a tag"):
        tagexpr.normalize_tag("a:b:c")
