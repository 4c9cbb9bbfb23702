"""One server process: started without a shell, watched by a thread blocked in wait()
(or on a pidfd for a server adopted from an earlier run), stopped with SIGTERM, a grace
period, then SIGKILL. Death is reported within milliseconds, never found by polling."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gpuwarden.engine.supervisor import logfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exit:
    exit_code: int | None  # None when killed by a signal, or not known (adopted)
    signal: int | None
    at: float  # time.monotonic() when the exit was seen
    stopped: bool  # we asked it to stop


ExitCallback = Callable[[Exit], None]


class ServerProcess:
    """A running server. ``on_exit`` is called once, from the watcher thread."""

    def __init__(self, pid: int, log_path: Path, on_exit: ExitCallback,
                 popen: subprocess.Popen[bytes] | None = None, *, group: bool = False) -> None:
        self.pid = pid
        self.group = group  # signals go to its whole process group (it leads one)
        self.log_path = log_path
        self.log_offset = 0
        self.log_problem: str | None = None  # why its output is not in its log
        self._popen = popen
        self._on_exit = on_exit
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"watch-{pid}", daemon=True)

    @classmethod
    def launch(cls, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str],
               on_exit: ExitCallback, cwd: Path | None = None,
               group: bool = False) -> ServerProcess:
        """Start ``argv`` (a list: no shell), output appended to its log file. It gets its
        own session, so a Ctrl+C meant for gpuwarden does not reach it. A log that cannot
        be used does not stop it: its output goes to /dev/null and ``log_problem`` says
        why. ``group``: every signal goes to its whole process group, and whatever is
        left of the group when it ends is killed. OSError: ``argv[0]`` could not be run
        (or ``cwd`` is not a usable folder)."""
        offset = logfile.size(log_path)
        problem: str | None = None
        with contextlib.ExitStack() as opened:
            try:
                out: BinaryIO | int = opened.enter_context(logfile.open_for_server(log_path))
            except logfile.LogUnusable as exc:
                out, problem = subprocess.DEVNULL, exc.reason
            offset = min(offset, logfile.size(log_path))
            popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=dict(env), cwd=cwd,
                                     start_new_session=True)
        proc = cls(popen.pid, log_path, on_exit, popen, group=group)
        proc.log_offset = offset
        proc.log_problem = problem
        proc._watcher.start()
        return proc

    @classmethod
    def adopt(cls, pid: int, *, log_path: Path, on_exit: ExitCallback) -> ServerProcess:
        """Watch a server an earlier gpuwarden started (not our child: a pidfd tells us
        when it ends, but not its exit code)."""
        proc = cls(pid, log_path, on_exit)
        proc.log_offset = logfile.size(log_path)
        proc._watcher.start()
        return proc

    def _watch(self) -> None:
        code: int | None = None
        sig: int | None = None
        if self._popen is not None:
            rc = self._popen.wait()
            code, sig = (None, -rc) if rc < 0 else (rc, None)
        else:
            _wait_pid(self.pid)
        if self.group:  # what it started and left behind holds VRAM and ports: end it too
            self.signal(signal.SIGKILL)
        try:  # report first, so whoever waits for the exit also sees its consequences
            self._on_exit(Exit(code, sig, time.monotonic(), self._stopping.is_set()))
        except Exception:
            log.exception("exit handler for pid %d failed", self.pid)
        finally:
            self._exited.set()

    @property
    def alive(self) -> bool:
        return not self._exited.is_set()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: the watcher says so
            if self.group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL. Blocks until it has exited."""
        self._stopping.set()
        self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        if not self._exited.wait(grace_s):
            log.warning("pid %d ignored SIGTERM for %.0f s: killing it", self.pid, grace_s)
            self.signal(signal.SIGKILL)
            self._exited.wait(5.0)

    def kill(self) -> None:
        """SIGKILL now (a hung server): reported as not asked-for, unlike :meth:`stop`."""
        self.signal(signal.SIGKILL)

    def wait_exited(self, timeout_s: float) -> bool:
        return self._exited.wait(timeout_s)

    def new_output(self) -> str:
        """The end (at most :data:`logfile.TAIL_BYTES`) of what this launch wrote to its
        log; "" when there is none or it cannot be read."""
        return logfile.read_from(self.log_path, self.log_offset)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_pid(pid: int) -> None:
    """Block until a process that is not our child ends."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone
    except OSError:  # no pidfd here (old kernel, seccomp): fall back to polling
        while _pid_alive(pid):
            time.sleep(0.2)
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not poller.poll(1000):
            continue
    finally:
        os.close(fd)
