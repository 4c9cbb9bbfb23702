"""The OpenAI-compatible router end to end: real llama-servers serving two tiny generated
models on a simulated 8 GiB GPU that holds only one of them, asked through the live
control API. Answers are compared with what the model's own server says to the same
greedy request."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from api_rig import live_api
from gguf_factory import write_tiny_llama
from gpuwarden.engine.events import Event
from gpuwarden.engine.lifecycle.config import RestartConfig
from gpuwarden.engine.safety.limits import SafetyConfig
from lifecycle_helpers import model
from router_rig import ONE_GPU_8_GIB, RouterRig, llama, router_rig
from supervision_rig import wait_until

pytestmark = pytest.mark.timeout(180)

ACTIVE_S = 31.0  # a model used less than 30 s ago is never swapped out
PROMPT = [{"role": "user", "content": "hello world"}]
LONG = 180  # tokens: an answer still being written when the test acts on it


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return (write_tiny_llama(tmp_path / "alpha.gguf", seed=1),
            write_tiny_llama(tmp_path / "beta.gguf", seed=2))


@pytest.fixture
def two(tmp_path: Path, llama_server_bin: Path, pair: tuple[Path, Path]
        ) -> Iterator[RouterRig]:
    with router_rig(tmp_path, llama_server_bin, llama("alpha", pair[0]),
                    llama("beta", pair[1])) as rig:
        yield rig


def chat(name: str, *, stream: bool = False, tokens: int = 12) -> dict[str, object]:
    return {"model": name, "messages": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": stream}


def streamed_text(reply: httpx.Response) -> tuple[str, bool]:
    """The text of a streamed chat answer and whether it ended with [DONE]."""
    text, done = "", False
    for line in reply.iter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        delta = json.loads(line[6:])["choices"][0]["delta"]
        text += delta.get("content") or ""
    return text, done


def direct(rig: RouterRig, name: str) -> str:
    """The model's own server's answer to the greedy request, asked without the router."""
    found = rig.engine.endpoint(name)
    assert found is not None, f"{name} is not ready"
    base, key = found
    reply = httpx.post(f"{base}/v1/chat/completions", json=chat(name), timeout=30,
                       headers={"Authorization": f"Bearer {key}"})
    return str(reply.json()["choices"][0]["message"]["content"])


def lives(events: list[Event], names: tuple[str, ...]) -> list[set[str]]:
    """Which of ``names`` had a live server after each event (loading until it ended)."""
    live: set[str] = set()
    seen: list[set[str]] = []
    for event in events:
        model = getattr(event, "model", None)
        if model not in names:
            continue
        if event.type == "model.loading":
            assert model not in live, f"{model} loaded twice at once"
            live.add(model)
        elif event.type in ("model.unloaded", "model.crashed"):
            live.discard(model)
        seen.append(set(live))
    return seen


# -- the answers ------------------------------------------------------------------------


def test_requests_alternating_between_two_models_that_fit_only_one_at_a_time(
        two: RouterRig):
    listed = two.client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert [(m["id"], m["gpuwarden"]["state"]) for m in listed["data"]] == [
        ("alpha", "unloaded"), ("beta", "unloaded")]
    for turn, name in enumerate(["alpha", "beta", "alpha", "beta", "alpha", "beta"]):
        two.clock.jump(ACTIVE_S)  # the other was used a while ago: it may be swapped out
        if turn % 2:
            with two.client.stream("POST", "/v1/chat/completions",
                                   json=chat(name, stream=True)) as reply:
                assert reply.status_code == 200
                assert reply.headers["content-type"].startswith("text/event-stream")
                text, done = streamed_text(reply)
            assert done
        else:
            reply = two.client.post("/v1/chat/completions", json=chat(name))
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"].startswith("application/json")
            text = reply.json()["choices"][0]["message"]["content"]
        assert text and text == direct(two, name), f"turn {turn}: not {name}'s answer"
        other = "beta" if name == "alpha" else "alpha"
        assert two.engine.model(other).state == "unloaded"  # swapped out for this one
    loads = [e.to_dict()["model"] for e in two.events if e.type == "model.loading"]
    assert loads == ["alpha", "beta"] * 3
    assert max(len(live) for live in lives(two.events, ("alpha", "beta"))) == 1
    swaps = [e.to_dict()["reason"] for e in two.events if e.type == "model.unloaded"]
    assert swaps == ["swap"] * 5
    assert two.problems == []  # the simulated GPU never had to hold both
    assert two.engine.model("beta").requests >= 3


def test_concurrent_requests_for_an_unloaded_model_cause_one_load(
        two: RouterRig, monkeypatch: pytest.MonkeyPatch):
    asked: list[str] = []
    real_load = two.engine.load

    def counted(name: str, how: str = "auto") -> object:
        asked.append(name)
        return real_load(name, how)  # type: ignore[arg-type]

    monkeypatch.setattr(two.engine, "load", counted)

    async def ask_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=two.url, timeout=60, headers={
                "Authorization": f"Bearer {two.token}"}) as client:
            return await asyncio.gather(*(
                client.post("/v1/chat/completions", json=chat("alpha", tokens=4))
                for _ in range(8)))

    replies = asyncio.run(ask_all())
    assert [r.status_code for r in replies] == [200] * 8, [r.text for r in replies]
    assert asked == ["alpha"]
    assert [e.type for e in two.events if getattr(e, "model", "") == "alpha"] == [
        "model.loading", "model.ready"]


def test_a_model_that_does_not_fit_beside_one_in_use_is_refused_with_the_reason(
        two: RouterRig):
    assert two.client.post("/v1/chat/completions", json=chat("alpha")).status_code == 200
    refused = two.client.post("/v1/chat/completions", json=chat("beta"))  # alpha: just used
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["type"] == "model_unavailable"
    assert "beta needs about 4650 MiB of VRAM on GPU 0" in error["message"]
    assert "would not free enough" in error["message"]
    assert two.engine.model("alpha").state == "ready"
    assert two.engine.model("beta").state == "unloaded"


def test_the_model_servers_key_is_sent_not_the_callers(two: RouterRig):
    assert two.client.post("/v1/completions", json={
        "model": "alpha", "prompt": "hello", "max_tokens": 2}).status_code == 200
    base, _ = two.engine.endpoint("alpha")
    own = httpx.post(f"{base}/v1/completions", json={"prompt": "hello", "max_tokens": 2},
                     headers={"Authorization": f"Bearer {two.token}"})
    assert own.status_code == 401  # the caller's token opens nothing there


# -- in use -----------------------------------------------------------------------------


@contextmanager
def frozen(rig: RouterRig, name: str) -> Iterator[None]:
    """The model's server stopped (SIGSTOP) while inside: its answer stays in flight."""
    pids = rig.engine.model(name).pids
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def idle_after(rig: RouterRig, name: str, seconds: float) -> None:
    """Let ``seconds`` pass on the engine's clock and wait for a sample after that."""
    rig.clock.jump(seconds)
    assert rig.sampled_after(rig.clock.time()), "no sample after the jump"


@pytest.fixture
def idler(tmp_path: Path, llama_server_bin: Path, pair: tuple[Path, Path]
          ) -> Iterator[RouterRig]:
    with router_rig(tmp_path, llama_server_bin,
                    llama("alpha", pair[0], eviction="idle", idle_timeout_s=60.0)) as rig:
        yield rig


def test_a_model_answering_a_streamed_request_is_not_unloaded_as_idle(idler: RouterRig):
    with idler.client.stream("POST", "/v1/chat/completions",
                             json=chat("alpha", stream=True, tokens=LONG)) as reply:
        lines = reply.iter_lines()
        assert next(lines).startswith("data: ")  # in flight
        with frozen(idler, "alpha"):
            idle_after(idler, "alpha", 120.0)  # twice its idle time-out
            assert idler.engine.model("alpha").state == "ready"
        rest = list(lines)
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert not [e for e in idler.events if e.type == "model.unloaded"]
    idle_after(idler, "alpha", 120.0)  # now nothing holds it
    unloaded = idler.waiter.wait_for("model.unloaded", "alpha", timeout=10).to_dict()
    assert unloaded["reason"] == "idle"


def test_a_caller_that_goes_away_mid_answer_lets_the_model_go(idler: RouterRig):
    client = httpx.Client(base_url=idler.url, timeout=30,
                          headers={"Authorization": f"Bearer {idler.token}"})
    with client.stream("POST", "/v1/chat/completions",
                       json=chat("alpha", stream=True, tokens=LONG)) as reply:
        assert next(reply.iter_lines()).startswith("data: ")
        with frozen(idler, "alpha"):
            client.close()  # the caller hangs up mid-answer
            idle_after(idler, "alpha", 5.0)
    idle_after(idler, "alpha", 120.0)
    unloaded = idler.waiter.wait_for("model.unloaded", "alpha", timeout=10).to_dict()
    assert unloaded["reason"] == "idle"  # the router held it no longer


def predicted(rig: RouterRig, name: str) -> tuple[float, float]:
    """(tokens predicted so far, requests being answered) by the model's own server."""
    base, key = rig.engine.endpoint(name)
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    found = dict(line.split() for line in text.splitlines() if line.startswith("llamacpp:"))
    return (float(found["llamacpp:tokens_predicted_total"]),
            float(found["llamacpp:requests_processing"]))


def test_a_caller_that_hangs_up_stops_the_models_server_writing_its_answer(
        tmp_path: Path, llama_server_bin: Path):
    roomy = write_tiny_llama(tmp_path / "roomy.gguf", context_length=4096)
    with router_rig(tmp_path, llama_server_bin, llama("roomy", roomy, context_size=4096)
                    ) as rig:
        client = httpx.Client(base_url=rig.url, timeout=30,
                              headers={"Authorization": f"Bearer {rig.token}"})
        body = {**chat("roomy", stream=True, tokens=3500), "ignore_eos": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            assert next(reply.iter_lines()).startswith("data: ")
            client.close()
        assert wait_until(lambda: predicted(rig, "roomy")[1] == 0, 30)
        assert predicted(rig, "roomy")[0] < 1000  # of 3500: it stopped when asked


def test_a_server_killed_mid_answer_ends_the_stream_and_the_next_request_is_answered(
        idler: RouterRig):
    with idler.client.stream("POST", "/v1/chat/completions",
                             json=chat("alpha", stream=True, tokens=LONG)) as reply:
        lines = reply.iter_lines()
        assert next(lines).startswith("data: ")
        os.kill(idler.engine.model("alpha").pids[0], signal.SIGKILL)
        rest = list(lines)  # ends, without [DONE]
    assert "data: [DONE]" not in rest
    idler.waiter.wait_for("model.crashed", "alpha")
    again = idler.client.post("/v1/chat/completions", json=chat("alpha"))
    assert again.status_code == 200, again.text  # after its restart


# -- safety -----------------------------------------------------------------------------

HOT_LATER = ONE_GPU_8_GIB + '\n[[step]]\nat = 1000\naction = "temperature"\ncelsius = {}\n'


def heat(rig: RouterRig, kind: str) -> str:
    """Jump to the scenario's heat and wait for the GPU's verdict; its reason."""
    rig.clock.jump(1000.0)
    verdict = rig.waiter.wait_for("safety.verdict", where=lambda e: e.to_dict()["scope"]
                                  == "gpu" and e.to_dict()["kind"] == kind)
    return str(verdict.to_dict()["reason"])


def test_under_an_abort_verdict_the_request_is_refused_with_the_reason(
        tmp_path: Path, llama_server_bin: Path, pair: tuple[Path, Path]):
    with router_rig(tmp_path, llama_server_bin, llama("alpha", pair[0]),
                    scenario=HOT_LATER.format(110)) as rig:
        reason = heat(rig, "abort")
        reply = rig.client.post("/v1/chat/completions", json=chat("alpha"))
        assert reply.status_code == 503
        assert reply.json()["error"]["message"] == f"alpha cannot be loaded now: {reason}"
        assert not [e for e in rig.events if e.type == "model.loading"]


def test_under_a_cooldown_the_request_waits_for_the_load_and_is_answered(
        tmp_path: Path, llama_server_bin: Path, pair: tuple[Path, Path]):
    with router_rig(tmp_path, llama_server_bin, llama("alpha", pair[0]),
                    scenario=HOT_LATER.format(85),
                    safety=SafetyConfig(cooldown_timeout_s=3600.0)) as rig:
        heat(rig, "wait_cooldown")
        answers: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answers.append(
            rig.client.post("/v1/chat/completions", json=chat("alpha"))))
        asking.start()
        assert wait_until(lambda: rig.engine.model("alpha").state == "waiting", 10)
        assert not answers  # held, and the request waits
        rig.clock.jump(900.0)  # it cools down
        asking.join(30)
        assert [r.status_code for r in answers] == [200], [r.text for r in answers]
        assert [e.type for e in rig.events if getattr(e, "model", "") == "alpha"] == [
            "model.waiting", "model.loading", "model.ready"]


def test_a_request_waits_no_longer_than_the_startup_time_out(
        tmp_path: Path, llama_server_bin: Path, pair: tuple[Path, Path]):
    with router_rig(tmp_path, llama_server_bin, llama("alpha", pair[0]),
                    scenario=HOT_LATER.format(85), restart=RestartConfig(startup_timeout_s=1.5),
                    safety=SafetyConfig(cooldown_timeout_s=3600.0)) as rig:
        heat(rig, "wait_cooldown")
        reply = rig.client.post("/v1/chat/completions", json=chat("alpha"))
        assert reply.status_code == 503
        assert reply.json()["error"]["message"].startswith(  # the reason, as it is now
            "alpha was not ready after 1.5 s: it waits to load until it is safe: GPU 0 at ")


# -- refusals ---------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_that_refuses_the_connection_is_a_502(two: RouterRig,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(two.engine, "endpoint",
                        lambda name: (f"http://127.0.0.1:{closed_port()}", "key"))
    reply = two.client.post("/v1/chat/completions", json=chat("alpha"))
    assert reply.status_code == 502
    assert reply.json()["error"] == {"message": "alpha's server did not answer (ConnectError)",
                                     "type": "upstream_error", "code": None}


def test_bad_requests_are_refused_the_openai_way_and_only_text_models_are_listed(
        tmp_path: Path):
    with live_api(tmp_path, model("sim")) as api, api.anonymous() as anonymous:
        assert anonymous.post("/v1/chat/completions", json=chat("sim")).status_code == 401
        assert api.client.get("/v1/models").json() == {"object": "list", "data": []}
        for body, status, message in [
                (b"{not json", 400, "the body must be JSON"),
                (b"[1, 2]", 400, "the body must be a JSON object"),
                (b'{"messages": []}', 400, 'the body must name a model: "model": "NAME"'),
                (b'{"model": 7}', 400, 'the body must name a model: "model": "NAME"'),
                (b'{"model": "nope"}', 404, "no model named 'nope'"),
                (b'{"model": "sim"}', 404, "sim does not serve an OpenAI-compatible API "
                                           "(its backend is not llama-cpp, llama-server, "
                                           "torch)"),
                (b" " * (16 * 2**20 + 1), 413, "the request body must be at most 16 MiB")]:
            for route in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
                reply = api.client.post(route, content=body,
                                        headers={"Content-Type": "application/json"})
                assert reply.status_code == status, (route, body[:20], reply.text)
                assert reply.json()["error"]["message"] == message
        assert api.engine.model("sim").state == "unloaded"
