"""The control API, live (uvicorn on a free port, httpx): who may ask, what each route
answers, the actions answering as the panel's commands, the event stream resumable from a
seq, Prometheus' text, and a taken port said once."""

from __future__ import annotations

import json
import os
import stat
import threading

import httpx
import pytest

from api_rig import live_api
from gpuwarden.api.server import ApiServer, is_loopback, read_where
from gpuwarden.api.token import api_token, token_path
from gpuwarden.engine.lifecycle.config import ApiConfig
from helpers import drive
from lifecycle_helpers import model


def test_the_token_is_made_once_and_kept_for_its_owner_only(tmp_path):
    folder = tmp_path / "data"
    token = api_token(folder)
    assert stat.S_IMODE(token_path(folder).stat().st_mode) == 0o600
    assert api_token(folder) == token and len(token) >= 40
    os.chmod(token_path(folder), 0o644)
    assert api_token(folder) == token
    assert stat.S_IMODE(token_path(folder).stat().st_mode) == 0o600  # narrowed


def test_without_the_token_every_route_is_a_bare_401(tmp_path):
    with live_api(tmp_path, model("m")) as api, api.anonymous() as anonymous:
        for path in ("/api/v1/status", "/api/v1/models", "/metrics", "/livez", "/readyz",
                     "/api/v1/events", "/api/v1/openapi.json/../models"):
            reply = anonymous.get(path)
            assert reply.status_code == 401, path
            assert reply.json() == {"error": {"message": "unauthorized",
                                              "type": "unauthorized"}}
        wrong = anonymous.post("/api/v1/models/m/load",
                               headers={"Authorization": "Bearer " + "x" * 43})
        assert wrong.status_code == 401
        assert api.engine.model("m").state == "unloaded"  # nothing done


def test_open_metrics_leaves_metrics_and_probes_open_and_nothing_else(tmp_path):
    with live_api(tmp_path, model("m"), open_metrics=True) as api, \
            api.anonymous() as anonymous:
        assert anonymous.get("/metrics").status_code == 200
        assert anonymous.get("/livez").json() == {"status": "alive"}
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/api/v1/models").status_code == 401


def test_ready_only_once_the_engine_runs(tmp_path):
    with live_api(tmp_path, model("m"), start=False) as api:
        assert api.client.get("/readyz").status_code == 503
        assert api.client.get("/livez").status_code == 200
        api.engine.start(watch_config=False)
        assert api.client.get("/readyz").json() == {"status": "ready"}


def test_status_and_models_are_what_the_panel_shows(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0), model("b")) as api:
        status = api.client.get("/api/v1/status").json()
        assert status["ready"] is True and status["automation_paused"] is False
        assert [g["index"] for g in status["snapshot"]["gpus"]] == [0]
        assert "gpu0" in status["verdicts"]
        rows = api.client.get("/api/v1/models").json()
        assert [r["name"] for r in rows] == ["a", "b"]
        assert rows[0] == api.engine.model("a").to_dict() | {"pids": []}
        assert api.client.get("/api/v1/models/b").json()["state"] == "unloaded"
        missing = api.client.get("/api/v1/models/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "no model named 'nope'"


def test_actions_answer_done_or_refused_and_why(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0)) as api:
        c = api.client
        assert c.post("/api/v1/models/a/offload").json()["error"] == {
            "message": "a is not on a GPU (unloaded)", "type": "refused"}
        reply = c.post("/api/v1/models/a/load", json={"how": "auto"})
        assert reply.status_code == 200 and reply.json() == {"ok": True,
                                                              "message": "loading a"}
        drive(api.engine, api.clock, 3.0)
        assert api.engine.model("a").state == "ready"
        assert c.put("/api/v1/models/a/policy", json={"eviction": "never"}).json()["ok"]
        assert api.engine.model("a").eviction == "never"
        assert c.put("/api/v1/models/a/priority", json={"priority": 5}).json()["ok"]
        assert api.engine.model("a").priority == 5
        assert c.put("/api/v1/automation", json={"paused": True}).json()["ok"]
        assert api.engine.automation_paused
        assert c.post("/api/v1/models/a/unload").json()["ok"]
        drive(api.engine, api.clock, 1.0)
        assert api.engine.model("a").state == "unloaded"
        assert c.post("/api/v1/emergency-stop", json={"gpu": 0}).json() == {
            "ok": True, "message": "emergency stop on GPU 0: nothing was running"}
        assert c.post("/api/v1/emergency-stop", json={"gpu": 7}).json()["error"] == {
            "message": "there is no GPU 7", "type": "refused"}


@pytest.mark.parametrize(("method", "path", "body", "says"), [
    ("post", "/api/v1/models/a/load", {"how": "sideways"}, "how: Input should be"),
    ("post", "/api/v1/models/a/load", {"how": "auto", "extra": 1}, "extra: Extra inputs"),
    ("put", "/api/v1/models/a/priority", {"priority": "high"}, "priority: Input should be"),
    ("put", "/api/v1/models/a/priority", {"priority": 10**9}, "priority: Input should be"),
    ("put", "/api/v1/models/a/policy", {}, "eviction: Field required"),
    ("post", "/api/v1/emergency-stop", {"gpu": -1}, "gpu: Input should be"),
])
def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(tmp_path, method, path,
                                                                 body, says):
    with live_api(tmp_path, model("a", vram_mib=2000.0)) as api:
        before = api.engine.model("a")
        reply = getattr(api.client, method)(path, json=body)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["message"].startswith(says), reply.json()
        assert api.engine.model("a") == before


def test_malformed_and_huge_bodies_are_refused_in_json(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        c = api.client
        bad = c.post("/api/v1/models/a/load", content=b"{not json",
                     headers={"Content-Type": "application/json"})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request"
        huge = c.post("/api/v1/models/a/load", content=b"{" + b" " * (1 << 20) + b"}",
                      headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and huge.json()["error"]["type"] == "too_large"
        assert api.engine.model("a").state == "unloaded"


def read_events(api, since: int, count: int, headers: dict[str, str] | None = None
                ) -> list[dict]:
    """The first ``count`` events of the stream, as JSON."""
    found: list[dict] = []
    with api.client.stream("GET", f"/api/v1/events?since={since}", headers=headers or {},
                           timeout=httpx.Timeout(10.0)) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line.removeprefix("data: ")))
                if len(found) == count:
                    break
    return found


def test_the_event_stream_replays_from_a_seq_then_follows(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0)) as api:
        api.engine.load("a")
        drive(api.engine, api.clock, 3.0)
        kept = [e.to_dict() for e in api.engine.events_since(0)]
        assert [e["type"] for e in kept[:2]] == ["model.loading", "model.ready"]
        assert read_events(api, 0, 2) == kept[:2]
        assert read_events(api, kept[0]["seq"], 1) == [kept[1]]
        resumed = read_events(api, 0, 1, {"Last-Event-ID": str(kept[0]["seq"])})
        assert resumed == [kept[1]]  # a reconnecting client's header wins
        live: list[dict] = []
        last = kept[-1]["seq"]
        reader = threading.Thread(target=lambda: live.extend(read_events(api, last, 1)))
        reader.start()
        api.engine.unload("a")  # (the stream may not be open yet: it replays from seq)
        drive(api.engine, api.clock, 1.0)
        reader.join(10)
        assert live and live[0]["seq"] == last + 1 and live[0]["model"] == "a"


def test_metrics_count_what_the_engine_did(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0), model("b")) as api:
        api.engine.load("a")
        drive(api.engine, api.clock, 3.0)
        reply = api.client.get("/metrics")
        assert reply.headers["content-type"].startswith("text/plain")
        text = reply.text
        assert 'gpuwarden_model_state{backend="simulated",model="a",state="ready"} 1.0' in text
        assert 'gpuwarden_model_state{backend="simulated",model="b",state="unloaded"} 1.0' in text
        assert 'model="a",state="unloaded"' not in text  # one series per model: its state
        assert 'gpuwarden_model_loads_total{reason="user"} 1.0' in text
        assert 'gpuwarden_gpu_memory_total_bytes{gpu="0"' in text
        assert "gpuwarden_model_crashes_total" in text  # declared even when none


def test_a_taken_port_is_one_config_problem_and_no_server(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        port = int(api.url.rsplit(":", 1)[1])
        second = ApiServer(api.engine, ApiConfig(port=port), tmp_path / "other")
        assert second.start() is None
        problems = [e for e in api.events if e.type == "config.problem"]
        assert len(problems) == 1 and f"127.0.0.1:{port}" in problems[0].message
        assert "set another [api] port" in problems[0].message
        second.stop()  # nothing to stop: no error
        assert read_where(api.folder) is not None and read_where(tmp_path / "other") is None


def test_where_it_listens_is_written_for_ctl_and_removed_at_the_end(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        where = read_where(api.folder)
        assert where is not None and where.url == api.url and where.pid == os.getpid()
    assert read_where(api.folder) is None


def test_only_loopback_addresses_count_as_this_machine():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_the_socket_is_tcp_so_answers_are_not_held_back_by_nagle():
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP: a socket
    made with protocol 0 left every answer on a kept-alive connection ~40 ms late."""
    import socket

    from gpuwarden.api.server import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


def test_the_api_section_is_read_and_a_bad_value_keeps_its_default():
    from gpuwarden.engine.lifecycle.config import parse_config

    config, problems = parse_config('[api]\nhost = "0.0.0.0"\nport = 0\nopen_metrics = true\n',
                                    "c.toml", None)
    assert problems == [] and config.api == ApiConfig(True, "0.0.0.0", 0, True)
    config, problems = parse_config('[api]\nport = 70000\nenabled = "yes"\n', "c.toml", None)
    assert config.api == ApiConfig()
    assert sorted((p.line, p.field) for p in problems) == [(2, "port"), (3, "enabled")]
    assert "using the default port = 8737" in str(problems[0]) + str(problems[1])


def test_listening_beyond_this_machine_is_warned_of(tmp_path, caplog):
    from test_engine_facade import engine_for

    engine, _, _ = engine_for(model("a"), tmp_path=tmp_path)
    server = ApiServer(engine, ApiConfig(host="0.0.0.0", port=0), tmp_path / "data")
    try:
        with caplog.at_level("WARNING", logger="gpuwarden.api.server"):
            assert server.start() is not None
        assert "not only on this machine" in caplog.text
    finally:
        server.stop()
        engine.close()
