"""One live time-series plot: step curves updated in place, limit lines, event marks, a
hover read-out (plot_overlays.py draws those two), and a 'seconds ago' axis."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QFontMetricsF, QMouseEvent
from PySide6.QtWidgets import QGraphicsOpacityEffect

from gpuwarden.widgets.plot_marks import Mark, MarkBook, MarkLevel, MarkSet, value_at
from gpuwarden.widgets.plot_overlays import HoverReadout, MarkLayer
from gpuwarden.widgets.theme import Theme

FloatArray = npt.NDArray[np.float64]

DOWNSAMPLE_FACTOR = 0.5
HEADROOM = 0.05  # at least this share above the top value or limit
MAX_LABEL_FACTOR = 4 / 3  # the most a limit's label may stretch the y range
DIMMED_OPACITY = 0.35

WINDOWS_S: tuple[tuple[str, float], ...] = (("1 min", 60.0), ("10 min", 600.0), ("1 h", 3600.0))


# Tick spacings that read well on a clock: seconds, then whole minutes.
_NICE_SPACINGS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def nice_spacing(span_s: float, max_ticks: int = 7) -> float:
    """The smallest clock-friendly tick spacing that keeps at most ``max_ticks`` ticks."""
    for spacing in _NICE_SPACINGS_S:
        if span_s / spacing <= max_ticks:
            return float(spacing)
    return float(_NICE_SPACINGS_S[-1])


def format_ago(seconds_ago: float, spacing: float) -> str:
    """Axis label for a time ``seconds_ago`` (<= 0) before the newest sample."""
    ago = -seconds_ago
    if abs(ago) < 0.5:
        return "now"
    if spacing < 60:
        return f"-{ago:.0f} s"
    return f"-{ago / 60:.0f} min"


class SecondsAgoAxis(pg.AxisItem):
    """Bottom axis in 'seconds ago' with ticks on whole seconds or minutes."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        major = nice_spacing(maxVal - minVal)
        return [(major, 0.0), (major / 2, 0.0)]

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        return [format_ago(v, spacing) for v in values]


class LivePlot(pg.PlotWidget):
    """A small plot of one quantity over time.

    Curves and limit lines are created once and then only get new data, so a
    redraw is cheap even with an hour of history (clip-to-view + peak downsampling).
    Curves are steps: a sample holds until the next one. The y axis runs from 0 to the
    fixed ``y_max``, the ceiling, or the highest value or limit shown, with headroom.
    """

    def __init__(self, title: str, unit: str, theme: Theme, *, y_max: float | None = None,
                 digits: int = 0, fallback_max: float = 1.0) -> None:
        super().__init__(background=theme.background,
                         axisItems={"bottom": SecondsAgoAxis(orientation="bottom")})
        self._theme = theme
        self._title = title
        self._unit = unit
        self._digits = digits
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._curve_labels: dict[str, tuple[str, str]] = {}  # key -> (label, colour)
        self._limits: dict[str, pg.InfiniteLine] = {}
        self._ceiling = y_max
        self._fallback_max = fallback_max
        self._top: float | None = None  # the highest value or limit the range is for
        self._shown_max: float | None = None
        self._label_room = QFontMetricsF(self.font()).height() + 6  # px, a limit's label
        self._dimmed = False
        item = self.getPlotItem()
        item.setLabel("left", unit, color=theme.foreground)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        # No grid: pyqtgraph paints grid lines through the axes, ~9 ms a plot a frame.
        item.hideButtons()
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        for axis in ("left", "bottom"):
            item.getAxis(axis).setTextPen(theme.foreground)
            item.getAxis(axis).setPen(theme.foreground)
        self.marks = MarkLayer((theme.state_ok, theme.state_busy, theme.state_bad),
                               theme.background)
        item.addItem(self.marks, ignoreBounds=True)
        self._hover = HoverReadout(self, theme, self.marks, self._readout_lines)
        self._update_header()
        item.getViewBox().sigResized.connect(self._on_view_resized)
        self._apply_y_range()
        self.set_window(60.0)
        for widget in (self, self.viewport()):  # nothing to do with keys: Tab skips it
            widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)

    # -- curves and limits --------------------------------------------------------------

    def add_curve(self, key: str, label: str, color: str) -> None:
        # No fill under the curve: filling a 1000-point polygon costs ~5 ms a plot.
        curve = self.plot([], [], pen=pg.mkPen(color=color, width=2), name=label,
                          connect="finite", stepMode="right")
        # About one point per two pixels before peak downsampling (which keeps the min and
        # max of each bin): an hour of samples then costs what a minute does.
        curve.opts["autoDownsampleFactor"] = DOWNSAMPLE_FACTOR
        self._curves[key] = curve
        self._curve_labels[key] = (label, color)
        self._update_header()

    def add_limit(self, key: str, label: str, color: str, *, dashed: bool = True,
                  label_at: float = 0.01) -> None:
        """A horizontal line at a limit, labelled above the line near the left end
        (``label_at``: share of the width), away from the newest data at the right."""
        line = pg.InfiniteLine(
            angle=0, movable=False,
            pen=pg.mkPen(color=color, width=1.5,
                         style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine),
            label=label, labelOpts={"position": label_at, "color": color,
                                    "anchors": [(0, 1), (0, 1)]},
        )
        line.setVisible(False)
        self.addItem(line, ignoreBounds=True)
        self._limits[key] = line

    def set_curve(self, key: str, x: FloatArray, y: FloatArray | None) -> None:
        curve = self._curves[key]
        if y is None or x.shape != y.shape:
            curve.setData([], [])
        else:
            curve.setData(x, y, connect="finite")
        self._apply_y_range()

    def set_limit(self, key: str, value: float | None, label: str | None = None) -> None:
        line = self._limits[key]
        shown = value is not None and not np.isnan(value)
        if line.isVisible() == shown and (not shown or line.value() == value) and (
                label is None or line.label.format == label):
            return  # as it is (limits are set at every sample and rarely move)
        if label is not None:
            line.label.setFormat(label)
            line.label.setText(label)
        if value is None or np.isnan(value):
            line.setVisible(False)
        else:
            line.setValue(value)
            line.setVisible(True)
        self._apply_y_range()

    def set_window(self, seconds: float) -> None:
        self.getPlotItem().setXRange(-seconds, 0, padding=0)

    def set_y_ceiling(self, value: float | None) -> None:
        """Fix the y range to 0..value (plus headroom), e.g. memory used vs total; None:
        follow the values and limits shown."""
        self._ceiling = value if value is not None and np.isfinite(value) and value > 0 else None
        self._apply_y_range()

    def set_marks(self, marks: MarkSet) -> None:
        self.marks.set_marks(marks)

    def set_dimmed(self, dimmed: bool) -> None:
        """Grey the plot out (its source is gone); the y range stays where it was."""
        self._dimmed = dimmed
        # An effect, not setOpacity: that blends overlapping strokes twice (dots on curves).
        effect = None
        if dimmed:
            effect = QGraphicsOpacityEffect()
            effect.setOpacity(DIMMED_OPACITY)
        self.getPlotItem().setGraphicsEffect(effect)
        self._update_header()

    @property
    def dimmed(self) -> bool:
        return self._dimmed

    def _apply_y_range(self) -> None:
        top = self._ceiling if self._ceiling is not None else self._highest_shown()
        if top is None:  # nothing to go by (e.g. a lost GPU): keep the last range
            top = self._top if self._top is not None else self._fallback_max
        elif self._ceiling is None and self._top is not None \
                and 0.75 * self._top <= top <= self._top:
            top = self._top  # auto: hold the range while the values stay well inside it
        self._top = top
        self._set_y_range()

    def _on_view_resized(self, _view: object) -> None:
        self._set_y_range()

    def _set_y_range(self) -> None:
        """0 .. the top value or limit, plus a little headroom; with a labelled limit line
        shown, room above it for its label, up to a third more; a plot too short for that
        keeps a sensible scale and puts the labels just under their lines."""
        if self._top is None:
            return
        factor = 1 + HEADROOM
        below = False
        if any(line.isVisible() for line in self._limits.values()):
            height, room = float(self.getPlotItem().getViewBox().height()), self._label_room
            needed = height / (height - room) if height > room else 2 * MAX_LABEL_FACTOR
            below = needed > MAX_LABEL_FACTOR  # no room above: labels go under their line
            factor = max(factor, min(needed, MAX_LABEL_FACTOR))
        anchor = (0, 0) if below else (0, 1)
        for line in self._limits.values():
            if line.label.anchors[0] != anchor:
                line.label.anchors = [anchor, anchor]
                line.label.updatePosition()
        if self._shown_max != self._top * factor:
            self._shown_max = self._top * factor
            self.getPlotItem().setYRange(0.0, self._shown_max, padding=0)

    def _highest_shown(self) -> float | None:
        tops = [float(line.value()) for line in self._limits.values() if line.isVisible()]
        for curve in self._curves.values():
            y = curve.yData
            if y is not None and len(y):
                top = float(np.fmax.reduce(y))
                if np.isfinite(top):
                    tops.append(top)
        top = max(tops, default=0.0)
        return top if top > 0 else None

    def _update_header(self) -> None:
        """Title and legend in one row above the plot, where they cover no data."""
        fg = self._theme.foreground
        parts = [f"<b>{html.escape(self._title)}</b>"]
        parts += [f"<span style='color:{color}'>&#9644;&nbsp;{html.escape(label)}</span>"
                  for label, color in self._curve_labels.values()]
        if self._dimmed:
            parts.append("<i>no readings</i>")
        self.getPlotItem().setTitle("&nbsp;&nbsp;&nbsp;".join(parts), color=fg, size="10pt")

    # -- hover: crosshair, read-out and mark tooltips -----------------------------------

    def hover_at_scene(self, pos: QPointF) -> None:
        """The pointer moved to ``pos`` (scene coordinates)."""
        self._hover.at_scene(pos)

    def readout_text(self) -> str | None:
        """What the read-out shows now (plain text), None while hidden."""
        return self._hover.text()

    def end_hover(self) -> None:
        self._hover.end()

    def _readout_lines(self, x: float) -> list[str]:
        """Each curve's value at ``x`` with its unit, one line each (HTML)."""
        lines = []
        for key, (label, color) in self._curve_labels.items():
            data_x, data_y = self.curve_data(key)
            value = value_at(data_x, data_y, x) if len(data_x) else None
            text = "n/a" if value is None else f"{value:.{self._digits}f} {self._unit}"
            lines.append(f"<span style='color:{color}'>{html.escape(label)}</span> {text}")
        return lines

    def mouseMoveEvent(self, ev: QMouseEvent) -> None:
        # Every move, not the scene's sigMouseMoved: that drops moves closer than 10 ms
        # apart, so the read-out could stay where the pointer was a moment before.
        super().mouseMoveEvent(ev)
        self._hover.at_scene(self.mapToScene(ev.position().toPoint()))

    def leaveEvent(self, ev: QEvent) -> None:
        self._hover.end()
        super().leaveEvent(ev)

    # -- what is shown (tests, benchmark) -----------------------------------------------

    def curve_data(self, key: str) -> tuple[FloatArray, FloatArray]:
        """What a curve currently shows (for tests and the benchmark)."""
        curve = self._curves[key]
        x, y = curve.xData, curve.yData
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def curve_path(self, key: str) -> npt.NDArray[np.float64]:
        """The vertices of a curve's drawn path (n x 2, data coordinates)."""
        path = self._curves[key].curve.getPath()
        return np.array([(path.elementAt(i).x, path.elementAt(i).y)
                         for i in range(path.elementCount())], dtype=float).reshape(-1, 2)

    def limit_value(self, key: str) -> float | None:
        line = self._limits[key]
        return float(line.value()) if line.isVisible() else None

    def y_max(self) -> float:
        return float(self.getPlotItem().viewRange()[1][1])


class PlotMarks:
    """The event marks of one panel, on every one of its plots: placed again relative to
    each newest sample, so they move left as time passes and go once out of reach."""

    def __init__(self, plots: Sequence[LivePlot]) -> None:
        self._plots = tuple(plots)
        self._book = MarkBook()
        self._newest: float | None = None

    def add(self, ts: float, text: str, level: MarkLevel) -> None:
        self._book.add(Mark(ts, text, level))
        if self._newest is not None:
            self._place()

    def follow(self, newest: float) -> None:
        """The newest sample drawn is now at ``newest`` (unix seconds)."""
        self._newest = newest
        self._place()

    def _place(self) -> None:
        assert self._newest is not None
        placed = self._book.placed(self._newest)
        for plot in self._plots:
            plot.set_marks(placed)

    def __len__(self) -> int:
        return len(self._book)
