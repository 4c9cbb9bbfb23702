"""The details of one model: its settings and where each came from, what happened to it
(newest first), its crashes and the end of its server log."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.details import (
    DEFAULT,
    FROM_WINDOW,
    HISTORY_LIMIT,
    LOG_LINES,
    ModelDetails,
    Setting,
    history_of,
    read_log_tail,
)
from gpuwarden.engine.events import ConfigReloaded, ModelReady, SwapEvicted
from gpuwarden.engine.facade import Engine, ServicePaths
from gpuwarden.engine.lifecycle.config import load_config, parse_config
from gpuwarden.engine.lifecycle.config_diff import diff_configs
from gpuwarden.engine.runtime import SimulateSpec, TelemetryOptions
from gpuwarden.engine.supervisor.launch import log_file_name
from helpers import drive

CONFIG = """\
sample_interval_s = 1

[[models]]
name = "chat"
backend = "simulated"
vram_mib = 2000
context_size = 8192   # a comment
gpu = "auto"
load_time_s = 0

[[models]]
name = "coder"
backend = "llama-server"
path = "coder.gguf"
vram_mib = 3000
"""


def line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def engine_from(tmp_path: Path, text: str = CONFIG) -> tuple[Engine, FakeClock, Path]:
    (tmp_path / "coder.gguf").write_bytes(b"not a real model")
    path = tmp_path / "config.toml"
    path.write_text(text)
    config, problems = load_config(path)
    assert not problems
    clock = FakeClock()
    engine = Engine.build(config, TelemetryOptions(simulate=SimulateSpec()),
                          ServicePaths(None, None, logs=tmp_path / "logs"), clock=clock,
                          config_path=path)
    engine.start(watch_config=False)
    return engine, clock, path


def details_of(engine: Engine, name: str) -> ModelDetails:
    found = engine.details(name)
    assert found is not None
    return found


def setting(details: ModelDetails, key: str) -> Setting:
    return next(s for s in details.settings if s.key == key)


def test_settings_say_which_line_of_the_config_file_set_them(tmp_path):
    engine, _, _ = engine_from(tmp_path)
    chat = details_of(engine, "chat")
    assert setting(chat, "context_size") == Setting(
        "context_size", "8192", f"config file line {line_of(CONFIG, 'context_size')}")
    assert setting(chat, "gpu") == Setting("gpu", "auto",
                                           f"config file line {line_of(CONFIG, 'gpu')}")
    assert setting(chat, "placement") == Setting("placement", "auto", DEFAULT)
    assert setting(chat, "threads") == Setting("threads", "the backend's own", DEFAULT)
    assert setting(chat, "idle_timeout_s") == Setting("idle_timeout_s", "600", DEFAULT)
    assert [s.key for s in chat.settings] == [
        "backend", "path", "context_size", "placement", "gpu", "idle_timeout_s", "eviction",
        "priority", "args", "vram_mib", "ram_mib", "layers", "threads", "autostart"]
    coder = details_of(engine, "coder")
    assert setting(coder, "path").value == str(tmp_path / "coder.gguf")
    assert setting(coder, "vram_mib") == Setting(
        "vram_mib", "3000", f"config file line {len(CONFIG.splitlines())}")
    engine.close()


def test_priority_and_eviction_set_in_the_window_say_so_until_cleared(tmp_path):
    engine, _, _ = engine_from(tmp_path)
    assert engine.set_priority("chat", 7).ok and engine.pin("chat").ok
    chat = details_of(engine, "chat")
    assert setting(chat, "priority") == Setting("priority", "7", FROM_WINDOW)
    assert setting(chat, "eviction") == Setting("eviction", "never", FROM_WINDOW)
    assert engine.set_priority("chat", None).ok and engine.set_policy("chat", None).ok
    chat = details_of(engine, "chat")
    assert setting(chat, "priority") == Setting("priority", "0", DEFAULT)
    assert setting(chat, "eviction") == Setting("eviction", "idle", DEFAULT)
    engine.close()


def test_history_is_newest_first_with_the_crash_and_its_exit_code(tmp_path):
    engine, clock, _ = engine_from(tmp_path)
    assert engine.load("chat").ok
    drive(engine, clock, 2)
    assert engine._simulated_backend.crash("chat", exit_code=1)
    drive(engine, clock, 5)  # restarted after the back-off
    assert engine.unload("chat").ok
    drive(engine, clock, 2)
    chat = details_of(engine, "chat")
    assert [h.type for h in chat.history] == [
        "model.unloaded", "model.ready", "model.loading", "model.restart_scheduled",
        "model.crashed", "model.ready", "model.loading"]
    crash = chat.history[4]
    assert crash.is_crash and "exit code 1" in crash.text
    assert [h.ts for h in chat.history] == sorted((h.ts for h in chat.history), reverse=True)
    assert [(c.kind, c.exit_code, c.describe()) for c in chat.crashes] == [
        ("crash", 1, "crash, exit code 1")]
    assert chat.crashes[0].ts == crash.ts
    assert details_of(engine, "coder").history == ()  # chat's events are not coder's
    engine.close()


def test_a_swap_is_in_the_history_of_both_models_and_other_events_in_neither():
    events = [ModelReady(ts=1, model="chat", placement="gpu"),
              SwapEvicted(ts=2, model="coder", for_model="chat"),
              ModelReady(ts=3, model="other", placement="gpu"),
              ConfigReloaded(ts=4, path="config.toml", changed=("chat",))]
    assert [(h.ts, h.type) for h in history_of("chat", events)] == [
        (2, "swap.evicted"), (1, "model.ready")]
    assert [h.type for h in history_of("coder", events)] == ["swap.evicted"]


def test_history_keeps_the_newest_entries_only(tmp_path):
    engine, clock, _ = engine_from(tmp_path)
    for _ in range(HISTORY_LIMIT // 3 + 2):  # loading, ready, unloaded per round
        engine.load("chat")
        drive(engine, clock, 1)
        engine.unload("chat")
        drive(engine, clock, 1)
    history = details_of(engine, "chat").history
    assert len(history) == HISTORY_LIMIT
    assert history[0].type == "model.unloaded"
    engine.close()


def test_a_running_model_whose_entry_changed_says_the_new_value_waits_for_a_load(tmp_path):
    engine, clock, path = engine_from(tmp_path)
    engine.load("chat")
    drive(engine, clock, 1)
    edited = "# a comment that moves every line down\n" + CONFIG.replace("8192", "2048")
    path.write_text(edited)
    assert engine.reload_config().ok
    chat = details_of(engine, "chat")
    assert setting(chat, "context_size") == Setting(
        "context_size", "2048",
        f"config file line {line_of(edited, 'context_size')} (applies at the next load)")
    assert setting(chat, "vram_mib").source == f"config file line {line_of(edited, 'vram')}"
    engine.close()


def test_key_lines_are_not_a_setting_a_reload_would_apply():
    old, _ = parse_config(CONFIG)
    new, problems = parse_config("\n\n" + CONFIG)
    assert dict(new.models[0].key_lines)["context_size"] == line_of(CONFIG, "context_size") + 2
    diff = diff_configs(old, new, problems)
    assert diff.changed == () and diff.empty


def test_the_log_tail_is_the_end_of_the_file_the_server_writes(tmp_path):
    engine, _, _ = engine_from(tmp_path)
    coder = details_of(engine, "coder")
    log = tmp_path / "logs" / log_file_name("coder")
    assert coder.log_path == log and log.name.startswith("coder-")
    assert coder.log_tail == () and "does not exist" in coder.log_note
    assert not coder.log_exists
    log.parent.mkdir()
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(100)) + b"bad \xff byte\n")
    coder = details_of(engine, "coder")
    assert coder.log_exists and len(coder.log_tail) == LOG_LINES and coder.log_note == ""
    assert coder.log_tail[-2:] == ("line 99", "bad \ufffd byte")
    assert coder.log_tail[0] == f"line {100 - LOG_LINES + 1}"
    engine.close()


def test_a_long_log_is_read_from_its_end_and_never_starts_mid_line(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("".join(f"{n:05d} " + "x" * 90 + "\n" for n in range(2000)))
    lines, note = read_log_tail(log, lines=1000, max_bytes=4096)
    assert note == "" and lines[-1].startswith("01999 ")
    assert all(len(line) == 96 for line in lines)  # no cut first line
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert read_log_tail(empty) == ((), f"the log is empty: {empty}")


def test_a_simulated_model_has_no_log_and_an_unknown_model_no_details(tmp_path):
    engine, _, _ = engine_from(tmp_path)
    chat = details_of(engine, "chat")
    assert chat.log_path is None and chat.log_tail == () and not chat.log_exists
    assert chat.log_note == "the simulated backend writes no log"
    assert engine.details("nope") is None
    engine.close()
