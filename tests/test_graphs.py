"""The graphs as a user sees them: event marks, hover read-out, steps, a lost GPU, the
pressure line, limit labels, colours and one unit per reading."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import QPointF
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QToolTip

from gpuwarden.engine.events import (
    ConfigReloaded,
    Event,
    GpuLost,
    ModelCrashed,
    ModelLoading,
    ModelOffloaded,
    ModelReady,
    ModelUnloaded,
    PressureRaised,
    SafetyVerdictChanged,
    SwapEvicted,
)
from gpuwarden.engine.telemetry.snapshot import (
    GpuSample,
    HistoryFrame,
    HostSample,
    gpu_key,
    host_key,
)
from gpuwarden.widgets.gpu_panel import GpuPanel, gpu_summary, seconds_ago
from gpuwarden.widgets.graph_events import graph_mark
from gpuwarden.widgets.host_panel import HostPanel, host_summary
from gpuwarden.widgets.plot import LivePlot
from gpuwarden.widgets.plot_marks import MAX_MARKS
from gpuwarden.widgets.theme import DARK, LIGHT, Theme
from test_model_table import row

pytestmark = pytest.mark.qt

T0 = 1_800_000_000.0
TOTAL_MIB = 24576.0  # 24 GiB


def sample(**fields: object) -> GpuSample:
    base: dict[str, object] = {
        "name": "Test GPU", "uuid": "GPU-test-0", "memory_total_mib": TOTAL_MIB,
        "memory_used_mib": 2048.0, "temperature_c": 60.0, "temperature_slowdown_c": 87.0,
        "power_draw_w": 120.0, "power_limit_w": 300.0,
    }
    base.update(fields)
    return GpuSample(index=0, **base)  # type: ignore[arg-type]


def frame(seconds: int, *, used_mib: np.ndarray | None = None, lost: bool = False,
          start: float = T0) -> HistoryFrame:
    """``seconds`` + 1 samples one second apart, the last at ``start + seconds``."""
    n = seconds + 1
    t = start + np.arange(n, dtype=float)
    values = {
        "memory_used_mib": np.full(n, 2048.0) if used_mib is None else used_mib,
        "temperature_c": np.full(n, 60.0), "power_draw_w": np.full(n, 120.0),
        "gpu_util_pct": np.full(n, 30.0), "memory_util_pct": np.full(n, 10.0),
    }
    series = {gpu_key(0, k): np.full(n, np.nan) if lost else v for k, v in values.items()}
    series[host_key("cpu_pct")] = np.full(n, 20.0)
    series[host_key("ram_used_mib")] = np.full(n, 8192.0)
    series[host_key("swap_used_mib")] = np.full(n, 0.0)
    return HistoryFrame(t=t, series=series)


@pytest.fixture
def panel(qtbot):
    made = GpuPanel(0, DARK)
    qtbot.addWidget(made)
    made.resize(1000, 600)
    made.show()
    qtbot.waitExposed(made)
    qtbot.mouseMove(made, made.rect().bottomRight())  # the pointer enters the window
    made.update_sample(sample())
    return made


def show(target: GpuPanel | HostPanel, f: HistoryFrame) -> None:
    target.update_history(f, seconds_ago(f))


def hover(qtbot, plot: LivePlot, x: float, y: float) -> None:
    """Move the real mouse pointer over (x, y) in the plot's data coordinates."""
    scene = plot.getPlotItem().getViewBox().mapViewToScene(QPointF(x, y))
    qtbot.mouseMove(plot.viewport(), plot.mapFromScene(scene))


def test_a_mark_moves_left_as_samples_come_and_is_on_all_four_graphs(panel):
    show(panel, frame(20))
    panel.add_marker(T0 + 15.0, "chat: ready on gpu", "info")
    for plot in panel.plots():
        assert list(plot.marks.merged().x) == [-5.0]
    show(panel, frame(50))
    assert list(panel.util.marks.merged().x) == [-35.0]


def test_a_mark_is_drawn_in_its_level_colour_at_its_time(qtbot, panel):
    show(panel, frame(60))
    panel.add_marker(T0 + 30.0, "coder: crashed (gpu_oom)", "error")
    plot = panel.power
    view = plot.getPlotItem().getViewBox()
    qtbot.waitUntil(lambda: view.sceneBoundingRect().width() > 100, timeout=3000)
    image = plot.grab().toImage()
    box = plot.mapFromScene(view.sceneBoundingRect()).boundingRect()
    red = QColor(DARK.state_bad).rgb()

    def red_rows(x: int) -> int:
        return sum(image.pixel(x, y) == red for y in range(box.top(), box.bottom()))

    at = plot.mapFromScene(view.mapViewToScene(QPointF(-30.0, 0.0))).x()
    assert max(red_rows(x) for x in range(at - 2, at + 3)) >= 5  # the glyph, at -30 s
    assert max(red_rows(x) for x in range(at - 60, at - 20)) == 0  # and nowhere else


def test_an_event_after_the_newest_sample_sits_at_now(panel):
    show(panel, frame(20))
    panel.add_marker(T0 + 20.4, "chat: crashed", "error")
    assert list(panel.vram.marks.merged().x) == [0.0]


def test_marks_older_than_an_hour_are_dropped_and_their_number_is_capped(panel):
    panel.add_marker(T0 + 1.0, "old event", "info")
    show(panel, frame(600))
    assert len(panel.vram.marks.placed) == 1
    show(panel, frame(3700))
    assert len(panel.vram.marks.placed) == 0
    for i in range(MAX_MARKS + 50):
        panel.add_marker(T0 + 3000.0 + i, f"event {i}", "info")
    show(panel, frame(3700))
    events = [text.split("  ", 1)[1] for text in panel.vram.marks.placed.text]
    assert len(events) == MAX_MARKS and events[-1] == "event 349" and "event 49" not in events


def test_events_at_the_same_moment_make_one_mark_in_the_worst_colour(panel):
    show(panel, frame(60))
    panel.add_marker(T0 + 30.0, "vram pressure on GPU 0", "warning")
    panel.add_marker(T0 + 30.05, "coder: crashed (gpu_oom)", "error")
    panel.add_marker(T0 + 10.0, "chat: ready on gpu", "info")
    drawn = panel.vram.marks.merged()
    assert list(drawn.x) == [-50.0, -30.0]
    assert list(drawn.severity) == [0, 2]
    assert "vram pressure" in drawn.text[1] and "crashed" in drawn.text[1]


# Showing a tooltip raises its window, which the offscreen platform cannot do.
@pytest.mark.qt_log_ignore("This plugin does not support raise")
def test_hovering_a_mark_shows_its_event_text(qtbot, panel):
    show(panel, frame(60))
    panel.add_marker(T0 + 30.0, "coder: crashed (gpu_oom)", "error")
    QToolTip.hideText()
    hover(qtbot, panel.temperature, -30.0, 50.0)
    qtbot.waitUntil(lambda: "coder: crashed (gpu_oom)" in QToolTip.text(), timeout=3000)
    assert panel.temperature.readout_text() is None  # the tooltip, not both on each other
    hover(qtbot, panel.temperature, -10.0, 50.0)  # far from any mark
    qtbot.waitUntil(lambda: not QToolTip.isVisible(), timeout=3000)
    assert panel.temperature.readout_text() is not None


def test_hover_read_out_shows_the_time_and_the_value_under_the_pointer(qtbot, panel):
    used = np.where(np.arange(61) < 40, 2048.0, 20480.0)  # 2 GiB, then 20 GiB from -20 s
    show(panel, frame(60, used_mib=used))
    hover(qtbot, panel.vram, -25.0, 5.0)
    qtbot.waitUntil(lambda: panel.vram.readout_text() is not None, timeout=3000)
    text = panel.vram.readout_text()
    assert text is not None and "-25 s" in text and "used 2.0 GiB" in text
    hover(qtbot, panel.vram, -10.0, 5.0)
    qtbot.waitUntil(lambda: "used 20.0 GiB" in (panel.vram.readout_text() or ""),
                    timeout=3000)
    panel.vram.end_hover()
    assert panel.vram.readout_text() is None


def test_a_step_in_the_data_is_drawn_as_a_vertical_segment(qtbot, panel):
    used = np.where(np.arange(61) < 30, 2048.0, 12288.0)
    show(panel, frame(60, used_mib=used))
    qtbot.waitUntil(lambda: len(panel.vram.curve_path("used")) > 0, timeout=3000)
    path = panel.vram.curve_path("used")
    dx, dy = np.diff(path[:, 0]), np.diff(path[:, 1])
    assert np.all((np.abs(dx) < 1e-9) | (np.abs(dy) < 1e-9)), "no diagonal segment"
    jump = np.flatnonzero(np.abs(dy) > 1)
    assert len(jump) == 1 and path[jump[0], 0] == pytest.approx(-30.0)
    assert path[jump[0], 1] == pytest.approx(2.0) and path[jump[0] + 1, 1] == pytest.approx(12.0)


def test_a_lost_gpu_keeps_its_ranges_and_is_greyed_out(panel):
    show(panel, frame(60))
    ranges = [plot.y_max() for plot in panel.plots()]
    assert 24 < ranges[0] < 24 * 1.3  # VRAM: the total, and room for its label
    panel.update_sample(GpuSample(index=0, name="Test GPU", uuid="GPU-test-0",
                                  available=False))
    for seconds in (61, 200):  # the old readings scroll out of the window
        show(panel, frame(seconds, lost=True))
        assert [plot.y_max() for plot in panel.plots()] == pytest.approx(ranges)
    assert panel.lost and all(plot.dimmed for plot in panel.plots())
    assert panel.vram.getPlotItem().graphicsEffect() is not None
    assert panel.vram.limit_value("total") == pytest.approx(24.0)
    panel.update_sample(sample())
    assert not panel.lost and not any(plot.dimmed for plot in panel.plots())
    assert panel.vram.getPlotItem().graphicsEffect() is None


def test_a_gpu_lost_from_the_start_gets_sane_axes(qtbot):
    fresh = GpuPanel(0, DARK)
    qtbot.addWidget(fresh)
    fresh.update_sample(GpuSample(index=0, name="Test GPU", uuid="x", available=False))
    show(fresh, frame(30, lost=True))
    assert 100 < fresh.temperature.y_max() < 200
    assert all(plot.getPlotItem().viewRange()[1][0] == 0 for plot in fresh.plots())


def test_the_pressure_threshold_is_a_labelled_line_at_that_share_of_the_total(panel):
    panel.set_pressure_threshold(90.0)
    assert panel.vram.limit_value("pressure") == pytest.approx(24 * 0.9)
    label = panel.vram._limits["pressure"].label
    assert label.textItem.toPlainText() == "pressure 90 %"
    panel.update_sample(sample(memory_total_mib=12288.0))  # another card size
    assert panel.vram.limit_value("pressure") == pytest.approx(12 * 0.9)
    panel.set_pressure_threshold(None)
    assert panel.vram.limit_value("pressure") is None


def label_problems(plot: LivePlot, key: str, value: float, *, below: bool = False
                   ) -> list[str]:
    """Where a limit line's label is not at the left end, just above (``below``: just
    under) its line, inside the plot."""
    view = plot.getPlotItem().getViewBox()
    text = plot._limits[key].label
    margin = text.textItem.document().documentMargin()  # blank around the letters
    label = text.sceneBoundingRect().adjusted(margin, margin, -margin, -margin)
    line_y = view.mapViewToScene(QPointF(0.0, value)).y()
    box = view.sceneBoundingRect()
    problems = {
        "not at the left end": label.left() > box.left() + 0.2 * box.width(),
        "not above its line": not below and (label.bottom() > line_y
                                             or label.bottom() < line_y - 12),
        "not under its line": below and (label.top() < line_y or label.top() > line_y + 12),
        "cut off": label.top() < box.top() or label.bottom() > box.bottom(),
    }
    return [f"{key}: {problem}" for problem, bad in problems.items() if bad]


@pytest.mark.parametrize(("height", "below"), [(600, False), (300, True)],
                         ids=["tall", "short"])
def test_limit_labels_sit_left_by_their_line_inside_the_plot(qtbot, panel, height, below):
    """Above the line; in a plot too short for that (without stretching the scale by more
    than a third), just under it."""
    panel.set_pressure_threshold(90.0)
    panel.resize(1000, height)
    show(panel, frame(60))
    lines = ((panel.vram, "total", 24.0), (panel.vram, "pressure", 21.6),
             (panel.temperature, "slowdown", 87.0), (panel.power, "limit", 300.0))

    def problems() -> list[str]:
        return [p for plot, key, value in lines
                for p in label_problems(plot, key, value, below=below)]

    def settled() -> None:  # retried until it passes; the last failure is reported
        assert panel.vram.height() < height / 2
        assert problems() == []
        for plot in panel.plots():  # a sane scale, however short the plot
            top = plot.getPlotItem().getViewBox().viewRange()[1][1]
            assert top <= (plot._top or 0.0) * 4 / 3 + 1e-6, plot
        total, pressure = (panel.vram._limits[k].label.sceneBoundingRect()
                           for k in ("total", "pressure"))
        assert not total.intersects(pressure), "the two VRAM labels overlap"

    qtbot.waitUntil(settled, timeout=3000)


def test_the_curves_are_named_in_the_title_row_not_in_a_box_over_the_plot(panel):
    assert all(plot.getPlotItem().legend is None for plot in panel.plots())
    title = panel.util.getPlotItem().titleLabel.item.toPlainText()
    assert "Utilisation" in title and "GPU" in title and "memory" in title


def _contrast(a: str, b: str) -> float:
    def luminance(colour: str) -> float:
        c = QColor(colour)
        channels = [v / 255 for v in (c.red(), c.green(), c.blue())]
        lin = [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("theme", [DARK, LIGHT], ids=["dark", "light"])
def test_every_graph_colour_reads_on_the_background(theme: Theme):
    for name in ("vram", "temperature", "power", "util", "mem_util", "cpu", "ram", "swap",
                 "limit", "warn", "state_ok", "state_busy", "state_bad"):
        assert _contrast(getattr(theme, name), theme.background) >= 3.0, name


@pytest.mark.parametrize("theme", [DARK, LIGHT], ids=["dark", "light"])
def test_the_two_utilisation_curves_differ_in_hue(theme: Theme):
    gpu, mem = QColor(theme.util).hslHue(), QColor(theme.mem_util).hslHue()
    assert min(abs(gpu - mem), 360 - abs(gpu - mem)) >= 60


def test_host_marks_and_one_unit_per_memory_reading(qtbot):
    host = HostPanel(LIGHT)
    qtbot.addWidget(host)
    host.update_sample(HostSample(ram_used_mib=1001.0, ram_total_mib=24064.0))
    show(host, frame(60))
    host.add_marker(T0 + 50.0, "ram pressure: 91.0 (threshold 90)", "warning")
    assert list(host.ram.marks.merged().x) == [-10.0]
    assert list(host.cpu.marks.merged().x) == [-10.0]
    summary = host_summary(HostSample(ram_used_mib=1001.0, ram_total_mib=24064.0,
                                      swap_used_mib=0.0, swap_total_mib=8192.0))
    assert "RAM 1.0 / 23.5 GiB" in summary and "swap 0.0 / 8.0 GiB" in summary
    assert "MiB" not in summary
    assert "VRAM 0.9 / 24.0 GiB" in gpu_summary(sample(memory_used_mib=900.0))
    assert "RAM 300 MiB / 512 MiB" in host_summary(HostSample(ram_used_mib=300.0,
                                                              ram_total_mib=512.0))
    assert 24064 / 1024 < host.ram.y_max() < 2 * 24064 / 1024


ROWS = (row("chat", gpu=1, placement="gpu"), row("tiny", gpu=0, placement="cpu"))


@pytest.mark.parametrize(("event", "gpu", "level"), [
    (ModelReady(model="chat", placement="gpu", gpu=1), 1, "info"),
    (ModelReady(model="chat", placement="gpu"), 1, "info"),  # its GPU from the table
    (ModelReady(model="tiny", placement="cpu"), None, "info"),
    (ModelLoading(model="chat", placement="gpu", reason="restart", gpu=1), 1, "info"),
    (ModelUnloaded(model="chat", reason="safety", freed_vram_mib=6000.0), 1, "warning"),
    (ModelUnloaded(model="tiny", reason="idle", freed_ram_mib=900.0), None, "info"),
    (ModelOffloaded(model="chat", reason="pressure", freed_vram_mib=6000.0), 1, "info"),
    (SwapEvicted(model="chat", for_model="tiny"), 1, "info"),
    (ModelCrashed(model="chat", kind="gpu_oom"), 1, "error"),
    (ModelCrashed(model="tiny", kind="crash"), None, "error"),
    (PressureRaised(kind="vram", gpu=1, value=91.0, threshold=90.0), 1, "warning"),
    (PressureRaised(kind="ram", gpu=None, value=91.0, threshold=90.0), None, "warning"),
    (SafetyVerdictChanged(scope="gpu", gpu=1, kind="abort", previous="proceed",
                          reason="92 °C, hard limit 90 °C"), 1, "error"),
    (SafetyVerdictChanged(scope="host", gpu=None, kind="wait_cooldown", previous="proceed",
                          reason="RAM 97 %"), None, "warning"),
    (GpuLost(gpu=1, message="fell off the bus"), 1, "error"),
], ids=lambda v: v.type if isinstance(v, Event) else None)
def test_events_are_marked_on_the_graphs_where_they_happened(event: Event, gpu, level):
    stamped = dataclasses.replace(event, ts=T0 + 5.0)
    mark = graph_mark(stamped, ROWS)
    assert mark is not None
    assert (mark.gpu, mark.level, mark.ts) == (gpu, level, T0 + 5.0)
    assert mark.text == stamped.describe()


@pytest.mark.parametrize("event", [
    ModelLoading(model="chat", placement="gpu", reason="user", gpu=1),  # ready marks it
    ModelUnloaded(model="chat", reason="swap", freed_vram_mib=6000.0),  # swap.evicted does
    ModelCrashed(model="gone", kind="crash"),  # no longer configured
    ConfigReloaded(path="/x/config.toml"),
], ids=lambda e: e.type)
def test_other_events_are_not_marked(event: Event):
    assert graph_mark(event, ROWS) is None
