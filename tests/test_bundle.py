"""The PyInstaller bundle's smoke script: it fails a bundle that misbehaves, and (slow, only
with GPUWARDEN_BUNDLE=1, after `make bundle`) passes the real dist/gpuwarden/."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bundle_smoke.py"


def load_smoke() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bundle_smoke", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


smoke = load_smoke()


def fake_bundle(folder: Path, body: str) -> Path:
    exe = folder / "gpuwarden"
    folder.mkdir(parents=True, exist_ok=True)
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return folder


def test_a_healthy_start_is_not_alarming() -> None:
    stderr = ("gpuwarden: no config file at /tmp/x/config.toml yet: no models to manage "
              "(see docs/config.md)\nThis plugin does not support propagateSizeHints()\n")
    assert smoke.alarming_lines("gpuwarden 0.1.0\n", stderr) == []


@pytest.mark.parametrize(("stdout", "stderr"), [
    ("", 'Traceback (most recent call last):\n  File "x.py"\nImportError: no numpy\n'),
    ("", "qt.qpa.plugin: Could not load the Qt platform plugin \"xcb\"\n"),
    ("ModuleNotFoundError: No module named 'pynvml'\n", ""),
    ("", "[PYI-1:ERROR] Failed to execute script '__main__'\n"),
])
def test_tracebacks_missing_modules_and_qt_complaints_are_alarming(stdout: str,
                                                                   stderr: str) -> None:
    assert smoke.alarming_lines(stdout, stderr)


@pytest.mark.parametrize("body", [
    'echo "Traceback (most recent call last):" >&2',  # exits 0 but tells of a crash
    "exit 1",
])
def test_a_bundle_that_misbehaves_fails_the_smoke(tmp_path: Path, body: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert smoke.main([str(fake_bundle(tmp_path / "dist", body))]) == 1
    out = capsys.readouterr().out
    assert "FAIL gpuwarden --version" in out
    assert out.rstrip().endswith("bundle smoke: FAILED")


def test_no_bundle_says_how_to_build_one(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert smoke.main([str(tmp_path / "nothing")]) == 1
    assert "make bundle" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("GPUWARDEN_BUNDLE") != "1",
                    reason="set GPUWARDEN_BUNDLE=1 after `make bundle` to start the bundle")
def test_the_built_bundle_starts() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), str(ROOT / "dist" / "gpuwarden")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundle smoke: passed" in done.stdout
