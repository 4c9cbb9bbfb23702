"""Append-only event journal: one JSON object per line, size-capped with rotation.

``events.jsonl`` is the newest file; ``events.jsonl.1`` the one before it, up to
``events.jsonl.<backups>``, the oldest kept. A write that would push the live file over
``max_bytes`` first shifts every file one number up (dropping the oldest) and starts a
fresh one.

Errors: the journal never raises into the engine. :meth:`Journal.write` returns ``True``
when the line reached the file and ``False`` when it did not. An outage (disk full,
read-only, the path a folder or a FIFO) is logged in one line when it begins; while it
lasts ``last_error`` says why, and the events that could not be written are counted. The
first write that works again is preceded, in the same write, by a ``journal.gap`` line
(``missed``, ``first_seq``, ``last_seq``, ``reason``; no ``seq`` of its own) and
``last_gap`` holds the same figures, so a gap is never silent. The file is opened
non-blocking and only a regular file or a device is written: a FIFO never blocks.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any

from gpuwarden.engine import paths
from gpuwarden.engine.events import Event

log = logging.getLogger(__name__)

__all__ = ["Journal", "JournalGap", "default_journal_path", "read_journal"]


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


@dataclasses.dataclass(frozen=True)
class JournalGap:
    """The events one outage kept out of the journal."""

    missed: int
    first_seq: int
    last_seq: int
    reason: str

    def describe(self) -> str:
        seqs = f"seq {self.first_seq}" if self.first_seq == self.last_seq \
            else f"seq {self.first_seq}-{self.last_seq}"
        return (f"{self.missed} event{'s' if self.missed != 1 else ''} ({seqs}) could not "
                f"be recorded while it failed ({self.reason}); the journal marks the gap")

    def line(self, ts: float) -> bytes:
        record = {"ts": ts, "type": "journal.gap", "missed": self.missed,
                  "first_seq": self.first_seq, "last_seq": self.last_seq,
                  "reason": self.reason}
        return _encode(record)


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
        self.last_error: str | None = None  # why it cannot be written, during an outage
        self.last_gap: JournalGap | None = None  # what the last outage that ended missed
        self._missing: JournalGap | None = None  # what the outage under way misses
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def write(self, event: Event) -> bool:
        """Append one event. ``True`` when written; ``False`` (never an exception) if not."""
        try:
            data = _encode(event.to_dict())
        except (TypeError, ValueError, RecursionError):
            log.exception("event %s cannot be written to the journal", event.TYPE)
            return False
        with self._lock:
            gap = self._missing
            if gap is not None:
                data = gap.line(event.ts) + data
            try:
                self._append(data)
            except OSError as exc:
                self._fail(exc, event.seq)
                return False
            if gap is not None:
                log.info("journal %s is writable again; %s", self._path, gap.describe())
                self.last_gap, self._missing, self.last_error = gap, None, None
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

    def _append(self, data: bytes) -> None:
        fd = self._open()
        if self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
            fd = self._open()
        _write_all(fd, data)
        self._size += len(data)

    def _open(self) -> int:
        if self._fd is None:
            _make_folder(self._path.parent)
            _refuse_odd_file(self._path)
            # O_NONBLOCK: a FIFO put there after the check fails at once instead of waiting
            # for a reader; unbuffered, so a failed write leaves nothing to flush at close.
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o666)
            try:
                info = os.fstat(fd)
                _refuse_odd_mode(info.st_mode)
                self._size = info.st_size
                if stat.S_ISREG(info.st_mode) and self._size > 0 \
                        and not _ends_with_newline(self._path):
                    # A crash left a torn last line: end it, so the next event stands alone.
                    _write_all(fd, b"\n")
                    self._size += 1
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("closing journal %s failed: %s", self._path, exc.strerror or exc)

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

    def _fail(self, exc: OSError, seq: int) -> None:
        self._close()  # reopen next time: the file may have been replaced meanwhile
        reason = exc.strerror or str(exc)
        missing = self._missing
        if missing is None:
            log.error("cannot write the event journal %s (%s); events are not recorded "
                      "until it can be written again", self._path, reason)
            missing = JournalGap(0, seq, seq, reason)
        self._missing = dataclasses.replace(missing, missed=missing.missed + 1,
                                            last_seq=seq, reason=reason)
        self.last_error = reason


def _encode(record: dict[str, Any]) -> bytes:
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_to_json)
    return (line + "\n").encode("utf-8")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"its folder {folder} cannot be made "
                                 f"({exc.strerror or exc})") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_ODD_KINDS = ((stat.S_ISDIR, "it is a folder, not a file"),
              (stat.S_ISFIFO, "it is a FIFO (named pipe), not a file"),
              (stat.S_ISSOCK, "it is a socket, not a file"))


def _refuse_odd_mode(mode: int) -> None:
    """A folder, FIFO or socket is refused (devices such as /dev/null are fine)."""
    for is_kind, words in _ODD_KINDS:
        if is_kind(mode):
            raise OSError(errno.EINVAL, words)


def _refuse_odd_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing (it is created) or unreachable (the open says why)
    _refuse_odd_mode(mode)


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _ends_with_newline(path: Path) -> bool:
    """False where it cannot be read either: one empty line more is harmless."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except OSError:
        return False


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
