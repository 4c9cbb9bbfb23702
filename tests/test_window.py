"""The real window, driven by the real bridge and engine thread with a simulated GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage

from gpuwarden.app.bridge import EngineBridge, running_engine_threads
from gpuwarden.app.window import MainWindow
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions, build_sampler
from gpuwarden.engine.telemetry.probe import NoGpuProbe
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.widgets.theme import DARK, LIGHT
from helpers import StaticHostProbe

pytestmark = pytest.mark.qt


def service(sampler: Callable[[], Sampler], config: Config | None = None
            ) -> Callable[[], Engine]:
    return lambda: Engine(config or Config(), sampler(), ServicePaths(None, None))


def simulated(count: int, config: Config | None = None) -> Callable[[], Engine]:
    opts = TelemetryOptions(simulate=SimulateSpec(count=count), interval_s=0.25)
    return service(lambda: build_sampler(opts), config)


def curve_points(window: MainWindow, gpu: int = 0) -> int:
    if gpu not in window.gpu_panels:
        return 0
    x, _ = window.gpu_panels[gpu].temperature.curve_data("temp")
    return len(x)


def test_two_simulated_gpus_get_a_tab_each_with_live_graphs(qtbot, open_window, tmp_path: Path):
    _, window = open_window(simulated(2))
    qtbot.waitUntil(
        lambda: len(window.gpu_panels) == 2 and curve_points(window, 0) >= 3, timeout=10_000
    )
    assert window.gpu_tabs.count() == 3  # two GPUs, then the host
    assert curve_points(window, 1) == 0  # a hidden tab's graphs wait until it is shown ...
    window.gpu_tabs.setCurrentIndex(1)
    assert curve_points(window, 1) >= 3  # ... and have it all at once
    window.gpu_tabs.setCurrentIndex(0)
    assert window.banner.isHidden()
    panel = window.gpu_panels[0]
    x, y = panel.vram.curve_data("used")
    assert x[-1] == 0.0 and np.all(np.diff(x) > 0)
    assert 0 < y[-1] < 24  # GiB
    assert panel.temperature.limit_value("slowdown") is not None
    assert panel.power.limit_value("limit") is not None
    assert "SIMULATED" in window.source_label.text()
    shot = tmp_path / "window.png"
    assert window.grab().save(str(shot))
    image = QImage(str(shot))
    assert image.width() >= 800 and _distinct_colours(image) > 20  # not a blank frame


def _distinct_colours(image: QImage) -> int:
    step = max(1, image.width() // 60)
    return len(
        {
            image.pixel(x, y)
            for x in range(0, image.width(), step)
            for y in range(0, image.height(), step)
        }
    )


def test_without_a_gpu_the_banner_says_so_and_offers_the_simulated_gpu(qtbot, open_window):
    note = "No NVIDIA GPU driver found. Start with `gpuwarden --simulate` to try it."
    _, window = open_window(
        service(lambda: Sampler(NoGpuProbe(note), StaticHostProbe(), interval_s=0.25))
    )
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=10_000)
    assert "--simulate" in window.banner.text.text()
    assert window.gpu_tabs.count() == 1 and window.gpu_tabs.currentWidget() is \
        window.host_panel  # only the host's graphs
    qtbot.waitUntil(lambda: len(window.host_panel.cpu.curve_data("cpu")[0]) >= 1, timeout=5000)
    window.banner.simulate_button.click()
    qtbot.waitUntil(
        lambda: len(window.gpu_panels) == 1 and window.banner.isHidden(), timeout=10_000
    )
    assert window.gpu_tabs.currentWidget() is window.gpu_panels[0]  # the GPU comes first
    assert [window.gpu_tabs.tabText(i) for i in range(2)][1] == "Host"


def test_picking_a_window_changes_the_visible_time_range(qtbot, open_window):
    _, window = open_window(simulated(1), theme=LIGHT)
    qtbot.waitUntil(lambda: curve_points(window) >= 2, timeout=10_000)
    window.set_window_seconds(600.0)
    (xmin, xmax), _ = window.gpu_panels[0].vram.getPlotItem().viewRange()
    assert xmin == pytest.approx(-600.0) and xmax == pytest.approx(0.0)
    window.gpu_tabs.setCurrentWidget(window.host_panel)
    assert window.host_panel.cpu.getPlotItem().viewRange()[0][0] == pytest.approx(-600.0)


def test_a_lost_gpu_is_marked_and_logged_then_comes_back(qtbot, open_window, tmp_path: Path):
    scenario = tmp_path / "lost.toml"
    scenario.write_text(
        '[simulation]\ngpus = 2\n'
        '[[step]]\nat = 0\naction = "gpu_lost"\ngpu = 1\n'
        '[[step]]\nat = 1.0\naction = "gpu_back"\ngpu = 1\n'
    )
    opts = TelemetryOptions(simulate=SimulateSpec(scenario=scenario), interval_s=0.25)
    _, window = open_window(service(lambda: build_sampler(opts)))

    def tab_text(i: int) -> str:
        return window.gpu_tabs.tabText(i) if window.gpu_tabs.count() > i else ""

    qtbot.waitUntil(lambda: "(lost)" in tab_text(1), timeout=10_000)
    assert "(lost)" not in tab_text(0)
    assert "GPU lost" in window.gpu_panels[1].summary.text()
    qtbot.waitUntil(lambda: any("GPU 1 was lost" in t for t in window.event_log.texts()),
                    timeout=5000)
    qtbot.waitUntil(lambda: tab_text(1) and "(lost)" not in tab_text(1), timeout=10_000)
    assert any("GPU 1 is answering again" in t for t in window.event_log.texts())


def test_closing_the_window_stops_the_engine_thread(qtbot):
    bridge = EngineBridge(simulated(1)())
    window = MainWindow(bridge, DARK)
    qtbot.addWidget(window)
    window.show()
    bridge.start()
    qtbot.waitUntil(lambda: bridge.latest is not None, timeout=10_000)
    window.close()
    assert running_engine_threads() == []


def test_the_window_runs_the_lifecycle_engine_and_logs_its_events(qtbot, open_window):
    from lifecycle_helpers import model

    config = Config(models=(model("chat", vram_mib=6000.0, load_time_s=0.3, autostart=True),))
    _, window = open_window(simulated(1, config))
    qtbot.waitUntil(lambda: any("chat is ready" in t for t in window.event_log.texts()),
                    timeout=10_000)
    assert any("chat is loading" in t for t in window.event_log.texts())
    qtbot.waitUntil(lambda: "5.9 GiB" in window.gpu_panels[0].processes.text()
                    or "model:chat" in window.gpu_panels[0].processes.text(), timeout=10_000)


def test_theme_choice(qapp):
    from gpuwarden.widgets.theme import pick_theme

    assert pick_theme("dark") is DARK and pick_theme("light") is LIGHT
    assert pick_theme("auto") in (DARK, LIGHT)


def test_commands_travel_to_the_engine_thread_and_answer_as_signals(qtbot, open_window):
    from lifecycle_helpers import model

    config = Config(models=(model("chat", vram_mib=6000.0, load_time_s=0.1),))
    bridge, _ = open_window(simulated(1, config))
    qtbot.waitUntil(lambda: bridge.rows != (), timeout=10_000)
    assert [(r.name, r.state) for r in bridge.rows] == [("chat", "unloaded")]
    with qtbot.waitSignal(bridge.command_finished, timeout=10_000) as answer:
        sent = bridge.request("load", "chat")
    assert answer.args[0] == sent and answer.args[1].ok
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
    assert bridge.rows[0].vram_mib == 6000.0
    with qtbot.waitSignal(bridge.command_finished, timeout=10_000) as answer:
        bridge.request("unload", "nope")
    assert not answer.args[1].ok and "'nope'" in answer.args[1].message
    with pytest.raises(ValueError, match="unknown engine command"):
        bridge.request("format_disk")
