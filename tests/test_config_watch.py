"""The config watcher: a real file, written in place and replaced by rename the way
editors save, calls back; other files in the folder do not; stop() joins."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchfiles import Change

from gpuwarden.engine.config_watch import ConfigWatcher

DEADLINE_S = 10.0


class Calls:
    """Counts callbacks; ``event`` is set at each one."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self) -> bool:
        fired = self.event.wait(DEADLINE_S)
        self.event.clear()
        return fired

    def after(self, change: Callable[[], object]) -> bool:
        """Makes ``change`` until the callback comes (the watcher thread may still be
        setting up when the test starts), within the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            change()
            if self.event.wait(0.25):
                self.event.clear()
                return True
        return False


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text("sample_interval_s = 1\n")
    return path


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def watcher(config: Path, calls: Calls) -> Iterator[ConfigWatcher]:
    w = ConfigWatcher(config, calls, debounce_ms=50)
    w.start()
    assert w.running
    yield w
    w.stop()
    assert not w.running


def replace_by_rename(config: Path, text: str) -> None:
    tmp = config.with_name(".config.toml.tmp")
    tmp.write_text(text)
    os.replace(tmp, config)


def test_writing_the_file_calls_back(config: Path, calls: Calls,
                                     watcher: ConfigWatcher) -> None:
    assert calls.after(lambda: config.write_text("sample_interval_s = 2\n"))


def test_replacing_the_file_by_rename_calls_back(config: Path, calls: Calls,
                                                 watcher: ConfigWatcher) -> None:
    assert calls.after(lambda: replace_by_rename(config, "sample_interval_s = 2\n"))
    # the file watched is now another inode: the next replace is seen too
    replace_by_rename(config, "sample_interval_s = 3\n")
    assert calls.wait()
    config.write_text("sample_interval_s = 4\n")  # and a write in place to the new file
    assert calls.wait()


def test_only_the_config_file_counts(config: Path, calls: Calls,
                                     watcher: ConfigWatcher) -> None:
    assert calls.after(lambda: config.write_text("sample_interval_s = 2\n"))  # it watches
    for name in ("other.toml", "config.toml.bak", ".config.toml.swp"):
        assert not watcher._wanted(Change.added, str(config.parent / name))
    assert watcher._wanted(Change.modified, str(config))
    assert watcher._wanted(Change.deleted, str(config))


def test_a_failing_callback_is_logged_and_watching_goes_on(
        config: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()

    def boom() -> None:
        calls()
        raise RuntimeError("handler broke")

    w = ConfigWatcher(config, boom, debounce_ms=50)
    w.start()
    try:
        with caplog.at_level(logging.ERROR, logger="gpuwarden.engine.config_watch"):
            assert calls.after(lambda: config.write_text("sample_interval_s = 2\n"))
            config.write_text("sample_interval_s = 3\n")
            assert calls.wait()
            assert w.running
    finally:
        w.stop()
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert failures and failures[0].exc_info is not None


def test_stop_joins_and_is_safe_twice(config: Path, calls: Calls) -> None:
    w = ConfigWatcher(config, calls)
    w.start()
    thread = w._thread
    assert thread is not None and thread.daemon
    w.stop()
    assert not thread.is_alive() and not w.running
    w.stop()


def test_a_missing_folder_is_logged_not_raised(
        tmp_path: Path, calls: Calls, caplog: pytest.LogCaptureFixture) -> None:
    w = ConfigWatcher(tmp_path / "nowhere" / "config.toml", calls)
    with caplog.at_level(logging.WARNING, logger="gpuwarden.engine.config_watch"):
        w.start()
    assert not w.running
    assert any("does not exist" in r.getMessage() for r in caplog.records)
    w.stop()
