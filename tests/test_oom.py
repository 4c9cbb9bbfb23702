"""OOM-kill evidence from the cgroup's oom_kill counter."""

from __future__ import annotations

import os
from pathlib import Path

from gpuwarden.engine.supervisor.oom import (
    OomWatch,
    cgroup_path,
    counter_files,
    memory_cgroup_v1_path,
    parse_memory_events,
)

MEMORY_EVENTS = "low 0\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n"
OOM_CONTROL_V1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"
PROC_CGROUP_V2 = "0::/user.slice/user-1000.slice/app-gpuwarden.scope\n"
PROC_CGROUP_HYBRID = (
    "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n"
    "2:cpu,cpuacct:/\n0::/\n"
)


def test_parse_memory_events_reads_oom_kill_not_its_neighbours() -> None:
    assert parse_memory_events(MEMORY_EVENTS) == 1
    assert parse_memory_events(OOM_CONTROL_V1) == 4
    assert parse_memory_events("oom 2\noom_group_kill 5\n") is None
    assert parse_memory_events("oom_kill lots\n") is None
    assert parse_memory_events("") is None


def test_cgroup_paths_of_v2_and_hybrid_hosts() -> None:
    assert cgroup_path(PROC_CGROUP_V2) == "/user.slice/user-1000.slice/app-gpuwarden.scope"
    assert memory_cgroup_v1_path(PROC_CGROUP_V2) is None
    assert cgroup_path(PROC_CGROUP_HYBRID) == "/"
    assert memory_cgroup_v1_path(PROC_CGROUP_HYBRID) == "/process_api/abc"
    assert memory_cgroup_v1_path("5:cpuacct,memory:/x\n") == "/x"
    assert cgroup_path("4:memory:/x\n") is None
    assert cgroup_path("") is None


def test_counter_files_cover_pure_v2_hybrid_and_v1(tmp_path: Path) -> None:
    assert counter_files(PROC_CGROUP_HYBRID, tmp_path) == [
        tmp_path / "memory.events",
        tmp_path / "unified" / "memory.events",
        tmp_path / "memory" / "process_api" / "abc" / "memory.oom_control",
    ]


def fake_host(tmp_path: Path, pid: int, proc_cgroup: str) -> tuple[Path, Path]:
    proc, sysfs = tmp_path / "proc", tmp_path / "cgroup"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(proc_cgroup)
    return proc, sysfs


def test_a_grown_v2_counter_is_an_oom_kill(tmp_path: Path) -> None:
    proc, sysfs = fake_host(tmp_path, 77, PROC_CGROUP_V2)
    events = sysfs / "user.slice/user-1000.slice/app-gpuwarden.scope/memory.events"
    events.parent.mkdir(parents=True)
    events.write_text(MEMORY_EVENTS)
    watch = OomWatch.for_pid(77, cgroup_root=sysfs, proc_root=proc)
    assert watch.sources == (events,)
    assert watch.killed_since() is False
    events.write_text(MEMORY_EVENTS.replace("oom_kill 1", "oom_kill 2"))
    assert watch.killed_since() is True


def test_a_grown_v1_counter_on_a_hybrid_host_is_an_oom_kill(tmp_path: Path) -> None:
    proc, sysfs = fake_host(tmp_path, 78, PROC_CGROUP_HYBRID)
    control = sysfs / "memory/process_api/abc/memory.oom_control"
    control.parent.mkdir(parents=True)
    control.write_text(OOM_CONTROL_V1)
    watch = OomWatch.for_pid(78, cgroup_root=sysfs, proc_root=proc)
    assert watch.killed_since() is False
    control.write_text(OOM_CONTROL_V1.replace("oom_kill 4", "oom_kill 5"))
    assert watch.killed_since() is True


def test_a_vanished_or_reset_cgroup_is_unknown_not_a_verdict(tmp_path: Path) -> None:
    proc, sysfs = fake_host(tmp_path, 79, PROC_CGROUP_V2)
    events = sysfs / "user.slice/user-1000.slice/app-gpuwarden.scope/memory.events"
    events.parent.mkdir(parents=True)
    events.write_text(MEMORY_EVENTS)
    watch = OomWatch.for_pid(79, cgroup_root=sysfs, proc_root=proc)
    events.write_text("oom_kill 0\n")  # a new cgroup of the same name
    assert watch.killed_since() is None
    events.unlink()  # the scope was removed when the process died
    assert watch.killed_since() is None


def test_a_process_already_gone_or_without_a_readable_cgroup_gives_none(tmp_path: Path) -> None:
    assert OomWatch.for_pid(4_000_000, proc_root=tmp_path).killed_since() is None
    proc, sysfs = fake_host(tmp_path, 80, PROC_CGROUP_V2)  # no memory.events anywhere
    watch = OomWatch.for_pid(80, cgroup_root=sysfs, proc_root=proc)
    assert watch.sources == ()
    assert watch.killed_since() is None


def test_watching_this_process_on_this_machine_is_sane() -> None:
    watch = OomWatch.for_pid(os.getpid())
    verdict = watch.killed_since()
    if watch.sources:
        # Readable here: this test process was not OOM-killed between two reads.
        assert verdict is False
        assert all(p.name in ("memory.events", "memory.oom_control") for p in watch.sources)
    else:
        assert verdict is None
