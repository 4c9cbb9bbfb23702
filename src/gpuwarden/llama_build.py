"""`gpuwarden setup llama-server`: build llama.cpp's server from the sources vendored in
the llama-cpp-python source distribution on PyPI, once per machine.

The result is one self-contained binary (static libllama/libggml, no curl, no OpenSSL, no
downloaded web UI) in the user cache folder, keyed by version and flavour, where
gpuwarden finds it after the config path and PATH. Beside it, from the same build:
``llama-fit-params`` (tools/fit-params), llama.cpp's own projection of a launch's memory.
A cache folder is complete only with both.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from gpuwarden.engine.supervisor.locate import (
    FIT_PARAMS,
    LLAMA_CPP_PYTHON_VERSION,
    cached_fit_params,
    cached_llama_server,
    llama_server_cache_dir,
)

TARGETS = ("llama-server", FIT_PARAMS)  # CMake targets, named like their binaries

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)


def _say(message: str) -> None:
    print(f"gpuwarden setup: {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: Path | None = None,
         env: Mapping[str, str] | None = None) -> None:
    """Run ``cmd`` (``env``: added to the environment), its output on stderr."""
    _say("$ " + " ".join(cmd))
    # Progress goes to stderr: stdout carries only the binary's path (make test reads it).
    subprocess.run(cmd, cwd=cwd, check=True, stdout=sys.stderr,
                   env={**os.environ, **env} if env else None)


def download_sources(version: str, into: Path) -> Path:
    """The llama.cpp source tree from the llama-cpp-python sdist (pip, no binary)."""
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
          "--no-deps", "--disable-pip-version-check", "-d", str(into),
          f"llama-cpp-python=={version}"])
    sdist = next(into.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    source = into / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        raise RuntimeError(f"no llama.cpp sources in {sdist.name}")
    return source


def build(version: str = LLAMA_CPP_PYTHON_VERSION, *, cuda: bool = False,
          jobs: int | None = None, force: bool = False) -> Path:
    """Build (unless cached) and return the path of the llama-server binary; the fit tool
    lands beside it. A cache holding only llama-server (an older gpuwarden's) builds again."""
    flavour = "cuda" if cuda else "cpu"
    cached = cached_llama_server(version, flavour)
    if cached is not None and cached_fit_params(version, flavour) is not None and not force:
        _say(f"llama-server {version} ({flavour}) is already built: {cached}")
        return cached
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; install cmake and a C++ compiler "
                               "(Debian/Ubuntu: apt-get install cmake g++)")
    target_dir = llama_server_cache_dir(version, flavour)
    with tempfile.TemporaryDirectory(prefix="gpuwarden-llama-") as tmp:
        source = download_sources(version, Path(tmp))
        build_dir = Path(tmp) / "build"
        flags = [*CMAKE_FLAGS, f"-DGGML_CUDA={'ON' if cuda else 'OFF'}"]
        _run(["cmake", "-S", str(source), "-B", str(build_dir), *flags])
        _run(["cmake", "--build", str(build_dir), "--target", *TARGETS, "--parallel",
              str(jobs or os.cpu_count() or 2)])
        built = {name: _built(build_dir, name) for name in TARGETS}
        target_dir.mkdir(parents=True, exist_ok=True)
        # The fit tool first: the cache counts as complete once llama-server is there too.
        for name in reversed(TARGETS):
            partial = target_dir / f"{name}.partial"
            shutil.copy2(built[name], partial)
            os.replace(partial, target_dir / name)  # never a half-copied binary
    result = target_dir / "llama-server"
    _say(f"built {result}")
    return result


def _built(build_dir: Path, name: str) -> Path:
    """The executable ``name`` the build produced (bin/, not a same-named folder)."""
    for path in sorted(build_dir.rglob(name)):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise RuntimeError(f"the build produced no {name}")


def _jobs(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"expected 1 to 256 jobs, got '{text}'")
    return int(text)


def _version(text: str) -> str:
    if not re.fullmatch(r"\d+(\.\d+){1,3}", text):
        raise argparse.ArgumentTypeError(f"expected a version such as 0.3.36, got '{text}'")
    return text


def build_options(parser: argparse.ArgumentParser) -> None:
    """The options both `gpuwarden setup` builds take: --version, --jobs, --force."""
    parser.add_argument("--version", type=_version, default=LLAMA_CPP_PYTHON_VERSION,
                        help=f"llama-cpp-python version whose sources to build "
                             f"(default {LLAMA_CPP_PYTHON_VERSION})")
    parser.add_argument("--jobs", type=_jobs, help="parallel compile jobs (default: all cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")


def run_build(build: Callable[[], Path]) -> int:
    """Run a build: its result's path on stdout (make test reads it), or the reason it
    failed in one line on stderr and status 1."""
    try:
        path = build()
    except (RuntimeError, subprocess.CalledProcessError, OSError, StopIteration) as exc:
        _say(f"error: {exc}")
        return 1
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuwarden setup llama-server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true",
                        help="build with CUDA (needs the CUDA toolkit, nvcc on PATH)")
    build_options(parser)
    args = parser.parse_args(argv)
    return run_build(lambda: build(args.version, cuda=args.cuda, jobs=args.jobs,
                                   force=args.force))


if __name__ == "__main__":
    raise SystemExit(main())
