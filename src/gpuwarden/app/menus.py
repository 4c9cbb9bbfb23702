"""The window's menu bar: File (add a model, open and reload the config, settings, build
llama-server, close, quit),
Models (the table's actions, Free VRAM…, emergency stop), View (time range) and Help
(about, with the versions a bug report needs)."""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from functools import partial

import pyqtgraph
import PySide6
from PySide6.QtCore import QUrl, qVersion
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QApplication, QMainWindow, QMenu, QMessageBox

from gpuwarden import __version__
from gpuwarden.widgets.model_panel import ModelPanel
from gpuwarden.widgets.plot import WINDOWS_S


def about_text() -> str:
    """What gpuwarden is and the versions it runs with."""
    return (f"<b>gpuwarden {__version__}</b><br>"
            "Keeps local LLM and PyTorch models healthy on your own NVIDIA GPUs.<br><br>"
            f"Python {platform.python_version()} · Qt {qVersion()} · PySide6 "
            f"{PySide6.__version__} · pyqtgraph {pyqtgraph.__version__}<br>"
            f"{platform.system()} {platform.release()} ({sys.platform})")


def add_action(menu: QMenu, text: str, slot: Callable[[], object],
               shortcut: QKeySequence | str | None = None) -> QAction:
    action = menu.addAction(text)
    action.setObjectName(text.rstrip("…").lower().replace(" ", "_"))
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.triggered.connect(lambda _=False: slot())
    return action


class MenuBar:
    """Builds the menus of ``window``; the actions stay reachable for tests."""

    def __init__(self, window: QMainWindow, panel: ModelPanel, *,
                 add_model: Callable[[], object], edit_model: Callable[[], object],
                 remove_model: Callable[[], object], settings: Callable[[], object],
                 build_llama_server: Callable[[], object], open_config: Callable[[], object],
                 reload_config: Callable[[], object], free_vram: Callable[[], object],
                 emergency_stop: Callable[[], object],
                 set_window: Callable[[float], object]) -> None:
        self._window = window
        bar = window.menuBar()
        self.file = bar.addMenu("&File")
        self.add_model = add_action(self.file, "Add model…", add_model, "Ctrl+N")
        self.file.addSeparator()
        self.open_config = add_action(self.file, "Open config file", open_config)
        self.reload_config = add_action(self.file, "Reload config", reload_config, "F5")
        self.settings = add_action(self.file, "Settings…", settings, "Ctrl+,")
        self.build_llama_server = add_action(self.file, "Build llama-server…",
                                             build_llama_server)
        self.file.addSeparator()
        self.close = add_action(self.file, "Close window", window.close,
                                "Ctrl+W")
        self.quit = add_action(self.file, "Quit", QApplication.quit,
                               "Ctrl+Q")
        self.models = bar.addMenu("&Models")
        for action in (panel.load_action, panel.unload_action, panel.move_action,
                       panel.restart_action, panel.pin_action):
            self.models.addAction(action)
        self.models.addMenu(panel.policy_menu)
        self.models.addMenu(panel.priority_menu)
        self.models.addAction(panel.test_prompt_action)
        self.models.addSeparator()
        self.edit_model = add_action(self.models, "Edit model…", edit_model, "Ctrl+E")
        self.remove_model = add_action(self.models, "Remove model…", remove_model)
        self.models.addSeparator()
        self.free_vram = add_action(self.models, "Free VRAM…", free_vram, "Ctrl+Shift+F")
        self.emergency_stop = add_action(self.models, "Emergency stop…", emergency_stop)
        self.view = bar.addMenu("&View")
        self.ranges = QActionGroup(window)
        for label, seconds in WINDOWS_S:
            action = add_action(self.view, f"Last {label}", partial(set_window, seconds))
            action.setCheckable(True)
            action.setData(seconds)
            self.ranges.addAction(action)
        self.help = bar.addMenu("&Help")
        self.about = add_action(self.help, "About gpuwarden", self.show_about)

    def check_range(self, seconds: float) -> None:
        for action in self.ranges.actions():
            action.setChecked(action.data() == seconds)

    def show_about(self) -> None:
        QMessageBox.about(self._window, "About gpuwarden", about_text())


def open_file(path: object) -> bool:
    """Open a file or folder with the desktop's own application."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
