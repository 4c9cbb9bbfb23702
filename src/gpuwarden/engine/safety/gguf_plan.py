"""A :class:`MemoryPlan` read from a GGUF file's metadata and tensor table (no load).

Read with ``gguf.GGUFReader`` (it memory-maps the file and never reads tensor data),
with metadata arrays kept whole rather than one numpy view per element (a real
vocabulary: milliseconds and a few MiB instead of seconds and hundreds of MiB). Every
figure is checked before it is used, so a file that lies (a billion layers, tensor data
past its end, an absurd context) is refused quickly, with little memory, by
:class:`ModelRefused`, whose message names the file.

What llama.cpp allocates, and how this module prices it (the figures were checked against
llama-server's own log lines, "model buffer size", "KV buffer size" and "compute buffer
size", on generated llama models):

* Weights: ``blk.N.*`` tensors are layer N (the sum of their bytes); ``token_embd``
  stays on the host whatever the offload; ``output.weight``, ``output_norm`` and any other
  tensor outside the blocks go to the GPU only with a full offload. Without an
  ``output.weight`` llama.cpp ties the output to ``token_embd`` and copies that matrix to
  the GPU with a full offload: it is counted in both the host and the output figures.
* KV cache: llama.cpp pads the context to a multiple of 256 cells; with one slot (or the
  server's default unified cache) that padded context is what it allocates, and with
  ``parallel`` > 1 (``-np N``) it allocates N slots of ``ceil(context / N)`` padded to 256.
  It does *not* shrink the cache to the model's training context (the server only caps
  what each slot may use), so neither does this estimate. Per layer:
  ``cells x n_head_kv x (key_length x bytes(cache_type_k) + value_length x
  bytes(cache_type_v))`` (that is ``2 x context x n_head_kv x head_dim x bytes`` for f16
  with equal key and value lengths).
* Compute buffers (a formula fitted to llama-server's figures): with ``ubatch =
  min(512, cells)`` (the server's default micro-batch, which llama.cpp caps at the
  context),

  - ``mask = ubatch x cells_per_slot x 2`` bytes (the f16 attention mask),
  - ``logits = ubatch x n_vocab x 4`` bytes,
  - ``activations = ubatch x (4 x n_ff + n_embd) x 4`` bytes,

  ``compute_gpu = mask + max(logits, activations)`` (llama.cpp's graph allocator reuses
  the layers' activations for the logits) and ``compute_host = mask + 2 x ubatch x n_embd
  x 4`` (the inputs llama.cpp keeps on the host). On the generated models it is within
  0.12 MiB of llama-server's CPU compute buffer; for Llama-3-8B at 8192 cells it gives
  258.5 MiB, the CUDA compute buffer llama.cpp reports with flash attention. It assumes
  flash attention, which llama.cpp turns on by itself wherever the GPU supports it;
  without it the attention scores take about ``ubatch x cells x n_head x 4`` bytes more.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import numpy.typing as npt

from gpuwarden.engine.safety.memory import MemoryPlan

MAX_LAYERS = 10_000
MAX_CONTEXT = 1 << 24
MAX_EMBEDDING = 1 << 20
MAX_HEADS = 1 << 14
MAX_HEAD_DIM = 1 << 14
MAX_VOCAB = 1 << 24
MAX_TENSORS = 1 << 20
MAX_KV_PAIRS = 1 << 20
MAX_DIM = 1 << 40
KV_PAD = 256  # llama.cpp pads the KV cache to a multiple of this many cells
UBATCH = 512  # llama-server's default --ubatch-size
_MIB = 1024.0 * 1024.0
_HEADER_BYTES = 24  # magic, version, tensor count, key/value count
_MIN_TENSOR_INFO = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset
_MIN_KV_PAIR = 8 + 1 + 4 + 1  # key length, key, value type, a one-byte value
_BLOCK = re.compile(r"blk\.(\d+)\.")
_HOST_ONLY = "token_embd.weight"
_OUTPUT = "output.weight"

CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


class ModelRefused(ValueError):
    """The file is not a model this estimate can trust: the message names the file."""


@dataclass(frozen=True, slots=True)
class GgufFacts:
    """What the file says about its own shape, checked."""

    path: Path
    architecture: str
    training_context: int
    n_embd: int
    n_head: int
    n_head_kv: int  # the largest over the layers
    key_length: int
    value_length: int
    n_ff: int  # the largest over the layers
    n_vocab: int
    layer_bytes: tuple[int, ...]
    output_bytes: int  # output, output_norm and other tensors outside the blocks
    embedding_bytes: int  # token_embd
    tied_output: bool  # no output.weight: llama.cpp reuses token_embd

    @property
    def layers(self) -> int:
        return len(self.layer_bytes)

    @property
    def tensor_bytes(self) -> int:
        return sum(self.layer_bytes) + self.output_bytes + self.embedding_bytes


def cache_type_bytes(cache_type: str) -> float:
    """Bytes per element of a KV cache type (``f16``, ``q8_0``, ...).

    Raises ValueError for a type llama.cpp does not offer for the cache."""
    name = cache_type.strip().lower()
    if name not in CACHE_TYPES:
        raise ValueError(
            f"unknown KV cache type '{cache_type}' (one of: {', '.join(CACHE_TYPES)})"
        )
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name.upper()]]
    return size / block


def kv_cells(context_size: int, parallel: int = 1) -> tuple[int, int]:
    """(all cells, cells per slot) llama.cpp allocates for this context and slot count."""
    if parallel <= 1:
        cells = _pad(context_size, KV_PAD)
        return cells, cells
    per_slot = _pad(-(-context_size // parallel), KV_PAD)
    return per_slot * parallel, per_slot


def plan_from_gguf(
    path: Path,
    context_size: int,
    *,
    parallel: int = 1,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
) -> MemoryPlan:
    """The buffers llama.cpp will allocate for this model file and launch, priced from the
    file's metadata (see the module's docstring for every formula).

    Raises ModelRefused for a file that is not a sound GGUF model, ValueError for a bad
    context size, slot count or cache type."""
    if not 1 <= context_size <= MAX_CONTEXT:
        raise ValueError(f"context size must be between 1 and {MAX_CONTEXT}, got {context_size}")
    if not 1 <= parallel <= 256:
        raise ValueError(f"parallel slots must be between 1 and 256, got {parallel}")
    k_bytes, v_bytes = cache_type_bytes(cache_type_k), cache_type_bytes(cache_type_v)
    facts = read_gguf(path)
    return plan_from_facts(
        facts, context_size, parallel=parallel, k_bytes=k_bytes, v_bytes=v_bytes
    )


def plan_from_facts(
    facts: GgufFacts,
    context_size: int,
    *,
    parallel: int = 1,
    k_bytes: float = 2.0,
    v_bytes: float = 2.0,
) -> MemoryPlan:
    """The plan for already-read facts (``k_bytes`` / ``v_bytes``: per cache element)."""
    cells, per_slot = kv_cells(context_size, parallel)
    kv_layer = cells * facts.n_head_kv * (facts.key_length * k_bytes + facts.value_length * v_bytes)
    ubatch = min(UBATCH, cells)
    mask = ubatch * per_slot * 2
    logits = ubatch * facts.n_vocab * 4
    activations = ubatch * (4 * facts.n_ff + facts.n_embd) * 4
    output = facts.output_bytes + (facts.embedding_bytes if facts.tied_output else 0)
    return MemoryPlan(
        source="metadata",
        layer_weights_mib=tuple(b / _MIB for b in facts.layer_bytes),
        output_mib=output / _MIB,
        host_only_mib=facts.embedding_bytes / _MIB,
        kv_per_layer_mib=kv_layer / _MIB,
        compute_gpu_mib=(mask + max(logits, activations)) / _MIB,
        compute_host_mib=(mask + 2 * ubatch * facts.n_embd * 4) / _MIB,
        context_size=cells,
    )


def read_gguf(path: Path) -> GgufFacts:
    """Read and check the shape of the model in ``path``. Raises ModelRefused."""
    size = _file_size(path)
    _check_header(path, size)
    reader = _open(path)
    try:
        return _facts(path, reader, size)
    except ModelRefused:
        raise
    except Exception as exc:  # any other surprise in the file is a refusal
        raise _refuse(path, f"unreadable GGUF metadata ({type(exc).__name__}: {exc})") from exc
    finally:
        del reader


# --- reading ------------------------------------------------------------------------------


def _refuse(path: Path, why: str) -> ModelRefused:
    return ModelRefused(f"{path}: {why}")


def _file_size(path: Path) -> int:
    try:
        if not path.exists():
            raise _refuse(path, "no such file")
        if not path.is_file():
            raise _refuse(path, "not a regular file")
        return path.stat().st_size
    except OSError as exc:
        raise _refuse(path, f"cannot read it ({exc.strerror or exc})") from exc


def _check_header(path: Path, size: int) -> None:
    """Magic, version and counts, before the reader walks the file: counts the file's size
    cannot hold are refused at once."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError as exc:
        raise _refuse(path, f"cannot read it ({exc.strerror or exc})") from exc
    if len(head) < 4 or int.from_bytes(head[:4], "little") != gguf.GGUF_MAGIC:
        raise _refuse(path, "not a GGUF model file (no GGUF magic at its start)")
    if len(head) < _HEADER_BYTES:
        raise _refuse(path, f"truncated GGUF file ({size} bytes: not even a header)")
    order: Literal["little", "big"] = (
        "little" if int.from_bytes(head[4:8], "little") & 0xFFFF else "big"
    )
    tensors = int.from_bytes(head[8:16], order)
    pairs = int.from_bytes(head[16:24], order)
    room = size - _HEADER_BYTES
    if tensors > MAX_TENSORS or tensors * _MIN_TENSOR_INFO > room:
        raise _refuse(path, f"the header claims {tensors} tensors, more than a "
                            f"{size}-byte file can describe")
    if pairs > MAX_KV_PAIRS or pairs * _MIN_KV_PAIR > room:
        raise _refuse(path, f"the header claims {pairs} metadata entries, more than a "
                            f"{size}-byte file can hold")


class _LeanReader(gguf.GGUFReader):
    """``GGUFReader`` that keeps each metadata array as one part instead of one numpy
    view per element (a 150,000-token vocabulary took seconds and hundreds of MiB).

    A numeric array is one view of its values (``field.data == [2]``); an array of
    strings is walked for its length only and kept as one byte view (``field.data ==
    []``); the element count is ``field.parts[1][0]`` either way. Nested arrays go to the
    reader's own code."""

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[npt.NDArray[Any]], list[int], list[gguf.GGUFValueType]]:
        if raw_type != gguf.GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        offs = orig_offs
        raw_itype = self._get(offs, np.uint32)
        alen = self._get(offs + 4, np.uint64)
        offs += 12
        if len(raw_itype) != 1 or len(alen) != 1:
            raise ValueError("metadata array header past the end of the file")
        itype, count, end = int(raw_itype[0]), int(alen[0]), len(self.data)
        types = [gguf.GGUFValueType.ARRAY]
        nptype = self.gguf_scalar_to_np.get(gguf.GGUFValueType(itype))
        if nptype is not None:
            size = count * np.dtype(nptype).itemsize
            if offs + size > end:
                raise ValueError(f"metadata array of {count} values past the end of the file")
            values = self._get(offs, nptype, count)
            types.append(gguf.GGUFValueType(itype))
            return offs + size - orig_offs, [raw_itype, alen, values], [2], types
        if itype == gguf.GGUFValueType.STRING:
            view, order = self.data.data, self._int_order()
            pos = offs
            for _ in range(count):
                if pos + 8 > end:
                    raise ValueError("metadata string array past the end of the file")
                pos += 8 + int.from_bytes(view[pos:pos + 8], order)
            if pos > end:
                raise ValueError("metadata string array past the end of the file")
            types.append(gguf.GGUFValueType.STRING)
            return pos - orig_offs, [raw_itype, alen, self.data[offs:pos]], [], types
        return super()._get_field_parts(orig_offs, raw_type)

    def _int_order(self) -> Literal["little", "big"]:
        host_little = sys.byteorder == "little"
        little = host_little if self.byte_order == "I" else not host_little
        return "little" if little else "big"


def _lean_reader_fits() -> bool:
    """The override matches this gguf version's private method (else: the plain reader)."""
    method = getattr(gguf.GGUFReader, "_get_field_parts", None)
    if method is None:
        return False
    try:
        names = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return False
    return names == ["self", "orig_offs", "raw_type"]


_READER: type[gguf.GGUFReader] = _LeanReader if _lean_reader_fits() else gguf.GGUFReader


def _open(path: Path) -> gguf.GGUFReader:
    try:
        return _READER(path)
    except Exception as exc:  # the reader raises many kinds on a bad file
        raise _refuse(path, f"not a readable GGUF model, truncated or corrupt "
                            f"({type(exc).__name__}: {exc})") from exc


_INT_TYPES = frozenset({
    gguf.GGUFValueType.UINT8, gguf.GGUFValueType.INT8, gguf.GGUFValueType.UINT16,
    gguf.GGUFValueType.INT16, gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32,
    gguf.GGUFValueType.UINT64, gguf.GGUFValueType.INT64,
})


class _Meta:
    """Typed, checked access to the reader's fields."""

    def __init__(self, path: Path, reader: gguf.GGUFReader) -> None:
        self.path = path
        self.fields = reader.fields

    def text(self, key: str) -> str:
        field = self.fields.get(key)
        if field is None:
            raise _refuse(self.path, f"the metadata has no '{key}'")
        if field.types != [gguf.GGUFValueType.STRING]:
            raise _refuse(self.path, f"'{key}' is not a string")
        raw = bytes(field.parts[-1][:256])
        return raw.decode("utf-8", errors="replace")

    def ints(self, key: str, *, limit: int) -> list[int] | None:
        """The value (or the values, for a per-layer array of at most ``limit``), None when
        the key is absent."""
        field = self.fields.get(key)
        if field is None:
            return None
        types = field.types
        if len(types) == 1 and types[0] in _INT_TYPES:
            return [int(field.parts[-1][0])]
        if len(types) == 2 and types[0] == gguf.GGUFValueType.ARRAY and types[1] in _INT_TYPES:
            count = _array_count(field)
            if not 1 <= count <= limit:
                raise _refuse(self.path, f"'{key}' has {count} values")
            return [int(v) for i in field.data for v in field.parts[i].tolist()]
        raise _refuse(self.path, f"'{key}' is not an integer")

    def number(self, key: str, low: int, high: int, *, default: int | None = None,
               per_layer: int = 1) -> int:
        """The largest value of ``key`` (a scalar or a per-layer array), checked to lie
        between ``low`` and ``high``; ``default`` when absent (refused when None)."""
        values = self.ints(key, limit=per_layer)
        if values is None:
            if default is None:
                raise _refuse(self.path, f"the metadata has no '{key}'")
            return default
        value = max(values)
        if not low <= value <= high or min(values) < 0:
            raise _refuse(self.path, f"absurd '{key}' = {value} (expected {low}..{high})")
        return value


def _facts(path: Path, reader: gguf.GGUFReader, size: int) -> GgufFacts:
    meta = _Meta(path, reader)
    arch = meta.text("general.architecture")
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", arch):
        raise _refuse(path, f"absurd architecture name '{arch[:64]}'")
    blocks = meta.number(f"{arch}.block_count", 1, MAX_LAYERS)
    training = meta.number(f"{arch}.context_length", 1, MAX_CONTEXT)
    n_embd = meta.number(f"{arch}.embedding_length", 1, MAX_EMBEDDING)
    n_head = meta.number(f"{arch}.attention.head_count", 1, MAX_HEADS, per_layer=blocks)
    n_head_kv = meta.number(f"{arch}.attention.head_count_kv", 0, MAX_HEADS,
                            default=n_head, per_layer=blocks)
    if n_head_kv > n_head:
        raise _refuse(path, f"{n_head_kv} key/value heads but only {n_head} attention heads")
    if n_head_kv == 0:
        raise _refuse(path, "no layer has a key/value head")
    head_dim = n_embd // n_head
    key_length = meta.number(f"{arch}.attention.key_length", 1, MAX_HEAD_DIM,
                             default=head_dim or None)
    value_length = meta.number(f"{arch}.attention.value_length", 1, MAX_HEAD_DIM,
                               default=key_length)
    n_ff = meta.number(f"{arch}.feed_forward_length", 0, MAX_EMBEDDING * 16,
                       default=4 * n_embd, per_layer=blocks)
    layer_bytes, output_bytes, embedding_bytes, tied, vocab_rows = _tensor_bytes(
        path, reader, size, blocks
    )
    tokens = meta.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and tokens.types[:1] == [gguf.GGUFValueType.ARRAY]:
        vocab_rows = vocab_rows or _array_count(tokens)
    n_vocab = meta.number(f"{arch}.vocab_size", 1, MAX_VOCAB, default=vocab_rows or None)
    return GgufFacts(
        path=path, architecture=arch, training_context=training, n_embd=n_embd,
        n_head=n_head, n_head_kv=n_head_kv, key_length=key_length, value_length=value_length,
        n_ff=n_ff, n_vocab=n_vocab, layer_bytes=layer_bytes, output_bytes=output_bytes,
        embedding_bytes=embedding_bytes, tied_output=tied,
    )


def _array_count(field: Any) -> int:
    """The element count of an array field (its second part, whichever reader)."""
    return int(field.parts[1][0])


def _tensor_bytes(
    path: Path, reader: gguf.GGUFReader, size: int, blocks: int
) -> tuple[tuple[int, ...], int, int, bool, int]:
    """(bytes per layer, output bytes, token_embd bytes, tied output, vocab rows), each
    tensor's extent checked against the file's size (the data itself is never read)."""
    per_layer = [0] * blocks  # blocks is checked: at most MAX_LAYERS
    output = embedding = vocab_rows = 0
    has_output = False
    for tensor in reader.tensors:
        n_bytes = _checked_extent(path, tensor, size)
        match = _BLOCK.match(tensor.name)
        if match:
            index = int(match.group(1))
            if index >= blocks:
                raise _refuse(path, f"tensor '{tensor.name}' lies beyond the {blocks} "
                                    "layers the metadata claims")
            per_layer[index] += n_bytes
        elif tensor.name == _HOST_ONLY:
            embedding += n_bytes
            dims = [int(d) for d in tensor.shape.tolist()]
            vocab_rows = dims[1] if len(dims) > 1 else 0
        else:
            output += n_bytes
            has_output = has_output or tensor.name == _OUTPUT
    empty = sum(1 for b in per_layer if b == 0)
    if empty:
        raise _refuse(path, f"the metadata claims {blocks} layers but {empty} of them have "
                            "no tensors")
    return tuple(per_layer), output, embedding, not has_output and embedding > 0, vocab_rows


def _checked_extent(path: Path, tensor: Any, size: int) -> int:
    """The tensor's size in bytes, from its own dimensions in Python integers (no numpy
    overflow), refused unless its data lies within the file."""
    dims = [int(d) for d in tensor.shape.tolist()]
    if not dims or len(dims) > 4 or any(not 0 < d <= MAX_DIM for d in dims):
        raise _refuse(path, f"tensor '{tensor.name}' has absurd dimensions {dims[:8]}")
    block, type_size = gguf.GGML_QUANT_SIZES[tensor.tensor_type]
    elements = math.prod(dims)
    if elements % block:
        raise _refuse(path, f"tensor '{tensor.name}' does not fill whole blocks of its type")
    n_bytes = elements // block * type_size
    start = int(tensor.data_offset)
    if start < 0 or start + n_bytes > size:
        raise _refuse(path, f"truncated: tensor '{tensor.name}' needs bytes up to "
                            f"{start + n_bytes}, the file has {size}")
    return n_bytes


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
