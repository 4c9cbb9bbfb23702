"""Building llama-server from the window: offered when a llama-server model could not
start for want of the binary, run in its own dialog, and the model loaded once built."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtWidgets import QMessageBox

from gpuwarden.app import llama_setup
from gpuwarden.engine.events import ModelCrashed
from gpuwarden.engine.lifecycle.config import Config, ModelConfig

pytestmark = pytest.mark.qt

QUICK_BUILD = r"""
import sys
print("gpuwarden setup: built /tmp/nowhere/llama-server", file=sys.stderr, flush=True)
print("/tmp/nowhere/llama-server", flush=True)
"""


def test_a_missing_llama_server_is_offered_built_and_the_model_loaded(
        qtbot, window_with, monkeypatch, tmp_path):
    monkeypatch.setattr(llama_setup, "llama_server_missing", lambda _config: True)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    _, window = window_with(Config(models=(
        ModelConfig(name="m", backend="llama-server", path=gguf),)))
    setup = window.llama_setup
    setup._argv = [sys.executable, "-c", QUICK_BUILD]
    sent: list[tuple[str, tuple[str, ...]]] = []
    setup._send = lambda command, args: sent.append((command, args))

    window.on_event(ModelCrashed(model="m", kind="crash"))  # not a missing binary
    assert setup.offer is None
    window.on_event(ModelCrashed(model="m", kind="launch_failed"))
    assert setup.offer is not None and "m needs llama-server" in setup.offer.text()
    window.on_event(ModelCrashed(model="m", kind="launch_failed"))  # asked once only
    setup.offer.button(QMessageBox.StandardButton.Yes).click()
    assert setup.dialog is not None
    qtbot.waitUntil(lambda: sent == [("load", ("m",))], timeout=10_000)
    assert setup.dialog.binary == "/tmp/nowhere/llama-server"
    setup.dialog.close()


def test_no_offer_for_a_model_of_another_backend(qtbot, window_with, monkeypatch):
    monkeypatch.setattr(llama_setup, "llama_server_missing", lambda _config: True)
    _, window = window_with(Config(models=(ModelConfig(name="sim", backend="simulated"),)))
    window.on_event(ModelCrashed(model="sim", kind="launch_failed"))
    assert window.llama_setup.offer is None


def test_the_menu_opens_the_build(qtbot, window_with):
    _, window = window_with(Config())
    window.llama_setup._argv = [sys.executable, "-c", QUICK_BUILD]
    window.menus.build_llama_server.trigger()
    dialog = window.llama_setup.dialog
    assert dialog is not None
    qtbot.waitUntil(lambda: not dialog.running, timeout=10_000)
    dialog.close()
