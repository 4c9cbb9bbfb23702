"""The server registry: what gpuwarden started survives a restart, and a reused pid is not ours."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gpuwarden.engine import paths
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.supervisor.registry import (
    ServerRecord,
    ServerRegistry,
    default_registry_path,
    process_matches,
)


def record(model: str = "qwen-0.5b", **changes: object) -> ServerRecord:
    base = ServerRecord(
        model=model,
        pid=4242,
        port=8081,
        api_key="sk-local-secret",
        executable="/opt/llama/llama-server",
        cmdline=("/opt/llama/llama-server", "-m", "/models/q.gguf", "--port", "8081"),
        started_ts=1_700_000_000.5,
        instance=0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_default_path_is_in_the_user_data_folder() -> None:
    assert default_registry_path() == paths.data_dir() / "servers.json"
    assert ServerRegistry().path == default_registry_path()


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "servers.json"
    first = ServerRegistry(path)
    assert first.load() == []
    first.add(record("a", pid=11))
    first.add(record("b", pid=22, instance=1))

    again = ServerRegistry(path)
    assert again.load() == []
    assert again.records() == {"a": record("a", pid=11), "b": record("b", pid=22, instance=1)}
    assert isinstance(again.records()["a"].cmdline, tuple)


def test_adding_a_model_again_replaces_its_record_and_remove_forgets_it(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    reg = ServerRegistry(path)
    reg.add(record("a", pid=11))
    reg.add(record("a", pid=12))
    reg.add(record("b"))
    reg.remove("a")
    reg.remove("never-there")
    loaded = ServerRegistry(path)
    loaded.load()
    assert loaded.records() == {"b": record("b")}


def test_records_returns_a_copy(tmp_path: Path) -> None:
    reg = ServerRegistry(tmp_path / "servers.json")
    reg.add(record("a"))
    reg.records().clear()
    assert list(reg.records()) == ["a"]


def test_a_change_before_load_keeps_what_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    ServerRegistry(path).add(record("a"))
    ServerRegistry(path).add(record("b"))  # a new run that forgot to load first
    reg = ServerRegistry(path)
    reg.load()
    assert set(reg.records()) == {"a", "b"}


def test_the_file_holding_api_keys_is_private(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    ServerRegistry(path).add(record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # loosened by someone
    ServerRegistry(path).add(record("b"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "sk-local-secret" in path.read_text()


@pytest.mark.parametrize(
    "content", [b"{not json", b"\xff\xfe", b"[]", b'{"version": 99, "servers": []}']
)
def test_a_corrupt_file_is_set_aside_and_reported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "servers.json"
    path.write_bytes(content)
    reg = ServerRegistry(path, clock=FakeClock(1_700_000_123.0))
    problems = reg.load()
    assert len(problems) == 1
    assert "servers.json.corrupt-1700000123" in problems[0]
    assert "looked for by the mark in their environment" in problems[0]
    assert reg.records() == {}
    assert not path.exists()
    assert (tmp_path / "servers.json.corrupt-1700000123").read_bytes() == content


def test_setting_aside_twice_in_one_second_keeps_both_files(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    reg = ServerRegistry(path, clock=FakeClock(5.0))
    for text in ("bad one", "bad two"):
        path.write_text(text)
        reg.load()
    assert (tmp_path / "servers.json.corrupt-5").read_text() == "bad one"
    assert (tmp_path / "servers.json.corrupt-5-2").read_text() == "bad two"


def test_one_bad_entry_is_dropped_and_named_while_the_others_load(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    good = dataclasses.asdict(record("good"))
    good["future_field"] = "ignored"
    doc = {"version": 1, "servers": [
        good,
        {**dataclasses.asdict(record("badport")), "port": 70000},
        {**dataclasses.asdict(record("relative")), "executable": "llama-server"},
        "not an object",
    ]}
    path.write_text(json.dumps(doc))
    reg = ServerRegistry(path)
    problems = reg.load()
    assert list(reg.records()) == ["good"]
    assert len(problems) == 3
    assert "'badport'" in problems[0] and "port" in problems[0]
    assert "'relative'" in problems[1] and "absolute" in problems[1]
    assert "entry 4" in problems[2]


def test_an_unreadable_file_is_reported_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "servers.json"
    path.mkdir()  # reading a folder fails with an OSError
    problems = ServerRegistry(path).load()
    assert len(problems) == 1 and "could not be read" in problems[0]
    assert path.is_dir()


def test_invalid_records_are_refused() -> None:
    with pytest.raises(ValueError, match="pid"):
        record(pid=0)
    with pytest.raises(ValueError, match="cmdline"):
        record(cmdline=())
    with pytest.raises(ValueError, match="started_ts"):
        record(started_ts=float("nan"))


# --- process_matches: a real child -------------------------------------------------------


Child = tuple[subprocess.Popen[bytes], ServerRecord]


@pytest.fixture
def child() -> Iterator[Child]:
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = time.time()
    proc = subprocess.Popen(argv)
    try:
        yield proc, record("child", pid=proc.pid, executable=sys.executable,
                           cmdline=tuple(argv), started_ts=started)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_real_child_matches_its_record(child: Child) -> None:
    proc, rec = child
    # sys.executable in a venv is a symlink; the kernel reports the resolved binary.
    assert process_matches(rec)
    assert os.path.realpath(psutil.Process(proc.pid).exe()) == os.path.realpath(sys.executable)


def test_a_different_cmdline_does_not_match(child: Child) -> None:
    _, rec = child
    assert not process_matches(dataclasses.replace(rec, cmdline=(*rec.cmdline, "--port", "1")))


def test_a_different_executable_does_not_match(
    child: Child, tmp_path: Path
) -> None:
    _, rec = child
    other = shutil.which("sleep") or "/bin/true"
    assert not process_matches(dataclasses.replace(rec, executable=other))


def test_a_reused_pid_does_not_match(child: Child) -> None:
    _, rec = child
    assert not process_matches(dataclasses.replace(rec, started_ts=rec.started_ts - 3600))
    assert not process_matches(dataclasses.replace(rec, started_ts=rec.started_ts + 60))


def test_a_dead_or_zombie_process_does_not_match(
    child: Child
) -> None:
    proc, rec = child
    proc.kill()
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the killed child never became a zombie"
        time.sleep(0.01)
    assert not process_matches(rec)  # killed, not yet reaped
    proc.wait(timeout=10)
    assert not process_matches(rec)  # gone


def test_the_gpu_a_server_runs_on_is_kept_and_checked(tmp_path) -> None:
    reg = ServerRegistry(tmp_path / "servers.json")
    reg.load()
    reg.add(record("m", gpu=1))
    again = ServerRegistry(tmp_path / "servers.json")
    assert again.load() == [] and again.records()["m"].gpu == 1
    with pytest.raises(ValueError, match="gpu must be"):
        record("m", gpu=-1)


def test_an_adopted_server_counts_on_the_gpu_it_runs_on() -> None:
    from lifecycle_helpers import model as model_config
    from lifecycle_rig import Rig

    rig = Rig(model_config("m", placement="gpu"))
    assert rig.manager.adopt("m", 32, lambda *_: None, gpu=1)
    assert rig.manager.state("m").config.gpu == 1
