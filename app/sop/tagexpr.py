"""Tag expressions: who an SOP card is for, written over customer corp tags.

    expr    := or
    or      := and ("or" and)*
    and     := unary ("and" unary)*
    unary   := "not" unary | "(" expr ")" | TAG
    TAG     := 组名:标签名          e.g. 意向车型:RAV4, 客户阶段:车主
             | "组名:标签名"        quoted when the name holds spaces or parentheses

``not`` binds tighter than ``and``, ``and`` tighter than ``or``; keywords are case-insensitive.
Full-width ``：（）`` are read as ``:()`` (easy to type by mistake on a Chinese keyboard).

    意向车型:RAV4 and not 客户阶段:车主
    (意向车型:RAV4 or 意向车型:BZ4X) and 客户性格:理性

An expression is parsed once (``parse``) into a small tree; ``matches(customer_tags)`` evaluates
it against the customer's tags, a set of ``"组名:标签名"`` strings. Syntax errors carry the 1-based
column of the offending token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

KEYWORDS = ("and", "or", "not")
_FULL_WIDTH = str.maketrans({"：": ":", "（": "(", "）": ")"})


class TagExprError(ValueError):
    """A syntax error; ``column`` is 1-based within the expression."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column


def split_tag(text: str) -> tuple[str, str]:
    """``"组名:标签名"`` → (group, name); ValueError when it is not of that form."""
    group, sep, name = text.translate(_FULL_WIDTH).partition(":")
    group, name = group.strip(), name.strip()
    if not sep or not group or not name or ":" in name:
        raise ValueError(f"{text!r} is not a tag: write 组名:标签名, e.g. 意向车型:RAV4")
    return group, name


def normalize_tag(text: str) -> str:
    """The canonical ``组名:标签名`` form of a tag (half-width colon, no spaces around it)."""
    group, name = split_tag(text)
    return f"{group}:{name}"


# -- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tag:
    group: str
    name: str
    column: int  # where it was written, for messages about this tag

    @property
    def tag(self) -> str:
        return f"{self.group}:{self.name}"

    def evaluate(self, tags: frozenset[str] | set[str]) -> bool:
        return self.tag in tags

    def __str__(self) -> str:
        text = self.tag
        return f'"{text}"' if any(c in text for c in ' ()"') else text


@dataclass(frozen=True)
class Not:
    operand: Node

    def evaluate(self, tags: frozenset[str] | set[str]) -> bool:
        return not self.operand.evaluate(tags)

    def __str__(self) -> str:
        return f"not {_wrap(self.operand, Not)}"


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]

    def evaluate(self, tags: frozenset[str] | set[str]) -> bool:
        return all(operand.evaluate(tags) for operand in self.operands)

    def __str__(self) -> str:
        return " and ".join(_wrap(operand, And) for operand in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]

    def evaluate(self, tags: frozenset[str] | set[str]) -> bool:
        return any(operand.evaluate(tags) for operand in self.operands)

    def __str__(self) -> str:
        return " or ".join(_wrap(operand, Or) for operand in self.operands)


Node = Tag | Not | And | Or
_BINDING = {Or: 1, And: 2, Not: 3, Tag: 4}


def _wrap(node: Node, parent: type) -> str:
    text = str(node)
    return f"({text})" if _BINDING[type(node)] <= _BINDING[parent] and not isinstance(node, Not) else text


@dataclass(frozen=True)
class TagExpr:
    """A parsed expression. ``str()`` gives a canonical text that parses back to the same tree."""

    source: str
    root: Node

    def matches(self, customer_tags: Iterable[str]) -> bool:
        tags = customer_tags if isinstance(customer_tags, set | frozenset) else set(customer_tags)
        return self.root.evaluate(tags)

    def tags(self) -> list[Tag]:
        """Every tag the expression names, in the order written."""
        found: list[Tag] = []

        def walk(node: Node) -> None:
            if isinstance(node, Tag):
                found.append(node)
            elif isinstance(node, Not):
                walk(node.operand)
            else:
                for operand in node.operands:
                    walk(operand)

        walk(self.root)
        return found

    def __str__(self) -> str:
        return str(self.root)


# -- tokens and parsing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # a punctuation character, "word", "quoted" or "end"
    text: str
    column: int  # 1-based, for error messages


def scan(
    source: str, punctuation: str, error: type[Exception], table: dict[int, str] | None = None
) -> list[Token]:
    """Split a small expression language into tokens: the ``punctuation`` characters, quoted text,
    and words (anything else up to a space, punctuation or quote). Full-width forms are folded by
    ``table`` first, so a column still points at the character the author typed. Shared by tag
    expressions here and campaign audiences (app/campaigns/audience.py)."""
    text = source.translate(table if table is not None else _FULL_WIDTH)
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in punctuation:
            tokens.append(Token(char, char, i + 1))
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise error('unclosed quote "', i + 1)
            tokens.append(Token("quoted", text[i + 1 : end], i + 1))
            i = end + 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in punctuation and text[i] != '"':
                i += 1
            tokens.append(Token("word", text[start:i], start + 1))
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _tokens(source: str) -> list[Token]:
    """Tag-expression tokens: "(", ")", the keywords, "tag" (a word or quoted text), "end"."""
    tokens = []
    for token in scan(source, "()", TagExprError):
        if token.kind == "quoted":
            token = Token("tag", token.text, token.column)
        elif token.kind == "word":
            keyword = token.text.lower()
            token = Token(keyword if keyword in KEYWORDS else "tag", token.text, token.column)
        tokens.append(token)
    return tokens


class TokenCursor:
    """The position of a recursive-descent parser in ``scan``'s tokens (shared by the tag
    expressions here and the campaign audiences); the last token is always ``end``."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def take(self) -> Token:
        token = self.tokens[self.at]
        self.at += 1
        return token


class _Parser(TokenCursor):
    def __init__(self, source: str) -> None:
        super().__init__(_tokens(source))

    def expression(self) -> Node:
        operands = [self.conjunction()]
        while self.token.kind == "or":
            self.take()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def conjunction(self) -> Node:
        operands = [self.unary()]
        while self.token.kind == "and":
            self.take()
            operands.append(self.unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def unary(self) -> Node:
        token = self.take()
        if token.kind == "not":
            return Not(self.unary())
        if token.kind == "(":
            inner = self.expression()
            if self.token.kind != ")":
                raise TagExprError(f"expected ) to close the ( at column {token.column}", self.token.column)
            self.take()
            return inner
        if token.kind == "tag":
            try:
                group, name = split_tag(token.text)
            except ValueError:
                raise TagExprError(
                    f"{token.text!r} is not a tag: write 组名:标签名, e.g. 意向车型:RAV4", token.column
                ) from None
            return Tag(group, name, token.column)
        if token.kind == "end":
            raise TagExprError("expression ends where a tag, `not` or ( was expected", token.column)
        raise TagExprError(f"unexpected {token.text!r}: expected a tag, `not` or (", token.column)


def parse(source: str) -> TagExpr:
    """Parse once; raises TagExprError (with the column) on a syntax error."""
    if not source or not source.strip():
        raise TagExprError("empty expression", 1)
    parser = _Parser(source)
    root = parser.expression()
    token = parser.token
    if token.kind != "end":
        expected = "`and`, `or` or the end" if token.kind != ")" else "no ) here (nothing to close)"
        raise TagExprError(f"unexpected {token.text!r}: expected {expected}", token.column)
    return TagExpr(source, root)


def matches(expression: str | TagExpr, customer_tags: Iterable[str]) -> bool:
    """Convenience: parse (if needed) and evaluate."""
    expr = parse(expression) if isinstance(expression, str) else expression
    return expr.matches(customer_tags)
