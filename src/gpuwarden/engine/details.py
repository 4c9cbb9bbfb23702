"""What the panel shows about one model: its settings and where each came from, what
happened to it (loads, moves, unloads, crashes), and the end of its server log.

:func:`build_details` is pure but for :func:`read_log_tail`, which reads at most the last
16 KiB of the log: cheap enough for the engine's own thread, once a second.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gpuwarden.engine.events import (
    Event,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelRefused,
    ModelRestartExhausted,
    ModelRestartScheduled,
    ModelUnloaded,
    ModelWaiting,
    SwapEvicted,
    SwapRestored,
)
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.state import CrashRecord, ModelState
from gpuwarden.engine.supervisor import logfile
from gpuwarden.engine.tomlcheck import fmt_num

HISTORY_LIMIT = 50  # newest history entries and crashes kept in a ModelDetails
LOG_LINES = logfile.TAIL_LINES
LOG_TAIL_BYTES = logfile.TAIL_BYTES
FROM_WINDOW = "set in the window"
DEFAULT = "default"

_MODEL_EVENTS: tuple[type[Event], ...] = (
    ModelLoading, ModelReady, ModelOffloaded, ModelUnloaded, ModelCrashed,
    ModelRestartScheduled, ModelRestartExhausted, ModelRefused, ModelWaiting,
    SwapEvicted, SwapRestored,
)


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # as the config file writes it
    value: str  # as a person reads it
    source: str  # "config file line 12", "default" or "set in the window"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    ts: float  # wall clock
    type: str  # the event's type: model.ready, swap.evicted ...
    text: str  # what happened, in words

    @property
    def is_crash(self) -> bool:
        return self.type == ModelCrashed.TYPE


@dataclass(frozen=True, slots=True)
class CrashEntry:
    ts: float  # wall clock
    kind: str  # a CrashKind: oom_killed, gpu_oom, crash, hang ...
    exit_code: int | None
    signal: int | None

    def describe(self) -> str:
        """``crash, exit code 1`` / ``oom_killed, signal 9`` / ``hang``."""
        if self.signal is not None:
            return f"{self.kind}, signal {self.signal}"
        if self.exit_code is not None:
            return f"{self.kind}, exit code {self.exit_code}"
        return self.kind


@dataclass(frozen=True, slots=True)
class ModelDetails:
    name: str
    backend: str
    settings: tuple[Setting, ...]
    history: tuple[HistoryEntry, ...]  # newest first, at most HISTORY_LIMIT
    crashes: tuple[CrashEntry, ...]  # newest first, at most HISTORY_LIMIT
    log_path: Path | None  # None: its backend writes no log
    log_exists: bool  # the file is there (it may still be empty)
    log_tail: tuple[str, ...]  # the last LOG_LINES lines, oldest first
    log_note: str  # why there are no lines ("" when there are)


def build_details(state: ModelState, config: ModelConfig, events: Iterable[Event],
                  log_path: Path | None) -> ModelDetails:
    """The details of ``state``'s model. ``config``: its entry as the config file says
    it now (a running model may still run with its previous settings: those say so);
    ``events``: the kept events, oldest first; ``log_path``: where its server writes."""
    tail: tuple[str, ...] = ()
    if log_path is None:
        found, note = False, f"the {state.config.backend} backend writes no log"
    else:
        found, (tail, note) = log_path.is_file(), read_log_tail(log_path)
    return ModelDetails(
        name=state.name, backend=state.config.backend, settings=settings_of(state, config),
        history=history_of(state.name, events),
        crashes=tuple(_crash(c) for c in reversed(state.crashes))[:HISTORY_LIMIT],
        log_path=log_path, log_exists=found, log_tail=tail, log_note=note)


def settings_of(state: ModelState, config: ModelConfig) -> tuple[Setting, ...]:
    """Each setting a user cares about, its value and where that value came from."""
    written = dict(config.key_lines)
    out = []
    for key, show in _SHOWN.items():
        override = _override(state, key)
        if override is not None:
            out.append(Setting(key, override, FROM_WINDOW))
            continue
        source = DEFAULT
        if key in written:
            line = written[key]
            source = "config file" if line is None else f"config file line {line}"
        if state.live and show(state.config) != show(config):
            source += " (applies at the next load)"
        out.append(Setting(key, show(config), source))
    return tuple(out)


def _override(state: ModelState, key: str) -> str | None:
    """What the user set in the window for ``key``, if anything."""
    if key == "priority" and state.priority_override is not None:
        return str(state.priority_override)
    if key == "eviction" and state.eviction_override is not None:
        return state.eviction_override
    return None


def _optional(value: float | None, unset: str) -> str:
    return unset if value is None else fmt_num(value)


_SHOWN: dict[str, Callable[[ModelConfig], str]] = {
    "backend": lambda c: c.backend,
    "path": lambda c: "none" if c.path is None else str(c.path),
    "context_size": lambda c: str(c.context_size),
    "placement": lambda c: str(c.placement),
    "gpu": lambda c: "auto" if c.gpu_auto else str(c.gpu),
    "idle_timeout_s": lambda c: fmt_num(c.idle_timeout_s),
    "eviction": lambda c: c.eviction,
    "priority": lambda c: str(c.priority),
    "args": lambda c: shlex.join(c.args) if c.args else "none",
    "vram_mib": lambda c: _optional(c.vram_mib, "estimated"),
    "ram_mib": lambda c: _optional(c.ram_mib, "estimated"),
    "layers": lambda c: str(c.layers),
    "threads": lambda c: _optional(c.threads, "the backend's own"),
    "autostart": lambda c: "true" if c.autostart else "false",
}


def history_of(name: str, events: Iterable[Event]) -> tuple[HistoryEntry, ...]:
    """What happened to ``name`` (loads, moves, unloads, crashes, restarts, refusals,
    swaps either way), newest first, at most HISTORY_LIMIT."""
    mine = [e for e in events if isinstance(e, _MODEL_EVENTS) and _concerns(e, name)]
    return tuple(HistoryEntry(e.ts, e.type, e.describe())
                 for e in reversed(mine[-HISTORY_LIMIT:]))


def _concerns(event: Event, name: str) -> bool:
    if isinstance(event, SwapEvicted) and event.for_model == name:
        return True
    return event.model_name == name


def _crash(record: CrashRecord) -> CrashEntry:
    return CrashEntry(record.ts, record.kind, record.exit_code, record.signal)


def read_log_tail(path: Path, lines: int = LOG_LINES,
                  max_bytes: int = LOG_TAIL_BYTES) -> tuple[tuple[str, ...], str]:
    """The last ``lines`` lines of the log at ``path`` (from its last ``max_bytes``
    bytes; bytes that are not UTF-8 replaced), and a note when there are none. A FIFO
    or a device at that path is never read (it could block, or never end)."""
    try:
        tail = logfile.last_lines(logfile.read_end(path, 0, max_bytes), lines)
    except FileNotFoundError:
        return (), f"no log yet: {path} does not exist"
    except logfile.NotRegularFile as exc:
        return (), f"no log: {path}: {exc.reason}"
    except OSError as exc:
        return (), f"cannot read {path}: {exc.strerror or exc}"
    if not tail:
        return (), f"the log is empty: {path}"
    return tail, ""
