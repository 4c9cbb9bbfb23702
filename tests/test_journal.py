"""The event journal: lines round-trip, rotation keeps the newest, failures never raise."""

from __future__ import annotations

import enum
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpuwarden.engine.events import Event, GpuLost, ScenarioStep
from gpuwarden.engine.journal import Journal, default_journal_path, read_journal


def step(n: int, detail: str = "") -> ScenarioStep:
    return ScenarioStep(ts=1_700_000_000.0 + n, seq=n, action="load", detail=detail)


def seqs(path: Path) -> list[int]:
    return [e["seq"] for e in read_journal(path)]


def test_events_round_trip_as_one_compact_line_each(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events: list[Event] = [step(1, "modèle ✓"), GpuLost(ts=5.0, seq=2, gpu=0, message="gone")]
    with Journal(path) as journal:
        assert all(journal.write(e) for e in events)
    assert list(read_journal(path)) == [e.to_dict() for e in events]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert "modèle ✓" in lines[0]  # written as text, not \u escapes
    assert ": " not in lines[1] and ", " not in lines[1]  # compact


class Colour(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Where:
    folder: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class OddEvent(Event):
    TYPE: ClassVar[str] = "test.odd"
    payload: Any


def test_values_json_cannot_encode_are_converted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = Journal(path)
    odd = {"p": Path("/m/x.gguf"), "c": Colour.RED, "w": Where(Path("/m")), "t": (1, 2)}
    assert journal.write(OddEvent(seq=1, payload=odd)) is True
    assert journal.write(OddEvent(seq=2, payload={"s": {3}, "o": object()})) is True
    journal.close()
    first, second = read_journal(path)
    assert first["payload"] == {"p": "/m/x.gguf", "c": "red", "w": {"folder": "/m"}, "t": [1, 2]}
    assert second["payload"]["s"] == [3] and "object" in second["payload"]["o"]


def test_rotation_keeps_at_most_backups_old_files_and_the_newest_events(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = Journal(path, max_bytes=400, backups=2)
    for n in range(1, 101):
        assert journal.write(step(n))
    journal.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 400 for p in tmp_path.iterdir())
    kept = seqs(path)
    assert kept[-1] == 100
    assert kept == list(range(kept[0], 101))  # oldest first, contiguous across files
    assert kept[0] > 1  # the oldest were dropped, not kept forever


def test_with_no_backups_the_file_just_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = Journal(path, max_bytes=300, backups=0)
    for n in range(1, 31):
        journal.write(step(n))
    journal.close()
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert seqs(path)[-1] == 30 and path.stat().st_size <= 300


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_next_event_survives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    journal = Journal(path, max_bytes=400, backups=3)
    for n in range(1, 21):
        journal.write(step(n))
    journal.close()
    with open(path, "ab") as f:  # a crash mid-write
        f.write(b'{"ts": 1700000021.0, "seq": 21, "ty')
    with caplog.at_level(logging.WARNING, logger="gpuwarden.engine.journal"):
        assert seqs(path) == list(range(seqs(path)[0], 21))
    assert "unreadable line" in caplog.text
    # A restarted journal appends after the torn line, not onto it.
    Journal(path, max_bytes=10_000).write(step(22))
    assert seqs(path)[-1] == 22


def test_garbage_lines_and_a_missing_journal_do_not_raise(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    assert list(read_journal(path)) == []
    path.write_bytes(b'[1, 2]\n\xff\xfe not utf8\n\n{"seq": 7}\n')
    assert list(read_journal(path)) == [{"seq": 7}]


def test_a_write_failure_is_reported_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    journal = Journal(blocker / "events.jsonl")
    with caplog.at_level(logging.ERROR, logger="gpuwarden.engine.journal"):
        results = [journal.write(step(n)) for n in range(1, 4)]
    assert results == [False, False, False]
    assert journal.last_error == f"its folder {blocker} cannot be made (File exists)"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert caplog.records[0].exc_info is None  # one line, no traceback
    assert "cannot write the event journal" in caplog.text
    blocker.unlink()  # the disk is fine again
    assert journal.write(step(9)) is True
    assert journal.last_error is None
    journal.close()
    assert journal.last_gap is not None
    gap, event = read_journal(journal.path)  # the gap is said first, in the same write
    assert gap == {"ts": step(9).ts, "type": "journal.gap", "missed": 3, "first_seq": 1,
                   "last_seq": 3, "reason": journal.last_gap.reason}
    assert event["seq"] == 9
    assert journal.last_gap.missed == 3 and "cannot be made" in journal.last_gap.reason
    assert "3 events (seq 1-3) could not be recorded" in journal.last_gap.describe()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_does_not_raise() -> None:
    journal = Journal(Path("/dev/full"))
    assert journal.write(step(1)) is False
    assert journal.last_error is not None and "No space" in journal.last_error
    assert journal.write(step(2)) is False  # no error on close: nothing left to flush
    journal.close()


def test_concurrent_writers_lose_and_tear_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    journal = Journal(path, max_bytes=2_000, backups=200)  # enough to keep every line

    def writer(k: int) -> None:
        for n in range(150):
            journal.write(step(k * 1000 + n, detail="x" * (n % 7)))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    got = seqs(path)
    assert sorted(got) == sorted(k * 1000 + n for k in range(8) for n in range(150))
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    for p in tmp_path.iterdir():
        for line in p.read_text().splitlines():
            json.loads(line)


def test_default_path_is_in_the_user_data_folder(tmp_path: Path) -> None:
    path = default_journal_path()
    assert path.name == "events.jsonl"
    assert path.is_relative_to(tmp_path)  # conftest points XDG_DATA_HOME here
