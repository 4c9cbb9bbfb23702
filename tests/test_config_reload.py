"""Live config reload in the real `gpuwarden headless`: the file is edited while it runs."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import load_config
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from helpers import drive


def entry(name: str, **keys: object) -> str:
    body = {"name": name, "backend": "simulated", "load_time_s": 0, "autostart": True,
            "vram_mib": 1000, **keys}
    return "[[models]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items()) + "\n"


def replace_file(path: Path, text: str) -> None:
    """Save as an editor does: write a new file and rename it over the old one."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Lines:
    """The JSON events a process prints, read on a thread, awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()

    def drain(self) -> None:
        """After the process ended: everything it printed."""
        self._reader.join(10)
        while not self._queue.empty():
            self.seen.append(self._queue.get())

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(json.loads(line))

    def wait(self, type_: str, timeout: float = 30.0, **match: object) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.seen if e["type"] == type_
                     and all(e.get(k) == v for k, v in match.items())]
            if found:
                return found[-1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {type_} {match} within {timeout} s; saw "
                                     f"{[e['type'] for e in self.seen]}")
            try:
                self.seen.append(self._queue.get(timeout=left))
            except queue.Empty:
                continue


def test_headless_applies_config_edits_and_survives_a_broken_one(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(entry("keep") + entry("drop"))
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "--interval", "0.25", "headless", "--config",
         str(config), "--simulate", "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = Lines(proc)
    try:
        lines.wait("model.ready", model="keep")
        lines.wait("model.ready", model="drop")
        replace_file(config, entry("keep", priority=5) + entry("new"))
        reloaded = lines.wait("config.reloaded")
        assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (
            ["new"], ["drop"], ["keep"])
        assert lines.wait("model.unloaded", model="drop")["reason"] == "removed"
        lines.wait("model.ready", model="new")

        replace_file(config, entry("keep") + "[[models]\nname = broken")  # invalid TOML
        broken = _next_reload(lines, after=reloaded["seq"])
        assert "nothing changed" in broken["message"]
        assert any(e["type"] == "config.problem" and "config.toml" in e["message"]
                   for e in lines.seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        lines.drain()
    assert proc.stderr is not None
    assert proc.returncode == 0, proc.stderr.read()
    stopped = {e["model"]: e["reason"] for e in lines.seen if e["type"] == "model.unloaded"}
    assert stopped == {"drop": "removed", "keep": "shutdown", "new": "shutdown"}  # not earlier


def _next_reload(lines: Lines, after: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        later = [e for e in lines.seen if e["type"] == "config.reloaded" and e["seq"] > after]
        if later:
            return later[0]
        try:
            lines.seen.append(lines._queue.get(timeout=0.5))
        except queue.Empty:
            continue
    raise AssertionError("no second config.reloaded")


@pytest.fixture
def engine_with_file(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(entry("a", placement="gpu", vram_mib=2000) + entry("b"))
    config, _ = load_config(path)
    clock = FakeClock()
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec()),
                          ServicePaths(None, None), clock=clock, config_path=path)
    engine.start(watch_config=False)
    drive(engine, clock, 1.0)
    yield engine, clock, path
    engine.close()


def test_a_changed_model_keeps_running_and_takes_its_new_settings_at_the_next_load(
        engine_with_file):
    engine, clock, path = engine_with_file
    path.write_text(entry("a", placement="cpu", vram_mib=2000) + entry("b"))
    result = engine.reload_config()
    assert result.ok and "changed a" in result.message
    assert engine.model("a").device == "gpu"  # running as it was
    engine.unload("a")
    drive(engine, clock, 1.0)
    engine.load("a")
    drive(engine, clock, 1.0)
    assert engine.model("a").device == "cpu"


def test_an_emptied_or_unreadable_config_changes_nothing(engine_with_file):
    engine, clock, path = engine_with_file
    path.write_text("")
    assert not engine.reload_config().ok
    path.write_text("models = 3\n")  # no usable entry: nothing is removed either
    engine.reload_config()
    drive(engine, clock, 1.0)
    assert [r.state for r in engine.models()] == ["ready", "ready"]


def test_a_first_config_written_while_headless_runs_is_picked_up(tmp_path: Path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "headless", "--simulate", "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = Lines(proc)
    try:
        folder = tmp_path / "config" / "gpuwarden"
        deadline = time.monotonic() + 30
        while not folder.is_dir() and time.monotonic() < deadline:
            threading.Event().wait(0.05)  # the engine makes the folder as it starts
        replace_file(folder / "config.toml", entry("first"))
        assert lines.wait("config.reloaded")["added"] == ["first"]
        lines.wait("model.ready", model="first")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        lines.drain()
    assert proc.returncode == 0
