"""What one backend kind's ``[[models]]`` entry accepts beyond the common keys, checked:
``command`` (a program line, its health URL, environment, folder) and ``torch`` (a
Transformers folder or an exported / scripted file, its dtype). Free functions returning
``(key, message)`` pairs; the config reader turns them into ``file:line`` problems."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from gpuwarden.engine.tomlcheck import printable, show

COMMAND_KEYS: tuple[str, ...] = ("command", "health_url", "env", "cwd", "ready_after_s")
TORCH_KEYS: tuple[str, ...] = ("dtype",)
KIND_KEYS: Mapping[str, tuple[str, ...]] = {"command": COMMAND_KEYS, "torch": TORCH_KEYS}
# They run whole, on the GPU or off it (no layers to split): one "layer" each, so a GPU
# out-of-memory downgrades them straight to the CPU.
WHOLE_BACKENDS: tuple[str, ...] = ("command", "torch")
TORCH_DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")
TORCH_FILE_SUFFIXES: tuple[str, ...] = (".pt2", ".pt", ".ts", ".torchscript")
_HEALTH_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d{1,5})(/\S*)?")

Problems = list[tuple[str, str]]


def expand(value: str) -> Path:
    """``~`` expanded where it can be (``~nosuchuser`` stays as written)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)


def kind_problems(raw: Mapping[str, object], good: dict[str, object],
                  base_dir: Path) -> Problems:
    """The keys of another kind, and what this kind's own keys hold (``good``'s ``cwd``
    is resolved against ``base_dir``)."""
    backend = raw.get("backend")
    problems = [(key, f"{key!r} is only for backend = \"{kind}\"")
                for kind, keys in KIND_KEYS.items() if backend != kind
                for key in keys if key in raw]
    if backend == "command":
        problems += _command(raw, good, base_dir)
    elif backend == "torch":
        problems += _placement(good, ("gpu", "cpu", "auto"), "torch", "a model")
    return problems


def _command(raw: Mapping[str, object], good: dict[str, object], base_dir: Path) -> Problems:
    problems: Problems = []
    command = raw.get("command")
    if "command" in raw and ("command" not in good or command == []):
        problems.append(("command", (
            "'command' must be a non-empty array of strings, one per argument (no shell), "
            f'e.g. ["python", "main.py", "--port", "8188"], got {show(command)}')))
    url = good.get("health_url")
    if isinstance(url, str) and not health_url_ok(url):
        problems.append(("health_url", (
            "'health_url' must be http://127.0.0.1:PORT/path (or localhost), "
            f"got {show(url)}")))
    problems += _placement(good, ("gpu", "cpu"), "command", "a program")
    if "cwd" in good:
        cwd = expand(str(good["cwd"]))
        cwd = good["cwd"] = cwd if cwd.is_absolute() else base_dir / cwd
        if not cwd.is_dir():
            problems.append(("cwd", f"'cwd' is not a folder: {printable(str(cwd))}"))
    return problems


def _placement(good: dict[str, object], allowed: tuple[str, ...], kind: str,
               runs: str) -> Problems:
    placement = good.get("placement", "gpu")
    if placement in allowed:
        return []
    said = " or ".join(f'"{a}"' for a in allowed)
    return [("placement", (
        f"backend \"{kind}\" runs {runs} whole, on the GPU or off it: 'placement' must be "
        f"{said} (no layers), got {show(placement)}"))]


def health_url_ok(url: str) -> bool:
    found = _HEALTH_URL.fullmatch(url)
    return found is not None and 0 < int(found[1]) < 65536


def torch_path_problem(path: Path) -> str | None:
    """Why ``path`` is not a torch model gpuwarden loads (None: it is one)."""
    shown = printable(str(path))
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                return f"not a Transformers model folder (no config.json): {shown}"
            if not any(path.glob("*.safetensors")):
                return (f"no .safetensors weights in {shown} (pickled .bin weights are never "
                        "loaded: convert them with safetensors)")
            return None
        if not path.exists():
            return f"model not found: {shown}"
    except OSError as exc:
        return f"model path cannot be used ({exc.strerror or exc}): {shown}"
    if path.suffix.lower() not in TORCH_FILE_SUFFIXES:
        return (f"a torch model is a Transformers folder or a {', '.join(TORCH_FILE_SUFFIXES)}"
                f" file, got {shown}")
    if not os.access(path, os.R_OK):
        return f"model file is not readable: {shown}"
    return None
