"""A scenario crash shows where the user looks: the table's row, the event log and the
alert banner; a model that gave up comes back with Load."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.engine.lifecycle.config import Config, RestartConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.widgets import model_table as mt
from lifecycle_helpers import model
from test_window import service

pytestmark = pytest.mark.qt

CRASH = """
[simulation]
gpus = 1
[[step]]
at = 1.0
action = "crash"
model = "chat"
exit_code = 1
"""


def test_a_crash_that_gives_up_shows_everywhere_and_load_brings_it_back(
        qtbot, open_window, tmp_path: Path):
    scenario = tmp_path / "crash.toml"
    scenario.write_text(CRASH)
    opts = TelemetryOptions(simulate=SimulateSpec(scenario=scenario), interval_s=0.25)
    config = Config(models=(model("chat", vram_mib=2000.0, load_time_s=0.1, autostart=True),),
                    restart=RestartConfig(max_consecutive=0))
    bridge, window = open_window(service(lambda: build_sampler(opts), config))
    panel = window.model_panel
    qtbot.waitUntil(lambda: bool(bridge.rows) and bridge.rows[0].state == "gave_up",
                    timeout=10_000)
    assert panel.proxy.index(0, mt.STATE).data() == "gave up"
    assert panel.proxy.index(0, mt.CRASHES).data() == "1"
    qtbot.waitUntil(lambda: any("chat" in t and "exit code 1" in t
                                for t in window.event_log.texts()), timeout=5000)
    qtbot.waitUntil(lambda: any("chat" in a.title for a in window.alerts.board.active()),
                    timeout=5000)
    assert window.alert_banner.isVisible()
    qtbot.waitUntil(lambda: any("chat" in t and "exit code 1" in t
                                for t in window.gpu_panels[0].vram.marks.placed.text),
                    timeout=5000)  # a mark on GPU 0's graphs where it crashed
    placed = window.gpu_panels[0].vram.marks.placed
    assert {"chat" in t for t in placed.text} == {True}  # loaded, ready, crashed ...
    assert max(placed.severity) == 2  # ... the crash in the error colour
    assert panel.load_action.isEnabled()
    panel.buttons["load"].click()
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
    qtbot.waitUntil(lambda: not any("chat" in a.title for a in window.alerts.board.active()),
                    timeout=5000)
