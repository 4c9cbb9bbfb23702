"""`gpuwarden setup llama-cpp-python`: build llama-cpp-python once per machine and install
it, with its server extra, into the Python that runs gpuwarden.

The wheel is built from the source distribution on PyPI (`pip wheel --no-binary`, a CPU
build for any x86-64: GGML_NATIVE=OFF, no multimodal library, no tests, tools or
examples) into the user cache folder, keyed by version, beside llama-server's build. With
the wheel already there it only installs it: seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gpuwarden.engine import paths
from gpuwarden.engine.supervisor.locate import LLAMA_CPP_PYTHON_VERSION
from gpuwarden.llama_build import _run, _say, build_options, run_build

PACKAGE = "llama-cpp-python"
FLAVOUR = "cpu"
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_CUDA=OFF",
    "-DLLAVA_BUILD=OFF",  # the mtmd (multimodal) library; llama_cpp imports it only on use
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


def wheel_cache_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """``~/.cache/gpuwarden/llama-cpp-python/<version>-cpu``."""
    return paths.cache_dir() / PACKAGE / f"{version}-{FLAVOUR}"


def cached_wheel(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path | None:
    """The wheel an earlier setup built, or None."""
    folder = wheel_cache_dir(version)
    wheels = sorted(folder.glob(f"llama_cpp_python-{version}-*.whl")) if folder.is_dir() else []
    return wheels[0] if wheels else None


def build_wheel(version: str = LLAMA_CPP_PYTHON_VERSION, *, jobs: int | None = None) -> Path:
    """Build the wheel from the sdist and move it into the cache; returns its path."""
    if shutil.which("c++") is None:
        raise RuntimeError("c++ is not installed; install a C++ compiler "
                           "(Debian/Ubuntu: apt-get install g++)")
    target = wheel_cache_dir(version)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpuwarden-llama-cpp-") as tmp:
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", PACKAGE,
              "--disable-pip-version-check", "-w", tmp, f"{PACKAGE}=={version}"],
             env={"CMAKE_ARGS": " ".join(CMAKE_ARGS),
                  "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 2)})
        built = next(Path(tmp).glob("llama_cpp_python-*.whl"), None)
        if built is None:
            raise RuntimeError(f"pip built no {PACKAGE} wheel")
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f"{built.name}.partial"
        shutil.copy2(built, partial)
        os.replace(partial, target / built.name)  # never a half-copied wheel
    minutes = (time.monotonic() - started) / 60.0
    _say(f"built {target / built.name} in {minutes:.1f} minutes")
    return target / built.name


def install(wheel: Path) -> None:
    """Install ``wheel`` and its server extra into the running Python."""
    _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
          f"{wheel}[server]"])


def setup(version: str = LLAMA_CPP_PYTHON_VERSION, *, jobs: int | None = None,
          force: bool = False) -> Path:
    """Build the wheel unless it is cached (or ``force``), install it; returns the wheel."""
    wheel = None if force else cached_wheel(version)
    if wheel is None:
        wheel = build_wheel(version, jobs=jobs)
    else:
        _say(f"{PACKAGE} {version} ({FLAVOUR}) is already built: {wheel}")
    install(wheel)
    _say(f"{PACKAGE} {version} is installed in {sys.executable}")
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpuwarden setup llama-cpp-python",
                                     description=__doc__.splitlines()[0])
    build_options(parser)
    args = parser.parse_args(argv)
    return run_build(lambda: setup(args.version, jobs=args.jobs, force=args.force))


if __name__ == "__main__":
    raise SystemExit(main())
