"""Changing the user's config file from a front end, keeping what the user wrote.

Each function reads the file, changes one thing with tomlkit (every comment, blank line
and key order elsewhere stays as it was), checks the new text with the config reader
itself (:func:`gpuwarden.engine.lifecycle.config.parse_config`) and only then replaces
the file atomically. An edit that would give the edited entry (or setting) a problem the
file did not have before is refused with :class:`ConfigEditError` and nothing is
written; so is any edit of a file that is not valid TOML, which is never overwritten. A
running gpuwarden picks the change up through its live reload (``config_watch``).
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Comment, Item, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from gpuwarden.engine.atomic import atomic_write_text
from gpuwarden.engine.lifecycle.config import ConfigProblem, parse_config

__all__ = ["ConfigEditError", "add_model", "remove_model", "set_setting", "update_model"]

MODELS = "models"
Trivia = Comment | Whitespace  # the lines of a table that hold no key
# What the reader says a bad setting falls back to: not so for an edit that is refused.
_FALLBACK = re.compile(r"; (using the defaults?|ignored|no models loaded)\b.*$", re.DOTALL)


class ConfigEditError(ValueError):
    """An edit that was refused; the file was not touched. ``field``: the key at fault,
    when there is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def add_model(path: Path, fields: Mapping[str, object]) -> None:
    """Append a ``[[models]]`` entry with ``fields`` (None values left out), creating the
    file when it is missing. Refuses a name already used and a value the reader refuses."""
    name = _name(fields.get("name"))

    def change(doc: TOMLDocument) -> None:
        if _find(_entries(doc), name) is not None:
            raise ConfigEditError(f"a model named {name!r} is already in {path}", "name")
        entry = tomlkit.table()
        for key, value in fields.items():
            if value is not None:
                entry.add(key, _toml(key, value))
        _append_entry(doc, entry)

    _edit(path, change, _about_models({name}))


def update_model(path: Path, name: str, fields: Mapping[str, object]) -> None:
    """Change only ``fields`` of the entry named ``name`` (a value of None removes that
    key); every other key, comment and blank line stays. Refuses an unknown name, a new
    name already used, and a value the reader refuses."""
    new_name = _name(fields["name"]) if "name" in fields else name

    def change(doc: TOMLDocument) -> None:
        entries = _entries(doc)
        entry = _find(entries, name)
        if entry is None:
            raise ConfigEditError(f"there is no model named {name!r} in {path}", "name")
        if new_name != name and _find(entries, new_name) is not None:
            raise ConfigEditError(f"a model named {new_name!r} is already in {path}", "name")
        for key, value in fields.items():
            _put(entry, key, value)

    _edit(path, change, _about_models({name, new_name}))


def remove_model(path: Path, name: str) -> None:
    """Remove the entry named ``name`` (its own comments go with it; a comment after it,
    set apart by a blank line, stays). Refuses an unknown name."""

    def change(doc: TOMLDocument) -> None:
        entries = _entries(doc)
        entry = _find(entries, name)
        if entry is None:
            raise ConfigEditError(f"there is no model named {name!r} in {path}", "name")
        _remove_entry(doc, entries, entry)

    _edit(path, change, _about_models(set()))


def set_setting(path: Path, table: str, key: str, value: object) -> None:
    """Set ``key`` in ``[table]`` (a dotted name for a nested table; "" for the top level),
    creating the table when it is missing; None removes the key (back to its default).
    Refuses a key or value the reader refuses (an unknown key, out of range, a clear
    level not below its enter level)."""
    parts = [p for p in table.split(".") if p] if table else []
    if table and len(parts) != len(table.split(".")):
        raise ConfigEditError(f"not a table name: {table!r}")

    def change(doc: TOMLDocument) -> None:
        where: MutableMapping[str, Any] = doc
        for i, part in enumerate(parts):
            if part not in where:
                if value is None:
                    return
                where[part] = tomlkit.table(is_super_table=i < len(parts) - 1)
            inner = where[part]
            if not isinstance(inner, (Table, Container)):
                raise ConfigEditError(f"'{'.'.join(parts[:i + 1])}' is not a table in {path}")
            where = inner
        _put(where, key, value)

    _edit(path, change, lambda p: p.entry is None)


# -- reading, checking, writing --------------------------------------------------------------


def _edit(path: Path, change: Callable[[TOMLDocument], None],
          relevant: Callable[[ConfigProblem], bool]) -> None:
    old = _read(path)
    doc = _parse(path, old)
    change(doc)
    new = doc.as_string()
    if new == old:
        return  # nothing changed (a default removed that was never set)
    _check(path, old, new, relevant)
    atomic_write_text(path, new)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise ConfigEditError(f"{path} is not UTF-8 text; nothing was written") from None
    except OSError as exc:
        raise ConfigEditError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse(path: Path, text: str) -> TOMLDocument:
    """The file as tomlkit keeps it; a file that is not valid TOML is refused (both
    tomlkit and the reader's own tomllib must take it)."""
    try:
        tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, TOMLKitError) as exc:
        raise ConfigEditError(f"{path} is not valid TOML ({exc}); fix it in an editor "
                              "first: nothing was written") from exc
    if doc.as_string() != text:  # e.g. [[models]] entries split by other tables
        raise ConfigEditError(f"{path} is laid out in a way an automatic edit would "
                              "rearrange; make this change in an editor: nothing was written")
    return doc


def _check(path: Path, old: str, new: str, relevant: Callable[[ConfigProblem], bool]) -> None:
    """Refuse ``new`` when the reader finds a relevant problem that ``old`` did not have."""
    base = path.expanduser().absolute().parent
    before = Counter(_key(p) for p in parse_config(old, str(path), base)[1])
    for problem in parse_config(new, str(path), base)[1]:
        if before[_key(problem)] > 0:
            before[_key(problem)] -= 1
        elif relevant(problem):
            message = _FALLBACK.sub("", problem.message)
            if problem.entry is not None:
                message = f"model {problem.entry!r}: {message}"
            raise ConfigEditError(message, problem.field)


def _key(problem: ConfigProblem) -> tuple[str | None, str | None, str]:
    return problem.entry, problem.field, problem.message  # not the line: lines move


def _about_models(names: Collection[str]) -> Callable[[ConfigProblem], bool]:
    return lambda p: p.entry is None or p.entry in names


# -- values -----------------------------------------------------------------------------------


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigEditError("a model needs a name", "name")
    return value


def _toml(key: str, value: object) -> Item:
    """``value`` as a TOML item (a path as its text, a tuple as an array)."""
    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, (str, bool, int, float, list)):
        raise ConfigEditError(f"'{key}' cannot be written as {type(value).__name__}", key)
    return tomlkit.item(value)


def _put(where: MutableMapping[str, Any], key: str, value: object) -> None:
    """Set (None: remove) ``key``; a new key goes after the last one and the comment
    lines right under it, before a blank line and whatever follows it."""
    if value is None:
        if key in where:
            del where[key]
        return
    if key in where:
        where[key] = _toml(key, value)
        return
    if isinstance(where, TOMLDocument):
        _put_top(where, key, _toml(key, value))
        return
    container = where.value if isinstance(where, Table) else where
    assert isinstance(container, Container)
    tail = _take_tail(container)
    _end_line(container)
    container.add(key, _toml(key, value))
    for item in tail:
        container.add(item)


def _put_top(doc: TOMLDocument, key: str, item: Item) -> None:
    """A new top-level key: after the last one (and the comment lines right under it),
    before a blank line or the first table."""
    body = doc.body
    tables = [i for i, (_, v) in enumerate(body) if isinstance(v, (Table, AoT))]
    end = tables[0] if tables else len(body)
    last = max((i for i, (k, _) in enumerate(body[:end]) if k is not None), default=-1)
    at = next((i for i in range(last + 1, end) if _is_blank(body[i][1])), end)
    if at >= len(body):
        _end_line(doc)
        doc.add(key, item)
    else:
        doc._insert_at(at, key, item)  # tomlkit has no public insert


def _tail_start(container: Container) -> int:
    """Where the trailing lines that belong to what follows begin: the first blank line
    after the last key (and the comment lines right under it)."""
    body = container.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=-1)
    for i in range(last + 1, len(body)):
        item = body[i][1]
        if isinstance(item, Whitespace) and "\n" in item.as_string():
            return i
    return len(body)


def _end_line(container: Container) -> None:
    """A last line without its newline (the end of a file) gets one."""
    last = container.body[-1][1] if container.body else None
    if last is not None and not isinstance(last, Whitespace) \
            and not last.trivia.trail.endswith("\n"):
        last.trivia.trail += "\n"


def _take_tail(container: Container) -> list[Trivia]:
    """Take the trailing blank lines and comments off ``container`` (they hold no key, so
    no key's place moves)."""
    body = container.body
    start = _tail_start(container)
    tail = [item for _, item in body[start:] if isinstance(item, (Comment, Whitespace))]
    del body[start:]
    return tail


# -- the [[models]] entries -------------------------------------------------------------------


def _entries(doc: TOMLDocument) -> AoT:
    models = doc.get(MODELS)
    if models is None:
        return tomlkit.aot()
    if not isinstance(models, AoT):
        raise ConfigEditError(f"'{MODELS}' is not written as [[models]] tables; change it "
                              "in an editor", MODELS)
    return models


def _find(entries: AoT, name: str) -> Table | None:
    """The first entry named ``name`` (the one the reader loads)."""
    return next((e for e in entries if e.get("name") == name), None)


def _append_entry(doc: TOMLDocument, entry: Table) -> None:
    """After the last entry: its trailing blank line and comments (about what follows)
    move below the new one, so they stay in front of what they describe."""
    models = doc.get(MODELS)
    if not isinstance(models, AoT) or len(models) == 0:
        models = tomlkit.aot()
        models.append(entry)
        doc.append(MODELS, models)
        return
    last = models[-1]
    tail = _take_tail(last.value)
    _end_line(last.value)
    last.add(tomlkit.nl())
    models.append(entry)
    for item in tail:
        entry.add(item)


def _remove_entry(doc: TOMLDocument, entries: AoT, entry: Table) -> None:
    """Remove ``entry``; its trailing blank line and comments stay where it stood."""
    index = next(i for i, e in enumerate(entries) if e is entry)
    tail = _take_tail(entry.value)
    if index > 0:
        before = entries[index - 1].value
        if tail and before.body and _is_blank(before.body[-1][1]) and _is_blank(tail[0]):
            tail = tail[1:]  # one blank line between them is enough
        for item in tail:
            before.add(item)
    else:
        _put_before_next(doc, entries, tail[1:] if tail and _is_blank(tail[0]) else tail)
    del entries[index]
    if len(entries) == 0:
        del doc[MODELS]


def _put_before_next(doc: TOMLDocument, entries: AoT, tail: list[Trivia]) -> None:
    """Lines that stood before the second entry (else the table after the entries) go in
    front of its header; with nothing after them, at the end of the file."""
    following = entries[1] if len(entries) > 1 else _table_after(doc, MODELS)
    if following is None:
        for item in tail:
            doc.add(item)
        return
    following.trivia.indent = "".join(i.as_string() for i in tail) + following.trivia.indent


def _table_after(doc: TOMLDocument, key: str) -> Table | None:
    """The first table with a header of its own after ``key`` in the document."""
    keys = [k.key if k is not None else None for k, _ in doc.body]
    for k, item in doc.body[keys.index(key) + 1:]:
        if k is None:
            continue
        if isinstance(item, AoT) and len(item) > 0:
            return item[0]
        if isinstance(item, Table) and not item.is_super_table():
            return item
        return None
    return None


def _is_blank(item: Item) -> bool:
    return isinstance(item, Whitespace) and item.as_string().strip() == ""
