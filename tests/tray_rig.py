"""A window whose desktop has a tray (offscreen has none: the check is replaced), with its
notifications recorded instead of shown."""

from __future__ import annotations

import pytest

from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.theme import DARK


@pytest.fixture
def with_tray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_prefs, "tray_available", lambda: True)


@pytest.fixture
def tray_window(with_tray, open_window):
    """``bridge, window, posted = tray_window(factory)``: ``posted`` collects every
    notification the tray shows. Closing the window after the test quits (no question)."""
    windows = []

    def _open(factory, theme=DARK):
        bridge, window = open_window(factory, theme)
        assert window.tray.icon is not None
        posted: list = []
        window.tray.post = posted.append
        windows.append(window)
        return bridge, window, posted

    yield _open
    for window in windows:
        window.tray.closing.quitting = True
