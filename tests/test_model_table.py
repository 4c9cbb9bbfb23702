"""The models table and its actions: the Qt model alone, the panel, and the real window with
the real bridge and a simulated engine."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QAbstractItemModelTester
from PySide6.QtWidgets import QMessageBox

from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets import model_table as mt
from gpuwarden.widgets.model_panel import ModelPanel
from gpuwarden.widgets.model_table import ModelTableModel
from gpuwarden.widgets.theme import DARK
from lifecycle_helpers import model

pytestmark = pytest.mark.qt


def row(name: str, **kw: Any) -> ModelRow:
    base: dict[str, Any] = dict(
        name=name, backend="simulated", state="unloaded", device="unloaded", placement="auto",
        gpu=0, gpu_layers=None, layers=32, vram_mib=None, vram_est_mib=0.0, ram_mib=0.0,
        priority=0, priority_source="config", eviction="idle", eviction_source="config",
        activity="idle", idle_s=None, requests=0, serving=False, crashes_in_a_row=0,
        last_crash_kind=None, restart_at=None, restart_in_s=None, returns_to_gpu_at=None,
        waiting_for=None)
    base.update(kw)
    return ModelRow(**base)


def ready(name: str, **kw: Any) -> ModelRow:
    base: dict[str, Any] = dict(state="ready", device="gpu", gpu_layers=32, vram_mib=6250.0,
                                vram_est_mib=6000.0, idle_s=5.0)
    base.update(kw)
    return row(name, **base)


def cell(model: ModelTableModel, name: str, column: int,
         role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    return model.index(model.row_of(name), column).data(role)


# -- the Qt model ---------------------------------------------------------------------------


def test_the_model_passes_qts_model_tester_as_rows_come_change_and_go(qapp):
    model = ModelTableModel(DARK)
    tester = QAbstractItemModelTester(
        model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    resets: list[int] = []
    model.modelReset.connect(lambda: resets.append(1))
    model.update((row("a"), row("b")))
    model.update((ready("a"), row("b"), row("c")))
    model.update((ready("a", idle_s=65.0), row("c")))
    model.update((row("d"), ready("a", idle_s=70.0), row("c", state="loading", device="loading")))
    model.update(())
    model.update((row("e"),))
    assert [r.name for r in model.rows()] == ["e"]
    assert resets == []
    del tester


def test_update_changes_rows_in_place_and_only_inserts_or_removes_on_a_new_set(qapp):
    model = ModelTableModel(DARK)
    seen: list[tuple[str, int, int]] = []
    model.rowsInserted.connect(lambda _p, a, b: seen.append(("insert", a, b)))
    model.rowsRemoved.connect(lambda _p, a, b: seen.append(("remove", a, b)))
    model.dataChanged.connect(lambda a, b: seen.append(
        ("changed", a.row(), b.row(), a.column(), b.column())))
    model.update((row("a"), row("b"), row("c")))
    assert seen == [("insert", 0, 2)]
    seen.clear()
    model.update((row("a"), ready("b"), ready("c")))
    assert seen == [("changed", 1, 1, mt.STATE, mt.VRAM), ("changed", 1, 1, mt.IDLE, mt.IDLE),
                    ("changed", 2, 2, mt.STATE, mt.VRAM), ("changed", 2, 2, mt.IDLE, mt.IDLE)]
    seen.clear()
    model.update((row("a"), ready("b"), ready("c")))
    assert seen == []  # nothing changed: no signal at all
    model.update((row("a"), ready("b", idle_s=5.2), ready("c")))
    assert seen == []  # a change no cell shows (5 s idle either way): no signal either
    model.update((ready("c"), row("a")))
    assert seen == [("remove", 1, 1)]


def test_cells_read_in_plain_words_with_units(qapp):
    model = ModelTableModel(DARK)
    model.update((
        ready("full", priority=3, priority_source="user", eviction="never",
              eviction_source="user", idle_s=190.0, requests=12),
        ready("part", device="partial", gpu_layers=16, vram_mib=None, vram_est_mib=3000.0,
              ram_mib=2500.0, eviction="pressure"),
        ready("cpu", device="cpu", gpu_layers=None, vram_mib=0.0, vram_est_mib=0.0,
              ram_mib=700.0, idle_s=4000.0),
        row("small", state="loading", device="loading", vram_est_mib=700.0),
        row("later", state="restarting", device="crashed", restart_in_s=3.2,
            crashes_in_a_row=2, last_crash_kind="oom"),
        row("dead", state="gave_up", device="crashed", crashes_in_a_row=5,
            last_crash_kind="exit"),
        row("held", state="waiting", waiting_for="GPU 0 is at 88 °C"),
        row("off"),
    ))
    assert cell(model, "full", mt.STATE) == "ready"
    assert cell(model, "full", mt.PLACEMENT) == "GPU 0"
    assert cell(model, "full", mt.VRAM) == "6.1 GiB (est. 5.9 GiB)"
    assert cell(model, "full", mt.PRIORITY) == "3 (you)"
    assert cell(model, "full", mt.POLICY) == "pinned (you)"
    assert cell(model, "full", mt.IDLE) == "3 min"
    assert cell(model, "full", mt.REQUESTS) == "12"
    assert cell(model, "part", mt.PLACEMENT) == "GPU 0 · 16 of 32 layers"
    assert cell(model, "part", mt.VRAM) == "est. 2.9 GiB"
    assert cell(model, "part", mt.RAM) == "2.4 GiB"
    assert cell(model, "part", mt.POLICY) == "pressure"
    assert cell(model, "cpu", mt.PLACEMENT) == "CPU"
    assert cell(model, "cpu", mt.VRAM) == "—"
    assert cell(model, "cpu", mt.RAM) == "700 MiB"
    assert cell(model, "cpu", mt.IDLE) == "1 h 6 min"
    assert cell(model, "small", mt.VRAM) == "est. 700 MiB"
    assert cell(model, "small", mt.PLACEMENT) == "→ GPU 0"
    assert cell(model, "later", mt.STATE) == "restart in 3 s"
    assert cell(model, "later", mt.CRASHES) == "2"
    assert cell(model, "later", mt.CRASHES, Qt.ItemDataRole.ToolTipRole) == "last crash: oom"
    assert "last crash: oom" in cell(model, "later", mt.STATE, Qt.ItemDataRole.ToolTipRole)
    assert cell(model, "dead", mt.STATE) == "gave up"
    assert "GPU 0 is at 88 °C" in cell(model, "held", mt.STATE, Qt.ItemDataRole.ToolTipRole)
    assert cell(model, "off", mt.PLACEMENT) == "—"
    assert cell(model, "off", mt.IDLE) == "—"
    assert cell(model, "off", mt.CRASHES) == "—"

    def colour(name: str) -> QColor:
        return cell(model, name, mt.STATE, Qt.ItemDataRole.ForegroundRole).color()

    assert colour("full") == QColor(DARK.state_ok)
    assert colour("small") == colour("held") == QColor(DARK.state_busy)
    assert colour("later") == colour("dead") == QColor(DARK.state_bad)
    assert cell(model, "off", mt.STATE, Qt.ItemDataRole.ForegroundRole) is None
    assert cell(model, "full", mt.STATE, Qt.ItemDataRole.BackgroundRole) is not None
    assert model.index(0, 0).parent() == QModelIndex()


# -- the panel ------------------------------------------------------------------------------


@pytest.fixture
def panel(qtbot) -> ModelPanel:
    widget = ModelPanel(DARK)
    qtbot.addWidget(widget)
    widget.resize(1000, 300)
    widget.show()
    return widget


def visible_names(panel: ModelPanel) -> list[str]:
    return [panel.proxy.index(i, mt.NAME).data() for i in range(panel.proxy.rowCount())]


def test_updates_keep_the_selection_and_the_sort(panel: ModelPanel):
    panel.set_rows((ready("a", vram_mib=1000.0), ready("b", vram_mib=3000.0),
                    ready("c", vram_mib=2000.0)))
    panel.table.sortByColumn(mt.VRAM, Qt.SortOrder.DescendingOrder)
    assert visible_names(panel) == ["b", "c", "a"]
    panel.select("c")
    for tick in range(5):  # ticks that change every row, and one that reorders them
        panel.set_rows((ready("a", vram_mib=1000.0 + tick, idle_s=tick),
                        ready("b", vram_mib=3000.0, idle_s=tick),
                        ready("c", vram_mib=2000.0 + 2000 * (tick == 4), idle_s=tick)))
        assert panel.selected() is not None and panel.selected().name == "c"
    assert visible_names(panel) == ["c", "b", "a"]
    assert panel.selected().idle_s == 4
    panel.set_rows((ready("c", vram_mib=4000.0), ready("d", vram_mib=5000.0)))
    assert visible_names(panel) == ["d", "c"]
    assert panel.selected().name == "c"
    assert panel.table.horizontalHeader().sortIndicatorSection() == mt.VRAM


def test_each_action_is_enabled_only_where_it_makes_sense(panel: ModelPanel):
    rows = {
        "unloaded": row("m"), "loading": row("m", state="loading", device="loading"),
        "waiting": row("m", state="waiting"), "ready": ready("m"),
        "ready_cpu": ready("m", device="cpu", gpu_layers=None),
        "ready_partial": ready("m", device="partial", gpu_layers=10),
        "stopping": row("m", state="stopping", device="stopping"),
        "crashed": row("m", state="crashed", device="crashed"),
        "restarting": row("m", state="restarting", device="crashed", restart_in_s=2.0),
        "gave_up": row("m", state="gave_up", device="crashed"),
    }
    expected = {  # load, unload, move to CPU, restart
        "unloaded": (1, 0, 0, 0), "loading": (0, 1, 0, 0), "waiting": (0, 1, 0, 0),
        "ready": (0, 1, 1, 1), "ready_cpu": (0, 1, 0, 1), "ready_partial": (0, 1, 1, 1),
        "stopping": (0, 0, 0, 0), "crashed": (1, 0, 0, 1), "restarting": (1, 1, 0, 0),
        "gave_up": (1, 0, 0, 1),
    }
    for key, r in rows.items():
        panel.set_rows((r,))
        got = tuple(int(a.isEnabled()) for a in (panel.load_action, panel.unload_action,
                                                  panel.move_action, panel.restart_action))
        assert got == expected[key], key
        assert panel.pin_action.isEnabled()
        assert panel.buttons["load"].isEnabled() == bool(expected[key][0])
    panel.set_rows((ready("m", eviction="never"),))
    assert panel.pin_action.text() == panel.buttons["pin"].text() == "Unpin"
    panel.set_rows((ready("m", eviction="idle"),))
    assert panel.buttons["pin"].text() == "Pin"
    panel.table.clearSelection()
    assert not any(a.isEnabled() for a in panel.actions())


def test_actions_emit_commands_with_shortcuts_and_a_context_menu(panel: ModelPanel, qtbot):
    panel.set_rows((ready("m"),))
    sent: list[tuple[str, tuple[Any, ...]]] = []
    panel.action_requested.connect(lambda c, a: sent.append((c, a)))
    for button in ("load", "unload", "move_to_cpu", "restart", "pin"):
        panel.buttons[button].click()
    assert sent == [("unload", ("m",)), ("offload", ("m",)), ("restart", ("m",)),
                    ("pin", ("m",))]  # Load is disabled for a ready model
    shortcuts = {a.text(): a.shortcut().toString() for a in panel.actions()}
    assert shortcuts == {"Load": "Ctrl+L", "Unload": "Ctrl+U", "Move to CPU": "Ctrl+M",
                         "Restart": "Ctrl+R", "Pin": "Ctrl+P", "Raise priority": "Ctrl++",
                         "Lower priority": "Ctrl+-", "Test prompt…": "Ctrl+T"}
    menu = panel.context_menu()
    assert [a.text() for a in menu.actions()] == [
        "Load", "Unload", "Move to CPU", "Restart", "Pin", "", "Eviction policy", "Priority",
        "", "Test prompt…"]
    menu.deleteLater()


def test_policy_and_priority_menus_set_or_give_back_the_config_values(panel: ModelPanel):
    panel.set_rows((ready("m", priority=2),))
    sent: list[tuple[str, tuple[Any, ...]]] = []
    panel.action_requested.connect(lambda c, a: sent.append((c, a)))
    policies = {a.text(): a for a in panel.policy_menu.actions()}
    policies["Unload only under pressure"].trigger()
    policies["As in the config"].trigger()
    panel.raise_action.trigger()
    panel.lower_action.trigger()
    [back] = [a for a in panel.priority_menu.actions() if a.text() == "As in the config"]
    back.trigger()
    assert sent == [("set_policy", ("m", "pressure")), ("set_policy", ("m", None)),
                    ("set_priority", ("m", 3)), ("set_priority", ("m", 1)),
                    ("set_priority", ("m", None))]
    panel.set_rows((ready("m", eviction="pressure", eviction_source="user"),))
    panel.policy_menu.aboutToShow.emit()
    assert [a.text() for a in panel.policy_menu.actions() if a.isChecked()] == [
        "Unload only under pressure"]
    panel.table.clearSelection()
    assert not panel.buttons["policy"].isEnabled() and not panel.raise_action.isEnabled()


def test_unloading_a_serving_model_asks_first(panel: ModelPanel, monkeypatch):
    panel.set_rows((ready("m", serving=True),))
    assert panel.proxy.index(0, mt.STATE).data() == "ready · serving"
    sent: list[str] = []
    panel.action_requested.connect(lambda c, a: sent.append(c))
    answers = iter((QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Yes))
    asked: list[str] = []

    def question(_parent: object, _title: str, text: str, *_: object) -> object:
        asked.append(text)
        return next(answers)

    monkeypatch.setattr(QMessageBox, "question", question)
    panel.unload()
    assert sent == [] and "m is answering a request" in asked[0]
    panel.unload()
    assert sent == ["unload"]
    panel.set_rows((ready("m", serving=False),))
    panel.unload()
    assert sent == ["unload", "unload"] and len(asked) == 2  # not serving: no question


# -- the real window ------------------------------------------------------------------------


def test_the_window_buttons_drive_the_engine_and_the_row_follows(qtbot, window_with):
    bridge, window = window_with(Config(models=(
        model("chat", vram_mib=6000.0, ram_mib=6000.0, load_time_s=0.3),)))
    panel = window.model_panel
    qtbot.waitUntil(lambda: panel.selected() is not None, timeout=10_000)
    states: list[str] = []
    bridge.models_changed.connect(lambda rows: states.append(rows[0].state))

    def current() -> ModelRow:
        found = panel.selected()
        assert found is not None and found.name == "chat"
        return found

    def answer() -> str:
        return window.command_label.text()

    assert current().state == "unloaded" and not panel.buttons["unload"].isEnabled()
    qtbot.mouseClick(panel.buttons["load"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: current().state == "ready", timeout=10_000)
    assert "loading" in states
    assert "Loading chat" in answer()
    assert panel.proxy.index(0, mt.PLACEMENT).data() == "GPU 0"
    assert panel.proxy.index(0, mt.VRAM).data() == "5.9 GiB (est. 5.9 GiB)"

    panel.buttons["move_to_cpu"].click()
    qtbot.waitUntil(lambda: current().state == "ready" and current().device == "cpu",
                    timeout=10_000)
    assert panel.proxy.index(0, mt.PLACEMENT).data() == "CPU"
    assert "Moving chat to the CPU" in answer()
    assert not panel.buttons["move_to_cpu"].isEnabled()

    panel.move_to_cpu()  # the button is off; the engine refuses it too, and says why
    qtbot.waitUntil(lambda: "refused" in answer(), timeout=10_000)
    assert answer() == "Move to CPU refused: chat is not on a GPU (cpu)"
    assert DARK.state_busy in window.command_label.styleSheet()

    states.clear()
    panel.buttons["restart"].click()
    qtbot.waitUntil(lambda: any(s != "ready" for s in states) and current().state == "ready",
                    timeout=10_000)
    assert "Restarting chat" in answer()
    assert window.command_label.styleSheet() == ""  # a done answer is plain

    panel.buttons["pin"].click()
    qtbot.waitUntil(lambda: current().eviction == "never", timeout=10_000)
    assert panel.proxy.index(0, mt.POLICY).data() == "pinned (you)"
    assert panel.buttons["pin"].text() == "Unpin"
    panel.buttons["pin"].click()
    qtbot.waitUntil(lambda: current().eviction == "idle", timeout=10_000)
    assert panel.buttons["pin"].text() == "Pin"

    panel.buttons["unload"].click()
    qtbot.waitUntil(lambda: current().state == "unloaded", timeout=10_000)
    assert panel.buttons["load"].isEnabled() and not panel.buttons["unload"].isEnabled()
    assert panel.proxy.index(0, mt.PLACEMENT).data() == "—"


def test_answers_stay_out_of_the_way_of_the_simulation_note(qtbot, window_with):
    bridge, window = window_with(Config(models=(model("chat", load_time_s=0.1),)))
    qtbot.waitUntil(lambda: "Simulated" in window.note_label.text(), timeout=10_000)
    window.show_answer("Load refused: no room", warning=True)
    with qtbot.waitSignal(bridge.snapshot_ready, timeout=10_000):
        pass  # a new sample refreshes the note, not the answer
    assert window.command_label.text() == "Load refused: no room"
    assert "Simulated" in window.note_label.text()


def test_the_row_follows_a_replacement_without_losing_the_selection(panel: ModelPanel):
    panel.set_rows((ready("a"), row("b")))
    panel.select("b")
    panel.set_rows((ready("a"), replace(row("b"), state="loading", device="loading")))
    assert panel.selected().state == "loading"



def test_a_load_under_way_shows_how_long_and_unload_cancels_it(panel: ModelPanel):
    panel.set_rows((row("m", state="loading", device="loading", loading_for_s=12.4),))
    assert panel.proxy.index(0, mt.STATE).data() == "loading 12 s"
    assert panel.unload_action.isEnabled() and panel.unload_action.text() == "Cancel load"
    panel.set_rows((ready("m"),))
    assert panel.unload_action.text() == "Unload"


def test_the_engine_says_how_long_a_load_has_taken():
    from helpers import drive
    from test_engine_facade import engine_for

    engine, clock, _ = engine_for(model("slow", load_time_s=30.0))
    engine.load("slow")
    drive(engine, clock, 5.0)
    slow = engine.model("slow")
    assert slow is not None and slow.state == "loading"
    assert slow.loading_for_s == pytest.approx(5.0, abs=1.0)
    drive(engine, clock, 30.0)
    assert engine.model("slow").loading_for_s is None  # ready: no longer loading
    engine.close()
