"""The real window attached to a gpuwarden elsewhere (`gpuwarden --attach URL`), over the
live control API: its models in the table, a Load from the window done by the remote,
and a lost connection shown in the alert banner while the window keeps answering."""

from __future__ import annotations

import pytest

from api_rig import live_api
from gpuwarden.remote.engine import RemoteEngine
from helpers import drive
from lifecycle_helpers import model

pytestmark = pytest.mark.qt


def test_the_window_drives_a_remote_engine_and_says_when_it_is_lost(qtbot, open_window,
                                                                     tmp_path):
    with live_api(tmp_path, model("chat", vram_mib=4000.0, load_time_s=1.0),
                  model("coder", vram_mib=6000.0)) as api:
        bridge, window = open_window(lambda: RemoteEngine(api.url, api.token, timeout_s=2.0))
        qtbot.waitUntil(lambda: [r.name for r in bridge.rows] == ["chat", "coder"],
                        timeout=10_000)
        window.model_panel.select("chat")
        window.commands.send("load", ("chat",))
        qtbot.waitUntil(lambda: api.engine.model("chat").state == "loading", timeout=10_000)
        drive(api.engine, api.clock, 3.0)
        qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
        assert "chat" in window.command_label.text()
        window.grab().save(str(tmp_path / "attached.png"))
        api.server.stop()
        banner = window.alert_banner
        qtbot.waitUntil(lambda: banner.isVisible() and banner.level == "error", timeout=15_000)
        lost = banner.alerts()[0]
        assert lost.title == "Connection lost" and api.url in lost.detail
        assert [r.state for r in bridge.rows] == ["ready", "unloaded"]  # kept as last seen
        window.grab().save(str(tmp_path / "attached-lost.png"))
