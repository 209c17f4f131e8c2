"""The text form of filters (CLI, SDK): ``age >= 50 and (grade == 'II' or x is null)``.

A hand-written tokenizer and recursive-descent parser build the same models as the JSON
form (:mod:`medfed.common.filters`) and then pass them through :func:`parse_filter`, so the
size and value rules live in one place. ``and`` binds tighter than ``or``; errors name the
1-based position of the problem.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from medfed.common.errors import BadRequest
from medfed.common.filters import (
    COMPARISONS,
    MAX_DEPTH,
    And,
    Condition,
    Filter,
    Or,
    Scalar,
    filter_to_json,
    parse_filter,
)

__all__ = ["parse_filter_text"]

_KEYWORDS = {"and", "or", "in", "not", "is", "null", "true", "false"}
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<str>'[^']*'|"[^"]*")
    |(?P<quoted>`[^`]+`)
    |(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.])
    |(?P<word>[A-Za-z_][\w.]*)
    |(?P<sym>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)""",
    re.VERBOSE,
)


class _Token(NamedTuple):
    kind: str  # str, num, ident, kw, sym, end
    text: str
    pos: int
    value: Any


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            hint = " (use '==')" if text[pos] == "=" else ""
            quote = " (unclosed quote)" if text[pos] in "'\"`" else ""
            raise BadRequest(
                f"filter text: unexpected '{text[pos]}' at position {pos + 1}{hint}{quote}"
            )
        kind, raw = match.lastgroup or "", match.group()
        if kind == "str":
            tokens.append(_Token("str", raw, pos, raw[1:-1]))
        elif kind == "quoted":
            tokens.append(_Token("ident", raw, pos, raw[1:-1]))
        elif kind == "num":
            number = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(_Token("num", raw, pos, number))
        elif kind == "word":
            word = raw.lower()
            keyword = word in _KEYWORDS
            tokens.append(_Token("kw" if keyword else "ident", raw, pos, word if keyword else raw))
        elif kind == "sym":
            tokens.append(_Token("sym", raw, pos, raw))
        pos = match.end()
    tokens.append(_Token("end", "end of text", len(text), None))
    return tokens


class _TextParser:
    """Recursive descent: ``or`` of ``and`` of (condition | parenthesised filter)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def fail(self, wanted: str) -> BadRequest:
        token = self.peek()
        return BadRequest(
            f"filter text: expected {wanted} at position {token.pos + 1}, found '{token.text}'"
        )

    def accept(self, kind: str, value: str) -> bool:
        token = self.peek()
        if token.kind == kind and token.value == value:
            self.at += 1
            return True
        return False

    def parse(self) -> Filter:
        f = self.parse_or()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or the end")
        return f

    def parse_or(self) -> Filter:
        items = [self.parse_and()]
        while self.accept("kw", "or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(filters=items)

    def parse_and(self) -> Filter:
        items = [self.parse_atom()]
        while self.accept("kw", "and"):
            items.append(self.parse_atom())
        return items[0] if len(items) == 1 else And(filters=items)

    def parse_atom(self) -> Filter:
        if self.accept("sym", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise BadRequest(f"filter: nested deeper than {MAX_DEPTH} levels")
            f = self.parse_or()
            if not self.accept("sym", ")"):
                raise self.fail("')'")
            self.depth -= 1
            return f
        if self.peek().kind != "ident":
            raise self.fail("a column name or '('")
        column = str(self.take().value)
        if self.accept("kw", "is"):
            op = "is not null" if self.accept("kw", "not") else "is null"
            if not self.accept("kw", "null"):
                raise self.fail("'null'")
            return Condition(column=column, op=op)
        if self.accept("kw", "not"):
            if not self.accept("kw", "in"):
                raise self.fail("'in'")
            return Condition(column=column, op="not in", value=self.parse_list())
        if self.accept("kw", "in"):
            return Condition(column=column, op="in", value=self.parse_list())
        token = self.peek()
        if token.kind != "sym" or token.value not in COMPARISONS:
            raise self.fail("an operator (==, !=, <, <=, >, >=, in, not in, is null)")
        self.take()
        return Condition(column=column, op=token.value, value=self.parse_value())

    def parse_list(self) -> list[Scalar]:
        closing = ")" if self.accept("sym", "(") else "]" if self.accept("sym", "[") else None
        if closing is None:
            raise self.fail("'(' to open a list of values")
        values = [self.parse_value()]
        while self.accept("sym", ","):
            values.append(self.parse_value())
        if not self.accept("sym", closing):
            raise self.fail(f"',' or '{closing}'")
        return values

    def parse_value(self) -> Scalar:
        token = self.peek()
        if token.kind in ("str", "num"):
            self.take()
            return token.value  # type: ignore[no-any-return]
        if token.kind == "kw" and token.value in ("true", "false"):
            self.take()
            return bool(token.value == "true")
        raise self.fail("a value (a quoted string, a number, true or false)")


def parse_filter_text(text: str) -> Filter:
    """Parse the CLI's text form, e.g. ``age >= 50 and (horTh == 'yes' or tsize > 20)``.

    ``and`` binds tighter than ``or``; strings in single or double quotes; column names
    as bare words or in backticks; ``in (1, 2)``; ``x is null``. Errors name the position.
    """
    f = _TextParser(text).parse()
    parsed = parse_filter(filter_to_json(f))  # the JSON rules (size, values) in one place
    assert parsed is not None
    return parsed
