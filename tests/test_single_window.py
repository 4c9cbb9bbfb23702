"""Launching gpuwarden again brings the running window forward, and starts no second engine;
what a crashed run leaves behind (socket file, lock file) never blocks the next start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtNetwork import QLocalServer
from PySide6.QtWidgets import QWidget

from gpuwarden.app.single_window import (
    WindowBeacon,
    ask_running_window,
    beacon_name,
    bring_forward,
    parse_request,
    watch_for_second_launch,
)
from gpuwarden.engine.supervisor.instance_lock import default_lock_path
from supervision_rig import wait_until

pytestmark = pytest.mark.qt

ASK = "import sys; from gpuwarden.app.single_window import ask_running_window as ask; " \
      "print(ask(*sys.argv[1:]), flush=True)"
# Listens as a window would, says so, then waits to be killed.
LISTEN = "import sys; from PySide6.QtNetwork import QLocalServer; s = QLocalServer(); " \
         "assert s.listen(sys.argv[1]); print('listening', flush=True); sys.stdin.read()"
BROUGHT = "gpuwarden: brought the running window to the front"
ENGINE_STARTED = "no config file at"  # the engine's first start-up note (no config yet)


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private XDG_RUNTIME_DIR, short enough for a socket path (about 100 bytes at most)."""
    folder = Path(tempfile.mkdtemp(prefix="gw-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=30)
    return out


def test_a_request_is_show_with_an_optional_target() -> None:
    assert parse_request("show\n") == ""
    assert parse_request("show model qwen 7b\n") == "model qwen 7b"
    assert parse_request("show gpu 1") == "gpu 1"
    assert parse_request("shows") is None
    assert parse_request("quit\n") is None
    assert parse_request("") is None


def test_the_socket_is_private_to_the_user_and_the_lock(runtime_dir: Path) -> None:
    name = beacon_name()
    assert Path(name).parent == runtime_dir
    assert str(os.getuid()) in Path(name).name
    assert beacon_name(default_lock_path().with_name("other.lock")) != name


@pytest.mark.qt_log_ignore("This plugin does not support raise")
def test_a_second_process_brings_a_hidden_window_forward(qtbot) -> None:
    window = QWidget()
    qtbot.addWidget(window)  # never shown: as when it is hidden to the tray
    beacon = watch_for_second_launch(window)
    assert beacon.listening
    asked: list[str] = []
    beacon.show_requested.connect(asked.append)
    child = python(ASK)
    qtbot.waitUntil(lambda: child.poll() is not None, timeout=20_000)
    assert finish(child).strip() == "True"
    assert asked == [""]
    assert window.isVisible()

    child = python(ASK, "model qwen")
    qtbot.waitUntil(lambda: child.poll() is not None, timeout=20_000)
    assert finish(child).strip() == "True"
    assert asked == ["", "model qwen"]
    beacon.close()
    assert not Path(beacon.name).exists()


@pytest.mark.qt_log_ignore("This plugin does not support raise")
def test_a_minimised_maximised_window_comes_back_maximised(qtbot) -> None:
    window = QWidget()
    qtbot.addWidget(window)
    window.show()
    window.setWindowState(Qt.WindowState.WindowMaximized | Qt.WindowState.WindowMinimized)
    assert window.isMinimized()
    bring_forward(window)
    assert window.isVisible() and not window.isMinimized() and window.isMaximized()


def test_no_window_listening_is_a_quick_no() -> None:
    started = time.monotonic()
    assert ask_running_window(timeout_ms=5000) is False
    assert time.monotonic() - started < 1


def test_a_window_that_does_not_answer_is_a_no_within_the_timeout(qtbot) -> None:
    hung = QLocalServer()  # accepts connections (the kernel does) and never answers
    assert hung.listen(beacon_name())
    started = time.monotonic()
    assert ask_running_window(timeout_ms=300) is False
    assert time.monotonic() - started < 3
    hung.close()


def test_a_socket_left_by_a_killed_window_does_not_block_the_next(qtbot) -> None:
    name = beacon_name()
    crashed = python(LISTEN, name)
    assert crashed.stdout is not None and crashed.stdout.readline().strip() == "listening"
    crashed.kill()  # SIGKILL: Qt removes nothing
    finish(crashed)
    assert Path(name).exists()
    assert QLocalServer().listen(name) is False  # the stale file does block a plain listen

    beacon = WindowBeacon()
    assert beacon.listen()
    asked: list[str] = []
    beacon.show_requested.connect(asked.append)
    child = python(ASK)
    qtbot.waitUntil(lambda: child.poll() is not None, timeout=20_000)
    assert finish(child).strip() == "True" and asked == [""]
    beacon.close()


# -- the real app, started twice --------------------------------------------------------


def gpuwarden(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuwarden", *args]


class App:
    """A real `gpuwarden` in the background, its stderr kept in a file (never a full pipe)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as err:
            self.proc = subprocess.Popen(gpuwarden(*args), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, predicate, timeout: float = 60) -> None:
        assert wait_until(lambda: predicate() or self.proc.poll() is not None, timeout), \
            f"no {what} within {timeout} s:\n{self.stderr}"
        assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.stderr}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def apps() -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(timeout=30)


def open_window(apps: list[App], log: Path) -> App:
    app = App(log, "-v", "--simulate", "--quit-after", "120")
    apps.append(app)
    app.wait_for("window beacon", lambda: Path(beacon_name()).exists())
    return app


def test_a_second_launch_raises_the_first_window_and_starts_no_second_engine(
    tmp_path: Path, apps: list[App]
) -> None:
    first = open_window(apps, tmp_path / "first.log")
    assert ENGINE_STARTED in first.stderr

    second = subprocess.run(gpuwarden("--simulate"), capture_output=True, text=True,
                            timeout=60)
    assert (second.returncode, second.stderr.strip()) == (0, BROUGHT)
    first.wait_for("raise", lambda: "brought forward by a second launch" in first.stderr)

    headless = subprocess.run(gpuwarden("headless", "--simulate", "--duration", "1"),
                              capture_output=True, text=True, timeout=60)
    assert headless.returncode == 3
    assert headless.stderr.startswith(
        f"gpuwarden: gpuwarden is already running (pid {first.proc.pid}); use its window")
    assert BROUGHT not in headless.stderr and ENGINE_STARTED not in headless.stderr
    assert first.stop() == 0
    assert not Path(beacon_name()).exists()


def test_a_window_launched_while_a_headless_one_runs_says_so(
    tmp_path: Path, apps: list[App]
) -> None:
    headless = App(tmp_path / "headless.log", "headless", "--simulate")
    apps.append(headless)
    lock = default_lock_path()
    headless.wait_for("lock", lambda: lock.exists() and
                      lock.read_text().strip() == str(headless.proc.pid))
    second = subprocess.run(gpuwarden("--simulate"), capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 3
    assert f"already running (pid {headless.proc.pid})" in second.stderr
    assert BROUGHT not in second.stderr and ENGINE_STARTED not in second.stderr
    assert headless.stop() == 0


def test_a_killed_window_leaves_nothing_that_blocks_the_next_start(
    tmp_path: Path, apps: list[App]
) -> None:
    crashed = open_window(apps, tmp_path / "crashed.log")
    crashed.proc.kill()
    crashed.proc.wait(timeout=30)
    assert Path(beacon_name()).exists() and default_lock_path().exists()

    after = App(tmp_path / "after.log", "-v", "--simulate", "--quit-after", "120")
    apps.append(after)
    after.wait_for("answer", lambda: ask_running_window(timeout_ms=1000))
    assert ENGINE_STARTED in after.stderr
    after.wait_for("raise", lambda: "brought forward by a second launch" in after.stderr)
    assert after.stop() == 0
