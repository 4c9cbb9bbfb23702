"""The models as a table: a thin Qt model over the engine's ModelRow tuples.

:meth:`ModelTableModel.update` changes the rows in place (dataChanged for the rows that
changed; inserts and removals only when the set of models changes), so a sort proxy and
the view's selection survive every tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from gpuwarden.engine.telemetry.snapshot import fmt_mib
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets.theme import Theme

NAME, BACKEND, STATE, PLACEMENT, VRAM, RAM, PRIORITY, POLICY, IDLE, REQUESTS, CRASHES = \
    range(11)
HEADERS = ("Model", "Backend", "State", "Placement", "VRAM", "RAM", "Priority", "Policy",
           "Idle", "Requests", "Crashes")
# What the sort proxy compares: numbers where the text has units.
SORT_ROLE = Qt.ItemDataRole.UserRole
# The row's ModelRow, for the panel's actions.
ROW_ROLE = Qt.ItemDataRole.UserRole + 1

DASH = "—"
_NUMERIC = frozenset({VRAM, RAM, PRIORITY, IDLE, REQUESTS, CRASHES})
_STATE_ORDER = {s: i for i, s in enumerate(
    ("ready", "loading", "waiting", "stopping", "restarting", "crashed", "gave_up",
     "unloaded"))}
_OK, _BUSY, _BAD = "ok", "busy", "bad"
_STATE_KIND = {"ready": _OK, "loading": _BUSY, "waiting": _BUSY, "stopping": _BUSY,
               "crashed": _BAD, "restarting": _BAD, "gave_up": _BAD}
_POLICY_TEXT = {"idle": "idle", "pressure": "pressure", "never": "pinned"}

Index = QModelIndex | QPersistentModelIndex


def state_text(row: ModelRow) -> str:
    if row.state == "gave_up":
        return "gave up"
    if row.state == "restarting":
        return "restart on resume" if row.restart_in_s is None else \
            f"restart in {row.restart_in_s:.0f} s"
    if row.state == "ready" and row.serving:
        return "ready · serving"
    if row.state == "loading" and row.loading_for_s is not None and row.loading_for_s >= 1:
        return f"loading {row.loading_for_s:.0f} s"
    return row.state


def state_tooltip(row: ModelRow) -> str:
    lines = []
    if row.waiting_for:
        lines.append(f"waiting: {row.waiting_for}")
    if row.last_crash_kind:
        lines.append(f"last crash: {row.last_crash_kind}")
    if row.state == "gave_up":
        lines.append(f"gave up after {row.crashes_in_a_row} crashes in a row; "
                     "Load or Restart tries again")
    return "\n".join(lines)


def placement_text(row: ModelRow) -> str:
    if row.gpu_layers is not None:  # on a GPU now (or stopping from one)
        if row.gpu_layers < row.layers:
            return f"GPU {row.gpu} · {row.gpu_layers} of {row.layers} layers"
        return f"GPU {row.gpu}"
    if row.device == "cpu":
        return "CPU"
    if row.state == "loading":
        return "→ CPU" if row.placement == "cpu" else f"→ GPU {row.gpu}"
    return DASH


def placement_tooltip(row: ModelRow) -> str:
    asked = {"gpu": "all on the GPU", "cpu": "on the CPU", "auto": "on the GPU where it fits, "
             "else the CPU"}.get(row.placement, f"{row.placement} layers on the GPU")
    text = f"Loads {asked} (GPU {row.gpu})"
    if row.returns_to_gpu_at is not None:
        text += "\nMoved to the CPU by memory pressure; it goes back when there is room"
    return text


def vram_text(row: ModelRow) -> str:
    measured = row.vram_mib if row.vram_mib else None
    est = fmt_mib(row.vram_est_mib) if row.vram_est_mib > 0 else None
    if measured is not None:
        return f"{fmt_mib(measured)} (est. {est})" if est else fmt_mib(measured)
    return f"est. {est}" if est else DASH


def ram_text(row: ModelRow) -> str:
    return fmt_mib(row.ram_mib) if row.ram_mib > 0 else DASH


def you(text: str, source: str) -> str:
    return f"{text} (you)" if source == "user" else text


def idle_text(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours:.0f} h {rest // 60:.0f} min"


_COLUMN_TEXT: tuple[Callable[[ModelRow], str], ...] = (
    lambda r: r.name,  # NAME
    lambda r: r.backend,  # BACKEND
    state_text,  # STATE
    placement_text,  # PLACEMENT
    vram_text,  # VRAM
    ram_text,  # RAM
    lambda r: you(str(r.priority), r.priority_source),  # PRIORITY
    lambda r: you(_POLICY_TEXT.get(r.eviction, r.eviction), r.eviction_source),  # POLICY
    lambda r: idle_text(r.idle_s),  # IDLE
    lambda r: str(r.requests),  # REQUESTS
    lambda r: str(r.crashes_in_a_row) if r.crashes_in_a_row else DASH,  # CRASHES
)
assert len(_COLUMN_TEXT) == len(HEADERS)


def _display(row: ModelRow, column: int) -> str:
    return _COLUMN_TEXT[column](row)


def _sort_key(row: ModelRow, column: int) -> Any:
    keys: dict[int, Callable[[], Any]] = {
        NAME: lambda: row.name.casefold(),
        STATE: lambda: _STATE_ORDER.get(row.state, 99),
        VRAM: lambda: float(row.vram_mib or row.vram_est_mib or 0.0),
        RAM: lambda: float(row.ram_mib),
        PRIORITY: lambda: row.priority,
        IDLE: lambda: -1.0 if row.idle_s is None else float(row.idle_s),
        REQUESTS: lambda: row.requests,
        CRASHES: lambda: row.crashes_in_a_row,
    }
    key = keys.get(column)
    return key() if key is not None else _display(row, column)


def _tooltip(row: ModelRow, column: int) -> str | None:
    if column == STATE:
        return state_tooltip(row) or None
    if column == PLACEMENT:
        return placement_tooltip(row)
    if column == CRASHES and row.last_crash_kind:
        return f"last crash: {row.last_crash_kind}"
    if column == VRAM:
        return "measured (estimate the load was planned with)"
    if column in (PRIORITY, POLICY):
        source = row.priority_source if column == PRIORITY else row.eviction_source
        return "set by you" if source == "user" else "from the config"
    return None


class ModelTableModel(QAbstractTableModel):
    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self._rows: list[ModelRow] = []
        fg = {_OK: theme.state_ok, _BUSY: theme.state_busy, _BAD: theme.state_bad}
        self._fg = {k: QBrush(QColor(c)) for k, c in fg.items()}
        self._bg: dict[str, QBrush] = {}
        for kind, colour in fg.items():
            tint = QColor(colour)
            tint.setAlpha(40 if theme.dark else 28)
            self._bg[kind] = QBrush(tint)

    # -- the model's data ---------------------------------------------------------------

    def rows(self) -> tuple[ModelRow, ...]:
        return tuple(self._rows)

    def row_of(self, name: str) -> int:
        return next((i for i, r in enumerate(self._rows) if r.name == name), -1)

    def update(self, rows: Sequence[ModelRow]) -> None:
        """Take the engine's new rows: models that went away are removed, the rest change in
        place, new ones are appended. Never a reset, so sorting and selection survive."""
        new = {r.name: r for r in rows}
        for i in range(len(self._rows) - 1, -1, -1):
            if self._rows[i].name not in new:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._rows[i]
                self.endRemoveRows()
        for i, old in enumerate(self._rows):
            row = new.pop(old.name)
            if row == old:
                continue
            self._rows[i] = row
            # Only the cells whose text (or the state's colour) changed: the view repaints
            # them and the sort proxy re-sorts only when the sorted column did.
            for first, last in _runs(_changed_columns(old, row)):
                self.dataChanged.emit(self.index(i, first), self.index(i, last))
        if new:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(new) - 1)
            self._rows.extend(new.values())
            self.endInsertRows()

    # -- QAbstractTableModel ------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(HEADERS)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row, column = self._rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return _display(row, column)
        if role == SORT_ROLE:
            return _sort_key(row, column)
        if role == ROW_ROLE:
            return row
        if role == Qt.ItemDataRole.ToolTipRole:
            return _tooltip(row, column)
        if role == Qt.ItemDataRole.TextAlignmentRole:
            if column in _NUMERIC:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            return int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        if column == STATE and (kind := _STATE_KIND.get(row.state)) is not None:
            if role == Qt.ItemDataRole.ForegroundRole:
                return self._fg[kind]
            if role == Qt.ItemDataRole.BackgroundRole:
                return self._bg[kind]
        return None

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(HEADERS):
            return HEADERS[section]
        if orientation == Qt.Orientation.Vertical and 0 <= section < len(self._rows):
            return str(section + 1)
        return None


def _changed_columns(old: ModelRow, new: ModelRow) -> list[int]:
    """The cells a person would see change (the state's tooltip says why it is in that
    state; other tooltips follow their text)."""
    return [c for c in range(len(HEADERS))
            if _display(old, c) != _display(new, c)
            or (c == STATE and (old.state, state_tooltip(old)) != (new.state, state_tooltip(new)))]


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs
