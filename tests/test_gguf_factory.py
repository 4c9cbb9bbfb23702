"""The tiny GGUF factory writes real models; one test loads one in a real llama-server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import gguf
import pytest

from gguf_factory import (
    BOS_ID,
    EOS_ID,
    UNK_ID,
    tensor_shapes,
    tiny_vocab,
    write_garbage,
    write_tiny_llama,
    write_truncated,
)

DEFAULT_SERVER = Path("/root/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server")
LOAD_DEADLINE_S = 30.0
REQUEST_TIMEOUT_S = 30.0


def _field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_tiny_model_reads_back_as_llama(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_llama(tmp_path / "tiny.gguf"))
    n_vocab = len(tiny_vocab().pieces)
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.block_count") == 2
    assert _field(reader, "llama.embedding_length") == 64
    assert _field(reader, "llama.attention.head_count") == 4
    assert _field(reader, "llama.vocab_size") == n_vocab
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert len(_field(reader, "tokenizer.ggml.tokens")) == n_vocab  # type: ignore[arg-type]
    ids = [_field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("unknown", "bos", "eos")]
    assert ids == [UNK_ID, BOS_ID, EOS_ID]


def test_tiny_model_has_every_llama_tensor_with_its_shape(tmp_path: Path) -> None:
    reader = gguf.GGUFReader(write_tiny_llama(tmp_path / "tiny.gguf", n_layers=3, n_ff=96))
    found = {t.name: tuple(t.data.shape) for t in reader.tensors}
    assert found == tensor_shapes(n_layers=3, n_ff=96)
    assert "blk.2.ffn_down.weight" in found


def test_vocab_has_the_256_byte_tokens() -> None:
    vocab = tiny_vocab()
    byte_ids = [i for i, t in enumerate(vocab.types) if t == gguf.TokenType.BYTE]
    assert len(byte_ids) == 256
    assert vocab.pieces[byte_ids[0]] == "<0x00>"
    assert vocab.pieces[byte_ids[-1]] == "<0xFF>"


def test_tiny_model_is_small(tmp_path: Path) -> None:
    size = write_tiny_llama(tmp_path / "tiny.gguf").stat().st_size
    assert 100_000 < size < 1_000_000


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = write_tiny_llama(tmp_path / "a.gguf", seed=7).read_bytes()
    again = write_tiny_llama(tmp_path / "b.gguf", seed=7).read_bytes()
    other = write_tiny_llama(tmp_path / "c.gguf", seed=8).read_bytes()
    assert first == again
    assert first != other
    assert len(first) == len(other)


def test_garbage_is_not_gguf(tmp_path: Path) -> None:
    path = write_garbage(tmp_path / "garbage.gguf")
    assert not path.read_bytes().startswith(b"GGUF")
    with pytest.raises(ValueError, match="magic"):
        gguf.GGUFReader(path)


def test_truncated_is_half_a_valid_model(tmp_path: Path) -> None:
    whole = write_tiny_llama(tmp_path / "whole.gguf").read_bytes()
    cut = write_truncated(tmp_path / "cut.gguf").read_bytes()
    assert cut == whole[: len(whole) // 2]
    with pytest.raises(ValueError):
        gguf.GGUFReader(tmp_path / "cut.gguf")


# --- one test against the real server ---------------------------------------------------


def _server_binary() -> Path:
    path = Path(os.environ.get("GPUWARDEN_LLAMA_SERVER", str(DEFAULT_SERVER)))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"no llama-server binary at {path} (set GPUWARDEN_LLAMA_SERVER)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health_status(base: str) -> int | None:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:  # 503 while the model loads
        return err.code
    except OSError:  # not listening yet
        return None


def _tail(log: Path, lines: int = 8) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + LOAD_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama-server exited with {proc.returncode}:\n{_tail(log)}")
        if _health_status(base) == 200:
            return
        time.sleep(0.05)
    pytest.fail(f"llama-server not healthy within {LOAD_DEADLINE_S} s:\n{_tail(log)}")


def _complete(base: str, prompt: str, n_predict: int) -> dict[str, object]:
    body = json.dumps({"prompt": prompt, "n_predict": n_predict}).encode()
    request = urllib.request.Request(
        f"{base}/completion", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
        reply: dict[str, object] = json.load(resp)
    return reply


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_real_llama_server_loads_and_generates(tmp_path: Path) -> None:
    binary = _server_binary()
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    port = _free_port()
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["-ngl", "0", "-c", "256", "-t", "1", "-np", "1", "--no-webui"]
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(proc, base, log_path)
            reply = _complete(base, "hello", n_predict=8)
        finally:
            _stop(proc)
    assert isinstance(reply.get("content"), str)
    predicted = reply.get("tokens_predicted")
    assert isinstance(predicted, int)
    assert 0 < predicted <= 8  # random weights may sample </s> early
