"""What a torch model's weights take once loaded, read without loading them: the tensor
list in each ``.safetensors`` header of a Transformers folder (the floating-point ones
counted in the dtype they are loaded as), or an exported / scripted file's size."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

_MIB = 1024.0 * 1024.0
_HEADER_LIMIT = 100 * 1024 * 1024  # a header larger than this is not a real one
_FLOAT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_OTHER_BYTES = {"I64": 8, "U64": 8, "I32": 4, "U32": 4, "I16": 2, "U16": 2, "I8": 1,
                "U8": 1, "BOOL": 1}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def weights_mib(path: Path, dtype: str) -> float | None:
    """MiB of weights ``path`` holds loaded as ``dtype`` (float tensors converted);
    None when it cannot be read (the load says why)."""
    try:
        if path.is_dir():
            total = 0
            for file in sorted(path.glob("*.safetensors")):
                size = _safetensors_bytes(file, DTYPE_BYTES[dtype])
                if size is None:
                    return None
                total += size
            return total / _MIB if total else None
        return path.stat().st_size / _MIB
    except OSError:
        return None


def _safetensors_bytes(path: Path, float_bytes: int) -> int | None:
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > _HEADER_LIMIT:
            return None
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(header, dict):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            return None
        kind = str(info.get("dtype", ""))
        size = float_bytes if kind in _FLOAT_BYTES else _OTHER_BYTES.get(kind)
        if size is None:
            return None
        total += size * math.prod(int(d) for d in info["shape"])
    return total
