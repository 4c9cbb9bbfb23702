"""Per-model server logs: the server writes straight into its own file (no pipe to fill
or break, so a server outlives gpuwarden and can be adopted), rotated at each launch,
and gpuwarden reads the end back for crash reports and the UI.

Only a regular file is ever used: a FIFO, a device (a link to /dev/zero or /dev/full) or
a folder at the log's path is refused when opened (never blocking: O_NONBLOCK) and never
read, and every read stops at a byte cap, so an odd file can neither hang gpuwarden nor
fill its memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 2
TAIL_BYTES = 16 * 1024  # the most read back at a time: crash reports and the details view
TAIL_LINES = 40


class LogUnusable(OSError):
    """The log at ``path`` cannot be written; ``reason`` says why, for a person."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class NotRegularFile(OSError):
    """A FIFO, device, socket or folder where a log file should be."""

    def __init__(self, path: Path, mode: int) -> None:
        self.reason = not_regular(path, mode)
        super().__init__(f"{path}: {self.reason}")


def not_regular(path: Path, mode: int) -> str:
    """``it is a FIFO (named pipe), not a regular file`` and the like."""
    if stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = f"a device ({os.path.realpath(path)})"
    elif stat.S_ISDIR(mode):
        what = "a folder"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "not a file"
    return f"it is {what}, not a regular file"


def open_for_server(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> BinaryIO:
    """Rotate ``path`` if it grew past ``max_bytes``, then open it for appending.
    :class:`LogUnusable` says why it cannot be (never blocks, never opens a non-file)."""
    _make_folder(path.parent)
    with contextlib.suppress(OSError):  # a failed rotation leaves a long log, no harm
        if path.is_file() and path.stat().st_size > max_bytes:
            _rotate(path, backups)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise LogUnusable(path, _open_failed(path, exc)) from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise LogUnusable(path, not_regular(path, mode))
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "ab", buffering=0)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where the folder should be
        raise LogUnusable(folder, f"the log folder {folder} is a file, not a folder") from exc
    except OSError as exc:
        raise LogUnusable(folder, f"the log folder {folder} cannot be made: "
                                  f"{_reason(exc)}") from exc


def _rotate(path: Path, backups: int) -> None:
    for n in range(backups, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        newer = path.with_name(f"{path.name}.{n - 1}") if n > 1 else path
        if newer.exists():
            os.replace(newer, older)


def _open_failed(path: Path, exc: OSError) -> str:
    folder = path.parent
    if exc.errno == errno.ENXIO:  # O_NONBLOCK on a FIFO nobody reads
        return "it is a FIFO (named pipe), not a regular file"
    if exc.errno == errno.EISDIR:
        return "it is a folder, not a regular file"
    if exc.errno == errno.EROFS or (exc.errno == errno.EACCES and not path.exists()
                                    and not os.access(folder, os.W_OK)):
        return f"the log folder {folder} is read-only"
    return f"it cannot be written: {_reason(exc)}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def read_end(path: Path, offset: int = 0, max_bytes: int = TAIL_BYTES) -> str:
    """What was written to the log after ``offset`` (one launch's lines), at most its
    last ``max_bytes`` bytes, starting at a whole line. Raises OSError (FileNotFoundError
    when missing, :class:`NotRegularFile` for a FIFO, a device or a folder)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        end = f.seek(0, os.SEEK_END)
        start = max(offset, end - max_bytes)
        f.seek(start)
        data = f.read(max_bytes)
    if start > offset:  # the first line is cut
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace")


def read_from(path: Path, offset: int, limit: int = TAIL_BYTES) -> str:
    """:func:`read_end`, or "" when the log cannot be read."""
    try:
        return read_end(path, offset, limit)
    except OSError:
        return ""


def last_lines(text: str, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` lines of ``text``, trailing blanks stripped."""
    return tuple(line.rstrip() for line in text.splitlines()[-lines:])


def tail(path: Path, lines: int = TAIL_LINES) -> tuple[str, ...]:
    """The last ``lines`` lines of a log (fewer if it is short; none if it is missing or
    cannot be read)."""
    return last_lines(read_from(path, 0), lines)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
