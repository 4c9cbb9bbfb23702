"""The window's engine attached to a gpuwarden elsewhere, over the real control API: what
it reads back is what the remote has (snapshots, rows, events, history), its commands
answer as the remote's, a lost connection is said once and recovered from."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from api_rig import live_api
from gpuwarden.api.server import ApiServer
from gpuwarden.engine.lifecycle.config import ApiConfig
from gpuwarden.engine.lifecycle.core import AdminResult
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.remote import decode
from gpuwarden.remote.engine import RemoteEngine
from gpuwarden.remote.token import TokenMissing, attach_token
from helpers import drive
from lifecycle_helpers import model
from supervision_rig import wait_until


@pytest.fixture
def attached(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0),
                  model("b", vram_mib=30000.0)) as api:
        remote = RemoteEngine(api.url, api.token, timeout_s=2.0)
        seen: list = []
        remote.subscribe(seen.append)
        remote.start()
        try:
            yield api, remote, seen
        finally:
            remote.close()


def test_it_reads_back_what_the_remote_has(attached):
    api, remote, _ = attached
    api.engine.load("a")
    drive(api.engine, api.clock, 3.0)
    remote.step()
    assert remote.models() == api.engine.models()
    assert remote.snapshot() == api.engine.snapshot()
    assert remote.model("a").state == "ready"
    frame = remote.history()  # what it had when attached, then one sample per step
    local = api.engine.history()
    assert frame.t[0] == local.t[0] and frame.t[-1] == local.t[-1] == api.engine.snapshot().ts
    at = np.searchsorted(local.t, frame.t)
    assert np.array_equal(local.t[at], frame.t)  # samples of the remote's, none made up
    for key in ("gpu0.memory_used_mib", "host.cpu_pct"):
        assert np.allclose(frame.get(key), local.get(key)[at], equal_nan=True)


def test_events_come_through_as_the_remotes_own(attached):
    api, remote, seen = attached
    api.engine.load("a")
    drive(api.engine, api.clock, 3.0)
    wanted = [e.to_dict() for e in api.engine.events_since(0)]
    assert wait_until(lambda: len(seen) >= len(wanted), 10), (seen, wanted)
    assert [e.to_dict() for e in seen] == wanted  # same types, fields, ts and seq
    assert [e.to_dict() for e in remote.events_since(0)] == wanted


def test_commands_answer_as_the_remote_does(attached):
    api, remote, _ = attached
    assert remote.load("a") == AdminResult(True, "loading a")
    drive(api.engine, api.clock, 3.0)
    assert api.engine.model("a").state == "ready"
    assert remote.offload("b") == AdminResult(False, "b is not on a GPU (unloaded)")
    assert remote.set_priority("a", 3).ok and api.engine.model("a").priority == 3
    assert remote.pin("a").ok and api.engine.model("a").eviction == "never"
    assert remote.unpin("a").ok and api.engine.model("a").eviction == "idle"
    assert remote.pause_automation(True).ok and api.engine.automation_paused
    preview = remote.load_preview("b")
    assert isinstance(preview, LoadPreview) and preview == api.engine.load_preview("b")
    assert remote.load_preview("nope") == AdminResult(False, "no model named 'nope'")
    assert not remote.reload_config().ok and not remote.make_room(0, 1.0).ok


def test_details_are_the_remotes_with_its_log_lines_but_no_file_to_open(attached):
    api, remote, _ = attached
    api.engine.load("a")
    drive(api.engine, api.clock, 3.0)
    mine, theirs = remote.details("a"), api.engine.details("a")
    assert mine is not None and theirs is not None
    assert (mine.settings, mine.history, mine.crashes, mine.log_tail) == \
        (theirs.settings, theirs.history, theirs.crashes, theirs.log_tail)
    assert mine.log_path is None and not mine.log_exists  # on the other machine
    assert remote.details("nope") is None


def test_a_lost_remote_is_said_once_and_its_return_too(tmp_path, attached):
    api, remote, seen = attached
    port = int(api.url.rsplit(":", 1)[1])
    api.server.stop()
    before = remote.models()
    for _ in range(3):
        assert remote.step() > 0  # never raises, never blocks past the time-out
    assert remote.models() == before  # what it showed stays
    lost = [e for e in seen if e.type == "remote.lost"]
    assert len(lost) == 1 and lost[0].url == api.url
    assert remote.load("a") == AdminResult(False, lost[0].message)
    again = ApiServer(api.engine, ApiConfig(port=port), api.folder)
    assert again.start() is not None
    try:
        remote.step()
        assert [e.type for e in seen if e.type.startswith("remote.")] == \
            ["remote.lost", "remote.recovered"]
        api.engine.load("a")  # the event stream resumes too
        drive(api.engine, api.clock, 3.0)
        assert wait_until(lambda: any(e.type == "model.ready" for e in seen), 30)
    finally:
        again.stop()


def test_a_wrong_token_is_a_lost_connection_saying_why(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        remote = RemoteEngine(api.url, "wrong", timeout_s=2.0)
        seen: list = []
        remote.subscribe(seen.append)
        try:
            remote.step()
            assert [(e.type, e.message) for e in seen] == [
                ("remote.lost", "it refused the token (401)")]
            assert remote.models() == ()
        finally:
            remote.close()


def test_decoding_gives_back_the_same_values(attached):
    api, _, _ = attached
    snap = api.engine.snapshot()
    assert decode.snapshot(snap.to_dict()) == snap
    for row in api.engine.models():
        assert decode.row(row.to_dict()) == row
    with pytest.raises(decode.Undecodable, match="does not know"):
        decode.event({"type": "from.the.future", "seq": 1})
    frame = decode.frame({"t": [1.0, 2.0], "series": {"x": [None, 3.0]}})
    assert math.isnan(frame.get("x")[0]) and frame.get("x")[1] == 3.0
    with pytest.raises(decode.Undecodable):
        decode.frame({"t": [1.0], "series": {"x": [1.0, 2.0]}})
    with pytest.raises(decode.Undecodable):
        decode.row({"name": "only a name"})
    assert dataclasses.asdict(decode.preview(dataclasses.asdict(
        api.engine.load_preview("a")))) == dataclasses.asdict(api.engine.load_preview("a"))


def test_the_token_comes_from_a_file_the_environment_or_the_person(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUWARDEN_TOKEN", raising=False)
    path = tmp_path / "token"
    path.write_text("abc\n")
    assert attach_token(path) == "abc"
    with pytest.raises(TokenMissing, match="cannot read the token file"):
        attach_token(tmp_path / "nope")
    monkeypatch.setenv("GPUWARDEN_TOKEN", "from-env")
    assert attach_token(None) == "from-env"
    monkeypatch.delenv("GPUWARDEN_TOKEN")
    assert attach_token(None, ask=lambda: "typed") == "typed"
    with pytest.raises(TokenMissing, match="--token-file"):
        attach_token(None, ask=lambda: None)
