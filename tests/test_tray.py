"""The tray icon on the real window, bridge and simulated engine: its dot follows the
alerts, its tooltip the GPUs, its menu loads and unloads models and pauses automation, and
crashes become a few notifications, not one each."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtGui import QColor

import tray_rig
from gpuwarden.app.notices import NoticePolicy
from gpuwarden.app.tray_look import DOT_COLOURS, dot_centre
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import ModelCrashed
from gpuwarden.engine.lifecycle.config import Config, RestartConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.load_choice import LoadChoiceDialog
from lifecycle_helpers import model
from test_window import service, simulated
from test_window_alerts import SCENARIO as PRESSURE
from test_window_crash import CRASH

tray_window = tray_rig.tray_window  # fixtures
with_tray = tray_rig.with_tray

# bring_forward raises the window: the offscreen platform cannot, and says so.
pytestmark = [pytest.mark.qt, pytest.mark.qt_log_ignore("This plugin does not support raise")]


def dot(window) -> QColor:
    image = window.tray.icon.icon().pixmap(32, 32).toImage()
    return image.pixelColor(*dot_centre(32))


def scenario(tmp_path: Path, text: str, config: Config | None = None):
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    opts = TelemetryOptions(simulate=SimulateSpec(scenario=path), interval_s=0.25)
    return service(lambda: build_sampler(opts), config)


def menu_texts(window) -> list[str]:
    window.tray.menu.aboutToShow.emit()  # as when it opens
    return [a.text() for a in window.tray.menu.actions() if not a.isSeparator()]


def trigger(window, text: str) -> None:
    window.tray.menu.aboutToShow.emit()
    [action] = [a for a in window.tray.menu.actions() if a.text() == text]
    action.trigger()


def state(bridge, name: str) -> str:
    return next(r.state for r in bridge.rows if r.name == name)


def test_pressure_turns_the_dot_amber_and_back_and_the_tooltip_has_each_gpu(
        qtbot, tray_window, tmp_path: Path):
    _, window, posted = tray_window(scenario(tmp_path, PRESSURE))
    tray = window.tray
    assert tray.health == "ok" and dot(window) != QColor(DOT_COLOURS["warning"])
    qtbot.waitUntil(lambda: tray.health == "warning", timeout=10_000)
    assert dot(window) == QColor(DOT_COLOURS["warning"])
    tip = tray.icon.toolTip().splitlines()
    assert tip[1].startswith("GPU 0: ") and tip[2].startswith("GPU 1: ")
    assert " / 8.0 GiB · " in tip[2] and tip[2].endswith(" W") and " °C · " in tip[2]
    assert "GPU 1 VRAM pressure" in tip[-1]
    assert [(n.kind, n.gpu) for n in posted] == [("pressure.raised", 1)]
    qtbot.waitUntil(lambda: tray.health == "ok", timeout=10_000)
    assert dot(window) != QColor(DOT_COLOURS["warning"])
    assert len(posted) == 1  # the clearing is no news


def test_a_crash_that_gives_up_turns_the_dot_red_notifies_once_and_load_clears_it(
        qtbot, tray_window, tmp_path: Path):
    config = Config(models=(model("chat", vram_mib=2000.0, load_time_s=0.1, autostart=True),
                            model("other", load_time_s=0.1)),
                    restart=RestartConfig(max_consecutive=0))
    bridge, window, posted = tray_window(scenario(tmp_path, CRASH, config))
    qtbot.waitUntil(lambda: window.tray.health == "error", timeout=10_000)
    assert dot(window) == QColor(DOT_COLOURS["error"])
    assert [n.kind for n in posted] == ["model.crashed", "model.restart_exhausted"]
    assert posted[0].title == "chat crashed" and "exit code 1" in posted[0].body
    window.model_panel.select("other")
    window.hide()
    window.tray.icon.messageClicked.emit()  # a click on the notification ...
    assert window.isVisible()  # ... opens the window on the model
    assert window.model_panel.selected().name == "chat"
    assert "chat · gave up" in menu_texts(window)
    trigger(window, "Load chat")
    qtbot.waitUntil(lambda: state(bridge, "chat") == "ready", timeout=10_000)
    qtbot.waitUntil(lambda: window.tray.health == "ok", timeout=5000)
    assert len(posted) == 2


def test_the_menu_lists_the_models_and_loads_and_unloads_them(qtbot, tray_window):
    config = Config(models=(model("chat", vram_mib=2000.0, load_time_s=0.1),
                            model("embed", vram_mib=1000.0, load_time_s=0.1)))
    bridge, window, _ = tray_window(simulated(1, config))
    qtbot.waitUntil(lambda: len(bridge.rows) == 2, timeout=10_000)
    assert menu_texts(window) == [
        "Open gpuwarden", "chat · unloaded", "Load chat", "embed · unloaded", "Load embed",
        "Free VRAM…", "Pause automation", "Emergency stop…", "Quit gpuwarden"]
    window.hide()
    trigger(window, "Load chat")
    qtbot.waitUntil(lambda: state(bridge, "chat") == "ready", timeout=10_000)
    assert not window.isVisible()  # it fitted: nothing to ask, the window stays hidden
    texts = menu_texts(window)
    assert texts[1:5] == ["chat · ready", "Unload chat", "embed · unloaded", "Load embed"]
    trigger(window, "Unload chat")
    qtbot.waitUntil(lambda: state(bridge, "chat") == "unloaded", timeout=10_000)
    trigger(window, "chat · unloaded")  # the model's line opens the window on it
    assert window.isVisible() and window.model_panel.selected().name == "chat"


def test_a_load_from_the_menu_that_does_not_fit_asks_in_the_window(qtbot, tray_window):
    config = Config(models=(model("a", vram_mib=14 * 1024.0, placement="gpu", load_time_s=0.1),
                            model("b", vram_mib=14 * 1024.0, load_time_s=0.1)))
    bridge, window, _ = tray_window(simulated(1, config))
    qtbot.waitUntil(lambda: len(bridge.rows) == 2, timeout=10_000)
    trigger(window, "Load a")
    qtbot.waitUntil(lambda: state(bridge, "a") == "ready", timeout=10_000)
    window.hide()
    trigger(window, "Load b")
    qtbot.waitUntil(lambda: isinstance(window.commands.dialog, LoadChoiceDialog),
                    timeout=10_000)
    assert window.isVisible()  # brought forward to ask
    window.commands.dialog.cancel_button.click()
    assert state(bridge, "b") == "unloaded"


def test_pause_automation_from_the_menu_keeps_an_idle_model_until_resumed(qtbot,
                                                                          tray_window):
    config = Config(models=(model("chat", vram_mib=2000.0, load_time_s=0.1,
                                  idle_timeout_s=0.5),))
    bridge, window, _ = tray_window(simulated(1, config))
    qtbot.waitUntil(lambda: len(bridge.rows) == 1, timeout=10_000)
    trigger(window, "Pause automation")
    qtbot.waitUntil(lambda: window.tray.paused, timeout=10_000)  # automation.changed came
    window.tray.menu.aboutToShow.emit()
    [pause] = [a for a in window.tray.menu.actions() if a.text() == "Pause automation"]
    assert pause.isChecked()
    trigger(window, "Load chat")
    qtbot.waitUntil(lambda: state(bridge, "chat") == "ready", timeout=10_000)
    seq = bridge.latest.seq
    qtbot.waitUntil(lambda: bridge.latest.seq >= seq + 8, timeout=10_000)  # 2 s idle
    assert state(bridge, "chat") == "ready"  # paused: no idle unload
    trigger(window, "Pause automation")  # unchecks it: resume
    qtbot.waitUntil(lambda: not window.tray.paused, timeout=10_000)
    qtbot.waitUntil(lambda: state(bridge, "chat") == "unloaded", timeout=10_000)


def test_a_crash_storm_makes_one_notification_then_one_summary(qtbot, tray_window):
    bridge, window, posted = tray_window(simulated(1, Config(models=(model("chat"),))))
    clock = FakeClock()
    window.tray.policy = NoticePolicy(clock, window.tray.wanted)
    for _ in range(20):
        bridge.event_raised.emit(ModelCrashed(model="chat", kind="crash", exit_code=1))
        clock.advance(1.0)
    assert [n.title for n in posted] == ["chat crashed"]
    clock.advance(10.0)
    window.tray.post_due()  # its timer's work, 30 s after the first
    assert [n.title for n in posted] == ["chat crashed", "19 more crashes"]
    assert posted[1].model == "chat"
    window.prefs.setValue(app_prefs.NOTIFY + "model.crashed", False)  # Settings: off
    clock.advance(600.0)
    bridge.event_raised.emit(ModelCrashed(model="chat", kind="crash", exit_code=1))
    assert len(posted) == 2
