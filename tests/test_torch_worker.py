"""The torch backend with real worker processes on the CPU: a tiny random Transformers
model and a tiny exported / scripted module, answered over HTTP as a client would; the
contract every backend keeps; a load error, a CUDA out-of-memory, a move in place."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from backend_contract_rig import ContractRig
from gpuwarden.engine.lifecycle.backend import Launch
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.crash import DeathReport, classify, downgrade
from gpuwarden.engine.supervisor.torch_worker import TorchBackend
from supervision_rig import FAST
from test_backend_contract import INSTANCE, NAME, BackendContract
from torch_factory import affine, tiny_transformers, write_tiny_export, write_tiny_script

__all__ = ["tiny_transformers"]  # the fixture, used by name


def ask(rig: ContractRig, method: str, path: str, body: object = None, *,
        key: str | None = "") -> tuple[int, bytes]:
    """One request to the model's worker (``key`` "": the launch's own; None: none)."""
    port, launch_key = rig.backend.endpoint(NAME)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key or launch_key}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


class TestTorch(BackendContract):
    """The contract, with a tiny random Transformers causal LM."""

    @pytest.fixture(autouse=True)
    def _model(self, tiny_transformers: Path) -> None:
        self.model_path = tiny_transformers

    def make(self, tmp_path):
        config = ModelConfig(NAME, "torch", path=self.model_path, placement="cpu", layers=1,
                             threads=1)
        return ContractRig(TorchBackend(tmp_path / "logs", settings=FAST)), config

    def request(self, rig: ContractRig) -> None:
        status, _ = ask(rig, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})
        assert status == 200

    # -- what a client sees ----------------------------------------------------------------

    def test_chat_and_completions_answer_like_llama_server(self, rig):
        self.start_ready(rig)
        chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6,
                "temperature": 0}
        status, body = ask(rig, "POST", "/v1/chat/completions", chat)
        reply = json.loads(body)
        assert status == 200, body
        assert reply["object"] == "chat.completion" and reply["model"] == NAME
        assert isinstance(reply["choices"][0]["message"]["content"], str)
        assert reply["usage"]["prompt_tokens"] > 0
        assert reply["usage"]["completion_tokens"] <= 6
        again = json.loads(ask(rig, "POST", "/v1/chat/completions", chat)[1])
        assert again["choices"][0]["message"] == reply["choices"][0]["message"]  # greedy
        status, body = ask(rig, "POST", "/v1/completions",
                           {"prompt": "once upon", "max_tokens": 5, "stream": True})
        events = [line.removeprefix(b"data: ") for line in body.split(b"\n\n") if line]
        assert status == 200 and events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
        assert all(c["object"] == "text_completion.chunk" for c in chunks)
        status, body = ask(rig, "GET", "/v1/models")
        assert [m["id"] for m in json.loads(body)["data"]] == [NAME]

    def test_the_launch_key_is_needed_and_bad_requests_are_named(self, rig):
        self.start_ready(rig)
        status, body = ask(rig, "GET", "/health", key=None)  # readiness is public
        health = json.loads(body)
        assert status == 200 and health["device"] == "cpu"
        # bfloat16 asked for (the default), float32 on the CPU, and why
        assert health["dtype"] == "float32" and "on the CPU" in health["dtype_reason"]
        assert ask(rig, "POST", "/v1/completions", {"prompt": "x"}, key=None)[0] == 401
        assert ask(rig, "GET", "/metrics", key="wrong")[0] == 401
        status, body = ask(rig, "POST", "/v1/chat/completions", {"messages": "hi"})
        assert status == 400
        assert "'messages' must be a non-empty array" in json.loads(body)["error"]["message"]
        status, body = ask(rig, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 0})
        assert status == 400 and b"'max_tokens' must be an integer" in body
        assert ask(rig, "GET", "/v1/nothing")[0] == 404
        status, body = ask(rig, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 32768})
        assert status == 400
        assert "exceed the model's context of 4096 tokens" in json.loads(body)["error"]["message"]
        port, key = rig.backend.endpoint(NAME)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:  # a body it will not read: said before it is sent
            conn.putrequest("POST", "/v1/completions")
            conn.putheader("Authorization", f"Bearer {key}")
            conn.putheader("Content-Length", str(64 << 20))
            conn.endheaders()
            assert conn.getresponse().status == 413
        finally:
            conn.close()
        assert ask(rig, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 1})[0] == 200

    def test_a_move_in_place_keeps_the_process_and_becomes_the_new_instance(self, rig):
        first = self.start_ready(rig)
        backend: TorchBackend = rig.backend  # type: ignore[assignment]
        pid = backend.pid(NAME)
        assert backend.can_move(NAME, "cpu", None)
        assert not backend.can_move(NAME, "gpu", None)  # started with no GPU to see
        moved = rig.move(first, Launch(self.config, "cpu", 0, INSTANCE + 1))
        assert rig.wait(lambda: moved.settled), "neither ready nor exit after a move"
        assert [i for i, _ in moved.ready] == [INSTANCE + 1] and moved.exits == []
        assert backend.pid(NAME) == pid  # the same process: no restart
        backend.stop(NAME, INSTANCE)  # the instance before the move: nothing happens
        rig.quiet()
        assert moved.exits == [] and backend.pid(NAME) == pid
        self.stop_and_wait(rig, moved)
        assert moved.exits[0].instance == INSTANCE + 1 and classify(moved.exits[0]) is None
        assert first.exits == []  # its callbacks were handed over with the process

    def test_busy_while_a_streamed_answer_is_in_flight(self, rig):
        calls = self.start_ready(rig)
        port, key = rig.backend.endpoint(NAME)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps(
            {"prompt": "go", "max_tokens": 1500, "temperature": 0, "stream": True}),
            {"Authorization": f"Bearer {key}"})
        reply = conn.getresponse()
        try:
            assert rig.wait(lambda: any(busy for _, _, busy in calls.activity), 30), \
                f"never busy while answering; saw {calls.activity}"
        finally:
            reply.read()
            conn.close()
        assert rig.wait(lambda: calls.activity[-1][2] is False, 30), "still busy after it"


@pytest.mark.parametrize("write", [write_tiny_export, write_tiny_script],
                         ids=["torch.export", "TorchScript"])
def test_an_exported_module_runs_and_has_no_text_endpoints(tmp_path: Path, write) -> None:
    path = write(tmp_path / ("m.pt2" if write is write_tiny_export else "m.pt"))
    rig = ContractRig(TorchBackend(tmp_path / "logs", settings=FAST))
    calls = rig.start(ModelConfig(NAME, "torch", path=path, placement="cpu", layers=1), 1)
    try:
        assert rig.wait(lambda: calls.settled) and calls.ready, calls.exits
        row = [1.0, 2.0, -1.0]
        status, body = ask(rig, "POST", "/v1/run", {"inputs": [[row]]})
        assert status == 200, body
        assert json.loads(body)["outputs"][0] == pytest.approx(affine.expected(row))
        status, body = ask(rig, "POST", "/v1/chat/completions",
                           {"messages": [{"role": "user", "content": "hi"}]})
        assert status == 400 and b"not a causal LM" in body
        status, body = ask(rig, "POST", "/v1/run", {"inputs": [[[1.0]]]})
        assert status == 400 and b"the module refused these inputs" in body
    finally:
        assert rig.close() == []


def test_a_folder_that_will_not_load_is_a_load_error_not_retried(tmp_path: Path,
                                                                 tiny_transformers: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_transformers / "config.json").read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    rig = ContractRig(TorchBackend(tmp_path / "logs", settings=FAST))
    calls = rig.start(ModelConfig(NAME, "torch", path=broken, placement="cpu", layers=1), 1)
    try:
        assert rig.wait(lambda: calls.settled, 60) and calls.ready == []
        report = calls.exits[0]
        assert any("failed to load model" in line for line in report.log_tail), report.log_tail
        assert classify(report) == "load_error" and report.during_startup
    finally:
        assert rig.close() == []  # a worker that would not end is stopped even on failure


def test_a_cuda_out_of_memory_ends_the_worker_as_gpu_oom_and_goes_to_the_cpu(
        tmp_path: Path, tiny_transformers: Path) -> None:
    """The worker's own OOM path, run for real with its loader made to raise torch's
    CUDA out-of-memory error (there is no GPU here to fill)."""
    script = (
        "import sys, torch\n"
        "import gpuwarden.workers.torch_serve as worker\n"
        "def load(*_):\n"
        "    raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate "
        "20.00 GiB')\n"
        "worker.load = load\n"
        "sys.exit(worker.main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, "-c", script, "--model", str(tiny_transformers),
                           "--port", "0", "--api-key", "k"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    report = DeathReport(NAME, 1, exit_code=done.returncode,
                         log_tail=tuple(done.stderr.splitlines()), during_startup=True)
    assert classify(report) == "gpu_oom"
    whole = ModelConfig(NAME, "torch", path=tiny_transformers, layers=1)
    assert downgrade("gpu", None, whole.layers) == "cpu"  # run whole: no half-way step


def test_a_missing_torch_is_said_at_launch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install 'gpuwarden\[torch\]'"):
        TorchBackend(tmp_path).find_binary()


def test_the_worker_is_told_the_device_and_the_dtype_asked_for(tmp_path: Path) -> None:
    config = ModelConfig(NAME, "torch", path=tmp_path, layers=1, dtype="float16", threads=2)
    backend = TorchBackend(tmp_path)
    argv = backend.argv(Path(sys.executable), Launch(config, "gpu", 1, 1), 5000, "k")
    assert argv[1:3] == ["-m", "gpuwarden.workers.torch_serve"]
    assert argv[argv.index("--device") + 1] == "cuda"
    assert argv[argv.index("--dtype") + 1] == "float16"
    cpu = backend.argv(Path(sys.executable), Launch(config, "cpu", 0, 1), 5000, "k")
    assert cpu[cpu.index("--device") + 1] == "cpu"
    assert backend.environment(Launch(replace(config), "cpu", 0, 1)) == \
        {"CUDA_VISIBLE_DEVICES": ""}


def test_a_launch_key_is_never_read_as_an_option():
    """A key that began with "-" (one urlsafe key in 64) made the worker's argument parser
    refuse `--api-key -x...`: the model failed to start now and then."""
    from gpuwarden.engine.supervisor.launch import launch_key

    keys = {launch_key() for _ in range(500)}
    assert len(keys) == 500
    assert not any(key.startswith("-") for key in keys)
    assert all(len(key) >= 32 for key in keys)
