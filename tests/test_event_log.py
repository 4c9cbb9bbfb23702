"""The event log: a table of events, newest first, coloured by severity, with filters,
copy and export."""

from __future__ import annotations

import csv
import html
import json
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtTest import QAbstractItemModelTester

from gpuwarden.engine.events import (
    EmergencyStop,
    Event,
    GpuLost,
    ModelCrashed,
    ModelReady,
    ModelUnloaded,
    PressureAlert,
    PressureRaised,
)
from gpuwarden.widgets import event_table as et
from gpuwarden.widgets.event_log import EventLog
from gpuwarden.widgets.event_table import EventTableModel
from gpuwarden.widgets.theme import DARK, LIGHT

pytestmark = pytest.mark.qt

T0 = time.mktime((2025, 6, 1, 14, 3, 22, 0, 0, -1))


def sample_events() -> list[Event]:
    """Oldest first: two models, every severity."""
    return [
        ModelReady(ts=T0, seq=1, model="chat", placement="gpu", gpu=0, vram_mib=6450.0),
        ModelReady(ts=T0 + 1, seq=2, model="coder", placement="cpu", ram_mib=800.0),
        PressureRaised(ts=T0 + 2, seq=3, kind="vram", gpu=0, value=95.1, threshold=90.0),
        ModelCrashed(ts=T0 + 3, seq=4, model="coder", kind="gpu_oom", exit_code=1),
        ModelUnloaded(ts=T0 + 4, seq=5, model="chat", reason="idle", freed_vram_mib=6450.0),
        GpuLost(ts=T0 + 5, seq=6, gpu=1, message="fell off the bus"),
    ]


@pytest.fixture
def log(qtbot) -> EventLog:
    widget = EventLog(DARK)
    qtbot.addWidget(widget)
    for event in sample_events():
        widget.add_event(event)
    return widget


def shown_seqs(log: EventLog) -> list[int]:
    return [e.seq for e in log.visible_events()]


# -- the Qt model ----------------------------------------------------------------------------


def test_the_model_passes_qts_model_tester_while_rows_come_and_the_oldest_go(qapp):
    model = EventTableModel(DARK, max_rows=3)
    tester = QAbstractItemModelTester(model, QAbstractItemModelTester.FailureReportingMode.Fatal)
    removed: list[tuple[int, int]] = []
    model.rowsRemoved.connect(lambda _p, first, last: removed.append((first, last)))
    for event in sample_events():
        model.add(event)
    assert model.rowCount() == 3
    assert [model.event_at(r).seq for r in range(3)] == [6, 5, 4]  # newest first
    assert removed == [(3, 3), (3, 3), (3, 3)]  # the oldest, at the bottom
    del tester


def test_cells_show_time_severity_model_and_the_sentence(qapp):
    model = EventTableModel(DARK)
    model.add(sample_events()[0])
    cell = lambda column, role=Qt.ItemDataRole.DisplayRole: model.index(0, column).data(role)  # noqa: E731
    assert cell(et.TIME) == "14:03:22"
    assert cell(et.TIME, Qt.ItemDataRole.ToolTipRole) == "2025-06-01 14:03:22"
    assert cell(et.SEVERITY) == "Info"
    assert cell(et.MODEL) == "chat"
    assert cell(et.WHAT) == "chat is ready on GPU 0, holds 6.3 GiB VRAM"
    assert cell(et.WHAT) in html.unescape(cell(et.WHAT, Qt.ItemDataRole.ToolTipRole))
    assert model.headerData(et.WHAT, Qt.Orientation.Horizontal) == "What"


@pytest.mark.parametrize("theme", [DARK, LIGHT], ids=["dark", "light"])
def test_errors_and_warnings_are_coloured_from_the_theme(qapp, theme):
    model = EventTableModel(theme)
    for event in sample_events()[:4]:
        model.add(event)

    def colour(row: int) -> QColor | None:
        brush = model.index(row, et.WHAT).data(Qt.ItemDataRole.ForegroundRole)
        return None if brush is None else brush.color()

    assert colour(0) == QColor(theme.state_bad)  # the crash
    assert colour(1) == QColor(theme.state_busy)  # the pressure
    assert colour(2) is None  # info: the palette's own text colour


# -- the bar ---------------------------------------------------------------------------------


def test_model_filter_lists_the_models_seen_and_shows_only_theirs(log):
    combo = log.model_filter
    assert [combo.itemText(i) for i in range(combo.count())] == ["All models", "chat", "coder"]
    combo.setCurrentIndex(combo.findText("coder"))
    assert shown_seqs(log) == [4, 2]
    assert log.count_label.text() == "2 of 6 events"
    combo.setCurrentIndex(0)
    assert shown_seqs(log) == [6, 5, 4, 3, 2, 1]
    assert log.count_label.text() == "6 events"


def test_severity_filter_hides_the_milder_rows(log):
    log.severity_filter.setCurrentIndex(log.severity_filter.findText("Warnings and errors"))
    assert shown_seqs(log) == [6, 4, 3]
    log.severity_filter.setCurrentIndex(log.severity_filter.findText("Errors only"))
    assert shown_seqs(log) == [6, 4]


def test_search_matches_the_sentence_the_model_and_the_type_in_any_case(log):
    log.search.setText("GPU MEMORY")
    assert shown_seqs(log) == [4]
    log.search.setText("gpu.lost")
    assert shown_seqs(log) == [6]
    log.search.setText("")
    assert len(shown_seqs(log)) == 6


def test_filters_combine_and_new_events_obey_them(log):
    log.model_filter.setCurrentIndex(log.model_filter.findText("chat"))
    log.search.setText("idle")
    assert shown_seqs(log) == [5]
    log.add_event(ModelUnloaded(ts=T0 + 9, seq=9, model="chat", reason="idle"))
    log.add_event(ModelUnloaded(ts=T0 + 9, seq=10, model="coder", reason="idle"))
    assert shown_seqs(log) == [9, 5]


def test_texts_are_the_rows_shown_newest_first(log):
    texts = log.texts()
    assert len(texts) == 6
    assert texts[0].split("\t") == ["14:03:27", "Error", "",
                                    "GPU 1 was lost (it stopped answering): fell off the bus"]
    assert "chat is ready on GPU 0" in texts[-1]


# -- copy and export ----------------------------------------------------------------------


def test_copy_takes_the_selected_rows_or_every_row_shown(log, qtbot):
    clipboard = QGuiApplication.clipboard()
    log.copy()
    assert clipboard.text().splitlines() == log.texts()
    log.table.selectRow(1)
    log.table.selectionModel().select(
        log.proxy.index(3, 0), log.table.selectionModel().SelectionFlag.Select |
        log.table.selectionModel().SelectionFlag.Rows)
    log.copy()
    lines = clipboard.text().splitlines()
    assert lines == [log.texts()[1], log.texts()[3]]
    assert lines[0].split("\t")[2:] == ["chat", "chat was unloaded because it was idle, "
                                        "freeing 6.3 GiB VRAM"]


def test_ctrl_c_on_the_table_copies_whole_rows(log, qtbot):
    log.show()
    qtbot.waitExposed(log)
    log.table.setFocus()
    log.table.selectRow(0)
    QGuiApplication.clipboard().clear()
    qtbot.keyClick(log.table, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QGuiApplication.clipboard().text() == log.texts()[0]


def test_export_writes_the_rows_shown_as_csv(log, tmp_path: Path):
    log.severity_filter.setCurrentIndex(log.severity_filter.findText("Errors only"))
    messages: list[str] = []
    log.message.connect(messages.append)
    path = tmp_path / "events.csv"
    assert log.export_to(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time", "severity", "model", "what", "type"]
    assert rows[1] == ["2025-06-01 14:03:25", "error", "coder",
                       "coder ran out of GPU memory (exit code 1)", "model.crashed"]
    assert [r[4] for r in rows[1:]] == ["model.crashed", "gpu.lost"]  # oldest first
    assert messages == [f"Exported 2 events to {path}"]


def test_export_writes_the_events_own_dicts_as_json_lines(log, tmp_path: Path):
    log.model_filter.setCurrentIndex(log.model_filter.findText("chat"))
    path = tmp_path / "events.jsonl"
    assert log.export_to(path)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [d["seq"] for d in lines] == [1, 5]
    assert lines[0] == json.loads(json.dumps(sample_events()[0].to_dict()))


def test_an_export_that_cannot_be_written_says_so_and_leaves_nothing(log, tmp_path: Path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    messages: list[str] = []
    log.message.connect(messages.append)
    assert not log.export_to(blocked / "events.csv")
    assert messages and messages[0].startswith("Could not export the events")


# -- the cap and the view -------------------------------------------------------------------


def test_the_log_keeps_the_newest_rows_up_to_its_cap(qtbot):
    log = EventLog(LIGHT, max_rows=50)
    qtbot.addWidget(log)
    for seq in range(1, 121):
        log.add_event(PressureAlert(ts=T0 + seq, seq=seq, kind="ram", gpu=None, value=95.0,
                                    threshold=90.0, throttle=0.5))
    assert log.model.rowCount() == 50
    assert shown_seqs(log)[0] == 120 and shown_seqs(log)[-1] == 71


def test_rows_have_one_height_and_the_sentence_takes_the_spare_width(log, qtbot):
    log.resize(900, 300)
    log.show()
    qtbot.waitExposed(log)
    heights = {log.table.rowHeight(r) for r in range(log.proxy.rowCount())}
    assert len(heights) == 1
    header = log.table.horizontalHeader()
    others = sum(header.sectionSize(c) for c in (et.TIME, et.SEVERITY, et.MODEL))
    assert header.sectionSize(et.WHAT) >= log.table.viewport().width() - others - 1
    assert log.table.verticalScrollMode() == log.table.ScrollMode.ScrollPerPixel


def test_theme_is_optional_until_the_window_passes_one(qtbot):
    log = EventLog()
    qtbot.addWidget(log)
    log.add_event(EmergencyStop(scope="gpu", gpu=0, reason="too hot", models=("chat",)))
    brush = log.model.index(0, et.WHAT).data(Qt.ItemDataRole.ForegroundRole)
    assert brush is not None
    assert log.model.index(0, 0, QModelIndex()).data(et.EVENT_ROLE).type == \
        "safety.emergency_stop"


def test_a_reader_scrolled_down_keeps_their_rows_while_new_ones_arrive(qtbot):
    log = EventLog(DARK)
    qtbot.addWidget(log)
    log.resize(800, 200)
    log.show()
    qtbot.waitExposed(log)
    for seq in range(1, 61):
        log.add_event(GpuLost(ts=T0 + seq, seq=seq, gpu=0))
    bar = log.table.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0, timeout=2000)  # laid out
    bar.setValue(bar.maximum() // 2)

    def top_seq() -> int:
        return log.table.indexAt(log.table.viewport().rect().topLeft()).data(et.EVENT_ROLE).seq

    reading = top_seq()
    for seq in range(61, 64):
        log.add_event(GpuLost(ts=T0 + seq, seq=seq, gpu=0))
    assert top_seq() == reading
    bar.setValue(0)  # at the top the newest row comes into view
    log.add_event(GpuLost(ts=T0 + 64, seq=64, gpu=0))
    assert top_seq() == 64
