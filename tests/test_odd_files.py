"""Hostile files never hang or blow up gpuwarden: TOML and JSON nested hundreds of levels
deep, a model's log that is a FIFO or a device, two models whose names once shared a
log, and binaries or log folders that cannot be used. Each asserts what a person sees:
one clear line or event, no traceback, nothing left running, nothing stalled."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpuwarden.cli import main
from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.lifecycle.config import load_config
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.supervisor.registry import ServerRegistry
from gpuwarden.engine.telemetry.scenario import ScenarioError, load_scenario

DEEP = 450  # what was found: Python's TOML parser recurses once per level


def nested_table(depth: int) -> str:
    return "{a = " * depth + "1" + "}" * depth


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


GOOD_MODEL = '[[models]]\nname = "ok"\nbackend = "simulated"\nvram_mib = 100\n'


# -- TOML and JSON nested too deeply ------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [nested_table(DEEP), nested_array(20 * DEEP)])
def test_a_config_nested_too_deeply_is_one_line_naming_the_file_and_line(tmp_path, value):
    path = tmp_path / "config.toml"
    path.write_text(GOOD_MODEL + f"x = {value}\n")
    config, problems = load_config(path)
    assert config.models == ()  # the parser gave up on the whole file, as on a syntax error
    assert [str(p) for p in problems] == [
        f"{path}:5: nested too deeply to read (arrays or inline tables "
        f"{value.count('[') + value.count('{')} levels deep)"]


@pytest.mark.timeout(60)
def test_a_scenario_nested_too_deeply_is_refused_with_its_line(tmp_path):
    path = tmp_path / "scenario.toml"
    path.write_text(f"[simulation]\ngpus = 1\n\n[[step]]\nat = 1\nx = {nested_table(DEEP)}\n")
    with pytest.raises(ScenarioError, match=rf"scenario\.toml:6: nested too deeply .*{DEEP}"):
        load_scenario(path)


@pytest.mark.timeout(120)
def test_status_with_a_scenario_nested_too_deeply_says_so_in_one_line_and_fails(tmp_path):
    path = tmp_path / "scenario.toml"
    path.write_text(f"x = {nested_table(DEEP)}\n")
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "status", "--simulate", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"gpuwarden: error: {path}:1: nested too deeply to read (arrays or inline tables "
        f"{DEEP} levels deep)"]


@pytest.mark.timeout(120)
def test_headless_with_a_config_nested_too_deeply_says_so_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(GOOD_MODEL + f"x = {nested_table(DEEP)}\n")
    main(["--simulate", "--config", str(path), "headless", "--duration", "0.3"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err
    assert f"{path}:5: nested too deeply to read" in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("depth", [DEEP, 100_000])
def test_hints_and_registry_nested_too_deeply_are_set_aside_with_a_sentence(tmp_path, depth):
    """gpuwarden's own JSON files: a value nested a few hundred levels deep is one invalid
    entry; a file too deep to parse is moved aside (kept), never a traceback."""
    clock = SystemClock()
    deep = nested_array(depth)
    hints = tmp_path / "hints.json"
    good = json.dumps({"access_count": 3, "updated_ts": clock.time()})
    hints.write_text(f'{{"version": 1, "models": {{"a": {deep}, "b": {good}}}}}')
    registry = tmp_path / "servers.json"
    registry.write_text(f'{{"version": 1, "servers": [{deep}]}}')
    store, records = HintStore(hints, clock), ServerRegistry(registry, clock)
    hint_problems, record_problems = store.load(), records.load()
    assert len(hint_problems) == 1 and len(record_problems) == 1
    if depth == DEEP:  # parsed: only the deep entry is dropped, the good one kept
        assert "hints for model 'a' were invalid" in hint_problems[0]
        assert store.get("b").access_count == 3
        assert "entry 1" in record_problems[0]
    else:
        assert "nested too deeply" in hint_problems[0] and "moved to" in hint_problems[0]
        assert "nested too deeply" in record_problems[0]
        assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == [
            "hints.json.corrupt", "servers.json.corrupt"]
