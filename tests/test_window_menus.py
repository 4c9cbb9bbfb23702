"""The menu bar and what the window remembers between runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QMessageBox

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.app.menus import about_text
from gpuwarden.app.window import MainWindow
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.widgets import model_table as mt
from gpuwarden.widgets.theme import DARK
from lifecycle_helpers import model
from test_window import simulated

pytestmark = pytest.mark.qt


def test_the_menus_hold_the_usual_entries_with_their_shortcuts(qtbot, window_with):
    _, window = window_with(Config(models=(model("chat", load_time_s=0.1),)))
    menus = window.menus
    assert [m.title() for m in (menus.file, menus.models, menus.view, menus.help)] == [
        "&File", "&Models", "&View", "&Help"]
    assert menus.quit.shortcut().toString() == "Ctrl+Q"
    assert menus.close.shortcut().toString() == "Ctrl+W"
    assert window.model_panel.load_action in menus.models.actions()
    menus.ranges.actions()[1].trigger()  # "Last 10 min"
    assert window.window_seconds == 600.0
    window.window_choice.setCurrentIndex(2)  # and the other way round
    assert [a.isChecked() for a in menus.ranges.actions()] == [False, False, True]
    assert "gpuwarden 0.1.0" in about_text() and "PySide6" in about_text()


def test_emergency_stop_asks_then_stops_every_model(qtbot, window_with, monkeypatch):
    bridge, window = window_with(Config(models=(model("chat", vram_mib=2000.0,
                                                      load_time_s=0.1),)))
    qtbot.waitUntil(lambda: bool(bridge.rows), timeout=10_000)
    window.commands.send("load", ("chat",))
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
    answers = iter((QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Yes))
    monkeypatch.setattr(QMessageBox, "warning", lambda *_: next(answers))
    window.menus.emergency_stop.trigger()  # cancelled
    assert bridge.rows[0].state == "ready"
    window.menus.emergency_stop.trigger()
    qtbot.waitUntil(lambda: bridge.rows[0].state == "unloaded", timeout=10_000)


def test_open_config_says_when_there_is_no_file(qtbot, window_with):
    _, window = window_with(Config())
    window.menus.open_config.trigger()
    assert "No config file" in window.command_label.text()


def test_geometry_column_order_sort_and_time_range_come_back_next_time(qtbot, tmp_path: Path):
    def open_window() -> tuple[EngineBridge, MainWindow]:
        settings = QSettings(str(tmp_path / "gpuwarden.ini"), QSettings.Format.IniFormat)
        bridge = EngineBridge(simulated(1, Config(models=(model("chat"),)))())
        window = MainWindow(bridge, DARK, settings)
        qtbot.addWidget(window)
        return bridge, window

    bridge, first = open_window()
    first.resize(720, 540)
    first.set_window_seconds(3600.0)
    header = first.model_panel.table.horizontalHeader()
    header.moveSection(header.visualIndex(mt.VRAM), 1)  # VRAM dragged next to the name
    first.model_panel.table.sortByColumn(mt.VRAM, Qt.SortOrder.DescendingOrder)
    first.close()
    bridge.stop()
    bridge, second = open_window()
    assert (second.width(), second.height()) == (720, 540)
    assert second.window_seconds == 3600.0
    header = second.model_panel.table.horizontalHeader()
    assert header.visualIndex(mt.VRAM) == 1
    assert (header.sortIndicatorSection(), header.sortIndicatorOrder()) == (
        mt.VRAM, Qt.SortOrder.DescendingOrder)
    second.close()
    bridge.stop()


CONFIG = """# my models (this comment must survive)
[[models]]
name = "chat"   # the one I use
backend = "simulated"
vram_mib = 2000

[[models]]
name = "spare"
backend = "simulated"

[[models]]
name = "comfy"
backend = "command"
command = ["comfyui"]
"""


def test_add_edit_and_remove_go_through_the_config_file(qtbot, open_window, tmp_path: Path,
                                                        monkeypatch):
    from gpuwarden.engine.facade import Engine, ServicePaths
    from gpuwarden.engine.lifecycle.config import load_config
    from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
    from gpuwarden.widgets.model_editor import ModelEditor

    path = tmp_path / "gpuwarden.toml"
    path.write_text(CONFIG)
    config, _ = load_config(path)
    opts = TelemetryOptions(simulate=SimulateSpec(count=1), interval_s=0.25)
    bridge, window = open_window(lambda: Engine(config, build_sampler(opts),
                                                ServicePaths(None, None), config_path=path))
    qtbot.waitUntil(lambda: len(bridge.rows) == 3, timeout=10_000)
    window.menus.add_model.trigger()
    assert isinstance(window.config_actions.dialog, ModelEditor)
    assert window.config_actions.dialog.windowTitle() == "Add a model"
    window.config_actions.dialog.reject()
    window.model_panel.select("chat")
    assert window.menus.edit_model in window.model_panel.context_menu().actions()
    window.menus.edit_model.trigger()
    assert window.config_actions.dialog.windowTitle() == "Edit chat"
    window.config_actions.dialog.reject()
    window.config_actions.dialog = None
    window.model_panel.select("comfy")  # a command: the dialog would rewrite it as GGUF
    window.menus.edit_model.trigger()
    assert window.config_actions.dialog is None
    assert window.command_label.text().startswith("comfy is a command model: the dialog "
                                                  "edits GGUF models only; edit its entry")

    window.model_panel.select("spare")
    monkeypatch.setattr(QMessageBox, "question", lambda *_: QMessageBox.StandardButton.Yes)
    window.menus.remove_model.trigger()
    assert "Removed spare" in window.command_label.text()
    qtbot.waitUntil(lambda: [r.name for r in bridge.rows] == ["chat", "comfy"], timeout=10_000)
    assert "# my models (this comment must survive)" in path.read_text()
    assert "# the one I use" in path.read_text()


def test_a_saved_header_from_an_older_version_does_not_bring_back_its_resize_modes(
        qtbot, tmp_path: Path):
    from PySide6.QtWidgets import QHeaderView

    settings = QSettings(str(tmp_path / "old.ini"), QSettings.Format.IniFormat)
    bridge = EngineBridge(simulated(1, Config(models=(model("chat"),)))())
    window = MainWindow(bridge, DARK)
    qtbot.addWidget(window)
    header = window.model_panel.table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # as 0.1 saved it
    settings.setValue("models/header", header.saveState())
    window.close()
    again = MainWindow(bridge, DARK, settings)
    qtbot.addWidget(again)
    modes = {again.model_panel.table.horizontalHeader().sectionResizeMode(c)
             for c in range(len(mt.HEADERS))}
    assert modes == {QHeaderView.ResizeMode.Interactive}  # measuring every cell each tick
    again.close()
    bridge.stop()


def test_settings_leave_running_takes_effect_for_this_run(qtbot, window_with):
    from gpuwarden.widgets.settings_dialog import SettingsDialog

    bridge, window = window_with(Config(models=(model("chat"),)))
    window.menus.settings.trigger()
    dialog = window.config_actions.dialog
    assert isinstance(dialog, SettingsDialog)
    assert not bridge._worker.leave_running
    dialog.leave_running.setChecked(True)
    dialog.save()
    assert bridge._worker.leave_running  # quitting now leaves the servers running
    assert window.prefs.value("app/leave_running") in (True, "true")


def test_tab_goes_top_to_bottom_then_to_the_details(qtbot, window_with):
    _, window = window_with(Config(models=(model("chat"),)))
    panel, log = window.model_panel, window.event_log
    order = [window.window_choice, *panel.buttons.values(), panel.table,
             window.gpu_tabs, log.model_filter, log.severity_filter, log.search,
             *log.buttons, log.table, window.details_panel.tabs]

    def tab_from(widget):  # where Tab goes: the next widget in the chain that takes it
        start = widget
        widget = widget.nextInFocusChain()
        while not (widget.focusPolicy() & Qt.FocusPolicy.TabFocus and widget.isVisible()
                   and widget.isEnabled()) or widget.parent() is start:  # a tab widget's bar
            widget = widget.nextInFocusChain()
        return widget

    qtbot.waitUntil(lambda: window.details_panel.shown is not None, timeout=10_000)
    order = [w for w in order if w.isEnabled()]  # Tab skips the actions that are off
    for widget, following in itertools.pairwise(order):
        assert tab_from(widget) is following, widget
    assert not any(p.focusPolicy() & Qt.FocusPolicy.TabFocus
                   for p in window.host_panel.findChildren(type(window.host_panel.cpu)))
