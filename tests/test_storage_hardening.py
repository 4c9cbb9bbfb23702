"""gpuwarden's own files under hostile conditions (issue 12): a journal that cannot be
written raises one alarm per outage, keeps the events in order and says what it missed;
a hints file that cannot be read is never overwritten; a registry that cannot be written
is an event, not a traceback. Real engines, real files; where file permissions must bind,
`gpuwarden headless` runs as a child with root's override rights dropped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.journal import read_journal
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.registry import ServerRecord, ServerRegistry
from lifecycle_helpers import model

SIMULATED = """\
[[models]]
name = "chat"
backend = "simulated"
vram_mib = 2000
autostart = true
"""

# Ways a journal path cannot be written that even root meets.
OUTAGES: dict[str, Callable[[Path], None]] = {
    "folder": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "full disk": lambda p: p.symlink_to("/dev/full"),
}


def repair(path: Path) -> None:
    """Make the journal's path writable again (a fresh file will be made there)."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


def unprivileged() -> list[str]:
    """A command prefix under which file permissions bind: root's override rights
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) are dropped for the child; nothing for a user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to bind")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def user_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}


def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "gpuwarden"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def headless_argv(tmp_path: Path, config: str, duration_s: float) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(config)
    return [sys.executable, "-m", "gpuwarden", "headless", "--config", str(path), "--simulate",
            "--events", "-", "--duration", str(duration_s)]


def run_headless(tmp_path: Path, config: str = SIMULATED, *, duration_s: float = 2.0,
                 prefix: list[str] | None = None) -> tuple[list[dict[str, Any]], str]:
    """Run `gpuwarden headless --events -` to its end: (the events printed, stderr). A hang
    fails at the deadline instead of blocking the suite."""
    done = subprocess.run([*(prefix or []), *headless_argv(tmp_path, config, duration_s)],
                          capture_output=True, text=True, env=user_env(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def in_seq_order(seqs: list[int]) -> bool:
    return seqs == list(range(1, len(seqs) + 1))


# -- the journal ----------------------------------------------------------------------------


def journal_engine(path: Path) -> tuple[Engine, list[Event]]:
    engine = Engine.build(Config(models=(model("chat"),)),
                          TelemetryOptions(simulate=SimulateSpec(), interval_s=1.0),
                          ServicePaths(journal=path, hints=None), clock=FakeClock())
    events: list[Event] = []
    engine.subscribe(events.append)  # a second listener, after the journal
    engine.start(watch_config=False)
    return engine, events


def load_and_unload(engine: Engine) -> None:
    assert engine.load("chat").ok
    engine.step()
    assert engine.unload("chat").ok
    engine.step()


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_a_journal_outage_is_one_alarm_then_one_recovery_and_a_marked_gap(
        outage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.jsonl"
    OUTAGES[outage](path)
    with caplog.at_level(logging.INFO):
        engine, events = journal_engine(path)
        for _ in range(3):
            load_and_unload(engine)
        missed = len(events)
        repair(path)
        load_and_unload(engine)
        engine.close()

    types = [e.type for e in events]
    assert types.count("storage.error") == 1
    assert types[1] == "storage.error"  # right after the first event it could not write
    assert types.count("storage.recovered") == 1
    assert in_seq_order([e.seq for e in events])
    recovered = events[types.index("storage.recovered")].to_dict()
    assert recovered["missed"] == missed
    assert f"{missed} events (seq 1-{missed}) could not be recorded" in recovered["message"]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    gap, *written = read_journal(path)
    assert gap["type"] == "journal.gap" and "seq" not in gap
    assert (gap["missed"], gap["first_seq"], gap["last_seq"]) == (missed, 1, missed)
    assert [e["seq"] for e in written] == [e.seq for e in events[missed:]]


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_headless_prints_every_event_once_in_order_when_the_journal_fails(
        outage: str, tmp_path: Path) -> None:
    OUTAGES[outage](data_dir(tmp_path) / "events.jsonl")
    events, stderr = run_headless(tmp_path)  # a FIFO must not block it: 60 s deadline
    assert in_seq_order([e["seq"] for e in events])
    assert [e["type"] for e in events][:2] == ["model.loading", "storage.error"]
    (error,) = of_type(events, "storage.error")
    assert error["path"].endswith("events.jsonl")
    assert "events are not recorded in the journal" in error["message"]
    assert of_type(events, "model.unloaded")  # it ran to a clean end
    assert "Traceback" not in stderr
    assert stderr.count("cannot write the event journal") == 1


def test_a_read_only_journal_recovers_when_made_writable(tmp_path: Path) -> None:
    journal = data_dir(tmp_path) / "events.jsonl"
    journal.write_text("")
    journal.chmod(0o444)
    proc = subprocess.Popen([*unprivileged(), *headless_argv(tmp_path, SIMULATED, 30)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=user_env(tmp_path))
    try:
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:  # the backstop is --duration 30
            printed.append(json.loads(line))
            if printed[-1]["type"] == "model.ready":
                break
        journal.chmod(0o644)  # the user fixes it while gpuwarden runs
        proc.send_signal(signal.SIGTERM)
        out, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = printed + [json.loads(line) for line in out.splitlines()]
    assert in_seq_order([e["seq"] for e in events])
    assert len(of_type(events, "storage.error")) == 1
    (recovered,) = of_type(events, "storage.recovered")
    missed = events.index(next(e for e in events if e["type"] == "model.unloaded"))
    assert recovered["missed"] == missed  # everything before the first unload
    gap, *written = read_journal(journal)
    assert (gap["type"], gap["missed"], gap["last_seq"]) == ("journal.gap", missed, missed)
    assert [e["seq"] for e in written] == [e["seq"] for e in events[missed:]]
    assert "Traceback" not in stderr


# -- the hints: the user's overrides are never lost -----------------------------------------

# An engine run that changes a hint (so there is something to save at the end), printing
# its events as headless does.
HINTS_RUN = """
import json, sys
from pathlib import Path
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions

engine = Engine.build(
    Config(models=(ModelConfig(name="chat", backend="simulated", vram_mib=2000.0),)),
    TelemetryOptions(simulate=SimulateSpec()),
    ServicePaths(journal=None, hints=Path(sys.argv[1])))
print_event = lambda e: print(json.dumps(e.to_dict()), flush=True)
for event in engine.events_since(0):
    print_event(event)
engine.subscribe(print_event)
engine.start(watch_config=False)
assert engine.set_priority("chat", 3).ok
engine.close()
"""


def users_hints() -> bytes:
    now = time.time()
    doc = {"version": 1, "models": {
        "chat": {"eviction_override": "never", "priority_override": 7, "updated_ts": now},
        "coder": {"priority_override": -2, "updated_ts": now}}}
    return json.dumps(doc).encode()


def run_with_hints(tmp_path: Path, hints: Path) -> tuple[list[dict[str, Any]], str]:
    done = subprocess.run([*unprivileged(), sys.executable, "-c", HINTS_RUN, str(hints)],
                          capture_output=True, text=True, env=user_env(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_an_unreadable_hints_file_is_left_as_it_is_and_its_overrides_survive(
        tmp_path: Path) -> None:
    hints = data_dir(tmp_path) / "hints.json"
    original = users_hints()
    hints.write_bytes(original)
    hints.chmod(0o000)

    events, stderr = run_with_hints(tmp_path, hints)

    assert stat.S_IMODE(hints.stat().st_mode) == 0o000  # untouched, not replaced
    hints.chmod(0o600)
    assert hints.read_bytes() == original
    (problem,) = of_type(events, "storage.problem")
    assert problem["path"] == str(hints)
    assert "hints.json could not be read (Permission denied)" in problem["message"]
    assert "left as it is" in problem["message"] and "make it readable" in problem["message"]
    assert not of_type(events, "storage.error") and not of_type(events, "config.problem")
    assert "Traceback" not in stderr


def test_once_readable_again_the_overrides_are_back(tmp_path: Path) -> None:
    hints = data_dir(tmp_path) / "hints.json"
    original = users_hints()
    hints.write_bytes(original)
    hints.chmod(0o000)
    run_with_hints(tmp_path, hints)
    hints.chmod(0o600)  # the user fixes the rights
    assert hints.read_bytes() == original

    engine = Engine.build(Config(models=(ModelConfig(name="chat", backend="simulated"),)),
                          TelemetryOptions(simulate=SimulateSpec()),
                          ServicePaths(journal=None, hints=hints), clock=FakeClock())
    row = engine.model("chat")
    engine.close()
    assert row is not None
    assert (row.priority, row.priority_source) == (7, "user")
    assert (row.eviction, row.eviction_source) == ("never", "user")


def test_a_hints_path_that_is_a_fifo_is_not_replaced(tmp_path: Path) -> None:
    hints = data_dir(tmp_path) / "hints.json"
    os.mkfifo(hints)
    events, stderr = run_with_hints(tmp_path, hints)
    assert stat.S_ISFIFO(hints.stat().st_mode)
    (problem,) = of_type(events, "storage.problem")
    assert "not a regular file" in problem["message"] and "left as it is" in problem["message"]
    assert "Traceback" not in stderr


# -- the server registry: a failed write is an event ----------------------------------------


def test_a_registry_write_that_fails_is_one_event_per_outage_then_one_recovery(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "data"
    folder.write_text("a file where the data folder should be")
    told: list[Event] = []
    registry = ServerRegistry(folder / "servers.json", publish=told.append)
    record = ServerRecord(model="chat", pid=os.getpid(), port=8080, api_key="k",
                          executable=sys.executable, cmdline=(sys.executable,),
                          started_ts=time.time())
    with caplog.at_level(logging.WARNING):
        registry.add(record)  # never raises
        registry.remove("chat")
        registry.add(record)
    assert [e.type for e in told] == ["storage.error"]
    assert told[0].to_dict()["path"] == str(folder / "servers.json")
    assert "servers left running may not be adopted" in told[0].describe()
    assert not [r for r in caplog.records if r.exc_info]
    folder.unlink()  # the disk is fine again
    registry.add(record)
    assert [e.type for e in told] == ["storage.error", "storage.recovered"]
    on_disk = ServerRegistry(folder / "servers.json")
    assert on_disk.load() == [] and on_disk.records() == {"chat": record}


def test_a_read_only_data_folder_is_one_storage_error_for_the_registry_not_a_traceback(
        tmp_path: Path, llama_server_bin: Path) -> None:
    tiny = write_tiny_llama(tmp_path / "tiny.gguf")
    config = (f'[[models]]\nname = "tiny"\nbackend = "llama-server"\npath = "{tiny}"\n'
              'placement = "cpu"\ncontext_size = 256\nautostart = true\n'
              'args = ["--threads", "1", "--parallel", "1"]\n')
    folder = data_dir(tmp_path)
    for name in ("gpuwarden.lock", "events.jsonl"):  # what gpuwarden needs to run at all
        (folder / name).touch()
    (folder / "logs").mkdir()
    folder.chmod(0o555)
    argv = [*unprivileged(), *headless_argv(tmp_path, config, 3.0)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90,
                              env={**user_env(tmp_path),
                                   "GPUWARDEN_LLAMA_SERVER": str(llama_server_bin)})
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert of_type(events, "model.ready") and of_type(events, "model.unloaded")
    registry = str(folder / "servers.json")
    (error,) = [e for e in of_type(events, "storage.error") if e["path"] == registry]
    assert "servers left running may not be adopted" in error["message"]
    assert "Traceback" not in done.stderr
    assert not (folder / "servers.json").exists()
