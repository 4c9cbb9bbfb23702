"""Hostile files never hang or blow up gpuwarden: TOML and JSON nested hundreds of levels
deep, a model's log that is a FIFO or a device, two models whose names once shared a
log, and binaries or log folders that cannot be used. Each asserts what a person sees:
one clear line or event, no traceback, nothing left running, nothing stalled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.cli import main
from gpuwarden.engine.clock import SystemClock
from gpuwarden.engine.details import read_log_tail
from gpuwarden.engine.events import ModelCrashed
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig, load_config
from gpuwarden.engine.lifecycle.hints import HintStore
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor import logfile
from gpuwarden.engine.supervisor.launch import log_file_name
from gpuwarden.engine.supervisor.registry import ServerRegistry
from gpuwarden.engine.telemetry.scenario import ScenarioError, load_scenario
from helpers import without_api_line
from supervision_rig import EventWaiter

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


# -- one log per model ------------------------------------------------------------------


@pytest.fixture
def engine_paths(tmp_path: Path) -> ServicePaths:
    return ServicePaths(journal=None, hints=None, logs=tmp_path / "logs",
                        registry=tmp_path / "servers.json")


def tiny_model(tmp_path: Path, name: str = "tiny", gguf: str = "tiny.gguf") -> ModelConfig:
    path = tmp_path / gguf
    if not path.exists():
        write_tiny_llama(path)
    return ModelConfig(name=name, backend="llama-server", path=path, placement="cpu",
                       context_size=256, args=("--threads", "1", "--parallel", "1"))


@pytest.fixture
def start_engine(llama_server_bin: Path, engine_paths: ServicePaths, monkeypatch):
    monkeypatch.setenv("GPUWARDEN_LLAMA_SERVER", str(llama_server_bin))
    made: list[Engine] = []

    def start(*models: ModelConfig) -> tuple[Engine, EventWaiter]:
        engine = Engine.build(Config(models=models), TelemetryOptions(simulate=SimulateSpec()),
                              engine_paths)
        made.append(engine)
        waiter = EventWaiter(engine)
        engine.start()
        return engine, waiter

    yield start
    for engine in made:
        engine.close()


def log_of(paths: ServicePaths, name: str) -> Path:
    assert paths.logs is not None
    return paths.logs / log_file_name(name)


def storage_errors(engine: Engine) -> list[str]:
    return [e.describe() for e in engine.events_since(0) if e.type == "storage.error"]


def crash_once(engine: Engine, waiter: EventWaiter, name: str) -> dict[str, object]:
    row = engine.model(name)
    assert row is not None and row.pids
    os.kill(row.pids[0], signal.SIGKILL)
    return waiter.wait_for("model.crashed", name, timeout=20).to_dict()


def unload_within(engine: Engine, waiter: EventWaiter, name: str, seconds: float) -> None:
    asked = time.monotonic()
    assert engine.unload(name).ok
    waiter.wait_for("model.unloaded", name, timeout=seconds)
    assert time.monotonic() - asked < seconds


HEADLESS_CONFIG = """
[[models]]
name = "tiny"
backend = "llama-server"
path = "{path}"
placement = "cpu"
context_size = 256
args = ["--threads", "1", "--parallel", "1"]
autostart = true
"""


def test_every_model_name_gets_its_own_readable_log_file():
    names = ["x y", "x_y", "x/y", "模型", "модель", "", "..", "a" * 300, "tiny"]
    files = [log_file_name(n) for n in names]
    assert len(set(files)) == len(names)
    assert all(f.endswith(".log") and "/" not in f and not f.startswith(".") and
               len(f.encode()) < 100 for f in files)
    assert files[0].startswith("x_y-") and files[-1].startswith("tiny-")


@pytest.mark.timeout(120)
def test_two_models_whose_names_once_shared_a_log_each_report_only_their_own_lines(
        tmp_path, engine_paths, start_engine):
    spaced, under = tiny_model(tmp_path, "x y", "spaced.gguf"), tiny_model(tmp_path, "x_y",
                                                                          "under.gguf")
    engine, waiter = start_engine(spaced, under)
    engine.load("x y")
    waiter.wait_for("model.ready", "x y", timeout=30)
    engine.load("x_y")  # starts after "x y": once, its lines landed in the middle of x y's
    waiter.wait_for("model.ready", "x_y", timeout=30)
    tail = "\n".join(crash_once(engine, waiter, "x y")["log_tail"])  # type: ignore[arg-type]
    assert "spaced.gguf" in tail and "under.gguf" not in tail
    assert log_of(engine_paths, "x y") != log_of(engine_paths, "x_y")


# -- a log that is a FIFO or a device, or in a folder that cannot be used --------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("reader", [False, True], ids=["nobody-reads", "someone-reads"])
def test_a_fifo_log_never_blocks_the_model_runs_and_the_user_is_told_once(
        tmp_path, engine_paths, start_engine, reader, caplog):
    fifo = log_of(engine_paths, "tiny")
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else None
    try:
        engine, waiter = start_engine(tiny_model(tmp_path))
        engine.load("tiny")
        waiter.wait_for("model.ready", "tiny", timeout=30)
        assert storage_errors(engine) == [
            f"Could not save {fifo}: it is a FIFO (named pipe), not a regular file; tiny runs "
            "with its output discarded (no log lines)"]
        details = engine.details("tiny")
        assert details is not None and details.log_tail == ()
        assert "FIFO" in details.log_note
        unload_within(engine, waiter, "tiny", 10)
        engine.load("tiny")  # the same problem again: not said again
        waiter.wait_for("model.ready", "tiny", count=2, timeout=30)
        assert len(storage_errors(engine)) == 1
        assert not crash_once(engine, waiter, "tiny")["log_tail"]
        fifo.unlink()  # the user fixes it: the next launch writes its log again
        engine.load("tiny")
        waiter.wait_for("model.ready", "tiny", count=3, timeout=30)
        recovered = waiter.wait_for("storage.recovered", timeout=5).to_dict()
        assert recovered["path"] == str(fifo) and fifo.is_file()
        details = engine.details("tiny")
        assert details is not None and details.log_tail and details.log_note == ""
    finally:
        if held is not None:
            os.close(held)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.timeout(120)
def test_headless_with_a_fifo_log_ends_on_time(tmp_path, llama_server_bin):
    config = tmp_path / "config.toml"
    config.write_text(HEADLESS_CONFIG.format(path=write_tiny_llama(tmp_path / "tiny.gguf")))
    env = {**os.environ, "GPUWARDEN_LLAMA_SERVER": str(llama_server_bin)}
    fifo = Path(env["XDG_DATA_HOME"]) / "gpuwarden" / "logs" / log_file_name("tiny")
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "headless", "--config",
                           str(config), "--duration", "4", "--events", "-"],
                          env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr
    assert took < 4 + 20  # start-up, the run, a clean stop: never stuck in open()
    types = [json.loads(line)["type"] for line in proc.stdout.splitlines()]
    assert "model.ready" in types and types.count("storage.error") == 1
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if "FIFO" in line] == [
        line for line in proc.stderr.splitlines() if str(fifo) in line]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full"])
def test_a_log_linked_to_a_device_is_never_read_and_stops_nothing(
        tmp_path, engine_paths, start_engine, device):
    link = log_of(engine_paths, "tiny")
    link.parent.mkdir()
    link.symlink_to(device)
    engine, waiter = start_engine(tiny_model(tmp_path))
    engine.load("tiny")
    waiter.wait_for("model.ready", "tiny", timeout=30)
    assert storage_errors(engine) == [
        f"Could not save {link}: it is a device ({device}), not a regular file; tiny runs "
        "with its output discarded (no log lines)"]
    unload_within(engine, waiter, "tiny", 10)  # /dev/full once made this never end
    engine.load("tiny")
    waiter.wait_for("model.ready", "tiny", count=2, timeout=30)
    rss = psutil.Process().memory_info().rss
    crashed = crash_once(engine, waiter, "tiny")  # /dev/zero once grew 1 GB a second here
    assert not crashed["log_tail"]
    details = engine.details("tiny")
    assert details is not None and details.log_tail == () and device in details.log_note
    assert psutil.Process().memory_info().rss - rss < 64 * 1024 * 1024


@pytest.mark.timeout(60)
def test_a_log_tail_reads_at_most_the_cap_whatever_the_file(tmp_path):
    huge = tmp_path / "huge.log"
    with huge.open("wb") as f:
        f.truncate(8 * 1024 * 1024 * 1024)  # 8 GiB, sparse
        f.seek(0, os.SEEK_END)
        f.write(b"\nthe last line\n")
    text = logfile.read_end(huge)
    assert len(text.encode()) <= logfile.TAIL_BYTES and text.endswith("the last line\n")
    assert read_log_tail(huge)[0][-1] == "the last line"
    zero = tmp_path / "zero.log"
    zero.symlink_to("/dev/zero")
    with pytest.raises(logfile.NotRegularFile):
        logfile.read_end(zero)
    assert logfile.tail(zero) == ()
    assert read_log_tail(zero) == ((), f"no log: {zero}: it is a device (/dev/zero), "
                                        "not a regular file")


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """``folder`` read-only for this process: its mode for a user, a read-only tmpfs for
    root (whom modes do not stop)."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"root cannot make a read-only folder here: {mounted.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["read-only", "a file"])
def test_a_log_folder_that_cannot_be_used_is_said_once_and_the_model_still_runs(
        tmp_path, engine_paths, start_engine, how, caplog):
    folder = engine_paths.logs
    assert folder is not None
    with contextlib.ExitStack() as undo:
        if how == "a file":
            folder.write_text("not a folder\n")
            why = f"the log folder {folder} is a file, not a folder"
        else:
            undo.enter_context(read_only_folder(folder))
            why = f"the log folder {folder} is read-only"
        engine, waiter = start_engine(tiny_model(tmp_path))
        engine.load("tiny")
        waiter.wait_for("model.ready", "tiny", timeout=30)
        assert storage_errors(engine) == [f"Could not save {log_of(engine_paths, 'tiny')}: "
                                          f"{why}; tiny runs with its output discarded (no "
                                          "log lines)"]
        unload_within(engine, waiter, "tiny", 10)
        engine.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# -- launch failures: one plain line and one event, never a traceback ----------------------


def not_a_program(folder: Path) -> Path:
    script = folder / "llama-server"
    script.write_text("echo this script has no #! line\n")
    script.chmod(0o755)
    return script


def not_executable(folder: Path) -> Path:
    binary = folder / "llama-server"
    binary.write_bytes(b"\x7fELF not really\n")
    binary.chmod(0o644)
    return binary


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("make", "named_by", "why"), [
    (not_a_program, "config", "cannot be run: it is not a program (Exec format error: a script "
                              "without #!?)"),
    (not_executable, "config", "(from the config) cannot be run: it is not executable (chmod "
                               "+x {binary})"),
    (not_executable, "env", "(from $GPUWARDEN_LLAMA_SERVER) cannot be run: it is not "
                            "executable (chmod +x {binary})"),
], ids=["no-shebang", "not-executable", "not-executable-from-env"])
def test_a_binary_that_cannot_be_run_is_one_line_and_one_event(tmp_path, make, named_by, why):
    (tmp_path / "bin").mkdir()
    binary = make(tmp_path / "bin")
    config = tmp_path / "config.toml"
    config.write_text(("" if named_by == "env" else f'llama_server = "{binary}"\n') +
                      HEADLESS_CONFIG.format(path=write_tiny_llama(tmp_path / "tiny.gguf")))
    env = {**os.environ, "PATH": str(tmp_path / "empty"),  # no other llama-server
           "GPUWARDEN_LLAMA_SERVER": str(binary) if named_by == "env" else ""}
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "headless", "--config",
                           str(config), "--duration", "1", "--events", "-"],
                          env=env, capture_output=True, text=True, timeout=60)
    said = f"llama-server at {binary} " + why.format(binary=binary)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = without_api_line(proc.stderr).splitlines()
    assert len(lines) == 1 and f"tiny: {said}" in lines[0], lines
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    crashed = [e for e in events if e["type"] == "model.crashed"]
    assert [e["kind"] for e in crashed] == ["launch_failed"]
    assert crashed[0]["log_tail"][0].startswith(said)
    assert "model.restart_scheduled" not in [e["type"] for e in events]


def test_a_launch_failure_is_said_in_gpuwarden_s_own_words_not_as_a_log_line():
    why = "llama-server at /opt/llama-server cannot be run: it is not executable (chmod +x ...)"
    event = ModelCrashed(model="tiny", kind="launch_failed", log_tail=(why,))
    assert event.describe() == f"tiny could not be started: {why}"
