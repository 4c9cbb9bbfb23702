"""Alerts that alert: a pressure scenario turns the banner, the GPU's tab and its row in
the all-GPUs strip amber, and all of it clears when the pressure is over."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QColor

from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.widgets.theme import DARK
from test_window import service

pytestmark = pytest.mark.qt

SCENARIO = """
[simulation]
gpus = 2
[[simulation.gpu]]
memory_total_mib = 8192
[[simulation.gpu]]
memory_total_mib = 8192
[[step]]
at = 0.5
action = "vram_grab"
gpu = 1
owner = "game"
mib = 7800
[[step]]
at = 2.5
action = "vram_free"
gpu = 1
owner = "game"
"""


def test_pressure_on_one_gpu_turns_its_tab_strip_row_and_the_banner(
        qtbot, open_window, tmp_path: Path):
    scenario = tmp_path / "pressure.toml"
    scenario.write_text(SCENARIO)
    opts = TelemetryOptions(simulate=SimulateSpec(scenario=scenario), interval_s=0.25)
    _, window = open_window(service(lambda: build_sampler(opts)))
    qtbot.waitUntil(lambda: len(window.gpu_panels) == 2, timeout=10_000)
    bar = window.gpu_tabs.tabBar()
    calm = bar.tabTextColor(0)
    qtbot.waitUntil(lambda: window.gpu_panels[1].vram.limit_value("pressure") is not None,
                    timeout=10_000)  # the threshold drawn: 90 % of 8 GiB
    assert window.gpu_panels[1].vram.limit_value("pressure") == pytest.approx(8 * 0.9)
    assert window.alert_banner.isHidden()

    qtbot.waitUntil(lambda: window.alert_banner.isVisible(), timeout=10_000)
    alerts = window.alerts.board.active()  # the pressure, and the safety verdict it brings
    assert {(a.level, a.gpu) for a in alerts} == {("warning", 1)}
    assert any("VRAM pressure" in a.title for a in alerts)
    assert bar.tabTextColor(1) == QColor(DARK.state_busy)
    assert bar.tabTextColor(0) == calm  # the other GPU stays calm
    assert window.gpu_strip.row(1).name_colour() == QColor(DARK.state_busy)
    assert window.gpu_strip.row(0).name_colour() != QColor(DARK.state_busy)

    qtbot.waitUntil(lambda: window.alert_banner.isHidden(), timeout=10_000)
    assert bar.tabTextColor(1) == calm
    assert window.gpu_strip.row(1).name_colour() != QColor(DARK.state_busy)


def test_a_click_on_a_strip_row_opens_that_gpus_tab(qtbot, open_window):
    from test_window import simulated

    _, window = open_window(simulated(3))
    qtbot.waitUntil(lambda: len(window.gpu_strip.rows()) == 3, timeout=10_000)
    window.gpu_strip.gpu_clicked.emit(2)
    assert window.gpu_tabs.currentWidget() is window.gpu_panels[2]
