"""Evidence that the kernel's OOM killer struck: the ``oom_kill`` counter of a cgroup.

A process killed by SIGKILL may have been the OOM killer or a person. The memory cgroup
the process ran in counts OOM kills -- cgroup v2 in ``memory.events``, cgroup v1 in
``memory.oom_control`` -- for limit OOMs and, on current kernels, system-wide OOMs whose
victim lived in that cgroup. :class:`OomWatch` remembers the counter while the process
lives and says afterwards whether it grew. The cgroup may hold other processes too, so a
``True`` is evidence to combine with the exit signal, not proof on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CGROUP_ROOT",
    "OomWatch",
    "cgroup_path",
    "counter_files",
    "memory_cgroup_v1_path",
    "parse_memory_events",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_ROOT = Path("/proc")


def parse_memory_events(text: str) -> int | None:
    """The ``oom_kill`` count in a cgroup v2 ``memory.events`` (or v1 ``memory.oom_control``,
    which has the same ``key value`` lines), or ``None`` if absent or malformed."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill":
            return int(parts[1]) if parts[1].isascii() and parts[1].isdigit() else None
    return None


def cgroup_path(proc_cgroup_text: str) -> str | None:
    """The cgroup v2 path (the ``0::/path`` line) of a ``/proc/<pid>/cgroup`` text."""
    for line in proc_cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if sep and hierarchy == "0" and controllers == "" and path.startswith("/"):
            return path
    return None


def memory_cgroup_v1_path(proc_cgroup_text: str) -> str | None:
    """The cgroup v1 memory controller's path (``N:memory:/path``), or ``None``."""
    for line in proc_cgroup_text.splitlines():
        _, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if sep and "memory" in controllers.split(",") and path.startswith("/"):
            return path
    return None


def counter_files(proc_cgroup_text: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Where a process's ``oom_kill`` counter may be: pure v2, hybrid v2, then v1."""
    files: list[Path] = []
    v2 = cgroup_path(proc_cgroup_text)
    if v2 is not None:
        rel = v2.lstrip("/")
        files.append(root / rel / "memory.events")
        files.append(root / "unified" / rel / "memory.events")
    v1 = memory_cgroup_v1_path(proc_cgroup_text)
    if v1 is not None:
        files.append(root / "memory" / v1.lstrip("/") / "memory.oom_control")
    return files


def read_counter(path: Path) -> int | None:
    try:
        return parse_memory_events(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


class OomWatch:
    """The ``oom_kill`` counters of one process's cgroup(s), remembered at creation."""

    def __init__(self, baselines: Sequence[tuple[Path, int]]) -> None:
        self._baselines = tuple(baselines)

    @classmethod
    def for_pid(cls, pid: int, *, cgroup_root: Path = CGROUP_ROOT,
                proc_root: Path = PROC_ROOT) -> OomWatch:
        """Watch ``pid``'s cgroup. Create it while the process lives: a dead process has no
        ``/proc/<pid>/cgroup``, and the watch then knows nothing (``killed_since`` is None)."""
        try:
            text = (proc_root / str(pid) / "cgroup").read_text(encoding="utf-8",
                                                                errors="replace")
        except OSError:
            return cls(())
        baselines: list[tuple[Path, int]] = []
        for path in counter_files(text, cgroup_root):
            count = read_counter(path)
            if count is not None:
                baselines.append((path, count))
        return cls(baselines)

    @property
    def sources(self) -> tuple[Path, ...]:
        """The counter files being watched (empty: nothing readable on this system)."""
        return tuple(path for path, _ in self._baselines)

    def killed_since(self) -> bool | None:
        """True if an ``oom_kill`` counter grew since creation, False if one is readable
        and none grew, None if none can be read (or a counter went back: a new cgroup)."""
        answer: bool | None = None
        for path, baseline in self._baselines:
            now = read_counter(path)
            if now is None or now < baseline:
                continue
            if now > baseline:
                return True
            answer = False
        return answer
