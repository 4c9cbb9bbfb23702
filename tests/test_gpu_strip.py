"""The all-GPUs strip: a row per GPU, bars that warn as readings climb, lost GPUs, clicks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor

from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot
from gpuwarden.widgets.gpu_strip import GpuStrip
from gpuwarden.widgets.theme import DARK, LIGHT, level_colour
from helpers import gpu

pytestmark = pytest.mark.qt


def snapshot(*gpus: GpuSample) -> Snapshot:
    return Snapshot(ts=0.0, seq=1, gpu_source="simulated", gpus=gpus, host=HostSample())


@pytest.fixture
def strip(qtbot):
    widget = GpuStrip(DARK)
    qtbot.addWidget(widget)
    widget.resize(1000, 90)
    return widget


def simulated_snapshot(count: int) -> Snapshot:
    sampler = build_sampler(TelemetryOptions(simulate=SimulateSpec(count=count)))
    try:
        return sampler.tick()
    finally:
        sampler.close()


def test_one_row_per_gpu_of_a_simulated_machine_made_once(strip):
    snap = simulated_snapshot(3)
    strip.show_snapshot(snap, {})
    rows = strip.rows()
    assert [r.index for r in rows] == [0, 1, 2] and not strip.isHidden()
    assert all(r.name.startswith(f"GPU {r.index} · ") for r in rows)
    vram = rows[0].bars[0]
    assert vram.label == "VRAM" and vram.text.endswith("GiB") and vram.fraction is not None
    strip.show_snapshot(replace(snap, seq=2), {})
    assert strip.rows() == rows  # the same widgets, not rebuilt each sample
    strip.show_snapshot(replace(snap, gpus=snap.gpus[:2]), {})
    assert [r.index for r in strip.rows()] == [0, 1]


@pytest.mark.parametrize("theme", [DARK, LIGHT], ids=["dark", "light"])
def test_the_temperature_bar_turns_amber_then_red_as_it_nears_slowdown(qtbot, theme):
    strip = GpuStrip(theme)
    qtbot.addWidget(strip)
    strip.resize(1000, 30)
    colours = []
    for temp in (60.0, 84.0, 88.0):
        strip.show_snapshot(snapshot(gpu(0, temperature_c=temp, temperature_slowdown_c=87.0)), {})
        row = strip.row(0)
        rect = row.bar_rect("Temp")
        pixel = row.grab().toImage().pixelColor(rect.left() + 2, rect.center().y())
        colours.append(pixel)
        assert pixel == row.bar_colour("Temp")  # what is painted is what it says
    assert colours == [QColor(theme.bar_ok), QColor(theme.bar_warn), QColor(theme.bar_error)]
    assert strip.row(0).bars[2].text == "88 / 87 °C"


def test_vram_turns_amber_at_the_pressure_threshold(strip):
    sample = gpu(0, memory_used_mib=7000.0, memory_total_mib=8192.0)  # 85 %
    strip.show_snapshot(snapshot(sample), {})
    assert strip.row(0).bars[0].level == "ok"
    strip.set_vram_warn_pct(80.0)
    strip.show_snapshot(snapshot(sample), {})
    assert strip.row(0).bars[0].level == "warning"


def test_a_lost_gpu_is_greyed_and_says_so_and_missing_readings_say_na(strip):
    strip.show_snapshot(snapshot(gpu(0, power_draw_w=None, gpu_util_pct=None),
                          GpuSample(1, "Lost GPU", "u1", available=False)), {1: "error"})
    calm, lost = strip.rows()
    assert not lost.available
    assert lost.name_colour() != QColor(DARK.foreground)
    assert lost.name_colour() != QColor(level_colour(DARK, "error"))
    assert all(b.text == "n/a" and b.fraction is None for b in lost.bars)
    assert "lost" in lost.toolTip()
    power = calm.bars[3]
    assert (power.text, power.fraction) == ("n/a", None)


def test_the_name_takes_its_gpus_alert_colour(strip):
    strip.show_snapshot(snapshot(gpu(0), gpu(1)), {0: "ok", 1: "warning"})
    assert strip.row(0).name_colour() == QColor(DARK.foreground)
    assert strip.row(1).name_colour() == QColor(DARK.state_busy)
    strip.show_snapshot(snapshot(gpu(0), gpu(1)), {1: "error"})
    assert strip.row(1).name_colour() == QColor(DARK.state_bad)


def test_clicking_a_row_says_which_gpu(qtbot, strip):
    strip.show_snapshot(snapshot(gpu(0), gpu(1), gpu(2)), {})
    strip.show()
    row = strip.row(2)
    with qtbot.waitSignal(strip.gpu_clicked) as signal:
        qtbot.mouseClick(row, Qt.MouseButton.LeftButton, pos=QPoint(20, row.height() // 2))
    assert signal.args == [2]
