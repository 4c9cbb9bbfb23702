"""Reading gpuwarden's own small JSON files (hints, server records) safely: a missing file
is no problem, an unreadable or corrupt one is moved aside (never deleted) and the problem
is said in a sentence; the caller then starts empty."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuwarden.engine.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DocSpec:
    version: int
    key: str  # the top-level key that holds the entries
    kind: type  # dict or list
    consequence: str  # what starting empty means, for the user: "starting with no hints"

    @property
    def shape(self) -> str:
        inner = "{...}" if self.kind is dict else "[...]"
        return f'{{"version": {self.version}, "{self.key}": {inner}}}'


def read_doc(path: Path, spec: DocSpec, clock: Clock) -> tuple[Any, list[str]]:
    """(the entries under ``spec.key``, problems). None when there is nothing to load."""
    try:
        if path.exists() and not path.is_file():  # a FIFO would block the read forever
            return None, [f"{path.name} could not be read (not a regular file); "
                          f"{spec.consequence}"]
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        return None, [f"{path.name} could not be read ({exc.strerror or exc}); "
                      f"{spec.consequence}"]
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # bad JSON or not UTF-8
        return None, [set_aside(path, _short(exc), spec, clock)]
    except RecursionError:
        return None, [set_aside(path, "nested too deeply", spec, clock)]
    if not isinstance(doc, dict) or not isinstance(doc.get(spec.key), spec.kind):
        return None, [set_aside(path, f"not a {spec.shape} object", spec, clock)]
    if doc.get("version") != spec.version:
        return None, [set_aside(path, f"unknown format version {doc.get('version')!r}", spec,
                                clock)]
    return doc[spec.key], []


def set_aside(path: Path, why: str, spec: DocSpec, clock: Clock) -> str:
    """Move an unreadable file out of the way (never delete it); say where it went."""
    stamp = int(clock.time())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        path.replace(target)
    except OSError as exc:
        log.warning("cannot move %s aside", path, exc_info=True)
        return (f"{path.name} was unreadable ({why}) and could not be moved aside "
                f"({exc.strerror or exc}); {spec.consequence}")
    log.warning("%s was unreadable (%s); moved to %s", path, why, target)
    return f"{path.name} was unreadable ({why}) and was moved to {target.name}; " \
        f"{spec.consequence}"


def _short(exc: ValueError) -> str:
    msg = str(exc)
    return msg.rsplit(" (char ", 1)[0] if isinstance(exc, json.JSONDecodeError) else msg
