"""`gpuwarden setup llama-cpp-python`: the wheel is built once into the user cache, then
only installed (with its server extra) into the running Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden import llama_cpp_build
from gpuwarden.cli import main as cli_main
from gpuwarden.engine.supervisor.locate import LLAMA_CPP_PYTHON_VERSION
from gpuwarden.llama_build import _run

WHEEL = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}-py3-none-linux_x86_64.whl"


class FakePip:
    """Stands in for the pip runs: `pip wheel` leaves a wheel in its -w folder."""

    def __init__(self, fail_build: bool = False) -> None:
        self.runs: list[tuple[list[str], dict[str, str]]] = []
        self.fail_build = fail_build

    def __call__(self, cmd: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.runs.append((cmd, dict(env or {})))
        if cmd[3] == "wheel":
            if self.fail_build:
                raise subprocess.CalledProcessError(1, cmd)
            (Path(cmd[cmd.index("-w") + 1]) / WHEEL).write_bytes(b"wheel")

    def verbs(self) -> list[str]:
        return [cmd[3] for cmd, _ in self.runs]


@pytest.fixture
def pip(monkeypatch: pytest.MonkeyPatch) -> FakePip:
    fake = FakePip()
    monkeypatch.setattr(llama_cpp_build, "_run", fake)
    monkeypatch.setattr(llama_cpp_build.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


def test_the_first_setup_builds_a_cpu_wheel_caches_it_and_installs_it_with_the_server_extra(
        pip, capsys):
    assert cli_main(["setup", "llama-cpp-python", "--jobs", "3"]) == 0
    cached = llama_cpp_build.wheel_cache_dir() / WHEEL
    assert cached.read_bytes() == b"wheel"
    assert cached.parent.name == f"{LLAMA_CPP_PYTHON_VERSION}-cpu"
    assert pip.verbs() == ["wheel", "install"]
    build, env = pip.runs[0]
    assert build[0] == sys.executable
    assert {"--no-deps", "--no-binary"} <= set(build)
    assert build[-1] == f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    assert "-DGGML_NATIVE=OFF" in env["CMAKE_ARGS"].split()
    assert "-DLLAVA_BUILD=OFF" in env["CMAKE_ARGS"].split()
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == "3"
    install, _ = pip.runs[1]
    assert install[:4] == [sys.executable, "-m", "pip", "install"]
    assert install[-1] == f"{cached}[server]"
    out, err = capsys.readouterr()
    assert out.strip() == str(cached)
    assert "built" in err and "minutes" in err


def test_a_cached_wheel_is_only_installed(pip, capsys):
    assert llama_cpp_build.main([]) == 0
    pip.runs.clear()
    assert llama_cpp_build.main([]) == 0
    assert pip.verbs() == ["install"]
    assert "is already built" in capsys.readouterr().err


def test_force_builds_again(pip):
    assert llama_cpp_build.main([]) == 0
    assert llama_cpp_build.main(["--force"]) == 0
    assert pip.verbs() == ["wheel", "install", "wheel", "install"]


def test_a_failed_build_caches_nothing_and_installs_nothing(pip, capsys):
    pip.fail_build = True
    assert llama_cpp_build.main([]) == 1
    assert pip.verbs() == ["wheel"]
    assert llama_cpp_build.cached_wheel() is None
    assert "gpuwarden setup: error:" in capsys.readouterr().err


def test_no_compiler_is_said_before_anything_is_downloaded(pip, monkeypatch, capsys):
    monkeypatch.setattr(llama_cpp_build.shutil, "which", lambda name: None)
    assert llama_cpp_build.main([]) == 1
    assert pip.runs == []
    assert "c++ is not installed" in capsys.readouterr().err


def test_the_build_environment_is_added_to_the_inherited_one(capfd):
    _run([sys.executable, "-c", "import os; print(os.environ['CMAKE_ARGS'], 'PATH' in os.environ)"],
         env={"CMAKE_ARGS": "-DX=1"})
    out, err = capfd.readouterr()
    assert out == "" and "-DX=1 True" in err
