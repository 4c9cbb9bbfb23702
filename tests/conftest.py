"""Shared test setup: Qt offscreen, private user folders, no engine thread left behind."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# In CI the property tests replay the same examples every run: a landing must not hang on
# a new random draw. Locally they draw afresh each run and find new cases.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _llama_server_before_private_dirs() -> Path | None:
    """Resolved once, before the tests' private XDG folders hide the user's build cache."""
    from gpuwarden.engine.supervisor.locate import LlamaServerNotFound, find_llama_server

    configured = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    try:
        return find_llama_server(Path(configured) if configured else None)
    except LlamaServerNotFound:
        return None


LLAMA_SERVER = _llama_server_before_private_dirs()


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The real llama-server. `make test` builds it; elsewhere the tests that need it are
    skipped, except in CI, where a missing binary is a failure."""
    if LLAMA_SERVER is None:
        message = "llama-server is not built: run `gpuwarden setup llama-server`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return LLAMA_SERVER


@pytest.fixture(autouse=True)
def private_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real user's config, data or cache folder."""
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


@pytest.fixture(autouse=True)
def no_engine_thread_left() -> Iterator[None]:
    yield
    if "gpuwarden.app.bridge" in sys.modules:
        from gpuwarden.app.bridge import running_engine_threads

        left = running_engine_threads()
        assert not left, f"engine thread(s) still running after the test: {left}"


@pytest.fixture
def window_with(qtbot):
    """Open the real window on a real bridge and a simulated one-GPU engine with a
    config: ``bridge, window = window_with(config)``; stopped after the test."""
    from gpuwarden.app.bridge import EngineBridge
    from gpuwarden.app.window import MainWindow
    from gpuwarden.widgets.theme import DARK
    from test_window import simulated

    made: list[EngineBridge] = []

    def _open(config):
        bridge = EngineBridge(simulated(1, config)())
        made.append(bridge)
        window = MainWindow(bridge, DARK)
        qtbot.addWidget(window)
        window.show()
        bridge.start()
        return bridge, window

    yield _open
    for bridge in made:
        bridge.stop()


@pytest.fixture
def open_window(qtbot):
    """Open the real window on a real bridge over the engine a factory makes:
    ``bridge, window = open_window(factory, theme=DARK)``; stopped after the test."""
    from gpuwarden.app.bridge import EngineBridge
    from gpuwarden.app.window import MainWindow
    from gpuwarden.widgets.theme import DARK

    made = []

    def _open(factory, theme=DARK):
        bridge = EngineBridge(factory())
        window = MainWindow(bridge, theme)
        qtbot.addWidget(window)
        window.show()
        bridge.start()
        made.append(bridge)
        return bridge, window

    yield _open
    for bridge in made:
        bridge.stop()
