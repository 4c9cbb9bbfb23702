"""The UI thread never waits on the engine: with a backend whose every start and stop
takes seconds (the engine thread is stuck in it), the window keeps repainting, and no
call of ours on the UI thread takes more than 50 ms of its CPU time (once the window
and its GPU tabs are built)."""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from PySide6.QtCore import QTimer

from gpuwarden.app.commands import Commands
from gpuwarden.app.window import MainWindow
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.lifecycle.simulated_backend import SimulatedBackend
from lifecycle_helpers import model
from test_window import simulated

pytestmark = pytest.mark.qt

SLOW_S = 1.5
UI_CALL_LIMIT_S = 0.050
# What a stuck UI thread would show: a gap as long as the engine's stall. Scheduling noise
# on a busy machine stays far below this.
HEARTBEAT_GAP_LIMIT_S = SLOW_S / 2

UI_SLOTS = {MainWindow: ("on_snapshot", "on_history", "on_models", "on_event",
                         "refresh_details", "_on_answer"),
            Commands: ("send", "_on_answered", "_on_finished")}


def timed(fn: Callable[..., Any], costs: list[tuple[str, float]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            costs.append((fn.__name__, time.thread_time() - start))
    return wrapper


def slow(fn: Callable[..., Any], stalls: list[str]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stalls.append(threading.current_thread().name)
        time.sleep(SLOW_S)  # a backend call that takes seconds (a slow disk, a big model)
        return fn(*args, **kwargs)
    return wrapper


def test_a_stuck_engine_never_stops_the_window(qtbot, open_window, monkeypatch):
    costs: list[tuple[str, float]] = []
    stalls: list[str] = []
    for cls, names in UI_SLOTS.items():
        for name in names:
            monkeypatch.setattr(cls, name, timed(getattr(cls, name), costs))
    for name in ("start", "stop"):
        monkeypatch.setattr(SimulatedBackend, name, slow(getattr(SimulatedBackend, name),
                                                         stalls))
    bridge, window = open_window(simulated(1, Config(models=(
        model("chat", vram_mib=2000.0, load_time_s=0.1),))))
    qtbot.waitUntil(lambda: bool(bridge.rows) and bool(window.gpu_panels), timeout=10_000)
    costs.clear()  # building the window and its GPU tabs (once, ~60 ms) is not waiting

    beats: list[float] = []
    heart = QTimer()
    heart.timeout.connect(lambda: beats.append(time.monotonic()))
    heart.start(10)
    window.commands.send("load", ("chat",))
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=15_000)
    window.commands.send("unload", ("chat",))
    window.commands.send("load", ("chat",))  # queued behind the stuck unload
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready" and len(stalls) >= 3,
                    timeout=20_000)
    heart.stop()

    assert stalls and all(name != threading.main_thread().name for name in stalls)
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) > 3 * SLOW_S / 0.010 / 4  # it kept beating all along
    assert max(gaps) < HEARTBEAT_GAP_LIMIT_S, f"the UI thread stalled {max(gaps):.3f} s"
    worst = max(costs, key=lambda c: c[1])
    assert {name for name, _ in costs} >= {"on_snapshot", "on_models", "send"}
    assert worst[1] < UI_CALL_LIMIT_S, f"{worst[0]} took {worst[1] * 1000:.0f} ms"
