"""One gpuwarden per user: an exclusive ``flock`` on an open lock file.

The kernel drops a ``flock`` when the last descriptor of its open file closes, so a
gpuwarden that crashes or is killed frees the lock by itself; a stale pid file could not.
The descriptor is not inheritable, so llama-server children that outlive gpuwarden (to be
adopted by the next run) do not keep the lock. The holder's pid is written into the file
so a second start can say who is running. The file itself is never deleted: unlinking a
lock file lets two processes lock two different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from gpuwarden.engine import paths

__all__ = ["AlreadyRunning", "InstanceLock", "default_lock_path"]


class AlreadyRunning(RuntimeError):
    """Another gpuwarden of this user holds the lock; ``pid`` is its pid when known."""

    def __init__(self, pid: int | None, path: Path) -> None:
        self.pid = pid
        self.path = path
        who = f" (pid {pid})" if pid is not None else ""
        super().__init__(
            f"gpuwarden is already running{who}; use its window, or stop it first (a headless "
            f"one: Ctrl+C or SIGTERM; lock file: {path})"
        )


def default_lock_path() -> Path:
    return paths.data_dir() / "gpuwarden.lock"


class InstanceLock:
    """``with InstanceLock(): ...`` or ``acquire()`` / ``release()``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_lock_path()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning`. Taking it twice is a no-op.

        ``OSError`` (the folder cannot be made, the file cannot be opened) propagates.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(_read_pid(self.path), self.path) from None
        except BaseException:
            os.close(fd)
            raise
        # The lock is what matters; without the pid a second start just says less.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (no-op if not held). The file stays, emptied."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_pid(path: Path) -> int | None:
    """The holder's pid, or ``None`` (file unreadable, or the holder has not written it)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None
