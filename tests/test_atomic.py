"""Atomic writes: the file holds the old content or the new, never a half, never litter."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpuwarden.engine import atomic
from gpuwarden.engine.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_writes_text_creating_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "state.txt"
    atomic_write_text(target, "héllo ✓\n")
    assert target.read_text(encoding="utf-8") == "héllo ✓\n"
    assert os.listdir(target.parent) == ["state.txt"]


def test_writes_bytes_as_they_are(tmp_path: Path) -> None:
    target = tmp_path / "icon.png"
    atomic_write_bytes(target, b"\x89PNG\r\n\x00\xff")
    assert target.read_bytes() == b"\x89PNG\r\n\x00\xff"
    assert os.listdir(tmp_path) == ["icon.png"]


def test_replaces_existing_content_and_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_json(target, {"models": ["a", "b"], "n": 1})
    assert json.loads(target.read_text()) == {"models": ["a", "b"], "n": 1}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["state.json"]


@pytest.mark.parametrize("breaks", ["os.replace", "os.fsync"])
def test_a_failure_mid_write_keeps_the_old_content_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaks: str
) -> None:
    target = tmp_path / "state.json"
    target.write_text('{"precious": true}')

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, breaks.split(".")[1], boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"precious": False, "pad": "x" * 10_000})
    assert target.read_text() == '{"precious": true}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_an_object_json_cannot_encode_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_new_file_that_fails_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "new.txt", "data")
    assert os.listdir(tmp_path) == []
