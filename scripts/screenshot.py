"""Make the README's screenshots from the real window, with two simulated GPUs.

The simulated GPUs are first run through ten minutes of a scripted workload on a fake
clock (in well under a second), so the picture shows real history rather than a blank
graph; then the real bridge and engine thread drive the window for a few live ticks.
The models table shows five models in different states: ready on a GPU (pinned), moved
to the CPU by pressure, loading, restarting after a crash, and unloaded.

Besides the window in the dark theme (docs/screenshot.png) it writes, into
docs/screenshots/: the window in the light theme, the question before a load that will not
fit, Free VRAM…, the add-model dialog pricing a generated GGUF, and Settings.

    QT_QPA_PLATFORM=offscreen python scripts/screenshot.py [docs]
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from gguf_factory import write_tiny_llama
from gpuwarden.app.bridge import EngineBridge
from gpuwarden.app.window import MainWindow
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, RestartConfig
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.telemetry.host import PsutilHostProbe
from gpuwarden.engine.telemetry.sampler import Sampler
from gpuwarden.engine.telemetry.scenario import parse_scenario
from gpuwarden.engine.telemetry.simulated import SimulatedProbe
from gpuwarden.engine.telemetry.snapshot import HostSample
from gpuwarden.widgets.free_vram import FreeVramDialog
from gpuwarden.widgets.load_choice import LoadChoiceDialog
from gpuwarden.widgets.model_editor import ModelEditor
from gpuwarden.widgets.settings_dialog import SettingsDialog
from gpuwarden.widgets.theme import DARK, LIGHT, Theme, apply_palette
from helpers import drive

WARMUP_S = 600
WORKLOAD = """
[simulation]
gpus = 2
seed = 3
[[simulation.gpu]]
name = "Simulated RTX 4090"
memory_total_mib = 24564
power_limit_w = 450
[[simulation.gpu]]
name = "Simulated RTX 3060"
memory_total_mib = 12288
power_limit_w = 170
[[step]]
at = 300
action = "vram_grab"
owner = "blender"
mib = 7000
[[step]]
at = 60
action = "load"
util_pct = 85
[[step]]
at = 200
action = "power_spike"
watts = 470
duration_s = 20
[[step]]
at = 330
action = "ambient"
celsius = 42
[[step]]
at = 420
action = "load"
util_pct = 35
[[step]]
at = 90
action = "vram_grab"
gpu = 1
owner = "comfyui"
mib = 7000
[[step]]
at = 100
action = "load"
gpu = 1
util_pct = 60
[[step]]
at = 480
action = "vram_free"
gpu = 1
owner = "comfyui"
[[step]]
at = 585
action = "crash"
model = "vision-7b"
"""


class WarmupHost:
    """During the fast-forwarded warm-up, psutil's CPU % would measure the warm-up loop
    itself; this probe reports the real RAM with a calm CPU curve instead. The live ticks
    after the warm-up read the real host."""

    def __init__(self) -> None:
        self._real = PsutilHostProbe()
        self.live = False

    def sample(self, now: float) -> HostSample:
        real = self._real.sample(now)
        if self.live:
            return real
        cpu = 18 + 10 * math.sin(now / 45) + 6 * math.sin(now / 7)
        return HostSample(cpu_pct=cpu, ram_used_mib=real.ram_used_mib,
                          ram_total_mib=real.ram_total_mib, swap_used_mib=real.swap_used_mib,
                          swap_total_mib=real.swap_total_mib, disks=real.disks)


MODELS = Config(models=(
    ModelConfig(name="chat-8b", backend="simulated", placement="gpu", eviction="never",
                vram_mib=6200, load_time_s=3, autostart=True),
    ModelConfig(name="coder-14b", backend="simulated", placement="auto", eviction="pressure",
                vram_mib=9800, ram_mib=11000, load_time_s=6),
    ModelConfig(name="vision-7b", backend="simulated", placement="gpu", gpu=1,
                vram_mib=3000, load_time_s=2, autostart=True),
    ModelConfig(name="embed-0.6b", backend="simulated", placement="gpu", gpu=1,
                vram_mib=700, load_time_s=30),
    ModelConfig(name="draft-1b", backend="simulated", placement="cpu", ram_mib=1400,
                priority=-1),
    ModelConfig(name="qwen-32b", backend="simulated", vram_mib=19500, ram_mib=21000,
                layers=64, load_time_s=20),
), restart=RestartConfig(backoff_base_s=40.0))


def warmed_engine(clock: FakeClock) -> Engine:
    """Ten minutes of a real engine (models, pressure, relief) on a fake clock."""
    probe = SimulatedProbe.from_scenario(parse_scenario(WORKLOAD, "screenshot workload"))
    host = WarmupHost()
    sampler = Sampler(probe, host, clock=clock, interval_s=1.0)
    engine = Engine(MODELS, sampler, ServicePaths(journal=None, hints=None))
    engine.start()
    drive(engine, clock, 45.0)
    engine.load("coder-14b")
    engine.set_priority("coder-14b", 5)
    drive(engine, clock, 425.0)  # GPU 0 overheats on the way: its safety stop unloads both
    engine.load("chat-8b")  # cool again: back on
    engine.load("coder-14b")
    drive(engine, clock, WARMUP_S - 480.0)
    engine.load("embed-0.6b")  # still loading when the picture is taken
    drive(engine, clock, 10.0)
    host.live = True
    return engine


def main(docs: Path) -> int:
    shots = docs / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    window_shot(docs / "screenshot.png", DARK)
    window_shot(shots / "window-light.png", LIGHT)
    dialog_shots(shots)
    return 0


def window_shot(out: Path, theme: Theme) -> None:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_palette(app, theme)
    clock = FakeClock(start=time.time() - WARMUP_S)
    bridge = EngineBridge(warmed_engine(clock), window_s=600.0)
    window = MainWindow(bridge, theme)
    window.resize(1400, 900)
    window.set_window_seconds(600.0)
    window.show()
    bridge.start()
    ticks = {"n": 0}

    def tick_fake_clock() -> None:
        clock.advance(1.0)
        ticks["n"] += 1

    bridge.snapshot_ready.connect(lambda _: tick_fake_clock())

    def refused_move() -> None:  # a refusal, as the status bar shows it
        window.model_panel.select("coder-14b")
        window.model_panel.move_to_cpu()

    QTimer.singleShot(1200, refused_move)

    def finish() -> None:
        window.grab().save(str(out))
        bridge.stop()
        window.close()
        app.quit()

    QTimer.singleShot(2500, finish)
    app.exec()
    print(f"wrote {out} after {ticks['n']} live ticks")


def dialog_shots(shots: Path) -> None:
    """The dialogs, each from the real engine's answers (or a real GGUF file)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_palette(app, DARK)
    engine = warmed_engine(FakeClock(start=time.time() - WARMUP_S))
    preview = engine.load_preview("qwen-32b")
    assert isinstance(preview, LoadPreview) and not preview.fits, preview
    snap = engine.snapshot()
    assert snap is not None
    save(LoadChoiceDialog(preview), shots / "load-choice.png")
    save(FreeVramDialog(snap.gpus, engine.models(), 0), shots / "free-vram.png")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text("# my models\n")
        gguf = write_tiny_llama(Path(tmp) / "tiny-chat-q8_0.gguf")
        editor = ModelEditor(DARK, config, lambda: snap)
        editor.choose_file(gguf)
        deadline = time.monotonic() + 20
        while editor.outcome is None and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
        save(editor, shots / "add-model.png")
        cfg = engine.config
        prefs = QSettings(str(Path(tmp) / "prefs.ini"), QSettings.Format.IniFormat)
        save(SettingsDialog(DARK, cfg, config, prefs), shots / "settings.png")
    engine.close()


def save(dialog: QWidget, out: Path) -> None:
    dialog.show()
    QApplication.processEvents()
    dialog.grab().save(str(out))
    dialog.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
