"""Atomic file writes: the target holds either its old content or the new, never half.

The text goes to a temporary file in the target's own folder (so the rename stays on one
file system), is flushed and fsync'd, and then ``os.replace`` swaps it in. The folder is
fsync'd afterwards where the platform allows it, so the rename survives a power cut.
On any failure the temporary file is removed and the error is raised to the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


def atomic_write_text(path: Path, text: str, *, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically, creating missing parent folders.

    An existing target keeps its permission bits. Raises ``OSError`` (or the encoding's
    error) with the old content untouched and no temporary file left behind.
    """
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, like :func:`atomic_write_text`."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _copy_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)


def atomic_write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON (UTF-8, trailing newline) and write it atomically.

    The object is encoded before any file is touched, so an object json cannot encode
    raises ``TypeError``/``ValueError`` and leaves the target and folder as they were.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


def _copy_mode(target: Path, tmp: Path) -> None:
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable. Not possible everywhere (Windows): silently skipped."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dfd = os.open(folder, flags)
    except OSError:
        return
    try:
        # Some file systems refuse fsync on a directory; the data itself is already safe.
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)
