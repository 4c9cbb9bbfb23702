"""Where the llama-server binary is: the config's path, then PATH, then our build cache;
and llama.cpp's ``llama-fit-params`` (built beside it), which projects a launch's memory."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from gpuwarden.engine import paths

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
FIT_PARAMS = "llama-fit-params"  # tools/fit-params: same sources, same build, same folder
HOW_TO_GET = (
    "build it once with `gpuwarden setup llama-server` (about 5 minutes), put llama-server "
    "on PATH, or set `llama_server = \"/path/to/llama-server\"` in the config"
)


ENV_VAR = "GPUWARDEN_LLAMA_SERVER"


class LlamaServerNotFound(FileNotFoundError):
    """No usable llama-server anywhere gpuwarden looks. ``unusable``: why the one the
    user named (config or environment) cannot be run, when it exists."""

    def __init__(self, tried: list[str], unusable: str | None = None) -> None:
        if unusable is None:
            text = f"llama-server not found (looked at {', '.join(tried)}); {HOW_TO_GET}"
        else:
            text = f"{unusable}; no other llama-server found (looked at {', '.join(tried)})"
        super().__init__(text)


def llama_server_cache_dir(version: str = LLAMA_CPP_PYTHON_VERSION, flavour: str = "cpu") -> Path:
    return paths.cache_dir() / "llama-server" / f"{version}-{flavour}"


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def cached_llama_server(version: str = LLAMA_CPP_PYTHON_VERSION,
                        flavour: str = "cpu") -> Path | None:
    path = llama_server_cache_dir(version, flavour) / "llama-server"
    return path if _usable(path) else None


def cached_fit_params(version: str = LLAMA_CPP_PYTHON_VERSION,
                      flavour: str = "cpu") -> Path | None:
    path = llama_server_cache_dir(version, flavour) / FIT_PARAMS
    return path if _usable(path) else None


def find_fit_params(llama_server: Path | None = None) -> Path | None:
    """llama.cpp's fit tool: beside the llama-server binary in use (same version, so the
    same projection), then our build cache; None when there is none (never raises). Not
    PATH: a stray fit tool of another version would price another llama.cpp."""
    if llama_server is not None:
        beside = llama_server.parent / FIT_PARAMS
        if _usable(beside):
            return beside
    for flavour in ("cuda", "cpu"):
        cached = cached_fit_params(flavour=flavour)
        if cached is not None:
            return cached
    return None


def find_llama_server(configured: Path | None = None) -> Path:
    """The binary to run, in the documented order; LlamaServerNotFound says how to get one
    (or why the one the config or $GPUWARDEN_LLAMA_SERVER names cannot be run)."""
    tried: list[str] = []
    unusable = None
    if configured is not None:
        if _usable(configured):
            return configured
        if configured.exists():
            unusable = f"llama-server at {configured} ({_named_by(configured)}) cannot be " \
                f"run: {_why_unusable(configured)}"
        else:
            tried.append(f"{configured} ({_named_by(configured)})")
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    tried.append("PATH")
    for flavour in ("cuda", "cpu"):
        cached = cached_llama_server(flavour=flavour)
        if cached is not None:
            return cached
    tried.append(str(llama_server_cache_dir()))
    raise LlamaServerNotFound(tried, unusable)


def _named_by(configured: Path) -> str:
    """Who named this path: the environment variable, else the config."""
    env = os.environ.get(ENV_VAR)
    return f"from ${ENV_VAR}" if env and Path(env) == configured else "from the config"


def _why_unusable(path: Path) -> str:
    if path.is_dir():
        return "it is a folder"
    if not path.is_file():
        return "it is not a regular file"
    return f"it is not executable (chmod +x {path})"


def cannot_run(program: Path, exc: OSError, what: str = "llama-server") -> str:
    """Why ``program`` failed to start (``exc`` from exec), in words a person can act on:
    ``llama-server at X cannot be run: it is not a program (...)``."""
    if exc.errno == errno.ENOEXEC:
        why = "it is not a program (Exec format error: a script without #!?)"
    elif exc.errno == errno.EACCES:
        why = (f"it is not executable (chmod +x {program})" if not os.access(program, os.X_OK)
               else "permission denied (is its folder mounted noexec?)")
    elif exc.errno == errno.ENOENT and program.exists():
        why = "the interpreter its #! line names was not found"
    elif exc.errno == errno.ENOENT:
        why = "it does not exist"
    else:
        why = exc.strerror or str(exc)
    return f"{what} at {program} cannot be run: {why}"


def find_fit_tool() -> Path | None:
    """llama.cpp's fit tool beside the llama-server gpuwarden would run by default (or in
    the build cache); None when there is none. For pricing a file that no config names
    yet (`gpuwarden estimate`, the window's add-model dialog)."""
    try:
        server: Path | None = find_llama_server(None)
    except LlamaServerNotFound:
        server = None
    return find_fit_params(server)
