"""Commands from the window that ask first: a Load that will not fit whole (load part of
it, swap the named models out, cancel) and Free VRAM, through the real bridge and a
simulated engine."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtWidgets import QLabel

from gpuwarden.app.window import MainWindow
from gpuwarden.engine.lifecycle import state as lifecycle_state
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.views import ModelRow
from gpuwarden.widgets.free_vram import FreeVramDialog
from gpuwarden.widgets.load_choice import LoadChoiceDialog
from lifecycle_helpers import model

pytestmark = pytest.mark.qt


def _wait_for_dialog(qtbot, window: MainWindow, kind: type) -> Any:
    qtbot.waitUntil(lambda: isinstance(window.commands.dialog, kind), timeout=10_000)
    return window.commands.dialog


def big_pair() -> Config:
    return Config(models=(model("a", vram_mib=14 * 1024.0, placement="gpu", load_time_s=0.1),
                          model("b", vram_mib=14 * 1024.0, load_time_s=0.1)))


def test_a_load_that_does_not_fit_asks_first_and_loads_part_of_it(qtbot, window_with):
    bridge, window = window_with(big_pair())
    panel = window.model_panel

    def state(name: str) -> ModelRow:
        return next(r for r in bridge.rows if r.name == name)

    qtbot.waitUntil(lambda: len(bridge.rows) == 2, timeout=10_000)
    panel.select("a")
    panel.buttons["load"].click()  # fits whole: no question
    qtbot.waitUntil(lambda: state("a").state == "ready", timeout=10_000)
    assert window.commands.dialog is None
    panel.select("b")
    panel.buttons["load"].click()
    dialog = _wait_for_dialog(qtbot, window, LoadChoiceDialog)
    assert "b needs about 14.0 GiB on GPU 0" in dialog.findChild(QLabel, "loadChoiceText").text()
    assert dialog.partial_button.text().startswith("Load ") and "of 32 layers" in \
        dialog.partial_button.text()
    dialog.cancel_button.click()  # cancel: nothing happens
    assert window.commands.dialog is None and state("b").state == "unloaded"
    panel.buttons["load"].click()
    dialog = _wait_for_dialog(qtbot, window, LoadChoiceDialog)
    dialog.partial_button.click()
    qtbot.waitUntil(lambda: state("b").state == "ready", timeout=10_000)
    assert state("b").device == "partial" and 0 < (state("b").gpu_layers or 0) < 32
    assert state("a").state == "ready"
    assert "layers on GPU 0" in window.command_label.text()


def test_the_swap_choice_names_the_models_it_unloads(qtbot, window_with, monkeypatch):
    monkeypatch.setattr(lifecycle_state, "ACTIVE_WINDOW_S", 0.3)  # "just used" for 0.3 s
    bridge, window = window_with(big_pair())
    panel = window.model_panel
    qtbot.waitUntil(lambda: len(bridge.rows) == 2, timeout=10_000)
    window.commands.send("load", ("a",))
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
    qtbot.waitUntil(lambda: bridge.rows[0].activity != "active", timeout=10_000)
    panel.select("b")
    panel.buttons["load"].click()
    dialog = _wait_for_dialog(qtbot, window, LoadChoiceDialog)
    assert dialog.swap_button is not None and dialog.swap_button.text().startswith("Unload a (")
    dialog.swap_button.click()
    qtbot.waitUntil(lambda: bridge.rows[1].state == "ready", timeout=10_000)
    assert (bridge.rows[0].state, bridge.rows[1].device) == ("unloaded", "gpu")


def test_free_vram_says_what_it_moved(qtbot, window_with):
    bridge, window = window_with(Config(models=(
        model("chat", vram_mib=6000.0, load_time_s=0.1),
        model("pinned", vram_mib=2000.0, load_time_s=0.1, eviction="never"))))
    qtbot.waitUntil(lambda: len(bridge.rows) == 2 and bridge.latest is not None,
                    timeout=10_000)
    for name in ("chat", "pinned"):
        window.commands.send("load", (name,))
    qtbot.waitUntil(lambda: all(r.state == "ready" for r in bridge.rows), timeout=10_000)
    window.commands.free_vram(0)
    dialog = _wait_for_dialog(qtbot, window, FreeVramDialog)
    holdings = dialog.holdings.text()
    assert "chat: 5.9 GiB" in holdings and "pinned: 2.0 GiB — stays (pinned)" in holdings
    dialog.free_button.click()
    qtbot.waitUntil(lambda: bridge.rows[0].device == "cpu", timeout=10_000)
    assert bridge.rows[1].device == "gpu"
    assert window.command_label.text() == "Moving chat to the CPU: about 5.9 GiB freed on GPU 0"


def test_the_selected_model_shows_its_details_and_history(qtbot, window_with):
    _, window = window_with(Config(models=(model("chat", load_time_s=0.1),
                                                model("other", load_time_s=0.1))))
    panel, details = window.model_panel, window.details_panel
    qtbot.waitUntil(lambda: details.shown is not None, timeout=10_000)
    assert details.shown.name == "chat"  # the first row is selected at start
    panel.select("other")
    qtbot.waitUntil(lambda: details.shown.name == "other", timeout=10_000)
    window.commands.send("load", ("other",))
    qtbot.waitUntil(lambda: any("ready" in h.text for h in details.shown.history),
                    timeout=10_000)
    assert details.history.topLevelItemCount() >= 2  # loading, then ready
    panel.table.clearSelection()
    qtbot.waitUntil(lambda: details.shown is None, timeout=10_000)


def test_free_vram_is_off_when_every_model_on_the_gpu_stays(qtbot):
    from gpuwarden.widgets.free_vram import FreeVramDialog
    from helpers import gpu
    from test_model_table import ready

    rows = (ready("pinned", eviction="never"), ready("busy", serving=True),
            ready("other", gpu=1))
    dialog = FreeVramDialog((gpu(0), gpu(1)), rows, 0)
    qtbot.addWidget(dialog)
    assert not dialog.free_button.isEnabled()
    assert "pinned" in dialog.holdings.text() and "serving a request" in dialog.holdings.text()
    dialog.gpu_choice.setCurrentIndex(1)
    assert dialog.free_button.isEnabled() and "other" in dialog.holdings.text()
