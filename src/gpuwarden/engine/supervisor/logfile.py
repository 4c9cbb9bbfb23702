"""Per-model server logs: the server writes straight into its own file (no pipe to fill
or break, so a server outlives gpuwarden and can be adopted), rotated at each launch,
and gpuwarden reads the last lines back for crash reports and the UI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 2
_TAIL_CHUNK = 64 * 1024


def open_for_server(path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> BinaryIO:
    """Rotate ``path`` if it grew past ``max_bytes``, then open it for appending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > max_bytes:
        for n in range(backups, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            newer = path.with_name(f"{path.name}.{n - 1}") if n > 1 else path
            if newer.exists():
                os.replace(newer, older)
    return open(path, "ab", buffering=0)


def tail(path: Path, lines: int = 40) -> tuple[str, ...]:
    """The last ``lines`` lines of a log (fewer if it is short; none if it is missing)."""
    text = read_from(path, 0, limit=_TAIL_CHUNK).splitlines()
    return tuple(line.rstrip() for line in text[-lines:])


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_from(path: Path, offset: int, limit: int | None = None) -> str:
    """What was written to the log after ``offset`` (the lines of this launch); only its
    last ``limit`` bytes when given, so a long-running server's log is not read whole."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start = offset if limit is None else max(offset, end - limit)
            f.seek(start)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
