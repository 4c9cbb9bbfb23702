"""All GPUs at a glance (nvitop style): one painted row per GPU with its name in its alert
colour and small bars for VRAM, utilisation, temperature and power.

A bar turns amber, then red, where the engine's own card-derived safety limits warn and
stop (docs/safety.md): temperature 5 °C under the card's slowdown temperature and at it,
power at 95 % and 105 % of the enforced limit (the built-in table where the card does not
say); VRAM at the pressure threshold and when nearly full. Utilisation is never a fault
and keeps the calm colour. Rows are made once per set of GPUs and repainted only when
what they show changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from PySide6.QtCore import QRect, Qt, Signal
from PySide6.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from gpuwarden.engine.safety.limits import (
    CARD_POWER_HARD_FRACTION,
    CARD_POWER_WARN_FRACTION,
    CARD_TEMP_WARN_BELOW_C,
    DEFAULT_GPU_POWER_HARD_W,
    DEFAULT_GPU_POWER_WARN_W,
    DEFAULT_GPU_TEMP_HARD_C,
    DEFAULT_GPU_TEMP_WARN_C,
)
from gpuwarden.engine.telemetry.snapshot import NA_TEXT, GpuSample, Snapshot
from gpuwarden.widgets.gpu_panel import gpu_summary
from gpuwarden.widgets.theme import Theme, level_colour

BarLevel = Literal["ok", "warning", "error"]

DEFAULT_VRAM_WARN_PCT = 90.0  # the engine's default VRAM pressure threshold
VRAM_FULL_PCT = 97.0
MIB_PER_GIB = 1024.0
BAR_LABELS = ("VRAM", "Util", "Temp", "Power")


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    fraction: float | None  # 0..1 of the bar filled; None: n/a (an empty bar)
    text: str
    level: BarLevel
    short: str = ""  # where ``text`` does not fit

    def fitting(self, fm: QFontMetrics, width: int) -> str:
        """The text, else the short text, cut with "…" where even that is too long."""
        if fm.horizontalAdvance(self.text) <= width or not self.short:
            return fm.elidedText(self.text, Qt.TextElideMode.ElideRight, width)
        return fm.elidedText(self.short, Qt.TextElideMode.ElideRight, width)


def _level(value: float, warn: float, hard: float) -> BarLevel:
    return "error" if value >= hard else "warning" if value >= warn else "ok"


def _fill(value: float, full: float) -> float:
    return min(1.0, max(0.0, value / full)) if full > 0 else 0.0


def _na(label: str) -> Bar:
    return Bar(label, None, NA_TEXT, "ok", NA_TEXT)


def vram_bar(g: GpuSample, warn_pct: float) -> Bar:
    used, total = g.memory_used_mib, g.memory_total_mib
    if used is None or not total:
        return _na("VRAM")
    pct = 100.0 * used / total
    return Bar("VRAM", _fill(used, total),
               f"{used / MIB_PER_GIB:.1f} / {total / MIB_PER_GIB:.1f} GiB",
               _level(pct, warn_pct, VRAM_FULL_PCT), f"{pct:.0f} %")


def util_bar(g: GpuSample) -> Bar:
    if g.gpu_util_pct is None:
        return _na("Util")
    text = f"{g.gpu_util_pct:.0f} %"
    return Bar("Util", _fill(g.gpu_util_pct, 100.0), text, "ok", text)


def temperature_bar(g: GpuSample) -> Bar:
    t, slowdown = g.temperature_c, g.temperature_slowdown_c
    if t is None:
        return _na("Temp")
    if slowdown:
        return Bar("Temp", _fill(t, slowdown), f"{t:.0f} / {slowdown:.0f} °C",
                   _level(t, slowdown - CARD_TEMP_WARN_BELOW_C, slowdown), f"{t:.0f} °C")
    return Bar("Temp", _fill(t, DEFAULT_GPU_TEMP_HARD_C), f"{t:.0f} °C",
               _level(t, DEFAULT_GPU_TEMP_WARN_C, DEFAULT_GPU_TEMP_HARD_C), f"{t:.0f} °C")


def power_bar(g: GpuSample) -> Bar:
    draw, limit = g.power_draw_w, g.power_limit_w
    if draw is None:
        return _na("Power")
    if limit:
        return Bar("Power", _fill(draw, limit), f"{draw:.0f} / {limit:.0f} W",
                   _level(draw, limit * CARD_POWER_WARN_FRACTION,
                          limit * CARD_POWER_HARD_FRACTION), f"{draw:.0f} W")
    return Bar("Power", _fill(draw, DEFAULT_GPU_POWER_HARD_W), f"{draw:.0f} W",
               _level(draw, DEFAULT_GPU_POWER_WARN_W, DEFAULT_GPU_POWER_HARD_W), f"{draw:.0f} W")


def gpu_bars(g: GpuSample, vram_warn_pct: float = DEFAULT_VRAM_WARN_PCT) -> tuple[Bar, ...]:
    """The four bars of a GPU's row; all n/a while the GPU is lost."""
    if not g.available:
        return tuple(_na(label) for label in BAR_LABELS)
    return (vram_bar(g, vram_warn_pct), util_bar(g), temperature_bar(g), power_bar(g))


def _text_on(fill: QColor) -> QColor:
    """Near-black on a light fill, white on a dark one."""
    luma = 0.299 * fill.red() + 0.587 * fill.green() + 0.114 * fill.blue()
    return QColor("#1b1b1b") if luma > 140 else QColor("#ffffff")


class GpuRow(QWidget):
    """One GPU, painted: name, then the four bars with their text."""

    clicked = Signal(int)

    def __init__(self, index: int, theme: Theme) -> None:
        super().__init__()
        self.index = index
        self._theme = theme
        self.name = f"GPU {index}"
        self.available = True
        self.health = "ok"
        self.bars: tuple[Bar, ...] = tuple(_na(label) for label in BAR_LABELS)
        self.wanted_name_width = 160  # the longest name of the strip (set by it)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFixedHeight(self.fontMetrics().height() + 8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_sample(self, g: GpuSample, health: str, vram_warn_pct: float) -> None:
        """Show this reading; repaints only when something shown changed."""
        shown = (f"GPU {g.index} · {g.name}", g.available, health, gpu_bars(g, vram_warn_pct))
        if shown == (self.name, self.available, self.health, self.bars):
            return
        self.name, self.available, self.health, self.bars = shown
        self.setToolTip(gpu_summary(g) + "\nClick to show its graphs.")
        self.update()

    def name_colour(self) -> QColor:
        """Its alert colour; dimmed while lost; else the text colour."""
        if not self.available:
            return self._dimmed()
        colour = level_colour(self._theme, self.health)
        return QColor(colour or self._theme.foreground)

    def bar_colour(self, label: str) -> QColor:
        bar = next(b for b in self.bars if b.label == label)
        t = self._theme
        return QColor({"ok": t.bar_ok, "warning": t.bar_warn, "error": t.bar_error}[bar.level])

    def bar_rect(self, label: str) -> QRect:
        """Where the bar itself (not its label) is painted."""
        return self._cells()[BAR_LABELS.index(label)][1]

    def _dimmed(self) -> QColor:
        fg, bg = QColor(self._theme.foreground), QColor(self._theme.background)
        return QColor((fg.red() + bg.red()) // 2, (fg.green() + bg.green()) // 2,
                      (fg.blue() + bg.blue()) // 2)

    @property
    def name_width(self) -> int:
        """The longest name, but no more than about a quarter of a narrow row."""
        return min(self.wanted_name_width, max(90, self.width() // 4))

    def _cells(self) -> list[tuple[QRect, QRect]]:
        """(label, bar) rectangles of the four cells, right of the name."""
        fm = self.fontMetrics()
        label_w = max(fm.horizontalAdvance(label) for label in BAR_LABELS) + 6
        left = 6 + self.name_width + 12
        cell_w = max(60, (self.width() - left - 4) // len(BAR_LABELS))
        top, height = 3, self.height() - 6
        return [(QRect(left + i * cell_w, top, label_w, height),
                 QRect(left + i * cell_w + label_w, top, cell_w - label_w - 12, height))
                for i in range(len(BAR_LABELS))]

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = painter.font()
        font.setBold(self.health != "ok")
        painter.setFont(font)
        painter.setPen(self.name_colour())
        name_rect = QRect(6, 0, self.name_width, self.height())
        name = painter.fontMetrics().elidedText(self.name, Qt.TextElideMode.ElideRight,
                                                self.name_width)
        align = Qt.AlignmentFlag.AlignVCenter
        painter.drawText(name_rect, align | Qt.AlignmentFlag.AlignLeft, name)
        font.setBold(False)
        painter.setFont(font)
        cells = self._cells()
        if not self.available:
            start, end = cells[0][0], cells[-1][1]
            painter.setPen(self._dimmed())
            painter.drawText(QRect(start.left(), 0, end.right() - start.left(), self.height()),
                             align | Qt.AlignmentFlag.AlignLeft,
                             "lost: waiting for it to come back")
            return
        for bar, (label_rect, bar_rect) in zip(self.bars, cells, strict=True):
            painter.setPen(self._dimmed())
            painter.drawText(label_rect, align | Qt.AlignmentFlag.AlignLeft, bar.label)
            self._paint_bar(painter, bar, bar_rect)

    def _paint_bar(self, painter: QPainter, bar: Bar, rect: QRect) -> None:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(self._theme.bar_track))
        painter.drawRoundedRect(rect, 3, 3)
        if bar.fraction:
            fill = QRect(rect)
            fill.setWidth(max(3, round(rect.width() * bar.fraction)))
            painter.setBrush(self.bar_colour(bar.label))
            painter.drawRoundedRect(fill, 3, 3)
        inner = rect.adjusted(6, 0, -4, 0)
        text = bar.fitting(painter.fontMetrics(), inner.width())
        align = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft
        # The text over the fill takes a colour that reads on it; over the track, the
        # theme's text colour.
        fill_right = rect.left() + round(rect.width() * (bar.fraction or 0.0))
        for clip, colour in ((QRect(rect.left(), rect.top(), fill_right - rect.left(),
                                    rect.height()), _text_on(self.bar_colour(bar.label))),
                             (QRect(fill_right, rect.top(), rect.right() - fill_right + 1,
                                    rect.height()), QColor(self._theme.foreground))):
            painter.save()
            painter.setClipRect(clip)
            painter.setPen(colour)
            painter.drawText(inner, align, text)
            painter.restore()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self.rect().contains(
                event.position().toPoint()):
            self.clicked.emit(self.index)
        super().mouseReleaseEvent(event)


class GpuStrip(QWidget):
    """One row per GPU (``update`` at every sample); ``gpu_clicked(index)`` when the user
    clicks a row. ``levels`` maps a GPU index to its alert level ("ok", "warning",
    "error": ``AlertBoard.level(gpu)``); its name takes that colour."""

    gpu_clicked = Signal(int)

    def __init__(self, theme: Theme, vram_warn_pct: float = DEFAULT_VRAM_WARN_PCT) -> None:
        super().__init__()
        self._theme = theme
        self._vram_warn_pct = vram_warn_pct
        self._rows: dict[int, GpuRow] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.hide()

    def rows(self) -> list[GpuRow]:
        return list(self._rows.values())

    def row(self, index: int) -> GpuRow:
        return self._rows[index]

    def set_vram_warn_pct(self, pct: float) -> None:
        """The VRAM pressure threshold (``[pressure] vram_enter_pct``): amber from there."""
        self._vram_warn_pct = pct

    def show_snapshot(self, snapshot: Snapshot, levels: Mapping[int, str]) -> None:
        """Show this sample. Rows are made again only when the set of GPUs changes."""
        indices = tuple(g.index for g in snapshot.gpus)
        if indices != tuple(self._rows):
            self._make_rows(indices)
        for g in snapshot.gpus:
            self._rows[g.index].set_sample(g, levels.get(g.index, "ok"), self._vram_warn_pct)
        self._fit_names()
        self.setVisible(bool(self._rows))

    def _make_rows(self, indices: tuple[int, ...]) -> None:
        for row in self._rows.values():
            self._layout.removeWidget(row)
            row.deleteLater()
        self._rows = {}
        for index in indices:
            row = GpuRow(index, self._theme)
            row.clicked.connect(self.gpu_clicked)
            self._layout.addWidget(row)
            self._rows[index] = row

    def _fit_names(self) -> None:
        """One name column for all rows: as wide as the longest name (bold), within reason."""
        font = self.font()
        font.setBold(True)
        fm = QFontMetrics(font)
        width = 4 + min(260, max((fm.horizontalAdvance(r.name) for r in self._rows.values()),
                                 default=0))
        for row in self._rows.values():
            if row.wanted_name_width != width:
                row.wanted_name_width = width
                row.update()
