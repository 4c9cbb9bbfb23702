"""Tiny, real GGUF models for tests that drive an actual llama.cpp `llama-server`.

`write_tiny_llama` writes a llama-architecture model with random weights and a
small SentencePiece ("llama") vocabulary: the three special tokens, the 256 byte
tokens and a few dozen ordinary pieces. It loads and generates (gibberish) in a
real server in well under a second and is a few hundred KB on disk.
`write_garbage` and `write_truncated` give files that must fail to load.

Other shapes for the memory estimates: more or fewer layers, wider, grouped-query
attention (``n_head_kv < n_head``), f16 matrices, an output tied to the token embeddings
(no ``output.weight``), and metadata that lies (``claimed_block_count``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf
import numpy as np

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_PIECES = ("<unk>", "<s>", "</s>")
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))
WORD_PIECES = (
    "▁",
    "▁the",
    "▁a",
    "▁hello",
    "▁world",
    "▁is",
    "▁of",
    "▁and",
    "he",
    "ll",
    "lo",
    "in",
    "er",
    "th",
    *"abcdefghijklmnopqrstuvwxyz",
    *".,!?",
)
ROPE_FREQ_BASE = 10000.0
RMS_NORM_EPS = 1e-5
WEIGHT_STD = 0.02


@dataclass(frozen=True)
class _Vocab:
    pieces: list[str]
    scores: list[float]
    types: list[int]


@dataclass(frozen=True)
class _Dims:
    n_vocab: int
    n_embd: int
    n_ff: int
    n_embd_kv: int = 0  # K/V projection width (n_head_kv x head_dim); 0: n_embd


WeightType = Literal["f32", "f16"]


def tiny_vocab() -> _Vocab:
    """The SPM vocabulary every tiny model shares (ids 0..2 are unk, bos, eos)."""
    pieces = [*SPECIAL_PIECES, *BYTE_PIECES, *WORD_PIECES]
    scores = [0.0] * (len(SPECIAL_PIECES) + len(BYTE_PIECES))
    scores += [-float(i) for i in range(len(WORD_PIECES))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * len(BYTE_PIECES)
    types += [gguf.TokenType.NORMAL] * len(WORD_PIECES)
    return _Vocab(pieces, scores, [int(t) for t in types])


def write_tiny_llama(
    path: Path,
    *,
    seed: int = 0,
    n_layers: int = 2,
    n_embd: int = 64,
    n_ff: int = 128,
    n_head: int = 4,
    context_length: int = 256,
    n_head_kv: int | None = None,
    weight_type: WeightType = "f32",
    tie_output: bool = False,
    claimed_block_count: int | None = None,
    claimed_head_count_kv: int | None = None,
) -> Path:
    """Write a random-weight llama GGUF to `path` (same bytes for the same arguments).

    ``n_head_kv`` (default ``n_head``): fewer K/V heads for grouped-query attention;
    ``weight_type``: the type of the 2-D matrices (norms stay f32, as converters write
    them); ``tie_output``: no ``output.weight`` (llama.cpp reuses ``token_embd``);
    ``claimed_block_count`` / ``claimed_head_count_kv``: metadata other than what the
    tensors hold (a lying file).
    """
    if n_embd % n_head:
        raise ValueError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
    kv_heads = n_head if n_head_kv is None else n_head_kv
    if kv_heads <= 0 or n_head % kv_heads:
        raise ValueError(f"n_head {n_head} is not a multiple of n_head_kv {kv_heads}")
    vocab = tiny_vocab()
    head_dim = n_embd // n_head
    dims = _Dims(
        n_vocab=len(vocab.pieces), n_embd=n_embd, n_ff=n_ff, n_embd_kv=kv_heads * head_dim
    )
    writer = gguf.GGUFWriter(path, "llama")
    block_count = n_layers if claimed_block_count is None else claimed_block_count
    claimed_kv = kv_heads if claimed_head_count_kv is None else claimed_head_count_kv
    _add_hparams(writer, block_count, dims, (n_head, claimed_kv), context_length, weight_type)
    _add_vocab(writer, vocab)
    rng = np.random.default_rng(seed)
    _add_tensors(writer, rng, n_layers, dims, weight_type=weight_type, tie_output=tie_output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_garbage(path: Path, *, size: int = 4096) -> Path:
    """Write bytes that are not GGUF at all (no magic)."""
    path.write_bytes(b"not a gguf model\n" + bytes(range(256)) * (size // 256))
    return path


def write_truncated(path: Path, *, seed: int = 0) -> Path:
    """Write a valid tiny model, then cut it to half its size (tensor data is short)."""
    write_tiny_llama(path, seed=seed)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _add_hparams(
    writer: gguf.GGUFWriter,
    n_layers: int,
    dims: _Dims,
    heads: tuple[int, int],
    context_length: int,
    weight_type: WeightType = "f32",
) -> None:
    n_head, n_head_kv = heads
    file_type = gguf.LlamaFileType.ALL_F32
    if weight_type == "f16":
        file_type = gguf.LlamaFileType.MOSTLY_F16
    writer.add_name("gpuwarden-tiny-llama")
    writer.add_file_type(file_type)
    writer.add_vocab_size(dims.n_vocab)
    writer.add_context_length(context_length)
    writer.add_embedding_length(dims.n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(dims.n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(dims.n_embd // n_head)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)


def _add_vocab(writer: gguf.GGUFWriter, vocab: _Vocab) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list(vocab.pieces)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def tensor_shapes(
    *,
    n_layers: int = 2,
    n_embd: int = 64,
    n_ff: int = 128,
    n_embd_kv: int | None = None,
    tie_output: bool = False,
) -> dict[str, tuple[int, ...]]:
    """Tensor name -> numpy shape (GGUF lists the dimensions in reverse order).
    ``n_embd_kv``: the K/V projection width (default ``n_embd``)."""
    e, f, v = n_embd, n_ff, len(tiny_vocab().pieces)
    kv = e if n_embd_kv is None else n_embd_kv
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (v, e),
        "output_norm.weight": (e,),
    }
    if not tie_output:
        shapes["output.weight"] = (v, e)
    for i in range(n_layers):
        block = {
            "attn_norm": (e,),
            "attn_q": (e, e),
            "attn_k": (kv, e),
            "attn_v": (kv, e),
            "attn_output": (e, e),
            "ffn_norm": (e,),
            "ffn_gate": (f, e),
            "ffn_up": (f, e),
            "ffn_down": (e, f),
        }
        shapes.update({f"blk.{i}.{name}.weight": shape for name, shape in block.items()})
    return shapes


def _add_tensors(
    writer: gguf.GGUFWriter,
    rng: np.random.Generator,
    n_layers: int,
    dims: _Dims,
    *,
    weight_type: WeightType = "f32",
    tie_output: bool = False,
) -> None:
    shapes = tensor_shapes(
        n_layers=n_layers,
        n_embd=dims.n_embd,
        n_ff=dims.n_ff,
        n_embd_kv=dims.n_embd_kv or None,
        tie_output=tie_output,
    )
    matrix_dtype = np.float32 if weight_type == "f32" else np.float16
    for name, shape in shapes.items():
        data: np.ndarray
        if len(shape) == 1:  # norm weights: the identity scale
            data = np.ones(shape, dtype=np.float32)
        else:
            data = (rng.standard_normal(shape) * WEIGHT_STD).astype(matrix_dtype)
        writer.add_tensor(name, data)
