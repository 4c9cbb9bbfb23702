"""The details panel: settings with their sources, history with crashes in red, the
crashes, the end of the log and the buttons that open it; cheap to call every second."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QColor, QDesktopServices

from gpuwarden.engine.details import (
    DEFAULT,
    FROM_WINDOW,
    CrashEntry,
    HistoryEntry,
    ModelDetails,
    Setting,
)
from gpuwarden.widgets.model_details import (
    CRASHES_TAB,
    LOG_TAB,
    PLACEHOLDER,
    ModelDetailsPanel,
    dimmed,
)
from gpuwarden.widgets.theme import DARK, LIGHT

pytestmark = pytest.mark.qt

T0 = 1_700_000_000.0


def details(log_path: Path | None = None, **kw: Any) -> ModelDetails:
    base: dict[str, Any] = dict(
        name="chat", backend="llama-server",
        settings=(Setting("backend", "llama-server", "config file line 3"),
                  Setting("context_size", "8192", "config file line 5"),
                  Setting("placement", "auto", DEFAULT),
                  Setting("priority", "7", FROM_WINDOW)),
        history=(HistoryEntry(T0 + 9, "model.ready", "chat is ready on the GPU"),
                 HistoryEntry(T0 + 8, "model.loading", "chat is loading on the GPU"),
                 HistoryEntry(T0 + 5, "model.crashed", "chat crashed (exit code 1)"),
                 HistoryEntry(T0, "model.ready", "chat is ready on the GPU")),
        crashes=(CrashEntry(T0 + 5, "crash", 1, None),),
        log_path=log_path, log_exists=log_path is not None,
        log_tail=tuple(f"log line {n}" for n in range(40)) if log_path else (),
        log_note="" if log_path else "the simulated backend writes no log")
    base.update(kw)
    return ModelDetails(**base)


@pytest.fixture
def panel(qtbot) -> ModelDetailsPanel:
    widget = ModelDetailsPanel(DARK)
    qtbot.addWidget(widget)
    widget.resize(700, 300)
    widget.show()
    return widget


def texts(tree, row: int) -> list[str]:
    item = tree.topLevelItem(row)
    return [item.text(col) for col in range(tree.columnCount())]


def color(tree, row: int, col: int) -> QColor:
    return tree.topLevelItem(row).foreground(col).color()


def test_nothing_selected_shows_a_placeholder(panel):
    panel.show_details(None)
    assert panel.stack.currentWidget() is panel.placeholder
    assert panel.placeholder.text() == PLACEHOLDER
    panel.show_details(details())
    assert panel.stack.currentWidget() is not panel.placeholder
    panel.show_details(None)
    assert panel.stack.currentWidget() is panel.placeholder


def test_settings_show_their_value_and_where_it_came_from_in_a_dimmer_colour(panel):
    panel.show_details(details())
    tree = panel.settings
    assert [texts(tree, r) for r in range(tree.topLevelItemCount())] == [
        ["backend", "llama-server", "config file line 3"],
        ["context_size", "8192", "config file line 5"],
        ["placement", "auto", "default"],
        ["priority", "7", "set in the window"]]
    assert color(tree, 0, 2) == dimmed(DARK) != QColor(DARK.foreground)
    assert tree.topLevelItem(1).font(1).bold() and not tree.topLevelItem(2).font(1).bold()


def test_dimmed_text_sits_between_foreground_and_background_in_both_themes():
    for theme in (DARK, LIGHT):
        fg, bg, dim = QColor(theme.foreground), QColor(theme.background), dimmed(theme)
        assert min(fg.lightness(), bg.lightness()) < dim.lightness() < \
            max(fg.lightness(), bg.lightness())


def test_history_is_listed_newest_first_with_crashes_in_the_bad_colour(panel):
    panel.show_details(details())
    tree = panel.history
    assert [texts(tree, r)[1] for r in range(tree.topLevelItemCount())] == [
        "chat is ready on the GPU", "chat is loading on the GPU", "chat crashed (exit code 1)",
        "chat is ready on the GPU"]
    assert color(tree, 2, 1) == QColor(DARK.state_bad)
    assert color(tree, 0, 1) != QColor(DARK.state_bad)


def test_crashes_have_their_kind_and_exit_code_and_a_summary(panel):
    panel.show_details(details())
    assert texts(panel.crashes, 0)[1:] == ["crash", "1", "\u2013"]
    assert panel.tabs.tabText(CRASHES_TAB) == "Crashes (1)"
    assert "1 crash" in panel.summary.text() and "crash, exit code 1" in panel.summary.text()
    panel.show_details(details(crashes=()))
    assert panel.crashes.topLevelItemCount() == 0
    assert panel.summary.text() == "no crashes" and panel.tabs.tabText(CRASHES_TAB) == "Crashes"


def test_the_log_tail_is_shown_read_only_and_scrolled_to_its_end(panel, qtbot, tmp_path):
    panel.tabs.setCurrentIndex(LOG_TAB)
    panel.show_details(details(tmp_path / "chat.log"))
    view = panel.log_view
    assert view.isReadOnly()
    assert view.toPlainText().splitlines() == [f"log line {n}" for n in range(40)]
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=2000)
    assert bar.value() == bar.maximum()
    more = details(tmp_path / "chat.log", log_tail=tuple(f"log line {n}" for n in range(1, 41)))
    panel.show_details(more)
    assert view.toPlainText().endswith("log line 40") and bar.value() == bar.maximum()


def test_a_log_shown_while_its_tab_was_hidden_is_at_its_end_when_opened(panel, qtbot,
                                                                        tmp_path):
    panel.show_details(details(tmp_path / "chat.log"))  # the Settings tab is in front
    panel.tabs.setCurrentIndex(LOG_TAB)
    bar = panel.log_view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=2000)
    assert bar.value() == bar.maximum()
    panel.resize(700, 200)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum() and panel.log_view.height() < 200,
                    timeout=2000)


def test_a_log_scrolled_up_by_the_user_stays_where_it_is(panel, qtbot, tmp_path):
    panel.tabs.setCurrentIndex(LOG_TAB)
    panel.show_details(details(tmp_path / "chat.log"))
    bar = panel.log_view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=2000)
    bar.setValue(3)
    panel.show_details(details(tmp_path / "chat.log",
                               log_tail=tuple(f"log line {n}" for n in range(1, 41))))
    assert bar.value() == 3


def test_an_unchanged_update_keeps_the_history_where_the_user_scrolled(panel, qtbot):
    many = tuple(HistoryEntry(T0 - n, "model.ready", f"event {n}") for n in range(50))
    panel.tabs.setCurrentIndex(1)
    panel.show_details(details(history=many))
    bar = panel.history.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 10, timeout=2000)
    bar.setValue(10)
    item = panel.history.topLevelItem(0)
    panel.show_details(details(history=many))
    assert bar.value() == 10 and panel.history.topLevelItem(0) is item
    newer = (HistoryEntry(T0 + 1, "model.unloaded", "newest"), *many[:-1])
    panel.show_details(details(history=newer))
    assert bar.value() == 10 and texts(panel.history, 0)[1] == "newest"


def test_open_log_opens_the_file_and_the_folder(panel, qtbot, tmp_path, monkeypatch):
    opened: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl",
                        staticmethod(lambda url: opened.append(url) or True))
    log = tmp_path / "chat.log"
    panel.show_details(details(log))
    assert panel.open_log_button.isEnabled() and panel.open_folder_button.isEnabled()
    panel.open_log_button.click()
    panel.open_folder_button.click()
    assert opened == [QUrl.fromLocalFile(str(log)), QUrl.fromLocalFile(str(tmp_path))]


def test_a_failed_open_is_reported(panel, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: False))
    panel.show_details(details(tmp_path / "chat.log"))
    with qtbot.waitSignal(panel.open_failed, timeout=1000) as said:
        panel.open_log_button.click()
    assert said.args == [f"could not open {tmp_path / 'chat.log'}"]


def test_without_a_log_the_buttons_are_disabled_and_say_why(panel, tmp_path):
    panel.show_details(details())
    assert not panel.open_log_button.isEnabled() and not panel.open_folder_button.isEnabled()
    assert "the simulated backend writes no log" in panel.open_log_button.toolTip()
    assert panel.log_view.placeholderText() == "the simulated backend writes no log"
    missing = dataclasses.replace(details(tmp_path / "chat.log"), log_exists=False,
                                  log_tail=(), log_note="no log yet: it does not exist")
    panel.show_details(missing)
    assert not panel.open_log_button.isEnabled()
    assert "no log yet" in panel.open_log_button.toolTip()
    assert panel.log_view.toPlainText() == ""
