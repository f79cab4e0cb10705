"""The one reader of user-written YAML (manifests for lint, convert and local run; web-provider queries).

YAML written by someone else is hostile input. PyYAML's loaders share aliased nodes, so an 808-byte
"billion laughs" file loads as a small graph that explodes only when something walks it (a validator,
an error message's repr), and they compose nested collections recursively (1,000 levels is a
RecursionError) and let a repeated key silently win. This loader:

- refuses input over ``MAX_INPUT_BYTES``;
- copies every alias, so each document is a plain tree that can be edited safely, and stops once the
  copies add up to more than ``MAX_ALIAS_NODES`` nodes;
- stops at ``MAX_DEPTH`` levels of nesting (aliases count at the depth where they are used);
- rejects duplicate keys, tags other than YAML's core scalars, mappings and sequences (``!!python/...``
  among them), and ``.nan``/``.inf``, which JSON (and so the Kubernetes API) cannot carry;
- keeps timestamps as the text written, as Kubernetes' YAML-to-JSON conversion does.

Every refusal is a ``YamlError`` with the 1-based line it concerns. Each document also maps field paths
(``("spec", "analysis", "metrics", 0)``) to the line they are written on, so lint can point at fields.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner
from yaml.tokens import Token

MAX_INPUT_BYTES: Final = 2 * 1024 * 1024  # above etcd's 1.5 MiB object limit
MAX_DEPTH: Final = 100
MAX_ALIAS_NODES: Final = 10_000
STDIN: Final = "-"

FieldPath = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_MERGE = f"{_CORE}merge"


class YamlError(ValueError):
    """Input this loader refuses; ``line`` is 1-based (0: not tied to a line)."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class YamlDocument:
    """One document: its index in the file (from 1), the line it starts on, the data, and field lines."""

    index: int
    line: int
    body: Any
    lines: Mapping[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int:
        """The line of ``path``, or of its nearest written ancestor (a missing field: its parent)."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return self.line


@dataclass(frozen=True)
class _Alias:
    """Where an alias is used; the composer returns this instead of the shared anchored node."""

    target: Node
    line: int


class _BoundedComposer(Composer):
    """PyYAML's composer, bounding nesting and keeping alias uses visible."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        events: Any = self  # the parser half of the loader (Python or libyaml) supplies the events
        if events.check_event(AliasEvent):
            event = events.peek_event()
            target = self.anchors.get(event.anchor) if event.anchor is not None else None
            if target is not None:
                events.get_event()
                return _Alias(target, event.start_mark.line + 1)
            return super().compose_node(parent, index)  # PyYAML's error for an undefined alias
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = events.peek_event().start_mark
                raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _PythonLoader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):
    """Pure-Python events, when PyYAML was built without libyaml."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)

    def fetch_flow_collection_start(self, token_class: type[Token]) -> None:
        """Bound ``[[[[...`` while scanning: the scanner looks ahead over every open flow level."""
        if self.flow_level >= MAX_DEPTH:
            raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", self.get_mark().line + 1)
        super().fetch_flow_collection_start(token_class)


_Loader: type[_PythonLoader] | type[_LibyamlLoader] = _PythonLoader
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _LibyamlLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        """libyaml's scanner and parser (about six times faster; it bounds flow nesting itself)."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _Loader = _LibyamlLoader


class _Builder:
    """Turns one composed document into plain Python data, copying aliases within the budget."""

    def __init__(self, loader: SafeConstructor) -> None:
        self._loader = loader
        self._alias_nodes = 0
        self.lines: dict[FieldPath, int] = {}

    def build(self, node: Node | _Alias, path: FieldPath, depth: int, alias_line: int) -> Any:
        """``alias_line``: the line of the alias being copied (0: not inside a copy)."""
        if isinstance(node, _Alias):
            return self.build(node.target, path, depth, alias_line or node.line)
        if depth > MAX_DEPTH:
            raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", alias_line or _line(node))
        if alias_line:
            self._alias_nodes += 1
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise YamlError(
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes; write the data out instead",
                    alias_line,
                )
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if isinstance(node, SequenceNode):
            self._check_tag(node, "seq")
            items = []
            for index, item in enumerate(node.value):
                self.lines.setdefault((*path, index), _line(item))
                items.append(self.build(item, (*path, index), depth + 1, alias_line))
            return items
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth, alias_line)
        raise YamlError(f"unexpected YAML node {type(node).__name__}", _line(node))

    def _mapping(self, node: MappingNode, path: FieldPath, depth: int, alias_line: int) -> dict[Any, Any]:
        self._check_tag(node, "map")
        result: dict[str, Any] = {}
        seen: dict[str, int] = {}
        merges = []
        for key_node, value_node in node.value:
            target = key_node.target if isinstance(key_node, _Alias) else key_node
            if isinstance(target, ScalarNode) and target.tag == _MERGE:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            line = _line(key_node)
            if key in seen:
                raise YamlError(f"duplicate key {_short(key)} (first on line {seen[key]})", line)
            seen[key] = line
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key), depth + 1, alias_line)
        for merge in merges:
            for key, value in self._merge_sources(merge, path, depth, alias_line):
                result.setdefault(key, value)
        self.lines.update({(*path, key): line for key, line in seen.items()})
        return result

    def _merge_sources(
        self, value: Node | _Alias, path: FieldPath, depth: int, alias_line: int
    ) -> list[tuple[str, Any]]:
        """``<<: *base`` or ``<<: [*a, *b]``: earlier sources win, explicit keys beat all of them."""
        target = value.target if isinstance(value, _Alias) else value
        sources = target.value if isinstance(target, SequenceNode) else [value]
        found: list[tuple[str, Any]] = []
        copying = alias_line or (value.line if isinstance(value, _Alias) else 0)
        for source in sources:
            built = self.build(source, path, depth, copying)
            if not isinstance(built, dict):
                raise YamlError("a merge key (<<) takes a mapping or a list of mappings", _line(source))
            found.extend(built.items())
        return found

    def _key(self, node: Node | _Alias) -> str:
        """Keys as strings, the way Kubernetes turns YAML into JSON (``1:`` is the key ``"1"``)."""
        target = node.target if isinstance(node, _Alias) else node
        if not isinstance(target, ScalarNode):
            raise YamlError("a mapping key must be a scalar, not a list or mapping", _line(node))
        key = self._scalar(target)
        return key if isinstance(key, str) else str(target.value)

    def _scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        if not tag.startswith(_CORE):
            raise YamlError(f"unsupported tag {tag}", _line(node))
        kind = tag.removeprefix(_CORE)
        if kind in ("str", "value"):
            return node.value
        if kind == "timestamp":
            return node.value
        if kind == "null":
            return None
        if kind == "bool":
            return self._loader.construct_yaml_bool(node)
        if kind == "int":
            try:
                return self._loader.construct_yaml_int(node)
            except ValueError as exc:  # e.g. more digits than Python converts
                raise YamlError(f"integer {_short(node.value)}: {exc}", _line(node)) from None
        if kind == "float":
            number = self._loader.construct_yaml_float(node)
            if not math.isfinite(number):
                raise YamlError(f"{node.value} is not a number JSON can carry", _line(node))
            return number
        raise YamlError(f"unsupported tag !!{kind}", _line(node))

    @staticmethod
    def _check_tag(node: Node, kind: str) -> None:
        if node.tag != f"{_CORE}{kind}":
            raise YamlError(f"unsupported tag {node.tag}", _line(node))


def _line(node: Node | _Alias) -> int:
    return node.line if isinstance(node, _Alias) else node.start_mark.line + 1


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_size(text: str) -> None:
    if len(text) > MAX_INPUT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        raise YamlError(f"input is larger than {MAX_INPUT_BYTES} bytes")


def load_documents(text: str) -> Iterator[YamlDocument]:
    """Every document of ``text`` in order; raises ``YamlError`` where the input stops being acceptable
    (documents before that point have been yielded)."""
    check_size(text)
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_node():
            index += 1
            node = loader.get_node()
            if node is None:  # check_node said there is one
                break
            builder = _Builder(loader)
            body = builder.build(node, (), 1, 0)
            yield YamlDocument(index, _line(node), body, builder.lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlError(problem or "invalid YAML", mark.line + 1 if mark else 0) from None
    except yaml.YAMLError as exc:
        raise YamlError(str(exc).replace("\n", " ")) from None
    except RecursionError:  # a last guard: the bounds above keep recursion far below the limit
        raise YamlError(f"nesting too deep (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def load_one(text: str) -> Any:
    """The single document of ``text`` (None when empty); a second document is an error."""
    documents = list(load_documents(text))
    if len(documents) > 1:
        raise YamlError("expected one YAML document, found more", documents[1].line)
    return documents[0].body if documents else None


def read_source(path: str) -> str:
    """The text of file ``path`` (``-``: stdin), refusing more than ``MAX_INPUT_BYTES``.

    Raises OSError and UnicodeDecodeError as reading does, YamlError when the input is too large.
    """
    if path == STDIN:
        return _read_limited(getattr(sys.stdin, "buffer", sys.stdin), "stdin")
    with Path(path).open("rb") as file:
        return _read_limited(file, path)


def _read_limited(stream: BinaryIO | TextIO, name: str) -> str:
    raw = stream.read(MAX_INPUT_BYTES + 1)
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > MAX_INPUT_BYTES:
        raise YamlError(f"{name} is larger than {MAX_INPUT_BYTES} bytes")
    return data.decode("utf-8")
