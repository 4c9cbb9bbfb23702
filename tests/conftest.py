"""Shared test setup: Qt offscreen, private user folders, no engine thread left behind."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


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
