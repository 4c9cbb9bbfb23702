"""Append-only event journal: one JSON object per line, size-capped with rotation.

``events.jsonl`` is the newest file; ``events.jsonl.1`` the one before it, up to
``events.jsonl.<backups>``, the oldest kept. A write that would push the live file over
``max_bytes`` first shifts every file one number up (dropping the oldest) and starts a
fresh one.

Errors: the journal never raises into the engine. :meth:`Journal.write` returns ``True``
when the line reached the file and ``False`` when it did not. While the disk refuses
writes (full, read-only, gone), ``last_error`` holds a sentence a person can read, and
the traceback is logged once per outage, not once per event; the first successful write
afterwards clears it. The manager can emit an event when ``write`` returns ``False`` and
``last_error`` was ``None`` before the call.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import IO, Any

from gpuwarden.engine import paths
from gpuwarden.engine.events import Event

log = logging.getLogger(__name__)

__all__ = ["Journal", "default_journal_path", "read_journal"]


def default_journal_path() -> Path:
    return paths.data_dir() / "events.jsonl"


def _to_json(o: Any) -> Any:
    """``default=`` hook: turn what json cannot encode into something it can."""
    if isinstance(o, PurePath):
        return str(o)
    if isinstance(o, enum.Enum):
        return o.value
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, set | frozenset):
        return sorted(o, key=repr)
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.decode("utf-8", errors="replace")
    return str(o)


class Journal:
    """Writes events to ``path`` as JSON lines. Thread-safe; opens the file lazily."""

    def __init__(self, path: Path, *, max_bytes: int = 5 * 1024 * 1024, backups: int = 3) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if backups < 0:
            raise ValueError("backups cannot be negative")
        self._path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.last_error: str | None = None
        self._file: IO[bytes] | None = None
        self._size = 0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def write(self, event: Event) -> bool:
        """Append one event. ``True`` when written; ``False`` (never an exception) if not."""
        try:
            line = json.dumps(
                event.to_dict(), ensure_ascii=False, separators=(",", ":"), default=_to_json
            )
        except (TypeError, ValueError, RecursionError):
            log.exception("event %s cannot be written to the journal", event.TYPE)
            return False
        data = (line + "\n").encode("utf-8")
        with self._lock:
            try:
                f = self._open()
                if self._size > 0 and self._size + len(data) > self.max_bytes:
                    self._rotate()
                    f = self._open()
                f.write(data)
                f.flush()
                self._size += len(data)
            except OSError as exc:
                self._fail(exc)
                return False
            if self.last_error is not None:
                log.info("journal %s is writable again", self._path)
                self.last_error = None
            return True

    def close(self) -> None:
        """Close the file. A later :meth:`write` reopens it."""
        with self._lock:
            self._close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ------------------------------------------

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if _blocks_or_fails(self._path):  # opening a FIFO would block forever
                raise IsADirectoryError(0, f"{self._path} is not a regular file")
            f = open(self._path, "ab")  # noqa: SIM115 - kept open across writes
            try:
                self._size = os.fstat(f.fileno()).st_size
                if self._size > 0 and not _ends_with_newline(self._path):
                    # A crash left a torn last line: end it, so the next event stands alone.
                    f.write(b"\n")
                    self._size += 1
            except OSError:
                f.close()
                raise
            self._file = f
        return self._file

    def _close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                log.warning("closing journal %s failed", self._path, exc_info=True)

    def _rotate(self) -> None:
        self._close()
        if self.backups == 0:
            self._path.unlink(missing_ok=True)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = _numbered(self._path, n)
                if older.exists():
                    os.replace(older, _numbered(self._path, n + 1))
            os.replace(self._path, _numbered(self._path, 1))
        self._size = 0

    def _fail(self, exc: OSError) -> None:
        self._close()  # reopen next time: the handle may hold a half-written buffer
        if self.last_error is None:
            log.error("cannot write the event journal %s", self._path, exc_info=exc)
        self.last_error = (
            f"The event journal {self._path} cannot be written ({exc.strerror or exc}); "
            "events are not being recorded."
        )


def _blocks_or_fails(path: Path) -> bool:
    """A FIFO, socket or folder where the journal should be (devices such as /dev/null
    are fine)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISDIR(mode)


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _journal_files(path: Path) -> list[Path]:
    """Rotated files oldest first (highest number first), then the live file."""
    numbered: list[tuple[int, Path]] = []
    try:
        for p in path.parent.glob(f"{path.name}.*"):
            suffix = p.name[len(path.name) + 1 :]
            if suffix.isdigit():
                numbered.append((int(suffix), p))
    except OSError:
        log.warning("cannot list journal folder %s", path.parent, exc_info=True)
    return [p for _, p in sorted(numbered, reverse=True)] + [path]


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Yield every event dict, oldest first, across rotated files. Never raises.

    A line that is not a JSON object (a write torn by a crash, garbage) is skipped with
    a logged warning; a file that cannot be read is skipped the same way.
    """
    for file in _journal_files(Path(path)):
        try:
            with open(file, "rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    if not raw.strip():
                        continue
                    try:
                        obj = json.loads(raw)
                    except (ValueError, RecursionError) as exc:
                        log.warning("skipping unreadable line %s:%d (%s)", file, lineno, exc)
                        continue
                    if not isinstance(obj, dict):
                        log.warning("skipping %s:%d: not a JSON object", file, lineno)
                        continue
                    yield obj
        except FileNotFoundError:
            continue
        except OSError:
            log.warning("cannot read journal file %s", file, exc_info=True)
