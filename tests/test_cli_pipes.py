"""A reader that stops early (`gpuwarden status --json | head -1`) ends a command quietly:
no traceback, status 141 as for `ls | head -1` (or 0 when the output went out in time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.cli import EXIT_BROKEN_PIPE

COMMANDS = {
    "status": ["status", "--json", "--simulate"],
    "doctor": ["doctor", "--simulate"],
    "estimate": ["estimate", "{model}", "--simulate"],
    "help": ["--help"],
    "headless": ["headless", "--simulate", "{scenario}", "--events", "-", "--duration", "20"],
}
# A GPU lost and back every second: `headless --events -` prints an event each second.
FLAPPING = "".join(f'[[step]]\nat = {t}\naction = "{"gpu_lost" if t % 2 else "gpu_back"}"\n'
                   f"gpu = 0\n\n" for t in range(1, 20))


@pytest.fixture
def argv(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    scenario = tmp_path / "flapping.toml"
    scenario.write_text(FLAPPING)
    return [sys.executable, "-m", "gpuwarden",
            *(a.format(model=model, scenario=scenario) for a in COMMANDS[request.param])]


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    assert "Broken pipe" not in stderr


@pytest.mark.parametrize("argv", list(COMMANDS), indirect=True)
def test_a_reader_gone_before_the_first_write_ends_it_quietly_with_141(argv: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    finally:
        os.close(write_end)
    assert_quiet(done.stderr)
    assert done.returncode == (0 if argv[-1] == "--help" else EXIT_BROKEN_PIPE)


@pytest.mark.parametrize("argv", ["status", "doctor", "estimate", "headless"], indirect=True)
def test_a_reader_that_closes_after_one_line_ends_it_quietly(argv: list[str]) -> None:
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline()
        child.stdout.close()
        _, stderr = child.communicate(timeout=60)
    assert_quiet(stderr)
    # headless prints for 20 s: only a stop on the closed pipe ends it with 141
    expected = (EXIT_BROKEN_PIPE,) if "headless" in argv else (0, EXIT_BROKEN_PIPE)
    assert child.returncode in expected
