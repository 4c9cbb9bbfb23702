"""The alerts banner, fed by a real AlertBoard: amber, red, gone, dismissed, compact."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from gpuwarden.engine.alerts import AlertBoard
from gpuwarden.engine.events import (
    ConfigProblemFound,
    Event,
    GpuLost,
    PressureCleared,
    PressureRaised,
    SafetyVerdictChanged,
    StorageError,
)
from gpuwarden.widgets.alert_banner import MAX_LINES, AlertBanner
from gpuwarden.widgets.theme import DARK, LIGHT, Theme

pytestmark = pytest.mark.qt

PRESSURE = PressureRaised(kind="vram", gpu=0, value=93.0, threshold=90.0, ts=100.0)


def verdict(kind: str, previous: str) -> SafetyVerdictChanged:
    return SafetyVerdictChanged(scope="gpu", gpu=0, kind=kind, previous=previous,
                                reason="GPU 0 at 90 C, hard limit 87 C (card slowdown)",
                                ts=110.0)


class Rig:
    """A banner fed by a board, wired as the window wires them."""

    def __init__(self, banner: AlertBanner) -> None:
        self.banner = banner
        self.board = AlertBoard()
        banner.dismissed.connect(self.dismiss)

    def feed(self, event: Event) -> None:
        if self.board.apply(event):
            self.banner.set_alerts(self.board.active())

    def dismiss(self, key: str) -> None:
        self.board.dismiss(key)
        self.banner.set_alerts(self.board.active())


@pytest.fixture
def rig(qtbot):
    def make(theme: Theme = DARK) -> Rig:
        banner = AlertBanner(theme)
        qtbot.addWidget(banner)
        banner.resize(900, 80)
        return Rig(banner)
    return make


def background(banner: AlertBanner) -> QColor:
    """The colour the banner is painted in, left of its first line's strip."""
    image = banner.grab().toImage()
    return image.pixelColor(3, image.height() // 2)


@pytest.mark.parametrize("theme", [DARK, LIGHT], ids=["dark", "light"])
def test_pressure_turns_it_amber_an_abort_red_and_clearing_hides_it(rig, theme):
    r = rig(theme)
    banner = r.banner
    assert banner.isHidden()
    r.feed(PRESSURE)
    assert not banner.isHidden() and banner.level == "warning"
    assert background(banner) == QColor(theme.alert_warn_bg)
    assert banner.lines[0].title.text() == "GPU 0 VRAM pressure: 93 % used"
    assert banner.lines[0].close_button.isHidden()  # it clears by itself
    r.feed(verdict("abort", "proceed"))
    assert banner.level == "error" and background(banner) == QColor(theme.alert_error_bg)
    assert banner.lines[0].title.text() == "GPU 0 past a hard limit"  # errors first
    assert not banner.lines[1].isHidden()
    r.feed(verdict("proceed", "abort"))
    assert banner.level == "warning" and banner.lines[1].isHidden()
    r.feed(PressureCleared(kind="vram", gpu=0, value=70.0, threshold=80.0, ts=120.0))
    assert banner.isHidden()


def test_the_close_button_dismisses_a_config_problem(qtbot, rig):
    r = rig()
    banner = r.banner
    r.feed(ConfigProblemFound(message="config.toml:3: unknown key 'colour'", ts=5.0))
    line = banner.lines[0]
    assert not line.close_button.isHidden()
    assert "unknown key 'colour'" in line.detail.text()
    with qtbot.waitSignal(banner.dismissed) as signal:
        qtbot.mouseClick(line.close_button, Qt.MouseButton.LeftButton)
    assert signal.args == [line.key]
    assert r.board.active() == () and banner.isHidden()


def test_only_three_lines_show_and_the_rest_are_counted_and_in_the_tooltip(rig):
    r = rig()
    banner = r.banner
    for i in range(4):
        r.feed(GpuLost(gpu=i, message="fell off the bus", ts=10.0 + i))
    r.feed(StorageError(path="/data/journal.jsonl", message="disk full", ts=20.0))
    assert sum(not line.isHidden() for line in banner.lines) == MAX_LINES
    assert banner.lines[0].title.text() == "Cannot write /data/journal.jsonl"  # the newest
    assert banner.more.text().startswith("+2 more") and not banner.more.isHidden()
    tooltip = banner.toolTip()
    assert all(f"GPU {i} lost" in tooltip for i in range(4)) and "journal.jsonl" in tooltip
    assert len(r.board.active()) == 5


def test_a_long_detail_does_not_widen_the_banner_and_the_tooltip_has_it_all(rig):
    r = rig()
    banner = r.banner
    r.feed(ConfigProblemFound(message="x" * 2000, ts=1.0))
    assert banner.sizeHint().width() < 900
    assert banner.lines[0].detail.toolTip().startswith("x" * 100)
