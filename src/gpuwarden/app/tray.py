"""gpuwarden in the system tray: an icon whose dot shows the health, a tooltip with each
GPU's VRAM, temperature and power, a menu (open the window, load or unload each model,
Free VRAM…, pause automation, emergency stop, quit) rebuilt each time it opens, and the
desktop notifications :class:`NoticePolicy` lets through.

Where the desktop has no tray (:func:`app_prefs.tray_available`), there is no icon and no
notification: the window stays open, closing it quits, and the app says so once. What
closing the window does with a tray is :mod:`gpuwarden.app.close_to_tray`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Slot
from PySide6.QtGui import QAction, QFont, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.app.close_to_tray import CloseToTray
from gpuwarden.app.notices import Notice, NoticePolicy
from gpuwarden.app.single_window import bring_forward
from gpuwarden.app.tray_look import health_icon, tooltip
from gpuwarden.engine.alerts import Health
from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.events import AutomationChanged, Event
from gpuwarden.engine.lifecycle.core_state import AdminResult
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.telemetry.snapshot import Snapshot
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.model_panel import CAN_LOAD, CAN_UNLOAD
from gpuwarden.widgets.model_table import state_text

if TYPE_CHECKING:
    from gpuwarden.app.window import MainWindow

log = logging.getLogger(__name__)

NO_TRAY = ("no system tray on this desktop: closing the window quits gpuwarden, and no "
           "desktop notifications are shown")
MAX_MODELS = 10  # models listed in the menu; the rest are in the window
MESSAGE_MS = 10_000
_MESSAGE_ICON = {"info": QSystemTrayIcon.MessageIcon.Information,
                 "warning": QSystemTrayIcon.MessageIcon.Warning,
                 "error": QSystemTrayIcon.MessageIcon.Critical}


class Tray(QObject):
    """The tray icon of ``window``. ``available``: whether the desktop has a tray (None:
    ask :func:`app_prefs.tray_available`). Without one, ``icon`` is None and the rest is
    quiet. ``post(notice)`` shows a notification (tests replace it to count them)."""

    def __init__(self, window: MainWindow, bridge: EngineBridge,
                 available: bool | None = None) -> None:
        super().__init__(window)
        self._window = window
        self._bridge = bridge
        self.available = app_prefs.tray_available() if available is None else available
        self.health: Health = "ok"
        self.paused = False  # automation, as the last automation.changed said
        self.policy = NoticePolicy(SystemClock(), self.wanted)
        self.post: Callable[[Notice], None] = self._show_message
        self.last_notice: Notice | None = None  # what a click on a notification opens
        self._loads: set[int] = set()  # load previews asked for from the menu
        self._sent: dict[int, str] = {}  # commands sent from the menu: what they were
        self._icons: dict[Health, QIcon] = {}
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.timeout.connect(self.post_due)
        self.menu = QMenu(window)
        self.menu.aboutToShow.connect(self.build_menu)
        self.icon: QSystemTrayIcon | None = None
        self.closing = CloseToTray(window, self)
        if not self.available:
            log.warning(NO_TRAY)
            window.show_answer(NO_TRAY[:1].upper() + NO_TRAY[1:], warning=False)
            return
        self.icon = QSystemTrayIcon(self._icon("ok"), self)
        self.icon.setToolTip("gpuwarden")
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_activated)
        self.icon.messageClicked.connect(self._on_message_clicked)
        bridge.answered.connect(self._on_answered)
        bridge.command_finished.connect(self._on_command_finished)
        if QSystemTrayIcon.isSystemTrayAvailable():  # tests pretend; offscreen shows none
            self.icon.show()

    # -- what the engine says ----------------------------------------------------------------

    def on_snapshot(self, snap: Snapshot) -> None:
        """The tooltip from the latest sample; the icon if the health changed."""
        if self.icon is None:
            return
        text = tooltip(snap, self._bridge.rows, self._window.alerts.board.active())
        if self.icon.toolTip() != text:
            self.icon.setToolTip(text)
        self.refresh_health()

    def on_event(self, event: Event) -> None:
        """After the window's alerts took ``event`` in: the icon's health, the pause
        state, and a notification if the policy lets one through."""
        if isinstance(event, AutomationChanged):
            self.paused = event.paused
        if self.icon is None:
            return
        self.refresh_health()
        notice = self.policy.offer(event)
        if notice is not None:
            self._notify(notice)
        self._plan_flush()

    def refresh_health(self) -> None:
        """The icon follows the worst active alert; it is redrawn only when that changes."""
        health = self._window.alerts.board.level()
        if health != self.health and self.icon is not None:
            self.health = health
            self.icon.setIcon(self._icon(health))

    def wanted(self, kind: str) -> bool:
        """Whether the user wants notifications of ``kind`` (Settings > Window)."""
        return app_prefs.notify(self._window.prefs, kind)

    def _icon(self, health: Health) -> QIcon:
        if health not in self._icons:
            self._icons[health] = health_icon(health)
        return self._icons[health]

    # -- the menu ----------------------------------------------------------------------------

    @Slot()
    def build_menu(self) -> None:
        """The menu as things are now; built each time it opens, never on a tick."""
        menu = self.menu
        menu.clear()
        _add(menu, "Open gpuwarden", self.open_window)
        menu.addSeparator()
        rows = self._bridge.rows
        for row in rows[:MAX_MODELS]:
            self._add_model(menu, row)
        if len(rows) > MAX_MODELS:
            _add(menu, f"{len(rows) - MAX_MODELS} more models in the window…",
                 self.open_window)
        if not rows:
            _add(menu, "No models configured", self.open_window).setEnabled(False)
        menu.addSeparator()
        _add(menu, "Free VRAM…", self.free_vram)
        pause = menu.addAction("Pause automation")
        pause.setCheckable(True)
        pause.setChecked(self.paused)  # as the engine last said
        pause.triggered.connect(self.pause_automation)
        _add(menu, "Emergency stop…", self.emergency_stop)
        menu.addSeparator()
        _add(menu, "Quit gpuwarden", self.quit)

    def _add_model(self, menu: QMenu, row: ModelRow) -> None:
        head = _add(menu, f"{row.name} · {state_text(row)}",
                    partial(self.open_model, row.name))
        font = QFont(head.font())
        font.setBold(True)
        head.setFont(font)
        if row.state in CAN_LOAD:
            _add(menu, f"Load {row.name}", partial(self.load, row.name))
        if row.state in CAN_UNLOAD:
            verb = "Cancel load" if row.state in ("loading", "waiting") else "Unload"
            _add(menu, f"{verb} {row.name}", partial(self.unload, row.name))

    def open_window(self) -> None:
        bring_forward(self._window)

    def open_model(self, name: str) -> None:
        bring_forward(self._window)
        self._window.model_panel.select(name)

    def open_gpu(self, index: int) -> None:
        bring_forward(self._window)
        self._window.show_gpu(index)

    def load(self, name: str) -> None:
        """As the window's Load: a load that will not fit asks first, in the window."""
        self._loads.add(self._window.commands.send("load", (name,)))

    def unload(self, name: str) -> None:
        self._sent[self._window.commands.send("unload", (name,))] = f"Unload {name}"

    @Slot(bool)
    def pause_automation(self, paused: bool) -> None:
        what = "Pause automation" if paused else "Resume automation"
        self._sent[self._window.commands.send("pause_automation", (paused,))] = what

    def free_vram(self) -> None:
        bring_forward(self._window)
        self._window.free_vram()

    def emergency_stop(self) -> None:
        bring_forward(self._window)
        self._window.emergency_stop()

    def quit(self) -> None:
        """Quit for real: the window closes (its models stop unless left running)."""
        self.closing.quit()

    @Slot(int, object)
    def _on_answered(self, query_id: int, answer: object) -> None:
        if query_id not in self._loads:
            return
        self._loads.discard(query_id)
        if isinstance(answer, LoadPreview) and not answer.fits:
            bring_forward(self._window)  # the window asks how to load it
        elif isinstance(answer, AdminResult):
            self._say_refusal("Load", answer)  # e.g. not in the config any more

    @Slot(int, object)
    def _on_command_finished(self, command_id: int, result: object) -> None:
        what = self._sent.pop(command_id, None)
        if what is not None and isinstance(result, AdminResult):
            self._say_refusal(what, result)

    def _say_refusal(self, title: str, result: AdminResult) -> None:
        """A refusal of a command from the menu, where the user is looking: the window's
        status bar has it when the window shows, a notification when it is hidden."""
        if not result.ok and not self._window.isVisible():
            self.post(Notice("refused", f"{title} refused", result.message, "warning"))

    # -- notifications -----------------------------------------------------------------------

    def _notify(self, notice: Notice) -> None:
        self.last_notice = notice
        self.post(notice)

    def _plan_flush(self) -> None:
        delay = self.policy.next_due()
        if delay is not None and not self._flush.isActive():
            self._flush.start(round(delay * 1000) + 50)

    @Slot()
    def post_due(self) -> None:
        """Show the summaries the policy has due (its timer calls this)."""
        for notice in self.policy.due():
            self._notify(notice)
        self._plan_flush()

    def _show_message(self, notice: Notice) -> None:
        if self.icon is not None:
            self.icon.showMessage(notice.title, notice.body, _MESSAGE_ICON[notice.severity],
                                  MESSAGE_MS)

    @Slot()
    def _on_message_clicked(self) -> None:
        """The window, on the model or GPU of the last notification (the tray tells not
        which one was clicked)."""
        notice = self.last_notice
        if notice is not None and notice.model is not None:
            self.open_model(notice.model)
        elif notice is not None and notice.gpu is not None:
            self.open_gpu(notice.gpu)
        else:
            self.open_window()

    @Slot(QSystemTrayIcon.ActivationReason)
    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger,
                      QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_window()


def _add(menu: QMenu, text: str, slot: Callable[[], object]) -> QAction:
    action = menu.addAction(text)
    action.triggered.connect(lambda _=False: slot())
    return action

