"""Per-model hints survive a restart; stale, corrupt and bad entries never stop a start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.lifecycle.hints import (
    STALE_AFTER_S,
    HintStore,
    ModelHints,
    default_hints_path,
)

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def restart(path: Path, clock: FakeClock) -> tuple[HintStore, list[str]]:
    store = HintStore(path, clock)
    return store, store.load()


def test_hints_round_trip_across_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "hints.json"
    store, problems = restart(path, clock)
    assert problems == [] and dict(store.all()) == {}  # a missing file is not a problem
    store.update("llama-8b", last_access_ts=T0 - 5, access_count=3)
    clock.advance(10)
    pinned = store.update("qwen", eviction_override="never", priority_override=7)
    assert pinned.updated_ts == T0 + 10
    store.save()
    again, problems = restart(path, clock)
    assert problems == []
    assert again.get("llama-8b") == ModelHints(last_access_ts=T0 - 5, access_count=3, updated_ts=T0)
    assert again.get("qwen") == pinned
    assert again.get("never-seen") == ModelHints()
    assert json.loads(path.read_text())["version"] == 1


def test_update_keeps_other_fields_and_rejects_nonsense(tmp_path: Path, clock: FakeClock) -> None:
    store = HintStore(tmp_path / "hints.json", clock)
    store.update("m", access_count=2, eviction_override="pressure")
    assert store.update("m", access_count=3) == ModelHints(
        access_count=3, eviction_override="pressure", updated_ts=T0
    )
    with pytest.raises(ValueError, match="eviction_override"):
        store.update("m", eviction_override="sometimes")
    with pytest.raises(TypeError, match="pinned"):
        store.update("m", pinned=True)
    assert store.get("m").access_count == 3
    with pytest.raises(TypeError):
        store.all()["m"] = ModelHints()  # type: ignore[index]


def test_save_writes_only_when_something_changed(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "hints.json"
    store = HintStore(path, clock)
    store.save()
    assert not path.exists()
    store.update("m", access_count=1)
    store.save()
    path.unlink()
    store.save()
    assert not path.exists()
    store.update("m", access_count=2)
    store.save()
    assert json.loads(path.read_text())["models"]["m"]["access_count"] == 2


def test_hints_unchanged_for_a_day_are_dropped(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "hints.json"
    store = HintStore(path, clock)
    store.update("old", access_count=1)
    clock.advance(3600)
    store.update("newer", access_count=1)
    store.save()
    clock.advance(STALE_AFTER_S - 3600)  # "old" is exactly a day old: kept
    store, problems = restart(path, clock)
    assert set(store.all()) == {"old", "newer"} and problems == []
    clock.advance(1)
    store, problems = restart(path, clock)
    assert set(store.all()) == {"newer"} and problems == []  # expiry is not a problem
    store.save()  # and the file forgets it too
    assert set(json.loads(path.read_text())["models"]) == {"newer"}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "Expecting value: line 1 column 1"),
        (b'{"version": 1, "models": {', "Expecting"),
        (b"\xff\xfe\x00garbage", "utf-8"),
        (b"[1, 2, 3]", "not a"),
        (b'{"version": 1, "models": []}', "not a"),
        (b'{"version": 2, "models": {}}', "unknown format version 2"),
    ],
)
def test_a_corrupt_file_is_set_aside_and_reported(
    tmp_path: Path, clock: FakeClock, content: bytes, why: str
) -> None:
    path = tmp_path / "hints.json"
    path.write_bytes(content)
    store, problems = restart(path, clock)
    assert dict(store.all()) == {}
    aside = tmp_path / f"hints.json.corrupt-{int(T0)}"
    assert aside.read_bytes() == content  # the user's file is kept, not deleted
    assert not path.exists()
    assert len(problems) == 1
    assert "hints.json was unreadable (" in problems[0] and why in problems[0]
    assert f"moved to {aside.name}" in problems[0] and "starting with no hints" in problems[0]
    store.update("m", access_count=1)
    store.save()
    assert restart(path, clock)[0].get("m").access_count == 1


def test_a_second_corrupt_file_does_not_overwrite_the_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "hints.json"
    path.write_text("first")
    restart(path, clock)
    path.write_text("second")
    _, problems = restart(path, clock)
    kept = sorted(p.read_text() for p in tmp_path.glob("hints.json.corrupt-*"))
    assert kept == ["first", "second"]
    assert "corrupt-" in problems[0]


def test_one_bad_entry_is_dropped_and_reported_while_the_rest_load(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "hints.json"
    good = {"access_count": 4, "updated_ts": T0, "from_a_newer_version": 1}
    doc = {
        "version": 1,
        "models": {
            "good": good,
            "count": {"access_count": "many", "updated_ts": T0},
            "policy": {"eviction_override": "sometimes", "updated_ts": T0},
            "shape": 5,
        },
    }
    path.write_text(json.dumps(doc))
    store, problems = restart(path, clock)
    assert dict(store.all()) == {"good": ModelHints(access_count=4, updated_ts=T0)}
    assert len(problems) == 3
    for name, why in [("count", "access_count"), ("policy", "sometimes"), ("shape", "object")]:
        assert any(f"model {name!r}" in p and why in p and "dropped" in p for p in problems)
    assert path.exists()  # the file as a whole was fine: not set aside


def test_default_path_is_in_the_user_data_folder(tmp_path: Path) -> None:
    path = default_hints_path()
    assert path.name == "hints.json" and path.is_relative_to(tmp_path)


def test_a_users_pin_outlives_the_24_hour_staleness(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "hints.json"
    store, _ = restart(path, clock)
    store.update("pinned", eviction_override="never", priority_override=3,
                 last_access_ts=T0, access_count=9)
    store.save()
    clock.advance(STALE_AFTER_S * 3)
    again, problems = restart(path, clock)
    kept = again.get("pinned")
    assert problems == []
    assert (kept.eviction_override, kept.priority_override) == ("never", 3)
    assert kept.last_access_ts is None and kept.access_count == 0  # usage data went stale
