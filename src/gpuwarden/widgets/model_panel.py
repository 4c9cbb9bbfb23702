"""The models table with its actions: Load, Unload, Move to CPU, Restart, Pin/Unpin,
and the eviction policy and priority menus.

The panel only asks: it emits ``action_requested(command, args)`` and the window sends
that to the engine. Each action is enabled only where it makes sense for the selected
row's state; the same actions are in the table's context menu and on keyboard shortcuts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QItemSelection, QPoint, QSortFilterProxyModel, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.views import TEXT_BACKENDS, ModelRow
from gpuwarden.widgets.confirm import confirm
from gpuwarden.widgets.model_table import (
    NAME,
    ROW_ROLE,
    SORT_ROLE,
    ModelTableModel,
)
from gpuwarden.widgets.theme import Theme

CAN_LOAD = frozenset({"unloaded", "crashed", "gave_up", "restarting"})
CAN_UNLOAD = frozenset({"waiting", "loading", "ready", "restarting"})
CAN_RESTART = frozenset({"ready", "crashed", "gave_up"})


# The eviction policy menu: what the user reads, what the engine is told (None: the
# config's own policy again).
POLICY_CHOICES: tuple[tuple[str, str | None], ...] = (
    ("Unload when idle", "idle"),
    ("Unload only under pressure", "pressure"),
    ("Never unload (pinned)", "never"),
    ("As in the config", None),
)


def can_move_to_cpu(row: ModelRow) -> bool:
    return row.state == "ready" and row.device in ("gpu", "partial")


def can_test_prompt(row: ModelRow) -> bool:
    """A ready model whose server answers chat completions (the window asks the engine
    for its address; ``test_prompt`` is the window's own command, not the engine's)."""
    return row.state == "ready" and row.backend in TEXT_BACKENDS


class ModelPanel(QWidget):
    action_requested = Signal(str, object)  # (engine command, args tuple)

    def __init__(self, theme: Theme) -> None:
        super().__init__()
        self.model = ModelTableModel(theme)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setDynamicSortFilter(True)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(NAME, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(
            self.table.fontMetrics().height() + 8)
        header = self.table.horizontalHeader()
        self.set_column_modes()
        header.setMinimumSectionSize(48)
        header.setHighlightSections(False)
        header.setSectionsMovable(True)  # the order is kept between runs (window_state)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_menu)

        self.load_action = self._action("Load", "Ctrl+L", self.load)
        self.unload_action = self._action("Unload", "Ctrl+U", self.unload)
        self.move_action = self._action("Move to CPU", "Ctrl+M", self.move_to_cpu)
        self.restart_action = self._action("Restart", "Ctrl+R", self.restart)
        self.pin_action = self._action("Pin", "Ctrl+P", self.toggle_pin)
        self.test_prompt_action = self._action("Test prompt…", "Ctrl+T",
                                               lambda: self._ask("test_prompt"))
        self.test_prompt_action.setToolTip(
            "Send the selected ready model a prompt and watch its answer stream (Ctrl+T)")
        self.fit_columns = True  # False once the user's own widths are restored
        self.more_actions: list[QAction] = []  # the window's own (edit, remove) for the menu
        self.policy_menu = self._policy_menu()
        self.priority_menu = self._priority_menu()
        self.buttons: dict[str, QToolButton] = {}
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Models")
        title.setObjectName("modelsTitle")
        buttons.addWidget(title)
        buttons.addSpacing(12)
        for action in (self.load_action, self.unload_action, self.move_action,
                       self.restart_action, self.pin_action):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setMinimumWidth(button.fontMetrics().horizontalAdvance("Move to CPU") + 20)
            self.buttons[action.objectName()] = button
            buttons.addWidget(button)
        for menu in (self.policy_menu, self.priority_menu):
            button = QToolButton()
            button.setText(menu.title().replace("&", ""))
            button.setMenu(menu)
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
            self.buttons[menu.objectName()] = button
            buttons.addWidget(button)
        buttons.addStretch(1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)

        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.model.rowsInserted.connect(self._sync_actions)
        self.model.rowsRemoved.connect(self._sync_actions)
        self._sync_actions()

    def _action(self, text: str, shortcut: str, slot: Callable[[], object]) -> QAction:
        action = QAction(text, self)
        action.setObjectName(text.lower().replace(" ", "_"))
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.setToolTip(f"{text} the selected model ({shortcut})")
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _policy_menu(self) -> QMenu:
        menu = QMenu("Eviction policy", self)
        menu.setObjectName("policy")
        for text, policy in POLICY_CHOICES:
            action = menu.addAction(text)
            action.setCheckable(policy is not None)
            action.setData(policy)
            action.triggered.connect(lambda _=False, p=policy: self._set_policy(p))
        menu.aboutToShow.connect(self._check_policy)
        return menu

    def _priority_menu(self) -> QMenu:
        menu = QMenu("Priority", self)
        menu.setObjectName("priority")
        self.raise_action = self._action("Raise priority", "Ctrl++", lambda: self._nudge(1))
        self.lower_action = self._action("Lower priority", "Ctrl+-", lambda: self._nudge(-1))
        menu.addAction(self.raise_action)
        menu.addAction(self.lower_action)
        menu.addSeparator()
        back = menu.addAction("As in the config")
        back.triggered.connect(self._priority_from_config)
        return menu

    def set_column_modes(self) -> None:
        """Widths fitted to the contents when models come or go, not on every change (Qt's
        ResizeToContents measures every cell at each update); the user may resize them.
        Called again after a saved header state is restored: it holds the modes too."""
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)

    # -- rows -----------------------------------------------------------------------------

    def set_rows(self, rows: Sequence[ModelRow]) -> None:
        first = self.model.rowCount() == 0
        names = [r.name for r in self.model.rows()]
        self.model.update(rows)
        if self.fit_columns and names != [r.name for r in self.model.rows()]:
            self.table.resizeColumnsToContents()
        self._sync_actions()  # once per update, not per changed cell
        if first and self.proxy.rowCount() > 0:  # the first rows: select the top one
            self.table.selectRow(0)

    def selected(self) -> ModelRow | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        row = rows[0].data(ROW_ROLE)
        return row if isinstance(row, ModelRow) else None

    def select(self, name: str) -> None:
        source = self.model.row_of(name)
        if source < 0:
            return
        index = self.proxy.mapFromSource(self.model.index(source, 0))
        self.table.selectRow(index.row())

    def preferred_height(self) -> int:
        """Tall enough for the buttons, the header and every row (at most eight)."""
        rows = max(3, min(8, self.model.rowCount()))
        table = (self.table.horizontalHeader().sizeHint().height()
                 + rows * self.table.verticalHeader().defaultSectionSize()
                 + 2 * self.table.frameWidth() + 4)
        return table + self.buttons["load"].sizeHint().height() + 12

    # -- actions --------------------------------------------------------------------------

    @Slot()
    def load(self) -> None:
        self._ask("load")

    @Slot()
    def unload(self) -> None:
        row = self.selected()
        if row is not None and row.serving and not confirm(
                self, "Unload a model that is serving?",
                f"{row.name} is answering a request right now. Unload it anyway? "
                "The request will fail."):
            return
        self._ask("unload")

    @Slot()
    def move_to_cpu(self) -> None:
        self._ask("offload")

    @Slot()
    def restart(self) -> None:
        self._ask("restart")

    @Slot()
    def toggle_pin(self) -> None:
        row = self.selected()
        if row is not None:
            self._ask("unpin" if row.eviction == "never" else "pin")

    def _set_policy(self, policy: str | None) -> None:
        row = self.selected()
        if row is not None:
            self.action_requested.emit("set_policy", (row.name, policy))

    @Slot()
    def _check_policy(self) -> None:
        row = self.selected()
        for action in self.policy_menu.actions():
            action.setChecked(row is not None and row.eviction_source == "user"
                              and action.data() == row.eviction)

    def _nudge(self, step: int) -> None:
        row = self.selected()
        if row is not None:
            self.action_requested.emit("set_priority", (row.name, row.priority + step))

    @Slot()
    def _priority_from_config(self) -> None:
        row = self.selected()
        if row is not None:
            self.action_requested.emit("set_priority", (row.name, None))

    def _ask(self, command: str) -> None:
        row = self.selected()
        if row is not None:
            self.action_requested.emit(command, (row.name,))

    def context_menu(self) -> QMenu:
        menu = QMenu(self)
        for action in (self.load_action, self.unload_action, self.move_action,
                       self.restart_action, self.pin_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addMenu(self.policy_menu)
        menu.addMenu(self.priority_menu)
        menu.addSeparator()
        menu.addAction(self.test_prompt_action)
        if self.more_actions:
            menu.addSeparator()
            menu.addActions(self.more_actions)
        return menu

    @Slot(QPoint)
    def _show_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid():
            self.table.selectRow(index.row())
        menu = self.context_menu()
        menu.exec(self.table.viewport().mapToGlobal(pos))
        menu.deleteLater()

    @Slot(QItemSelection, QItemSelection)
    def _on_selection(self, selected: QItemSelection, deselected: QItemSelection) -> None:
        self._sync_actions()

    @Slot()
    def _sync_actions(self) -> None:
        row = self.selected()
        state = row.state if row is not None else None
        self.load_action.setEnabled(state in CAN_LOAD)
        self.unload_action.setEnabled(state in CAN_UNLOAD)
        cancels = state in ("loading", "waiting")  # Unload then stops the load under way
        self.unload_action.setText("Cancel load" if cancels else "Unload")
        self.unload_action.setToolTip("Stop loading the selected model (Ctrl+U)" if cancels
                                      else "Unload the selected model (Ctrl+U)")
        self.move_action.setEnabled(row is not None and can_move_to_cpu(row))
        self.restart_action.setEnabled(state in CAN_RESTART)
        self.test_prompt_action.setEnabled(row is not None and can_test_prompt(row))
        self.pin_action.setEnabled(row is not None)
        for menu in (self.policy_menu, self.priority_menu):
            menu.setEnabled(row is not None)
            self.buttons[menu.objectName()].setEnabled(row is not None)
        self.raise_action.setEnabled(row is not None)
        self.lower_action.setEnabled(row is not None)
        pinned = row is not None and row.eviction == "never"
        self.pin_action.setText("Unpin" if pinned else "Pin")
        self.pin_action.setToolTip(
            "Back to the config's eviction policy (Ctrl+P)" if pinned
            else "Never unload or move the selected model (Ctrl+P)")

