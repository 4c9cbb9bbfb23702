"""The metadata plan: priced from generated GGUF models of several shapes, checked against
the file's own tensor table and, where the binary is built, llama-server's own figures;
files that lie or are broken are refused quickly with little memory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from gguf_factory import write_garbage, write_tiny_llama, write_truncated
from gpuwarden.engine.safety import gguf_plan
from gpuwarden.engine.safety.gguf_plan import (
    KV_PAD,
    ModelRefused,
    cache_type_bytes,
    kv_cells,
    plan_from_gguf,
    read_gguf,
)

MIB = 1024.0 * 1024.0
REFUSAL_PEAK_BYTES = 50 * 1024 * 1024
REFUSAL_SECONDS = 2.0

SHAPES: dict[str, dict[str, Any]] = {
    "few-narrow-f32": {"n_layers": 2},
    "many-layers": {"n_layers": 12, "context_length": 8192},
    "wide": {"n_layers": 3, "n_embd": 256, "n_ff": 768, "n_head": 8, "context_length": 8192},
    "gqa": {"n_layers": 4, "n_embd": 128, "n_ff": 256, "n_head": 8, "n_head_kv": 2,
            "context_length": 4096},
    "f16": {"n_layers": 3, "n_embd": 128, "n_ff": 256, "weight_type": "f16",
            "context_length": 4096},
    "tied-output": {"n_layers": 2, "n_embd": 96, "n_head": 4, "tie_output": True},
}


def _tensor_bytes(path: Path) -> dict[str, int]:
    return {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(params=sorted(SHAPES))
def shaped(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    kwargs = SHAPES[request.param]
    return write_tiny_llama(tmp_path / f"{request.param}.gguf", **kwargs), kwargs


# --- figures ------------------------------------------------------------------------------


def test_weights_add_up_to_the_files_tensor_bytes(shaped: tuple[Path, dict[str, Any]]) -> None:
    path, kwargs = shaped
    plan = plan_from_gguf(path, 256)
    tensors = _tensor_bytes(path)
    embd = tensors["token_embd.weight"] / MIB
    tied = kwargs.get("tie_output", False)
    total = sum(plan.layer_weights_mib) + plan.output_mib + plan.host_only_mib
    # a tied output is the token_embd matrix again, copied to the GPU with a full offload
    expected = sum(tensors.values()) / MIB + (embd if tied else 0.0)
    assert total == pytest.approx(expected)
    assert plan.layers == kwargs.get("n_layers", 2)
    assert plan.host_only_mib == pytest.approx(embd)
    first = sum(b for n, b in tensors.items() if n.startswith("blk.0.")) / MIB
    assert plan.layer_weights_mib == pytest.approx((first,) * plan.layers)
    assert plan.source == "metadata"


def test_output_goes_with_a_full_offload_and_embeddings_stay_home(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", n_layers=3)
    tensors = _tensor_bytes(path)
    plan = plan_from_gguf(path, 256)
    output = (tensors["output.weight"] + tensors["output_norm.weight"]) / MIB
    assert plan.output_mib == pytest.approx(output)
    # -ngl 1 is the output layer alone (llama.cpp offloads it first); 3 is everything
    assert plan.gpu_mib(1) == pytest.approx(output + plan.compute_gpu_mib)
    assert plan.gpu_mib(3) - plan.gpu_mib(1) == pytest.approx(
        sum(plan.layer_weights_mib) + 3 * plan.kv_per_layer_mib)
    assert plan.host_mib(3) == pytest.approx(plan.host_only_mib + plan.compute_host_mib)


def test_tied_output_counts_the_embeddings_on_both_sides(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tied.gguf", tie_output=True)
    tensors = _tensor_bytes(path)
    assert "output.weight" not in tensors
    plan = plan_from_gguf(path, 256)
    embd = tensors["token_embd.weight"] / MIB
    assert plan.output_mib == pytest.approx(embd + tensors["output_norm.weight"] / MIB)
    assert plan.host_only_mib == pytest.approx(embd)


def test_f16_weights_are_about_half_of_f32(tmp_path: Path) -> None:
    shape = {"n_layers": 3, "n_embd": 128, "n_ff": 256}
    f32 = plan_from_gguf(write_tiny_llama(tmp_path / "a.gguf", **shape), 256)
    f16 = plan_from_gguf(write_tiny_llama(tmp_path / "b.gguf", weight_type="f16", **shape), 256)
    ratio = f16.layer_weights_mib[0] / f32.layer_weights_mib[0]
    assert 0.5 < ratio < 0.52  # the norms stay f32


@pytest.mark.parametrize(
    ("shape", "n_head_kv", "head_dim"),
    [
        ({"n_embd": 64, "n_head": 4}, 4, 16),
        ({"n_embd": 256, "n_ff": 512, "n_head": 8}, 8, 32),
        ({"n_embd": 128, "n_ff": 256, "n_head": 8, "n_head_kv": 2}, 2, 16),
        ({"n_embd": 128, "n_ff": 256, "n_head": 8, "n_head_kv": 1}, 1, 16),
    ],
)
def test_kv_per_layer_is_two_x_context_x_kv_heads_x_head_dim_x_bytes(
    tmp_path: Path, shape: dict[str, Any], n_head_kv: int, head_dim: int
) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", context_length=8192, **shape)
    plan = plan_from_gguf(path, 2048)
    assert plan.context_size == 2048
    assert plan.kv_per_layer_mib * MIB == 2 * 2048 * n_head_kv * head_dim * 2


def test_gqa_shrinks_the_kv_cache_by_the_group_size(tmp_path: Path) -> None:
    shape = {"n_embd": 128, "n_ff": 256, "n_head": 8, "context_length": 4096}
    full = plan_from_gguf(write_tiny_llama(tmp_path / "a.gguf", **shape), 4096)
    gqa = plan_from_gguf(write_tiny_llama(tmp_path / "b.gguf", n_head_kv=2, **shape), 4096)
    assert gqa.kv_per_layer_mib == pytest.approx(full.kv_per_layer_mib / 4)
    assert gqa.layer_weights_mib[0] < full.layer_weights_mib[0]  # smaller K and V matrices


def test_cache_types_price_their_blocks(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", context_length=4096)
    f16 = plan_from_gguf(path, 1024)
    q8 = plan_from_gguf(path, 1024, cache_type_k="q8_0", cache_type_v="q4_0")
    f32 = plan_from_gguf(path, 1024, cache_type_k="f32", cache_type_v="f32")
    assert f32.kv_per_layer_mib == pytest.approx(2 * f16.kv_per_layer_mib)
    assert q8.kv_per_layer_mib == pytest.approx(f16.kv_per_layer_mib * (34 + 18) / 32 / 4)
    assert cache_type_bytes("Q8_0") == 34 / 32
    with pytest.raises(ValueError, match="cache type"):
        plan_from_gguf(path, 1024, cache_type_k="q3_k")


def test_context_is_padded_as_llama_cpp_pads_it(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", context_length=8192)
    assert plan_from_gguf(path, 1000).context_size == 1024
    assert plan_from_gguf(path, 1).context_size == KV_PAD
    assert kv_cells(2048, 3) == (2304, 768)  # -np 3: three slots of ceil(2048/3) -> 768
    assert plan_from_gguf(path, 2048, parallel=3).context_size == 2304


def test_context_above_the_training_context_is_allocated_in_full(tmp_path: Path) -> None:
    # llama-server caps what each slot may use at the training context, but it allocates
    # the KV cache for the whole --ctx-size: the estimate must not shrink it.
    path = write_tiny_llama(tmp_path / "m.gguf", context_length=256)
    assert read_gguf(path).training_context == 256
    small, big = plan_from_gguf(path, 256), plan_from_gguf(path, 2048)
    assert big.context_size == 2048
    assert big.kv_per_layer_mib == pytest.approx(8 * small.kv_per_layer_mib)


def test_compute_buffer_grows_with_context_and_width(tmp_path: Path) -> None:
    narrow = write_tiny_llama(tmp_path / "a.gguf", context_length=8192)
    wide = write_tiny_llama(tmp_path / "b.gguf", n_embd=256, n_ff=768, n_head=8,
                            context_length=8192)
    a1, a2 = plan_from_gguf(narrow, 2048), plan_from_gguf(narrow, 8192)
    b1 = plan_from_gguf(wide, 2048)
    # the f16 mask: 512 x cells x 2 bytes
    assert a2.compute_gpu_mib - a1.compute_gpu_mib == pytest.approx(512 * 6144 * 2 / MIB)
    assert b1.compute_gpu_mib > a1.compute_gpu_mib
    assert 0 < a1.compute_host_mib < a1.compute_gpu_mib


def test_bad_context_size_is_a_value_error(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf")
    for ctx in (0, -5, 1 << 25):
        with pytest.raises(ValueError, match="context size"):
            plan_from_gguf(path, ctx)


def test_facts_name_the_shape(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "m.gguf", n_layers=4, n_embd=128, n_ff=256, n_head=8,
                            n_head_kv=2, context_length=4096)
    facts = read_gguf(path)
    assert (facts.architecture, facts.layers, facts.training_context) == ("llama", 4, 4096)
    assert (facts.n_embd, facts.n_head, facts.n_head_kv, facts.key_length) == (128, 8, 2, 16)
    assert facts.n_ff == 256
    assert facts.n_vocab == 303
    assert facts.tensor_bytes == sum(_tensor_bytes(path).values())


def test_the_lean_reader_reads_what_the_plain_reader_reads(
    shaped: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = shaped
    assert gguf_plan._READER is gguf_plan._LeanReader  # this gguf version takes the override
    lean = read_gguf(path)
    monkeypatch.setattr(gguf_plan, "_READER", gguf.GGUFReader)
    assert read_gguf(path) == lean


def test_a_big_vocabulary_is_read_quickly_and_small(tmp_path: Path) -> None:
    n = 60_000
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in GOOD_KEYS.items():
        writer.add_uint32(key, value)
    writer.add_token_list([f"piece{i}" for i in range(n)])
    writer.add_token_scores([0.0] * n)
    writer.add_token_types([1] * n)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones((8,), dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.ones((n, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        facts = read_gguf(path)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert facts.n_vocab == n
    assert elapsed < 1.0
    assert peak < 10 * 1024 * 1024


# --- refusals -----------------------------------------------------------------------------


def _refusal(call: Callable[[], object]) -> str:
    """The refusal's message; it must come quickly and with little memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelRefused) as caught:
            call()
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < REFUSAL_SECONDS
    assert peak < REFUSAL_PEAK_BYTES
    return str(caught.value)


def test_refuses_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("this is not a model\n" * 100)
    message = _refusal(lambda: plan_from_gguf(path, 256))
    assert str(path) in message
    assert "not a GGUF" in message


def test_refuses_garbage_empty_missing_and_a_folder(tmp_path: Path) -> None:
    garbage = write_garbage(tmp_path / "garbage.gguf")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    for path in (garbage, empty, tmp_path / "missing.gguf", tmp_path):
        assert str(path) in _refusal(lambda p=path: plan_from_gguf(p, 256))


def test_refuses_a_model_cut_in_half(tmp_path: Path) -> None:
    path = write_truncated(tmp_path / "cut.gguf")
    message = _refusal(lambda: plan_from_gguf(path, 256))
    assert str(path) in message


def test_refuses_a_model_missing_its_last_bytes(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "short.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    assert str(path) in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_a_model_claiming_a_billion_layers(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "liar.gguf", claimed_block_count=1_000_000_000)
    message = _refusal(lambda: plan_from_gguf(path, 256))
    assert "block_count" in message
    assert "1000000000" in message


def test_refuses_more_claimed_layers_than_the_tensors_hold(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "liar.gguf", claimed_block_count=40)
    assert "no tensors" in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_tensors_beyond_the_claimed_layers(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "liar.gguf", n_layers=3, claimed_block_count=2)
    assert "beyond" in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_an_absurd_training_context(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "ctx.gguf", context_length=1 << 30)
    assert "context_length" in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_more_kv_heads_than_heads(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "kv.gguf", n_head=4, claimed_head_count_kv=8)
    assert "key/value heads" in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_a_header_claiming_a_billion_tensors(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "count.gguf")
    data = bytearray(path.read_bytes())
    data[8:16] = (1_000_000_000).to_bytes(8, "little")  # tensor count
    path.write_bytes(bytes(data))
    assert "tensors" in _refusal(lambda: plan_from_gguf(path, 256))


def _array_count_offset(path: Path, key: str) -> int:
    """Where the element count of the metadata array ``key`` lies in the file."""
    field = gguf.GGUFReader(path).fields[key]
    return int(field.offset) + 8 + len(key.encode()) + 4 + 4  # key, value type, item type


@pytest.mark.parametrize("key", ["tokenizer.ggml.tokens", "tokenizer.ggml.scores"])
def test_refuses_an_array_claiming_more_values_than_the_file_holds(
    tmp_path: Path, key: str
) -> None:
    path = write_tiny_llama(tmp_path / "liar.gguf")
    at = _array_count_offset(path, key)
    data = bytearray(path.read_bytes())
    data[at:at + 8] = (10**15).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    assert str(path) in _refusal(lambda: plan_from_gguf(path, 256))


def _write_bare(path: Path, keys: dict[str, int], arch: str | None = "llama") -> Path:
    """A GGUF with only the given llama.* integer keys, one layer tensor and the token
    embeddings (16 tokens)."""
    writer = gguf.GGUFWriter(path, arch or "llama")
    if arch is None:  # the writer always adds general.architecture: drop it again
        writer.kv_data[0].pop("general.architecture")
    for key, value in keys.items():
        writer.add_uint32(key, value)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones((8,), dtype=np.float32))
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


GOOD_KEYS = {
    "llama.block_count": 1, "llama.context_length": 256, "llama.embedding_length": 8,
    "llama.attention.head_count": 2,
}


def test_a_bare_but_sound_model_is_priced(tmp_path: Path) -> None:
    plan = plan_from_gguf(_write_bare(tmp_path / "bare.gguf", GOOD_KEYS), 256)
    assert plan.layers == 1
    assert plan.layer_weights_mib[0] * MIB == 32
    assert plan.host_only_mib * MIB == 16 * 8 * 4
    assert plan.output_mib * MIB == 16 * 8 * 4  # no output.weight: tied to token_embd


@pytest.mark.parametrize("missing", sorted(GOOD_KEYS))
def test_refuses_missing_architecture_keys(tmp_path: Path, missing: str) -> None:
    keys = {k: v for k, v in GOOD_KEYS.items() if k != missing}
    path = _write_bare(tmp_path / "bare.gguf", keys)
    assert missing in _refusal(lambda: plan_from_gguf(path, 256))


def test_refuses_a_model_without_an_architecture(tmp_path: Path) -> None:
    path = _write_bare(tmp_path / "bare.gguf", GOOD_KEYS, arch=None)
    assert "general.architecture" in _refusal(lambda: plan_from_gguf(path, 256))


@pytest.mark.parametrize(
    ("key", "value"),
    [("llama.block_count", 0), ("llama.block_count", 20_000), ("llama.embedding_length", 0),
     ("llama.attention.head_count", 0), ("llama.context_length", 0)],
)
def test_refuses_absurd_numbers(tmp_path: Path, key: str, value: int) -> None:
    path = _write_bare(tmp_path / "bare.gguf", {**GOOD_KEYS, key: value})
    assert key in _refusal(lambda: plan_from_gguf(path, 256))


def test_model_refused_is_a_value_error() -> None:
    assert issubclass(ModelRefused, ValueError)


# --- against llama-server's own figures ----------------------------------------------------

_BUFFER = re.compile(r"(model|KV|compute) buffer size\s*=\s*([\d.]+) MiB")
SERVER_DEADLINE_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_buffers(binary: Path, model: Path, ctx: int, log: Path) -> dict[str, float]:
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(_free_port()),
            "-ngl", "0", "-c", str(ctx), "-t", "1", "--no-webui", "-lv", "4"]
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + SERVER_DEADLINE_S
            while time.monotonic() < deadline and proc.poll() is None:
                text = log.read_text(errors="replace")
                if "compute buffer size" in text:
                    break
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    found = {m.group(1): float(m.group(2)) for m in _BUFFER.finditer(log.read_text())}
    if set(found) != {"model", "KV", "compute"}:
        pytest.skip(f"this llama-server does not log its buffer sizes: {found}")
    return found


@pytest.mark.parametrize("name", ["few-narrow-f32", "gqa", "f16"])
def test_plan_matches_llama_servers_own_buffers(
    llama_server_bin: Path, tmp_path: Path, name: str
) -> None:
    model = write_tiny_llama(tmp_path / f"{name}.gguf", **SHAPES[name])
    plan = plan_from_gguf(model, 1024)
    found = _server_buffers(llama_server_bin, model, 1024, tmp_path / "server.log")
    weights = sum(plan.layer_weights_mib) + plan.output_mib + plan.host_only_mib
    assert weights == pytest.approx(found["model"], abs=0.01)
    assert plan.kv_per_layer_mib * plan.layers == pytest.approx(found["KV"], abs=0.01)
    assert plan.compute_gpu_mib == pytest.approx(found["compute"], abs=0.25)
