"""What `gpuwarden setup llama-server` is doing, read from the lines it prints, and whether
the window should offer to build llama-server at all. Pure Python (no Qt), cheap to call.

The build (gpuwarden/llama_build.py) says each step on stderr as ``gpuwarden setup: ...``:
``$ <python> -m pip download ...`` (the sources), ``$ cmake -S ...`` (configure),
``$ cmake --build ...`` (compile), ``built <path>`` or ``... is already built: <path>``
(done), ``error: <why>`` (failed). While compiling, CMake's Makefiles print ``[ 42%]`` and
Ninja prints ``[123/456]`` in front of each step.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Literal, NamedTuple

from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.supervisor.locate import LlamaServerNotFound, find_llama_server

Phase = Literal["download", "configure", "compile", "done", "failed"]

PHASE_WORDS: dict[Phase, str] = {
    "download": "Downloading the llama.cpp sources…",
    "configure": "Configuring the build (cmake)…",
    "compile": "Compiling…",
    "done": "Done: llama-server is built.",
    "failed": "The build failed.",
}

_SAY = "gpuwarden setup: "
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAKE_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_BUILT = re.compile(r"^(?:built |.* is already built: )(?P<path>.+)$")


class Progress(NamedTuple):
    phase: Phase | None  # None: the line does not change the step
    percent: int | None  # 0..100 while compiling, when the line says it


def parse_progress(line: str) -> Progress:
    """The build step and compile percentage one output line announces."""
    text = _ANSI.sub("", line).strip()
    if text.startswith(_SAY):
        said = text.removeprefix(_SAY)
        if said.startswith("error:"):
            return Progress("failed", None)
        if _BUILT.match(said):
            return Progress("done", 100)
        if said.startswith("$ "):
            return Progress(_command_phase(said[2:].split()), None)
        return Progress(None, None)
    match = _MAKE_PERCENT.match(text)
    if match:
        return Progress("compile", min(100, int(match.group(1))))
    match = _NINJA_STEP.match(text)
    if match and int(match.group(2)) > 0:
        done, total = int(match.group(1)), int(match.group(2))
        return Progress("compile", min(100, done * 100 // total))
    return Progress(None, None)


def _command_phase(argv: list[str]) -> Phase | None:
    if "pip" in argv and "download" in argv:
        return "download"
    if argv[:1] == ["cmake"]:
        return "compile" if "--build" in argv else "configure"
    return None


def built_path(line: str) -> str | None:
    """The binary's path when ``line`` is the build's last word (``built <path>``)."""
    text = _ANSI.sub("", line).strip()
    if not text.startswith(_SAY):
        return None
    match = _BUILT.match(text.removeprefix(_SAY))
    return match.group("path") if match else None


def error_text(line: str) -> str | None:
    """The reason when ``line`` is the build's ``error: <why>``."""
    text = _ANSI.sub("", line).strip()
    if not text.startswith(_SAY + "error:"):
        return None
    return text.removeprefix(_SAY + "error:").strip()


def exit_words(code: int, crashed: bool) -> str:
    """How the build process ended, for a person. On a crash Qt reports the signal as
    the exit code (POSIX)."""
    if not crashed:
        return "it finished" if code == 0 else f"it exited with code {code}"
    try:
        return f"it was killed by signal {code} ({signal.Signals(code).name})"
    except ValueError:
        return "it crashed"


def nvcc_on_path() -> bool:
    """A CUDA toolkit to build with (what `setup llama-server --cuda` needs)."""
    return shutil.which("nvcc") is not None


def build_argv(cuda: bool) -> list[str]:
    """The command that builds llama-server: this Python's gpuwarden."""
    return [sys.executable, "-m", "gpuwarden", "setup", "llama-server",
            *(["--cuda"] if cuda else [])]


def llama_server_missing(config: Config) -> bool:
    """True when a configured model runs on llama-server and no binary would be found for
    it, looking where the engine looks at each launch (the config's ``llama_server``, then
    $GPUWARDEN_LLAMA_SERVER, then PATH, then the build cache). A few stat calls: no
    subprocess."""
    if not any(m.backend == "llama-server" for m in config.models):
        return False
    env = os.environ.get("GPUWARDEN_LLAMA_SERVER")
    configured = config.llama_server or (Path(env) if env else None)
    try:
        find_llama_server(configured)
    except LlamaServerNotFound:
        return True
    return False
