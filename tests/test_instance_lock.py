"""One gpuwarden per user: a second start is refused by name, and a dead holder frees the lock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuwarden.engine import paths
from gpuwarden.engine.supervisor.instance_lock import (
    AlreadyRunning,
    InstanceLock,
    default_lock_path,
)

# Takes the lock, says so, optionally starts a grandchild that outlives it, waits on stdin.
HOLDER = """
import subprocess, sys
from pathlib import Path
from gpuwarden.engine.supervisor.instance_lock import InstanceLock
InstanceLock(Path(sys.argv[1])).acquire()
if sys.argv[2] == "spawn":
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], close_fds=False)
    print(g.pid, flush=True)
print("locked", flush=True)
sys.stdin.read()
"""


def start_holder(lock: Path, spawn: bool = False) -> tuple[subprocess.Popen[str], int | None]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock), "spawn" if spawn else "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline()) if spawn else None
    assert proc.stdout.readline().strip() == "locked", "the holder did not take the lock"
    return proc, grandchild


def acquire_within(lock: InstanceLock, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            lock.acquire()
            return
        except AlreadyRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.fixture
def kill_after() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_default_path_is_in_the_user_data_folder() -> None:
    assert default_lock_path() == paths.data_dir() / "gpuwarden.lock"
    assert InstanceLock().path == default_lock_path()


def test_a_second_gpuwarden_is_refused_naming_the_first_and_a_killed_one_frees_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep" / "gpuwarden.lock"
    holder, _ = start_holder(path)
    try:
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(path).acquire()
        assert refused.value.pid == holder.pid
        message = str(refused.value)
        assert f"gpuwarden is already running (pid {holder.pid})" in message
        assert "use its window" in message and "stop it first" in message
        assert "tray" not in message  # there is no tray icon
        holder.kill()  # SIGKILL: no cleanup code runs, the kernel drops the flock
        holder.wait(timeout=10)
        mine = InstanceLock(path)
        acquire_within(mine, 10)
        assert mine.held
        assert path.read_text().strip() == str(os.getpid())
        mine.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()


def test_servers_started_by_gpuwarden_do_not_keep_its_lock(
    tmp_path: Path, kill_after: list[int]
) -> None:
    path = tmp_path / "gpuwarden.lock"
    holder, grandchild = start_holder(path, spawn=True)
    assert grandchild is not None
    kill_after.append(grandchild)
    try:
        holder.kill()
        holder.wait(timeout=10)
        os.kill(grandchild, 0)  # still running, like an adoptable llama-server
        lock = InstanceLock(path)
        acquire_within(lock, 10)
        lock.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()


def test_release_lets_the_next_one_in_and_the_context_manager_releases(tmp_path: Path) -> None:
    path = tmp_path / "gpuwarden.lock"
    with InstanceLock(path) as first:
        assert first.held
        first.acquire()  # taking it again is harmless
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            InstanceLock(path).acquire()
    assert not first.held
    second = InstanceLock(path)
    second.acquire()
    second.release()
    second.release()  # harmless
    assert path.exists(), "the lock file is never deleted"


def test_without_a_pid_in_the_file_the_message_still_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "gpuwarden.lock"
    with InstanceLock(path):
        path.write_text("")  # a holder that has not written its pid yet
        with pytest.raises(AlreadyRunning) as refused:
            InstanceLock(path).acquire()
    assert refused.value.pid is None
    assert str(refused.value).startswith("gpuwarden is already running; use its window")
