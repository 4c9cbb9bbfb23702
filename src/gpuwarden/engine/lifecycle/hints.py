"""Per-model hints that survive a restart: last use, use count, the user's overrides.

Stored in ``hints.json`` as ``{"version": 1, "models": {name: {...}}}``. Hints that have
not changed for :data:`STALE_AFTER_S` are dropped on load. A file whose content is not
valid is moved aside (never deleted) and reported in words; one bad entry is dropped and
reported while the others load. A file that is there but cannot be read (its rights, not
a regular file) or moved aside is left exactly as it is and never written this run, so
the user's overrides in it survive until it can be read again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gpuwarden.engine import paths
from gpuwarden.engine.atomic import atomic_write_json
from gpuwarden.engine.clock import Clock
from gpuwarden.engine.jsondoc import DocSpec, read_doc
from gpuwarden.engine.lifecycle.config import EVICTION_POLICIES, EvictionPolicy

log = logging.getLogger(__name__)

__all__ = [
    "EVICTION_POLICIES",
    "FORMAT_VERSION",
    "STALE_AFTER_S",
    "HintStore",
    "ModelHints",
    "default_hints_path",
]

FORMAT_VERSION = 1
STALE_AFTER_S = 24 * 3600



@dataclass(frozen=True)
class ModelHints:
    last_access_ts: float | None = None  # unix seconds
    access_count: int = 0
    eviction_override: EvictionPolicy | None = None  # set by the user (checked on load)
    priority_override: int | None = None
    updated_ts: float = 0.0  # unix seconds of the last change

    def __post_init__(self) -> None:
        problem = _check(self)
        if problem:
            raise ValueError(problem)


def default_hints_path() -> Path:
    return paths.data_dir() / "hints.json"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_time(v: object) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return math.isfinite(v)


def _check(h: ModelHints) -> str:
    """Why these hints are invalid, or ``""``."""
    if h.last_access_ts is not None and not _is_time(h.last_access_ts):
        return f"last_access_ts must be unix seconds, not {h.last_access_ts!r}"
    if not _is_int(h.access_count) or h.access_count < 0:
        return f"access_count must be a whole number >= 0, not {h.access_count!r}"
    if h.eviction_override is not None and h.eviction_override not in EVICTION_POLICIES:
        allowed = ", ".join(EVICTION_POLICIES)
        return f"eviction_override must be one of {allowed}, not {h.eviction_override!r}"
    if h.priority_override is not None and not _is_int(h.priority_override):
        return f"priority_override must be a whole number, not {h.priority_override!r}"
    if not _is_time(h.updated_ts):
        return f"updated_ts must be unix seconds, not {h.updated_ts!r}"
    return ""


_FIELDS = tuple(f.name for f in dataclasses.fields(ModelHints))


_SPEC = DocSpec(FORMAT_VERSION, "models", dict, "starting with no hints")
_LEFT_ALONE = ("{name} is left as it is and nothing is saved to it this run, so the "
               "eviction policies and priorities in it are kept: make it readable and "
               "restart gpuwarden to use them")


class HintStore:
    """The hints of every model, in memory, saved atomically when something changed."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = Path(path)
        self._clock = clock
        self._hints: dict[str, ModelHints] = {}
        self._dirty = False
        self._unread = False  # the file is there but was not read: never overwrite it

    @property
    def dirty(self) -> bool:
        return self._dirty

    def load(self) -> list[str]:
        """Replace the hints in memory with the file's. Returns problems; never raises."""
        self._hints = {}
        self._dirty = False
        entries, problems = read_doc(self.path, _SPEC, self._clock)
        self._unread = entries is None and bool(problems) and os.path.lexists(self.path)
        if self._unread:
            problems = [f"{p}; {_LEFT_ALONE.format(name=self.path.name)}" for p in problems]
        if entries is None:
            return problems
        cutoff = self._clock.time() - STALE_AFTER_S
        for name, entry in entries.items():
            hints, why = _parse_entry(entry)
            if hints is None:
                problems.append(f"hints for model {name!r} were invalid ({why}) and were dropped")
                self._dirty = True
            elif hints.updated_ts < cutoff:
                # Usage data goes stale; a choice the user made (pin, priority) does not.
                kept = _overrides_only(hints)
                log.info("dropping stale usage hints for %s (unchanged for over 24 h)", name)
                self._dirty = True
                if kept is not None:
                    self._hints[name] = kept
            else:
                self._hints[name] = hints
        return problems

    def get(self, name: str) -> ModelHints:
        return self._hints.get(name, ModelHints())

    def update(self, name: str, **changes: Any) -> ModelHints:
        """Change some fields of a model's hints; stamps ``updated_ts`` with the clock.

        Raises ``TypeError`` for an unknown field and ``ValueError`` for a bad value.
        """
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown hint field(s): {', '.join(sorted(unknown))}")
        changes["updated_ts"] = self._clock.time()
        hints = dataclasses.replace(self.get(name), **changes)
        self._hints[name] = hints
        self._dirty = True
        return hints

    def all(self) -> Mapping[str, ModelHints]:
        """A read-only snapshot of every model's hints."""
        return MappingProxyType(dict(self._hints))

    def save(self) -> None:
        """Write the file atomically if anything changed (never over a file that could not
        be read). ``OSError`` propagates (the store stays dirty, so a later save tries
        again)."""
        if not self._dirty or self._unread:
            return
        doc = {
            "version": FORMAT_VERSION,
            "models": {n: dataclasses.asdict(h) for n, h in sorted(self._hints.items())},
        }
        atomic_write_json(self.path, doc)
        self._dirty = False


def _overrides_only(h: ModelHints) -> ModelHints | None:
    if h.eviction_override is None and h.priority_override is None:
        return None
    return ModelHints(eviction_override=h.eviction_override,
                      priority_override=h.priority_override, updated_ts=h.updated_ts)


def _parse_entry(entry: object) -> tuple[ModelHints | None, str]:
    if not isinstance(entry, dict):
        return None, f"expected an object, got {type(entry).__name__}"
    known = {k: v for k, v in entry.items() if k in _FIELDS}  # unknown keys: newer versions
    try:
        return ModelHints(**known), ""
    except (TypeError, ValueError) as exc:
        return None, str(exc)
