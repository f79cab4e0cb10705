"""Metric query templates: the part of Go's text/template that Flagger's MetricTemplates are written in.

Flagger renders a query with ``text/template`` and the model's fields as niladic functions
(``{{ namespace }}``, ``{{ variables.direction }}``, ``{{ printf "%s-%s" namespace target }}``). This is
an interpreter of that language over plain values, written so that a query author can reach nothing
but the model: the only names are the model's and the builtins below, values are strings, numbers,
booleans and the string map ``variables``, and a field of anything else is an error. There is no
attribute lookup, no method call, no ``call``.

Supported: text and actions with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``; pipelines with
``|``; parentheses; string (interpreted and raw), character, number, ``true``/``false``/``nil``
literals; field chains on a function's result (``variables.x``, ``(variables).x``) and on ``.``;
``$name := pipeline`` declarations (as Flagger's own skipper queries use) and ``$name`` references;
``if``/``else if``/``else``/``with``/``end``; the builtins ``and or not len index slice print printf
println urlquery html js eq ne lt le gt ge``. Not supported (an error naming them): ``range``,
``define``, ``template``, ``block``, ``break``, ``continue`` and assignment (``$name = ...``).

Bounds: a template and its rendered query (and every intermediate string) are at most ``MAX_OUTPUT``
characters, printf widths and precisions at most ``MAX_WIDTH``, and parentheses and blocks nest at most
``MAX_NESTING`` deep, so parsing and rendering are linear in the template's size.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from typing import Final, TypeAlias

MAX_OUTPUT: Final = 65_536
MAX_WIDTH: Final = 1_000
MAX_NESTING: Final = 32

Value: TypeAlias = str | int | float | bool | Mapping[str, str] | None

BUILTINS: Final = (
    "printf",
    "print",
    "println",
    "len",
    "index",
    "slice",
    "urlquery",
    "html",
    "js",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
)
_UNSUPPORTED = ("range", "define", "template", "block", "break", "continue")


class TemplateError(ValueError):
    """The template does not parse, or does not render with the model given; ``line`` is 1-based."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


# ---------------------------------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------------------------------

_SPACE = " \t\r\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?)"
)
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


@dataclass(frozen=True)
class _Token:
    kind: (
        str  # text, open, close, ident, field, dot, string, char, number, pipe, lparen, rparen, var, declare
    )
    value: str
    line: int
    trim: bool = False  # open: "{{-", close: "-}}"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._counted_to = 0  # newlines before here are counted in _newlines
        self._newlines = 0

    def line(self, pos: int | None = None) -> int:
        """Counted on from the last position asked for (they rise), so lexing stays linear."""
        pos = self.pos if pos is None else pos
        if pos < self._counted_to:
            return self.text.count("\n", 0, pos) + 1
        self._newlines += self.text.count("\n", self._counted_to, pos)
        self._counted_to = pos
        return self._newlines + 1

    def tokens(self) -> Iterator[_Token]:
        text = self.text
        while self.pos < len(text):
            start = text.find("{{", self.pos)
            if start < 0:
                yield _Token("text", text[self.pos :], self.line())
                return
            if start > self.pos:
                yield _Token("text", text[self.pos : start], self.line())
            self.pos = start + 2
            trim = text.startswith("-", self.pos) and text[self.pos + 1 : self.pos + 2] in tuple(_SPACE)
            if trim:
                self.pos += 1
            line = self.line(start)
            comment_end = self._comment_end(line)
            if comment_end is not None:  # no action, but its delimiters still trim
                self.pos, close_trim = comment_end
                yield _Token("comment-open", "{{", line, trim)
                yield _Token("comment-close", "}}", line, close_trim)
                continue
            yield _Token("open", "{{", line, trim)
            yield from self._action()

    def _comment_end(self, line: int) -> tuple[int, bool] | None:
        """Where ``{{/* ... */}}`` starting here ends, with its closing trim; None if not a comment."""
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _SPACE:
            pos += 1
        if not text.startswith("/*", pos):
            return None
        end = text.find("*/", pos + 2)
        if end < 0:
            raise TemplateError("unclosed comment", line)
        pos = end + 2
        while pos < len(text) and text[pos] in " ":
            pos += 1
        close = _close_at(text, pos)
        if close is None:
            raise TemplateError("comment ends before the closing delimiter", self.line(pos))
        return close

    def _action(self) -> Iterator[_Token]:
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos] in _SPACE:
                self.pos += 1
            if self.pos >= len(text):
                raise TemplateError("unclosed action", self.line())
            close = _close_at(text, self.pos)
            if close is not None:
                self.pos, trim = close
                yield _Token("close", "}}", self.line(), trim)
                return
            yield self._token()

    def _token(self) -> _Token:
        text, pos, line = self.text, self.pos, self.line()
        char = text[pos]
        if char in "|()":
            self.pos += 1
            return _Token({"|": "pipe", "(": "lparen", ")": "rparen"}[char], char, line)
        if char == '"':
            end = pos + 1
            while end < len(text) and text[end] != '"':
                if text[end] == "\n":
                    break
                end += 2 if text[end] == "\\" else 1
            if end >= len(text) or text[end] != '"':
                raise TemplateError("unterminated quoted string", line)
            self.pos = end + 1
            return _Token("string", _unquote(text[pos + 1 : end], line), line)
        if char == "`":
            end = text.find("`", pos + 1)
            if end < 0:
                raise TemplateError("unterminated raw quoted string", line)
            self.pos = end + 1
            return _Token("string", text[pos + 1 : end], line)
        if char == "'":
            end = pos + 1
            while end < len(text) and text[end] not in "'\n":
                end += 2 if text[end] == "\\" else 1
            body = _unquote(text[pos + 1 : end], line) if end < len(text) and text[end] == "'" else ""
            if len(body) != 1:
                raise TemplateError(f"malformed character constant: {text[pos : end + 1]}", line)
            self.pos = end + 1
            return _Token("char", body, line)
        if char == "$":
            found = _IDENT.match(text, pos + 1)
            self.pos = found.end() if found is not None else pos + 1
            return _Token("var", text[pos : self.pos], line)
        if text.startswith(":=", pos):
            self.pos += 2
            return _Token("declare", ":=", line)
        if char == "=":
            raise TemplateError("assignment ($name = ...) is not supported in metric queries", line)
        if char in ":,":
            raise TemplateError(f"unexpected {char!r} in action", line)
        if char == ".":
            found = _IDENT.match(text, pos + 1)
            if found is not None:
                self.pos = found.end()
                return _Token("field", found.group(), line)
            if not (pos + 1 < len(text) and text[pos + 1].isdigit()):
                self.pos += 1
                return _Token("dot", ".", line)
        number = _NUMBER.match(text, pos)
        if number is not None and number.group() not in ("+", "-"):
            self.pos = number.end()
            return _Token("number", number.group(), line)
        ident = _IDENT.match(text, pos)
        if ident is not None:
            self.pos = ident.end()
            return _Token("ident", ident.group(), line)
        raise TemplateError(f"unexpected {char!r} in action", line)


def _close_at(text: str, pos: int) -> tuple[int, bool] | None:
    """The position after a right delimiter at ``pos`` (``}}``, or ``-}}`` after a space) and its trim."""
    if text.startswith("}}", pos):
        return pos + 2, False
    if text.startswith("-}}", pos) and pos > 0 and text[pos - 1] in _SPACE:
        return pos + 3, True
    return None


def _unquote(body: str, line: int) -> str:
    """Go's escapes in a quoted string or character constant."""
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        kind = body[i + 1 : i + 2]
        if kind in _ESCAPES:
            out.append(_ESCAPES[kind])
            i += 2
        elif kind in ("'", '"'):
            out.append(kind)
            i += 2
        elif kind in ("x", "u", "U") or kind.isdigit():
            size, base, start = {"x": (2, 16, 2), "u": (4, 16, 2), "U": (8, 16, 2)}.get(kind, (3, 8, 1))
            digits = body[i + start : i + start + size]
            try:
                out.append(chr(int(digits, base)) if len(digits) == size else "")
            except ValueError:
                digits = ""
            if len(digits) != size:
                raise TemplateError(f"invalid escape \\{kind} in quoted string", line)
            i += start + size
        else:
            raise TemplateError(f"unknown escape sequence \\{kind}", line)
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Parse tree
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Literal:
    value: Value


@dataclass(frozen=True)
class _Function:
    name: str


@dataclass(frozen=True)
class _Dot:
    pass


@dataclass(frozen=True)
class _Variable:
    name: str  # "$x"; "$" alone is the data (nil)


@dataclass(frozen=True)
class _Chain:
    """A term followed by ``.field`` steps (``variables.direction``, ``(pipeline).x``, ``.x.y``)."""

    term: _Operand
    fields: tuple[str, ...]


@dataclass(frozen=True)
class _Pipeline:
    commands: tuple[tuple[_Operand, ...], ...]
    line: int
    declares: str | None = None  # "$x" for ``$x := ...``: the value is stored, not printed


_Operand: TypeAlias = "_Literal | _Function | _Dot | _Variable | _Chain | _Pipeline"


@dataclass(frozen=True)
class _Action:
    pipeline: _Pipeline


@dataclass(frozen=True)
class _Branch:
    """``if`` or ``with``: ``body`` when the pipeline is true (non-empty), else ``otherwise``."""

    keyword: str
    pipeline: _Pipeline
    body: tuple[_Node, ...]
    otherwise: tuple[_Node, ...]


_Node: TypeAlias = "str | _Action | _Branch"


@dataclass(frozen=True)
class Template:
    """A parsed query template; ``functions`` are the names it calls, ``variables`` the keys it reads."""

    nodes: tuple[_Node, ...]
    functions: frozenset[str] = field(default_factory=frozenset)


class _Parser:
    def __init__(self, text: str, names: frozenset[str]) -> None:
        self.names = names
        # Lexed as the parser goes, as Go does: the first problem in reading order is the one reported
        # (``cycler.x('id')`` is an unknown function before it is a malformed character constant).
        self.tokens = _trimmed(_Lexer(text).tokens())
        self.lookahead: _Token | None = None
        self.depth = 0
        self.used: set[str] = set()
        self.scopes: list[set[str]] = [{"$"}]  # variables declared so far, innermost block last

    def peek(self) -> _Token | None:
        if self.lookahead is None:
            self.lookahead = next(self.tokens, None)
        return self.lookahead

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise TemplateError("unexpected end of template")
        self.lookahead = None
        return token

    def parse(self) -> Template:
        nodes, end = self.nodes()
        if end is not None:
            raise TemplateError(f"unexpected {{{{ {end.value} }}}}", end.line)
        return Template(tuple(nodes), frozenset(self.used))

    def nodes(self) -> tuple[list[_Node], _Token | None]:
        """Nodes up to the end of input or a closing keyword (``else``/``end``), which is returned."""
        nodes: list[_Node] = []
        while (token := self.peek()) is not None:
            if token.kind == "text":
                nodes.append(self.take().value)
                continue
            self.take()  # "{{"
            keyword = self.peek()
            if keyword is not None and keyword.kind == "ident" and keyword.value in ("else", "end"):
                return nodes, keyword
            if keyword is not None and keyword.kind == "ident" and keyword.value in ("if", "with"):
                nodes.append(self.branch())
                continue
            if keyword is not None and keyword.kind == "ident" and keyword.value in _UNSUPPORTED:
                raise TemplateError(f"{keyword.value} is not supported in metric queries", keyword.line)
            nodes.append(_Action(self.pipeline(keyword.line if keyword else 0, declare=True)))
            self.expect("close")
        return nodes, None

    def branch(self) -> _Branch:
        keyword = self.take()
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise TemplateError(f"blocks nested deeper than {MAX_NESTING}", keyword.line)
        self.scopes.append(set())  # until this block's end, as in Go
        pipeline = self.pipeline(keyword.line, declare=True)
        self.expect("close")
        body, end = self.nodes()
        otherwise: list[_Node] = []
        if end is None:
            raise TemplateError(f"{keyword.value} without {{{{ end }}}}", keyword.line)
        self.take()
        if end.value == "else":
            after = self.peek()
            if after is not None and after.kind == "ident" and after.value in ("if", "with"):
                otherwise = [self.branch()]  # "else if" closes with the outer block's end
                self.depth -= 1
                self.scopes.pop()
                return _Branch(keyword.value, pipeline, tuple(body), tuple(otherwise))
            self.expect("close")
            rest, end = self.nodes()
            if end is None or end.value != "end":
                raise TemplateError(f"{keyword.value} without {{{{ end }}}}", keyword.line)
            self.take()
            otherwise = rest
        self.expect("close")
        self.depth -= 1
        self.scopes.pop()
        return _Branch(keyword.value, pipeline, tuple(body), tuple(otherwise))

    def expect(self, kind: str) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind:
            found = "end of template" if token is None else repr(token.value)
            raise TemplateError(
                f"expected {'}}' if kind == 'close' else kind}, found {found}",
                token.line if token else 0,
            )
        return self.take()

    def pipeline(self, line: int, declare: bool = False) -> _Pipeline:
        """``declare``: the pipeline may start with ``$x :=`` (actions and block conditions may)."""
        declared, first = None, None
        if declare and (token := self.peek()) is not None and token.kind == "var":
            variable = self.take()
            following = self.peek()
            if following is not None and following.kind == "declare":
                self.take()
                declared = variable.value
            else:
                first = variable
        commands = self.commands(line, first)
        if declared is not None:
            self.scopes[-1].add(declared)  # visible after its own action, as in Go
        return _Pipeline(commands, line, declared)

    def commands(self, line: int, first: _Token | None) -> tuple[tuple[_Operand, ...], ...]:
        commands: list[tuple[_Operand, ...]] = []
        while True:
            operands: list[_Operand] = []
            if first is not None:
                operands.append(self.operand(first))
                first = None
            while (token := self.peek()) is not None and token.kind not in ("close", "pipe", "rparen"):
                operands.append(self.operand(self.take()))
            if not operands:
                raise TemplateError("missing value in action" if not commands else "empty command", line)
            commands.append(tuple(operands))
            if token is None or token.kind != "pipe":
                return tuple(commands)
            self.take()

    def operand(self, token: _Token) -> _Operand:
        term: _Operand
        if token.kind == "lparen":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TemplateError(f"parentheses nested deeper than {MAX_NESTING}", token.line)
            term = self.pipeline(token.line)
            self.expect("rparen")
            self.depth -= 1
        elif token.kind == "field":
            term = _Chain(_Dot(), (token.value,))
        elif token.kind == "dot":
            term = _Dot()
        elif token.kind == "var":
            if not any(token.value in scope for scope in self.scopes):
                raise TemplateError(f"undefined variable {token.value!r}", token.line)
            term = _Variable(token.value)
        elif token.kind == "string":
            term = _Literal(token.value)
        elif token.kind == "char":
            term = _Literal(ord(token.value))
        elif token.kind == "number":
            term = _Literal(_number(token.value, token.line))
        elif token.kind == "ident":
            term = self.identifier(token)
        else:
            raise TemplateError(f"unexpected {token.value!r} in operand", token.line)
        fields: list[str] = []
        while (following := self.peek()) is not None and following.kind == "field":
            fields.append(self.take().value)
        if not fields:
            return term
        if isinstance(term, _Chain):
            return _Chain(term.term, term.fields + tuple(fields))
        return _Chain(term, tuple(fields))

    def identifier(self, token: _Token) -> _Operand:
        name = token.value
        if name in ("true", "false"):
            return _Literal(name == "true")
        if name == "nil":
            return _Literal(None)
        if name in self.names or name in BUILTINS:
            self.used.add(name)
            return _Function(name)
        if name in _UNSUPPORTED or name in ("if", "with", "else", "end"):
            raise TemplateError(f"unexpected {name} in operand", token.line)
        raise TemplateError(f"function {name!r} is not defined", token.line)


def _trimmed(tokens: Iterator[_Token]) -> Iterator[_Token]:
    """Apply ``{{-`` and ``-}}``: whitespace next to a trimming delimiter is dropped from the text."""
    pending: _Token | None = None
    trim_next = False
    for token in tokens:
        if token.kind == "text":
            value = token.value.lstrip(_SPACE) if trim_next else token.value
            before = pending.value if pending is not None else ""  # text on both sides of a comment
            pending = _Token("text", before + value, pending.line if pending else token.line)
            trim_next = False
            continue
        if token.kind in ("open", "comment-open") and pending is not None and token.trim:
            pending = _Token("text", pending.value.rstrip(_SPACE), pending.line)
        if token.kind in ("close", "comment-close"):
            trim_next = token.trim
        if token.kind.startswith("comment"):
            continue
        if pending is not None:
            if pending.value:
                yield pending
            pending = None
        yield token
    if pending is not None and pending.value:
        yield pending


def _number(text: str, line: int) -> int | float:
    clean = text.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", clean):
            return int(clean, 8)  # Go's leading-zero octal
        if re.fullmatch(r"[+-]?(0[xXoObB][0-9a-fA-F]+|[0-9]+)", clean):
            return int(clean, 0)
        return float(clean)
    except ValueError:
        raise TemplateError(f"bad number syntax: {text}", line) from None


def parse(text: str, names: Sequence[str]) -> Template:
    """Parse ``text``, whose functions may be the model's ``names`` and the builtins."""
    if len(text) > MAX_OUTPUT:
        raise TemplateError(f"template is longer than {MAX_OUTPUT} characters")
    return _Parser(text, frozenset(names)).parse()


# ---------------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------------


class MissingKeyError(TemplateError):
    """A key ``variables`` does not have (the caller names what is defined)."""

    def __init__(self, key: str, line: int) -> None:
        super().__init__(f"map has no entry for key {key!r}", line)
        self.key = key


def render(template: Template, model: Mapping[str, Value]) -> str:
    """The template's text for ``model`` (its names map to what the niladic functions return)."""
    out = _Output()
    _Executor(model, out).nodes(template.nodes, None)
    return "".join(out.parts)


@dataclass
class _Output:
    parts: list[str] = field(default_factory=list)
    size: int = 0

    def write(self, text: str, line: int) -> None:
        self.size += len(text)
        if self.size > MAX_OUTPUT:
            raise TemplateError(f"rendered query is longer than {MAX_OUTPUT} characters", line)
        self.parts.append(text)


class _Executor:
    def __init__(self, model: Mapping[str, Value], out: _Output) -> None:
        self.model = model
        self.out = out
        self.frames: list[dict[str, Value]] = [{"$": None}]

    def nodes(self, nodes: Sequence[_Node], dot: Value) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.write(node, 0)
            elif isinstance(node, _Action):
                value = self.pipeline(node.pipeline, dot)
                if node.pipeline.declares is None:
                    self.out.write(_print_value(value), node.pipeline.line)
            else:
                self.frames.append({})
                value = self.pipeline(node.pipeline, dot)
                if _truth(value):
                    self.nodes(node.body, value if node.keyword == "with" else dot)
                else:
                    self.nodes(node.otherwise, dot)
                self.frames.pop()

    def pipeline(self, pipeline: _Pipeline, dot: Value) -> Value:
        value: Value = None
        for index, command in enumerate(pipeline.commands):
            final = (value,) if index > 0 else ()
            value = self.command(command, dot, final, pipeline.line)
        if pipeline.declares is not None:
            self.frames[-1][pipeline.declares] = value
        return value

    def command(self, operands: Sequence[_Operand], dot: Value, final: tuple[Value, ...], line: int) -> Value:
        head, args = operands[0], operands[1:]
        if isinstance(head, _Function):
            return self.call(head.name, args, dot, final, line)
        if args or final:
            raise TemplateError("can't give an argument to a non-function", line)
        return self.operand(head, dot, line)

    def operand(self, operand: _Operand, dot: Value, line: int) -> Value:
        if isinstance(operand, _Literal):
            return operand.value
        if isinstance(operand, _Dot):
            return dot
        if isinstance(operand, _Variable):
            return next(frame[operand.name] for frame in reversed(self.frames) if operand.name in frame)
        if isinstance(operand, _Function):
            return self.call(operand.name, (), dot, (), line)
        if isinstance(operand, _Pipeline):
            return self.pipeline(operand, dot)
        value = self.operand(operand.term, dot, line)
        for name in operand.fields:
            value = _field(value, name, line)
        return value

    def call(
        self, name: str, args: Sequence[_Operand], dot: Value, final: tuple[Value, ...], line: int
    ) -> Value:
        if name in ("and", "or"):
            return self.logic(name, [*args], dot, final, line)
        values = [self.operand(arg, dot, line) for arg in args] + list(final)
        if name in self.model:
            if values:
                raise TemplateError(f"wrong number of args for {name}: want 0 got {len(values)}", line)
            return self.model[name]
        result = _BUILTIN_FUNCTIONS[name](values, line)
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise TemplateError(f"{name} result is longer than {MAX_OUTPUT} characters", line)
        return result

    def logic(
        self, name: str, args: list[_Operand], dot: Value, final: tuple[Value, ...], line: int
    ) -> Value:
        """Go's short-circuit ``and``/``or``: the first false (true) argument, else the last."""
        count = len(args) + len(final)
        if count < 1:
            raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0", line)
        value: Value = None
        for arg in args:
            value = self.operand(arg, dot, line)
            if _truth(value) != (name == "and"):
                return value
        for value in final:
            if _truth(value) != (name == "and"):
                return value
        return value


def _field(value: Value, name: str, line: int) -> Value:
    if isinstance(value, Mapping):
        if name not in value:
            raise MissingKeyError(name, line)
        return value[name]
    if value is None:
        raise TemplateError(f"can't evaluate field {name}: a metric query has no data (.)", line)
    raise TemplateError(f"can't evaluate field {name} in type {_type(value)}", line)


def _truth(value: Value) -> bool:
    return bool(value) if not isinstance(value, float) or not math.isnan(value) else True


def _type(value: Value) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return "map[string]string"


# --- printing (Go's fmt %v) -----------------------------------------------------------------------


def _print_value(value: Value) -> str:
    """How an action prints a value: ``fmt.Fprint``, with ``<no value>`` for nil."""
    return "<no value>" if value is None else _v(value)


def _v(value: Value) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, "g", -1)
    if isinstance(value, str):
        return value
    return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"


def _go_float(number: float, verb: str, precision: int) -> str:
    """strconv.FormatFloat for the verbs e, f, g (upper case too); precision -1 is the shortest."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    upper, verb = verb.isupper(), verb.lower()
    if verb == "g" and precision < 0:
        result = _shortest(number)
    else:
        result = f"{number:.{6 if precision < 0 else precision}{verb}}"
    return result.upper() if upper else result


def _shortest(number: float) -> str:
    """Go's %v of a float64: the fewest digits that read back, in %e form when the exponent is < -4
    or >= 6 (``1e+06``, ``123456``, ``1.5e-05``)."""
    sign, digit_tuple, exponent = Decimal(repr(number)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    exp = len(digits) + int(exponent) - 1
    minus = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{minus}0.{'0' * (-exp - 1)}{digits}"
    whole, fraction = digits[: exp + 1].ljust(exp + 1, "0"), digits[exp + 1 :]
    return f"{minus}{whole}" + (f".{fraction}" if fraction else "")


# --- printf -------------------------------------------------------------------------------------


_DIRECTIVE = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)?", re.DOTALL)


def _printf(args: list[Value], line: int) -> str:
    if not args or not isinstance(args[0], str):
        raise TemplateError("printf needs a format string as its first argument", line)
    layout, values = args[0], args[1:]
    out: list[str] = []
    used = 0
    pos = 0
    for directive in _DIRECTIVE.finditer(layout):
        out.append(layout[pos : directive.start()])
        pos = directive.end()
        flags, width, precision, verb = directive.groups()
        if verb == "%" and not flags and width is None and precision is None:
            out.append("%")
            continue
        if verb is None:
            out.append("%!(NOVERB)")
            continue
        if int(width or 0) > MAX_WIDTH or int(precision or 0) > MAX_WIDTH:
            raise TemplateError(f"printf width and precision are at most {MAX_WIDTH}", line)
        if used >= len(values):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = values[used]
        used += 1
        out.append(_format(value, flags, width, precision, verb))
    out.append(layout[pos:])
    if used < len(values):
        extra = ", ".join(f"{_type(v)}={_v(v)}" for v in values[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format(value: Value, flags: str, width: str | None, precision: str | None, verb: str) -> str:
    """One printf directive; a verb that does not fit the value prints Go's ``%!verb(type=value)``."""
    body = _format_body(value, flags, precision, verb)
    if body is None:
        return f"%!{verb}({_type(value)}={_v(value)})"
    size = int(width or 0)
    if len(body) >= size:
        return body
    if "-" in flags:
        return body.ljust(size)
    if "0" in flags and isinstance(value, int | float) and not isinstance(value, bool):
        sign = body[0] if body[:1] in "+- " and body[:1] else ""
        return sign + body[len(sign) :].rjust(size - len(sign), "0")
    return body.rjust(size)


def _format_body(value: Value, flags: str, precision: str | None, verb: str) -> str | None:
    cut = int(precision) if precision else (0 if precision == "" else None)
    if isinstance(value, bool):
        return ("true" if value else "false") if verb in "tv" else None
    if isinstance(value, int):
        sign = "+" if "+" in flags and value >= 0 else (" " if " " in flags and value >= 0 else "")
        if verb in "dv":
            return sign + str(value)
        if verb in "xXob":
            digits = format(abs(value), {"x": "x", "X": "X", "o": "o", "b": "b"}[verb])
            prefix = {"x": "0x", "X": "0X", "o": "0", "b": "0b"}[verb] if "#" in flags else ""
            return ("-" if value < 0 else sign) + prefix + digits
        if verb == "c":
            return chr(value) if 0 <= value <= 0x10FFFF else "\ufffd"
        if verb == "q":
            return "'" + chr(value) + "'" if 0 <= value <= 0x10FFFF else None
        return None
    if isinstance(value, float):
        if verb in "eEfFgG":
            text = _go_float(
                value, verb.replace("F", "f"), cut if cut is not None else -1 if verb in "gG" else 6
            )
        elif verb == "v":
            text = _go_float(value, "g", cut if cut is not None else -1)
        else:
            return None
        return ("+" if "+" in flags and value >= 0 else "") + text
    if isinstance(value, str):
        text = value if cut is None else value[:cut]
        if verb in "sv":
            return text
        if verb == "q":
            return _go_quote(text)
        if verb in "xX":
            hexed = text.encode().hex()
            return hexed.upper() if verb == "X" else hexed
        return None
    if value is None:
        return "<nil>" if verb == "v" else None
    return _v(value) if verb in "sv" else None


_QUOTE_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_quote(text: str) -> str:
    """strconv.Quote: backslash escapes for quotes, backslashes and control characters."""
    out = []
    for char in text:
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


# --- the other builtins -------------------------------------------------------------------------


def _sprint(values: list[Value]) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for index, value in enumerate(values):
        if index and not isinstance(value, str) and not isinstance(values[index - 1], str):
            out.append(" ")
        out.append(_v(value))
    return "".join(out)


def _arity(name: str, values: list[Value], want: int, line: int) -> None:
    if len(values) != want:
        raise TemplateError(f"wrong number of args for {name}: want {want} got {len(values)}", line)


def _len(values: list[Value], line: int) -> Value:
    _arity("len", values, 1, line)
    (value,) = values
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, Mapping):
        return len(value)
    raise TemplateError(f"len of type {_type(value)}", line)


def _index(values: list[Value], line: int) -> Value:
    if not values:
        raise TemplateError("wrong number of args for index: want at least 1 got 0", line)
    value = values[0]
    for key in values[1:]:
        if isinstance(value, Mapping) and isinstance(key, str):
            value = value.get(key, "")
        elif isinstance(value, str) and isinstance(key, int) and not isinstance(key, bool):
            data = value.encode()
            if not 0 <= key < len(data):
                raise TemplateError(f"index out of range: {key}", line)
            value = data[key]
        else:
            raise TemplateError(f"can't index item of type {_type(value)} with {_type(key)}", line)
    return value


def _slice(values: list[Value], line: int) -> Value:
    if not values or not isinstance(values[0], str) or len(values) > 3:
        raise TemplateError("slice takes a string and up to two indexes", line)
    data = values[0].encode()
    bounds = values[1:]
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        raise TemplateError("slice indexes must be integers", line)
    start = int(bounds[0]) if bounds else 0  # type: ignore[arg-type]
    end = int(bounds[1]) if len(bounds) > 1 else len(data)  # type: ignore[arg-type]
    if not 0 <= start <= end <= len(data):
        raise TemplateError(f"slice index out of range: [{start}:{end}]", line)
    return data[start:end].decode("utf-8", "replace")


_KIND_NAMES = {bool: "bool", int: "int", float: "float", str: "string"}


def _compare(name: str, values: list[Value], line: int) -> Value:
    if len(values) < 2 or (name != "eq" and len(values) != 2):
        raise TemplateError(f"wrong number of args for {name}", line)
    first = values[0]
    if not isinstance(first, bool | int | float | str):
        raise TemplateError(f"{name}: invalid type for comparison ({_type(first)})", line)
    for other in values[1:]:
        if type(other) is not type(first):
            raise TemplateError(f"{name}: incompatible types for comparison", line)
        if name in ("lt", "le", "gt", "ge") and isinstance(first, bool):
            raise TemplateError(f"{name}: invalid type for comparison (bool)", line)
    a, b = first, values[1]
    if name == "eq":
        return any(first == other for other in values[1:])
    outcome = {
        "ne": a != b,
        "lt": a < b,  # type: ignore[operator]
        "le": a <= b,  # type: ignore[operator]
        "gt": a > b,  # type: ignore[operator]
        "ge": a >= b,  # type: ignore[operator]
    }
    return outcome[name]


def _not(values: list[Value], line: int) -> Value:
    _arity("not", values, 1, line)
    return not _truth(values[0])


def _html(text: str) -> str:
    table = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
    return "".join(table.get(char, char) for char in text)


def _js(text: str) -> str:
    out = []
    for char in text:
        if char in "\\'\"":
            out.append("\\" + char)
        elif char in "<>&=" or ord(char) < 0x20:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


_BUILTIN_FUNCTIONS: Final[dict[str, Callable[[list[Value], int], Value]]] = {
    "printf": _printf,
    "print": lambda values, line: _sprint(values),
    "println": lambda values, line: " ".join(_v(v) for v in values) + "\n",
    "len": _len,
    "index": _index,
    "slice": _slice,
    "urlquery": lambda values, line: urllib.parse.quote_plus(_sprint(values), safe=""),
    "html": lambda values, line: _html(_sprint(values)),
    "js": lambda values, line: _js(_sprint(values)),
    "not": _not,
    **{name: partial(_compare, name) for name in ("eq", "ne", "lt", "le", "gt", "ge")},
}
