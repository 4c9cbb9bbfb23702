"""The project's adversarial corpus: hostile config, scenario, hints and registry files
(tests/corpus/, plus the deeply nested ones made here) fed to the real command line.
Each must end in what a user can act on: no traceback, never a hang, a message that names
the file, and the exit status the docs give (a bad config entry skips that entry; a file
nothing can be read from stops `headless` with status 2; gpuwarden's own data files that
cannot be read are reported and left alone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
DEADLINE_S = 30

# Config files nothing can be read from: headless refuses to run (status 2).
UNUSABLE = {"syntax-error.toml", "not-utf8.toml", "nul-in-name.toml", "deep-arrays.toml",
            "deep-tables.toml"}
FINE = {"utf8-bom.toml"}  # nothing wrong with it: it loads, and nothing is said


def nested(kind: str, depth: int = 3000) -> str:
    if kind == "arrays":
        return "x = " + "[" * depth + "]" * depth + "\n"
    return "x = " + "{a = " * depth + "1" + "}" * depth + "\n"


def corpus(kind: str, tmp_path: Path) -> list[Path]:
    files = sorted((CORPUS / kind).iterdir())
    if kind in ("config", "scenario"):
        for shape in ("arrays", "tables"):
            made = tmp_path / f"deep-{shape}.toml"
            made.write_text(nested(shape))
            files.append(made)
    return files


def gpuwarden(*args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuwarden", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=DEADLINE_S)


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    both = done.stdout + done.stderr
    assert "Traceback" not in both and "Error:" not in both.replace("error:", ""), both


DEEP = ("deep-arrays.toml", "deep-tables.toml")
CONFIGS = [*sorted(p.name for p in (CORPUS / "config").iterdir()), *DEEP]


@pytest.mark.parametrize("name", CONFIGS)
def test_a_hostile_config_is_told_by_file_and_line_never_a_traceback(name: str,
                                                                     tmp_path: Path):
    path = next(p for p in corpus("config", tmp_path) if p.name == name)
    done = gpuwarden("--config", path, "headless", "--simulate", "--duration", "0.3",
                     env=dict(os.environ))
    no_traceback(done)
    assert done.returncode == (2 if name in UNUSABLE else 0), done.stderr
    if name not in FINE:
        assert path.name in done.stderr, done.stderr  # it names the file
    assert "\x00" not in done.stderr  # a raw control byte is never echoed


SCENARIOS = [*sorted(p.name for p in (CORPUS / "scenario").iterdir()), *DEEP]


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_hostile_scenario_is_refused_in_one_line(name: str, tmp_path: Path):
    path = next(p for p in corpus("scenario", tmp_path) if p.name == name)
    done = gpuwarden("status", "--simulate", path, env=dict(os.environ))
    no_traceback(done)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and path.name in lines[0], done.stderr


@pytest.mark.parametrize(("kind", "name"), [
    *(("hints", p.name) for p in sorted((CORPUS / "hints").iterdir())),
    *(("registry", p.name) for p in sorted((CORPUS / "registry").iterdir()))])
def test_a_garbled_data_file_is_reported_and_kept(kind: str, name: str, tmp_path: Path):
    data = Path(os.environ["XDG_DATA_HOME"]) / "gpuwarden"
    data.mkdir(parents=True, exist_ok=True)
    target = data / ("hints.json" if kind == "hints" else "servers.json")
    content = (CORPUS / kind / name).read_bytes()
    target.write_bytes(content)
    done = gpuwarden("headless", "--simulate", "--duration", "0.3", "--events", "-",
                     env=dict(os.environ))
    no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert "storage.problem" in done.stdout and target.name in done.stdout, done.stdout
    kept = [p for p in data.iterdir() if p.name.startswith(target.name)]
    assert any(p.read_bytes() == content for p in kept), "the user's file was lost"
