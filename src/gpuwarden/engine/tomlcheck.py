"""Checking hand-written TOML files, with problems a person can find: ``file:line: what``.

Shared by the scenario parser and the config loader. :class:`TomlDoc` parses a file and
finds the line of a ``[table]`` / ``[[array]]`` header or of a ``key = ...`` inside one
(tomllib keeps no positions); :class:`FieldSpec` says what one key accepts. The checks
raise :class:`TomlProblem` (or the subclass the caller chose), except
:meth:`TomlDoc.checked`, which collects every problem of a table for callers that report
them all and carry on.
"""

from __future__ import annotations

import bisect
import datetime
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["number", "integer", "string", "choice", "choice_or_integer", "boolean", "strings",
               "string_table"]
_PLAIN: Mapping[str, str] = {
    "string": "a non-empty string",
    "boolean": "true or false",
    "strings": "an array of strings",
    "string_table": "a table of strings ({KEY = \"value\"})",
}


class TomlProblem(ValueError):
    """One problem in a TOML file. ``str()`` is one line: ``file:line: what``."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = path, line, field, message
        super().__init__(f"{location(path, line)}: {message}")


def location(path: str, line: int | None) -> str:
    """``file:line``, or just ``file`` when the line is not known."""
    return f"{printable(path)}:{line}" if line is not None else printable(path)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one key accepts. Build with :func:`number`, :func:`integer`, :func:`text`,
    :func:`choice`, :func:`choice_or_integer`, :func:`boolean` or :func:`strings`."""

    kind: Kind
    required: bool = True
    default: object = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: strictly greater than ``low``
    choices: tuple[str, ...] = ()

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not acceptable ("must be ..."), or None when it is."""
        return None if self._accepts(value) else f"must be {self.expects()}"

    def _accepts(self, value: object) -> bool:
        if self.kind == "string":
            return isinstance(value, str) and value.strip() != ""
        if self.kind == "boolean":
            return isinstance(value, bool)
        if self.kind == "strings":
            return isinstance(value, list) and all(isinstance(v, str) for v in value)
        if self.kind == "string_table":
            return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        if self.kind in ("choice", "choice_or_integer") and isinstance(value, str):
            return value in self.choices
        if self.kind == "choice":
            return False
        return is_number(value, integer=self.kind != "number") and self._in_range(value)

    def _in_range(self, value: object) -> bool:
        v = float(value)  # type: ignore[arg-type]  # checked by is_number
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or v <= self.high

    def expects(self) -> str:
        if self.kind in _PLAIN:
            return _PLAIN[self.kind]
        if self.kind == "choice":
            return "one of: " + ", ".join(self.choices)
        numeric = self._numeric("a number" if self.kind == "number" else "an integer")
        if self.kind == "choice_or_integer":
            return "one of: " + ", ".join(self.choices) + f", or {numeric}"
        return numeric

    def _numeric(self, noun: str) -> str:
        if self.low == 0 and self.low_open and self.high is None:
            return f"a positive {noun.split()[-1]}"
        if self.low is not None and self.high is not None:
            return f"{noun} from {fmt_num(self.low)} to {fmt_num(self.high)}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {fmt_num(self.low)}"
        return noun if self.high is None else f"{noun} <= {fmt_num(self.high)}"

    def normalize(self, value: object) -> Any:
        """An accepted value as Python code wants it: numbers as float, arrays as tuples."""
        if self.kind == "number":
            return float(value)  # type: ignore[arg-type]  # accepted, so a number
        if self.kind == "strings":
            return tuple(value)  # type: ignore[arg-type]  # accepted, so a list
        if self.kind == "string_table":  # (key, value) pairs: hashable, in the file's order
            return tuple(value.items())  # type: ignore[attr-defined]  # accepted: a dict
        return value


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    positive: bool = False,
    default: float | None = None,
) -> FieldSpec:
    if positive:
        low = 0.0
    return FieldSpec("number", default is None, default, low, high, positive)


def integer(
    low: int | None = None, high: int | None = None, *, default: int | None = None
) -> FieldSpec:
    return FieldSpec("integer", default is None, default, low, high)


def text(*, default: str | None = None) -> FieldSpec:
    return FieldSpec("string", default is None, default)


def choice(options: Iterable[str], *, default: str | None = None) -> FieldSpec:
    return FieldSpec("choice", default is None, default, choices=tuple(options))


def choice_or_integer(options: Iterable[str], low: int | None = None,
                      high: int | None = None) -> FieldSpec:
    """One of ``options``, or an integer from ``low`` to ``high``."""
    return FieldSpec("choice_or_integer", low=low, high=high, choices=tuple(options))


def boolean(*, default: bool | None = None) -> FieldSpec:
    return FieldSpec("boolean", default is None, default)


def strings() -> FieldSpec:
    return FieldSpec("strings")


def string_table() -> FieldSpec:
    """A table whose values are all strings (an environment)."""
    return FieldSpec("string_table")


@dataclass(frozen=True, slots=True)
class Table:
    """One TOML table being checked: its values, header line and name in messages
    (``where``: "step 2 (load)"; empty when the caller names it some other way)."""

    values: Mapping[str, object]
    line: int | None
    where: str


def read_text(path: str | Path, error: type[TomlProblem] = TomlProblem) -> str:
    """The file's text; ``error`` ("file: cannot read: reason") when it cannot be read."""
    try:
        if Path(path).exists() and not Path(path).is_file():
            raise IsADirectoryError(0, "not a regular file")  # a FIFO would block forever
        return Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")  # BOM
    except UnicodeDecodeError as exc:  # the line, and the byte, of the first bad one
        line = exc.object[:exc.start].count(b"\n") + 1
        bad = f"byte 0x{exc.object[exc.start]:02x}"
        raise error(str(path), line, None, f"cannot read: not UTF-8 text ({bad})") from exc
    except OSError as exc:
        raise error(str(path), None, None, f"cannot read: {exc.strerror or exc}") from exc


class TomlDoc:
    """A TOML text with the line of each table header, for messages that point home."""

    def __init__(self, content: str, source: str, error: type[TomlProblem] = TomlProblem) -> None:
        self.content, self.source, self.error = content, source, error
        self.lines = _lines(content)
        self.headers, self._statement, self._deepest = _scan(self.lines)
        self._by_name: dict[str, list[int]] | None = None
        self._starts: list[int] = []

    def fail(self, line: int | None, field: str | None, message: str) -> TomlProblem:
        return self.error(self.source, line, field, message)

    def load(self) -> dict[str, Any]:
        """The parsed document; a syntax error names its line (and column, in the text),
        and so does a value nested too deeply for the parser (it recurses, and a few
        hundred levels exhaust Python's stack)."""
        try:
            return tomllib.loads(self.content)
        except tomllib.TOMLDecodeError as exc:
            found = re.search(r"at line (\d+)", str(exc))
            raise self.fail(int(found[1]) if found else None, None, f"invalid TOML: {exc}") from exc
        except RecursionError:
            line, depth = self._deepest
            raise self.fail(line or None, None, "nested too deeply to read (arrays or "
                            f"inline tables {depth} levels deep)") from None

    def header(self, name: str, nth: int = 0) -> int | None:
        """The line of the ``nth`` (from 0) header ``[name]`` or ``[[name]]``."""
        lines = self._header_lines().get(name, [])
        return lines[nth] if nth < len(lines) else None

    def _header_lines(self) -> dict[str, list[int]]:
        """Header name -> its lines, built once (a config may hold thousands of models)."""
        if self._by_name is None:
            self._by_name = {}
            for n, header in self.headers:
                self._by_name.setdefault(header, []).append(n)
            self._starts = sorted(n for n, _ in self.headers)
        return self._by_name

    def key_line(self, header: int | None, key: str) -> int | None:
        """The line of ``key = ...`` in the table whose header is on line ``header``
        (before the first header when None); the header line when not found (for a
        top-level key, the line of a ``[key]`` header)."""
        first = header or 0
        self._header_lines()
        nxt = bisect.bisect_right(self._starts, first)
        last = self._starts[nxt] - 1 if nxt < len(self._starts) else len(self.lines)
        k = re.escape(key)
        pattern = re.compile(rf"""^\s*(?:{k}|"{k}"|'{k}')\s*=""")
        for n in range(first + 1, last + 1):
            if self._statement[n - 1] and pattern.match(self.lines[n - 1]):
                return n
        return header if header is not None else self.header(key)

    def table(self, raw: object, where: str, line: int | None) -> Table:
        if not isinstance(raw, dict):
            raise self.fail(line, None, f"{where} must be a table, got {show(raw)}")
        return Table(raw, line, where)

    def array(self, raw: object, name: str) -> list[object]:
        if not isinstance(raw, list):
            msg = f"{name!r} must be an array of tables ([[{name}]]), got {show(raw)}"
            raise self.fail(self.key_line(None, name.rsplit(".")[-1]), name, msg)
        return raw

    def value(self, table: Table, key: str, spec: FieldSpec) -> object:
        """The value of ``key``, its default when missing and optional."""
        if key not in table.values:
            if spec.required:
                raise self.missing(table, key)
            return spec.default
        problem = spec.problem(table.values[key])
        if problem is not None:
            raise self.invalid(table, key, problem)
        return table.values[key]

    def missing(self, table: Table, key: str) -> TomlProblem:
        """``where: missing required key 'key'``, on the table's header line."""
        return self.fail(table.line, key, _say(table.where, f"missing required key {key!r}"))

    def invalid(self, table: Table, key: str, problem: str) -> TomlProblem:
        """``where: 'key' <problem>, got <value>``, on the key's line."""
        msg = _say(table.where, f"{key!r} {problem}, got {show(table.values[key])}")
        return self.fail(self.key_line(table.line, key), key, msg)

    def unknown_key(self, table: Table, key: str, allowed: Iterable[str]) -> TomlProblem:
        listed = ", ".join(sorted(allowed))
        msg = _say(table.where, f"unknown key {key!r}; allowed keys: {listed}")
        return self.fail(self.key_line(table.line, key), key, msg)

    def unknown_keys(self, table: Table, allowed: Iterable[str]) -> list[TomlProblem]:
        known = tuple(allowed)
        return [self.unknown_key(table, key, known) for key in table.values if key not in known]

    def check_keys(self, table: Table, allowed: Iterable[str]) -> None:
        for problem in self.unknown_keys(table, allowed):
            raise problem

    def check_order(self, table: Table, keys: tuple[str, str], *, strict: bool = True) -> None:
        """``keys[0]`` must be below ``keys[1]`` (or at most, when not ``strict``) when both
        are numbers. The problem is on the line of ``keys[0]``, or of ``keys[1]`` when only
        that one is in the text."""
        low, high = (table.values.get(k) for k in keys)
        if not (isinstance(low, int | float) and isinstance(high, int | float)):
            return
        if low > high or (strict and low == high):
            lines = [self.key_line(table.line, k) for k in keys]
            line = next((n for n in lines if n != table.line), table.line)
            relation = "below" if strict else "at most"
            msg = (f"{keys[0]!r} must be {relation} {keys[1]!r} ({fmt_num(high)}), "
                   f"got {fmt_num(low)}")
            raise self.fail(line, keys[0], _say(table.where, msg))

    def checked(
        self, table: Table, specs: Mapping[str, FieldSpec], required: Iterable[str] = ()
    ) -> tuple[dict[str, object], list[TomlProblem]]:
        """Every key of ``table`` checked against ``specs``: the acceptable values, and the
        problems in file order (missing ``required`` keys first, on the header line)."""
        good: dict[str, object] = {}
        problems = [self.missing(table, key) for key in required if key not in table.values]
        for key, value in table.values.items():
            spec = specs.get(key)
            problem = None if spec is None else spec.problem(value)
            if spec is None:
                problems.append(self.unknown_key(table, key, specs))
            elif problem is not None:
                problems.append(self.invalid(table, key, problem))
            else:
                good[key] = value
        return good, problems


_HEADER = re.compile(r"""^\s*\[(\[)?\s*([A-Za-z0-9_."' -]+?)\s*\](?(1)\])\s*(?:#.*)?$""")


# What matters on a line outside a string: a string (multi-line openers first; a one-line
# string runs to its closing quote or the end of the line), a comment, a bracket.
_TOKEN = re.compile(r""""{3}|'{3}|"(?:[^"\\]++|\\.?)*+"?|'[^']*+'?|[#\[\]{}]""")
# The rest of a multi-line string, to its end (a closer may take up to two more quotes).
_CLOSER: Mapping[str, re.Pattern[str]] = {
    '"""': re.compile(r"""(?:[^"\\]++|\\.?|"(?!""))*+"{3,5}"""),
    "'''": re.compile(r"""(?:[^']++|'(?!''))*+'{3,5}"""),
}


def _lines(content: str) -> list[str]:
    """The lines as TOML counts them: only LF (or CRLF) ends one, not the other breaks
    ``str.splitlines`` knows (a U+2028 in a comment must not shift the numbers)."""
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _scan(lines: list[str]) -> tuple[list[tuple[int, str]], list[bool], tuple[int, int]]:
    """``(line, name)`` of every ``[table]`` and ``[[array]]`` header (1-based lines),
    for each line whether a statement starts on it (the lines inside a multi-line string
    or a multi-line array are neither headers nor keys), and ``(line, depth)`` of the
    deepest nesting of arrays and inline tables. One pass over the text."""
    found: list[tuple[int, str]] = []
    statement: list[bool] = []
    closer: re.Pattern[str] | None = None  # inside a multi-line string: what ends it
    depth = 0  # [ and { of a value still open
    deepest = (0, 0)
    for n, line in enumerate(lines, start=1):
        starts = closer is None and depth == 0
        statement.append(starts)
        if starts and (match := _HEADER.match(line)):
            name = re.sub(r"""\s*\.\s*""", ".", match[2]).replace('"', "").replace("'", "")
            found.append((n, name))
            continue
        pos = 0
        if closer is not None:
            end = closer.match(line)
            if end is None:
                continue
            closer, pos = None, end.end()
        while (token := _TOKEN.search(line, pos)) is not None:
            pos, kind = token.end(), token[0]
            if kind == "#":
                break
            if kind in _CLOSER:
                end = _CLOSER[kind].match(line, pos)
                if end is None:
                    closer = _CLOSER[kind]
                    break
                pos = end.end()
            elif kind in ("[", "{"):
                depth += 1
                if depth > deepest[1]:
                    deepest = (n, depth)
            elif kind in ("]", "}"):
                depth = max(depth - 1, 0)
    return found, statement, deepest


def _say(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def is_number(value: object, *, integer: bool) -> bool:
    """A TOML integer (``integer``) or a finite number; never a boolean."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer:
        return isinstance(value, int)
    return math.isfinite(value)


def fmt_num(value: float) -> str:
    return f"{value:g}"


def show(value: object) -> str:
    """A value as a message quotes it: TOML's ``true``, 'text', 3, "a table", a date as
    TOML writes it (1979-05-27T07:32:00Z); control characters escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime.date | datetime.time):
        return printable(value.isoformat().replace("+00:00", "Z"))
    return printable(repr(value))


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on or hide (a NUL, an escape, a
    line break, a bidi override) written as its Python escape (``\\x00``, ``\\n``):
    for any value a message echoes."""
    return text if text.isprintable() else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in text)
