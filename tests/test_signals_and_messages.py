"""Signals end gpuwarden cleanly (a closed terminal, Ctrl+\\, kill -HUP/-QUIT/-USR1): every
model stopped and said so, no server left behind; and the messages about bad input say
what is wrong in the user's words, with file:line, no traceback, the right exit status."""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.alerts import AlertBoard
from gpuwarden.engine.facade import Engine
from gpuwarden.engine.journal import read_journal
from gpuwarden.engine.paths import data_dir
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.registry import ServerRegistry, default_registry_path
from gpuwarden.startup import open_engine
from helpers import without_api_line
from supervision_rig import wait_until

DEADLINE_S = 60.0
SIMULATED = """
[api]
port = 0  # any free port: these gpuwardens may overlap

[[models]]
name = "chat"
backend = "simulated"
vram_mib = 2000
load_time_s = 0
autostart = true
"""
# A scenario step every second: events keep coming while gpuwarden runs.
TICKING = "".join(f'[[step]]\nat = {t}\naction = "load"\nutil_pct = {t}\n\n'
                  for t in range(1, 60))


def gpuwarden(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "gpuwarden", *map(str, args)]


class Headless:
    """A real `gpuwarden headless --events -`; its events read on a thread, so waiting for
    one has a deadline."""

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen([*prefix, *gpuwarden("headless", *args, "--events", "-")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.events: list[dict[str, Any]] = []
        self._ended = False  # its stdout's end was read
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, kind: str, model: str | None = None) -> dict[str, Any]:
        """The next event of ``kind`` (about ``model``); fails at the deadline or at EOF."""
        deadline = threading.Event()
        timer = threading.Timer(DEADLINE_S, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    line = self._lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                if line is None:
                    self._ended = True
                    raise AssertionError(f"no {kind} before the end: {self.finish()[1]}")
                event = json.loads(line)
                self.events.append(event)
                if event["type"] == kind and model in (None, event.get("model")):
                    return event
        finally:
            timer.cancel()
        raise AssertionError(f"no {kind} within {DEADLINE_S} s")

    def finish(self) -> tuple[int, str]:
        """Wait for the exit: its status and stderr; the rest of its events are kept."""
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        code = self.proc.wait(timeout=DEADLINE_S)
        while not self._ended and (line := self._lines.get(timeout=DEADLINE_S)) is not None:
            self.events.append(json.loads(line))
        self._ended = True
        return code, err

    def unloaded(self) -> list[tuple[str, str]]:
        return [(e["model"], e["reason"]) for e in self.events if e["type"] == "model.unloaded"]


@pytest.fixture
def running() -> Iterator[list[Headless]]:
    started: list[Headless] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=30)


def journal_types() -> list[tuple[str, str | None, str | None]]:
    path = data_dir() / "events.jsonl"
    return [(e["type"], e.get("model"), e.get("reason")) for e in read_journal(path)]


# -- signals ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_stops_every_model_cleanly(tmp_path: Path, running: list[Headless],
                                            sig: signal.Signals) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED)
    run = Headless("--config", config, "--simulate")
    running.append(run)
    run.wait_for("model.ready", "chat")
    run.proc.send_signal(sig)
    code, err = run.finish()
    assert (code, without_api_line(err)) == (0, "")
    assert run.unloaded() == [("chat", "shutdown")]
    assert ("model.unloaded", "chat", "shutdown") in journal_types()


def test_closing_the_terminal_stops_every_model_cleanly(tmp_path: Path) -> None:
    """The kernel's own SIGHUP: gpuwarden runs in a terminal (its controlling tty, all
    its output there) and the terminal goes away."""
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED)
    master, slave = pty.openpty()
    take_tty = ("import fcntl, os, sys, termios; os.setsid(); "
                "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.executable, sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", take_tty,
                             *gpuwarden("headless", "--config", config, "--simulate",
                                        "--events", "-")],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        seen = b""
        while b'"model.ready"' not in seen:  # read until the model runs (or EOF: fail)
            chunk = os.read(master, 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
    except OSError as exc:  # EIO: the child closed the terminal, it ended early
        raise AssertionError(seen.decode(errors="replace")) from exc
    finally:
        os.close(master)  # the terminal is gone: the kernel hangs up the session
    assert proc.wait(timeout=DEADLINE_S) in (0, 141)  # 141: its stdout went with it
    assert ("model.unloaded", "chat", "shutdown") in journal_types()


def test_a_hangup_ignored_at_start_stays_ignored_like_nohup(
        tmp_path: Path, running: list[Headless]) -> None:
    scenario = tmp_path / "ticking.toml"
    scenario.write_text(TICKING)
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED)
    nohup = (sys.executable, "-c", "import os, signal, sys; "
             "signal.signal(signal.SIGHUP, signal.SIG_IGN); "
             "os.execv(sys.executable, sys.argv[1:])")
    run = Headless("--config", config, "--simulate", scenario, prefix=nohup)
    running.append(run)
    run.wait_for("model.ready", "chat")
    run.wait_for("scenario.step")
    run.proc.send_signal(signal.SIGHUP)
    run.wait_for("scenario.step")  # a second later it still runs
    run.wait_for("scenario.step")
    assert run.unloaded() == []
    run.proc.send_signal(signal.SIGTERM)
    code, err = run.finish()
    assert (code, without_api_line(err)) == (0, "")
    assert run.unloaded() == [("chat", "shutdown")]


def servers_of(model: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] and str(model) in proc.info["cmdline"]:
            found.append(proc)
    return found


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_a_signal_stops_a_real_llama_server(tmp_path: Path, llama_server_bin: Path,
                                            running: list[Headless],
                                            sig: signal.Signals) -> None:
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    config = tmp_path / "config.toml"
    config.write_text(f'[[models]]\nname = "tiny"\nbackend = "llama-server"\n'
                      f'path = "{model}"\nplacement = "cpu"\ncontext_size = 256\n'
                      f'args = ["--threads", "1", "--parallel", "1"]\nautostart = true\n')
    env = {**os.environ, "GPUWARDEN_LLAMA_SERVER": str(llama_server_bin)}
    run = Headless("--config", config, "--simulate", env=env)
    running.append(run)
    run.wait_for("model.ready", "tiny")
    servers = servers_of(model)
    assert len(servers) == 1
    run.proc.send_signal(sig)
    code, err = run.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert run.unloaded() == [("tiny", "shutdown")]
    assert wait_until(lambda: not servers[0].is_running(), timeout=DEADLINE_S)
    assert servers_of(model) == []
    registry = ServerRegistry(default_registry_path())
    registry.load()
    assert registry.records() == {}


def test_a_signal_closes_the_window_and_stops_its_models(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    log = tmp_path / "window.log"
    with log.open("w") as err:
        proc = subprocess.Popen(gpuwarden("--config", config, "--simulate", "--quit-after", "120"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
    try:
        assert wait_until(lambda: ("model.ready", "chat", None) in [
            (t, m, None) for t, m, _ in journal_types()] or proc.poll() is not None,
            timeout=DEADLINE_S), log.read_text()
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=DEADLINE_S) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert ("model.unloaded", "chat", "shutdown") in journal_types()
    assert "Traceback" not in log.read_text()


# -- a config file nothing can be used from --------------------------------------------

UNUSABLE = {  # what is in the file -> what the user reads
    "syntax": (b'[[models]\nname = "x"\n',
               ":1: invalid TOML: Expected ']]' at the end of an array declaration "
               "(at line 1, column 9)"),
    "not utf-8": (b'[[models]]\nname = "caf\xe9"\n', ":2: cannot read: not UTF-8 text (byte 0xe9)"),
}


@pytest.mark.parametrize("case", list(UNUSABLE))
def test_headless_refuses_a_config_file_it_cannot_use(tmp_path: Path, case: str) -> None:
    content, said = UNUSABLE[case]
    config = tmp_path / "config.toml"
    config.write_bytes(content)
    done = subprocess.run(gpuwarden("headless", "--config", config, "--simulate",
                                    "--duration", "30", "--events", "-"),
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 2
    assert done.stderr == (f"gpuwarden: error: {config}{said}\n"
                           "gpuwarden: error: nothing in the config file could be used: "
                           "fix it and start again\n")
    assert done.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_headless_refuses_an_unreadable_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED)
    config.chmod(0)
    done = subprocess.run(gpuwarden("headless", "--config", config, "--simulate"),
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 2
    assert done.stderr.startswith(f"gpuwarden: error: {config}: cannot read: Permission denied\n")


def test_the_window_starts_with_a_config_file_it_cannot_use_and_says_why(
        tmp_path: Path) -> None:
    """The window's start: the engine runs with no models, the problem is a config.problem
    (an alert in the window), and the file once fixed is read again."""
    config = tmp_path / "config.toml"
    config.write_bytes(UNUSABLE["syntax"][0])
    engine = open_engine(config, None, TelemetryOptions(simulate=SimulateSpec()))
    assert isinstance(engine, Engine)
    try:
        assert engine.config.models == ()
        problems = [e.to_dict()["message"] for e in engine.events_since(0)
                    if e.type == "config.problem"]
        assert problems == [f"{config}{UNUSABLE['syntax'][1]}",
                            f"nothing in {config} could be used: no models until it is "
                            "fixed (it is read again when it changes)"]
        board = AlertBoard()
        for event in engine.events_since(0):
            board.apply(event)
        assert any(UNUSABLE["syntax"][1] in a.detail for a in board.active())
        config.write_text(SIMULATED)
        assert engine.reload_config().ok
        assert [m.name for m in engine.config.models] == ["chat"]
    finally:
        engine.close()


def test_a_config_with_some_bad_entries_still_runs_the_good_ones(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SIMULATED + '\n[[models]]\nname = "bad"\nbackend = "warp"\n')
    done = subprocess.run(gpuwarden("headless", "--config", config, "--simulate",
                                    "--duration", "2", "--events", "-"),
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert done.returncode == 0, done.stderr
    assert f"{config}:14: model 'bad': 'backend' must be one of" in done.stderr
    ready = [json.loads(line)["model"] for line in done.stdout.splitlines()
             if json.loads(line)["type"] == "model.ready"]
    assert ready == ["chat"]


# -- messages in the user's words ------------------------------------------------------


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gpuwarden(*args), capture_output=True, text=True,
                          timeout=DEADLINE_S, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_config_path_is_said_to_be_empty(where: str) -> None:
    args = ["--config", "", "headless"] if where == "before" else ["headless", "--config", ""]
    done = run_cli(*args, "--simulate", "--duration", "1")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith("error: argument --config: the path is empty")
    assert "'.'" not in done.stderr and " .:" not in done.stderr


def test_headless_takes_interval_after_the_subcommand_too(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from gpuwarden import cli, headless

    seen: list[float] = []

    def body(engine: Engine, _args: object) -> int:
        seen.append(engine.interval_s)
        engine.close()
        return 0

    monkeypatch.setattr(headless, "_run", body)
    assert cli.main(["headless", "--interval", "0.5", "--simulate"]) == 0
    assert cli.main(["--interval", "2", "headless", "--simulate"]) == 0
    assert cli.main(["--interval", "2", "headless", "--interval", "0.25", "--simulate"]) == 0
    assert seen == [0.5, 2.0, 0.25]
    done = run_cli("headless", "--interval", "0.5", "--simulate", "--duration", "0.5")
    assert done.returncode == 0 and "usage:" not in done.stderr


def test_a_date_is_shown_as_toml_writes_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[models]]\nname = "chat"\nbackend = "simulated"\n'
                      "idle_timeout_s = 1979-05-27T07:32:00Z\n")
    done = run_cli("headless", "--config", config, "--simulate", "--duration", "0.5")
    assert done.returncode == 0
    assert done.stderr.splitlines()[0] == (
        f"gpuwarden: {config}:4: model 'chat': 'idle_timeout_s' must be a number >= 0, "
        "got 1979-05-27T07:32:00Z")
    assert "datetime" not in done.stderr


def test_control_characters_in_values_are_escaped_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[models]]\nname = "chat"\nbackend = "llama-server"\n'
                      'path = "x\\u0000y\\u001b[31m.gguf"\n')
    done = run_cli("headless", "--config", config, "--simulate", "--duration", "0.5")
    assert done.returncode == 0
    assert done.stderr.splitlines()[0] == (
        f"gpuwarden: {config}:4: model 'chat': model file not found: "
        f"{tmp_path}/x\\x00y\\x1b[31m.gguf")
    assert "\x00" not in done.stderr and "\x1b" not in done.stderr


def test_a_config_path_with_a_control_character_is_escaped(tmp_path: Path) -> None:
    done = run_cli("headless", "--config", tmp_path / "a\x1b[2Jb.toml", "--duration", "1")
    assert done.returncode == 2
    assert done.stderr == f"gpuwarden: error: {tmp_path}/a\\x1b[2Jb.toml: no such config file\n"


def test_a_card_smaller_than_the_driver_names_the_line_and_the_key(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[[simulation.gpu]]\nname = "tiny"\nmemory_total_mib = 1\n')
    done = run_cli("status", "--simulate", scenario)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"gpuwarden: error: {scenario}:3: [[simulation.gpu]] 1: "
                           "'memory_total_mib' must be more than the 300 MiB the simulated "
                           "driver itself holds, got 1\n")


def test_a_profile_that_contradicts_a_default_points_at_the_key_written(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[simulation]\ngpus = 2\n\n[[simulation.gpu]]\n\n'
                        '[[simulation.gpu]]\nname = "small"\npower_limit_w = 20\n')
    done = run_cli("status", "--simulate", scenario)
    assert done.returncode == 2
    assert done.stderr == (f"gpuwarden: error: {scenario}:8: [[simulation.gpu]] 2: "
                           "'idle_power_w' (25) must be >= 0 and below 'power_limit_w' (20); "
                           "'idle_power_w' is the default (not set here)\n")


def test_a_scenario_step_with_a_control_character_is_logged_escaped(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[[step]]\nat = 0\naction = "vram_grab"\nowner = "a\\u0000b"\nmib = 10\n')
    done = run_cli("headless", "--simulate", scenario, "--duration", "1", "--events", "-")
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line) for line in done.stdout.splitlines()
             if json.loads(line)["type"] == "scenario.step"]
    assert [s["detail"] for s in steps] == ["gpu 0 owner=a\\x00b mib=10 (at 0 s)"]


CRASH = '[[step]]\nat = {at}\naction = "crash"\nmodel = "{model}"\n'


def test_a_crash_step_is_logged_as_a_scenario_step(tmp_path: Path) -> None:
    config, scenario = tmp_path / "config.toml", tmp_path / "scenario.toml"
    config.write_text(SIMULATED)
    scenario.write_text(CRASH.format(at=1, model="chat") + "\n"
                        + CRASH.format(at=1.5, model="chat"))
    done = run_cli("headless", "--config", config, "--simulate", scenario,
                   "--duration", "3", "--events", "-")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [(e["type"], e.get("detail")) for e in events
             if e["type"] in ("scenario.step", "model.crashed")]
    assert kinds[:3] == [("scenario.step", "model=chat exit_code=137 (at 1 s)"),
                         ("model.crashed", None),
                         ("scenario.step",
                          "model=chat exit_code=137 (at 1.5 s) (it was not running)")]


@pytest.mark.parametrize("case", ["unknown", "not simulated", "no models"])
def test_a_crash_step_for_a_model_it_cannot_crash_is_refused(tmp_path: Path, case: str) -> None:
    config, scenario = tmp_path / "config.toml", tmp_path / "scenario.toml"
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    config.write_text({"unknown": SIMULATED, "no models": "",
                       "not simulated": '[[models]]\nname = "tiny"\nbackend = "llama-server"\n'
                                        'path = "tiny.gguf"\n'}[case])
    model = "tiny" if case == "not simulated" else "ghost"
    scenario.write_text('[simulation]\ngpus = 1\n\n' + CRASH.format(at=5, model=model))
    done = run_cli("headless", "--config", config, "--simulate", scenario, "--duration", "30")
    said = {"unknown": "names no model in the config: 'ghost' (configured: chat)",
            "no models": "names no model in the config: 'ghost' (configured: none)",
            "not simulated": "names model 'tiny', whose backend is 'llama-server': a scenario "
                             "crashes only simulated models"}[case]
    assert done.returncode == 2
    assert done.stderr == f"gpuwarden: error: {scenario}:4: crash step (at 5 s): 'model' {said}\n"
