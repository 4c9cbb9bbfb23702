"""What is drawn over a plot's curves: the event marks (MarkLayer) and, under the
pointer, a crosshair with each curve's value and a mark's events (HoverReadout)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap, QPolygonF
from PySide6.QtWidgets import QToolTip

from gpuwarden.widgets.plot_marks import MarkSet, format_offset, group_marks
from gpuwarden.widgets.theme import Theme

MERGE_PX = 2.0  # marks closer than this are drawn as one
TIP_PX = 5.0  # the pointer this close to a mark shows its tooltip
GLYPH_PX = 4.0
LINE_OPACITY = 0.67  # mark lines, faded so they do not hide the curves they cross


# pyqtgraph is untyped: mypy sees GraphicsObject as Any (as in plot.py, see pyproject).
class MarkLayer(pg.GraphicsObject):  # type: ignore[misc]
    """Every event mark of one plot, painted in one go: a thin vertical line in the
    level's colour and a glyph at the top (circle: info, triangle: warning, diamond:
    error). Marks closer than MERGE_PX pixels are drawn as one, in the worst colour.
    Lines are opaque one-pixel fills and glyphs are stamped from pixmaps drawn once:
    antialiased, translucent lines cost ~3 ms a redraw for 50 marks on four plots, these
    well under 1 ms (bench/telemetry.py)."""

    def __init__(self, colors: Sequence[str], background: str) -> None:
        super().__init__()
        self._colors = [QColor(c) for c in colors]
        # Faded toward the background, not translucent: blending costs ~10x more.
        self._line_colors = [_faded(c, QColor(background), LINE_OPACITY) for c in self._colors]
        self._glyphs: tuple[float, list[QPixmap]] | None = None  # (pixel ratio, glyphs)
        self._marks = MarkSet.empty()
        self._merged: tuple[float, MarkSet] | None = None
        self.setZValue(20)

    def set_marks(self, marks: MarkSet) -> None:
        self._marks = marks
        self._merged = None
        self.update()

    @property
    def placed(self) -> MarkSet:
        """Every mark, unmerged."""
        return self._marks

    def merged(self) -> MarkSet:
        """The marks as drawn at the current zoom."""
        view = self.getViewBox()
        if view is None or not len(self._marks):
            return self._marks
        tolerance = MERGE_PX * float(view.viewPixelSize()[0])
        if self._merged is None or self._merged[0] != tolerance:
            self._merged = (tolerance, group_marks(self._marks, tolerance))
        return self._merged[1]

    def boundingRect(self) -> QRectF:
        rect = self.viewRect()
        return QRectF() if rect is None else QRectF(rect)

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()

    def paint(self, p: QPainter, *_: Any) -> None:
        marks, rect = self.merged(), self.viewRect()
        if not len(marks) or rect is None:
            return
        to_px = p.transform()  # a view only scales and moves: no rotation or shear
        ys = (to_px.map(QPointF(0.0, rect.top())).y(), to_px.map(QPointF(0.0, rect.bottom())).y())
        top, bottom = round(min(ys)), round(max(ys))
        shown = (marks.x >= rect.left()) & (marks.x <= rect.right())  # in this window
        xs = np.floor(to_px.m11() * marks.x[shown] + to_px.dx()).astype(int)
        severities = marks.severity[shown]
        glyphs = self._glyph_pixmaps(p.device().devicePixelRatioF())
        half = round(GLYPH_PX) + 1
        p.save()
        p.resetTransform()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        below = top + 2 * half  # a line starts under its glyph
        for severity, line_color in enumerate(self._line_colors):
            mine = xs[severities == severity].tolist()
            glyph = glyphs[severity]
            for x in mine:  # whole-pixel fills: the cheapest way Qt draws a 1 px line
                p.fillRect(x, below, 1, bottom - below, line_color)
                p.drawPixmap(x - half + 1, top, glyph)
        p.restore()

    def _glyph_pixmaps(self, ratio: float) -> list[QPixmap]:
        if self._glyphs is None or self._glyphs[0] != ratio:
            self._glyphs = (ratio, [_glyph(s, c, ratio) for s, c in enumerate(self._colors)])
        return self._glyphs[1]


def _faded(color: QColor, background: QColor, opacity: float) -> QColor:
    def mix(a: int, b: int) -> int:
        return round(a * opacity + b * (1 - opacity))

    return QColor(mix(color.red(), background.red()), mix(color.green(), background.green()),
                  mix(color.blue(), background.blue()))


def _glyph(severity: int, color: QColor, ratio: float) -> QPixmap:
    """The glyph of a severity, antialiased once into a pixmap."""
    size = 2 * (round(GLYPH_PX) + 1)
    pixmap = QPixmap(round(size * ratio), round(size * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    p = QPainter(pixmap)
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(color)
    at, r = QPointF(size / 2, size / 2), GLYPH_PX
    if severity == 0:
        p.drawEllipse(at, r - 0.5, r - 0.5)
    else:
        points = ([QPointF(-r, -r), QPointF(r, -r), QPointF(0, r)] if severity == 1 else
                  [QPointF(0, -r - 1), QPointF(r, 0), QPointF(0, r + 1), QPointF(-r, 0)])
        p.drawPolygon(QPolygonF([at + q for q in points]))
    p.end()
    return pixmap


class HoverReadout:
    """Under the pointer: a dotted crosshair and, beside the pointer, the time and each
    curve's value there (``lines(x)``: one HTML line per curve); on a mark, its events
    in a tooltip instead of the values."""

    def __init__(self, plot: pg.PlotWidget, theme: Theme, marks: MarkLayer,
                 lines: Callable[[float], list[str]]) -> None:
        self._plot = plot
        self._theme = theme
        self._marks = marks
        self._lines = lines
        fg = QColor(theme.foreground)
        self._crosshair = pg.InfiniteLine(
            angle=90, movable=False, pen=pg.mkPen(fg, width=1, style=Qt.PenStyle.DotLine))
        bg = QColor(theme.background)
        bg.setAlpha(225)
        self._readout = pg.TextItem(anchor=(0, 1), fill=pg.mkBrush(bg),
                                    border=pg.mkPen(fg.darker(150) if theme.dark
                                                    else fg.lighter(300)))
        self._readout.setZValue(30)
        self._tip_shown = False
        for item in (self._crosshair, self._readout):
            item.setVisible(False)
            plot.getPlotItem().addItem(item, ignoreBounds=True)

    def at_scene(self, pos: QPointF) -> None:
        """The pointer moved to ``pos`` (scene coordinates)."""
        view = self._plot.getPlotItem().getViewBox()
        if not view.sceneBoundingRect().contains(pos):
            self.end()
            return
        at = view.mapSceneToView(pos)
        self.show(at.x(), at.y())
        tip = self._marks.merged().text_near(at.x(), TIP_PX * float(view.viewPixelSize()[0]))
        if tip:  # on a mark: its events in a tooltip, in place of the read-out
            self._readout.setVisible(False)
            where = self._plot.mapToGlobal(self._plot.mapFromScene(pos))
            QToolTip.showText(where, tip, self._plot)
        self._hide_tip(keep=bool(tip))

    def show(self, x: float, y: float) -> None:
        """The crosshair at ``x``, the read-out beside (x, y), away from the edges."""
        lines = [f"<b>{format_offset(x)}</b>", *self._lines(x)]
        self._readout.setHtml(
            f"<div style='color:{self._theme.foreground}'>{'<br>'.join(lines)}</div>")
        (x0, x1), (y0, y1) = self._plot.getPlotItem().viewRange()
        self._readout.setAnchor((1 if x > (x0 + x1) / 2 else 0, 0 if y > (y0 + y1) / 2 else 1))
        self._readout.setPos(x, y)
        self._crosshair.setValue(x)
        self._crosshair.setVisible(True)
        self._readout.setVisible(True)

    def text(self) -> str | None:
        """What the read-out shows now (plain text), None while hidden."""
        return self._readout.textItem.toPlainText() if self._readout.isVisible() else None

    def end(self) -> None:
        self._crosshair.setVisible(False)
        self._readout.setVisible(False)
        self._hide_tip(keep=False)

    def _hide_tip(self, *, keep: bool) -> None:
        """Hide the mark tooltip this plot showed (no other), unless it is to stay."""
        if not keep and self._tip_shown:
            QToolTip.hideText()
        self._tip_shown = keep
