"""Building llama-server from the window: the progress read from the build's lines, the
dialog driven by stand-in build commands (stepped by the test through gate files), Cancel
and close killing the whole process tree, and when the window should offer the build."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import QPoint, QRect

from gpuwarden.engine.lifecycle.config import Config
from gpuwarden.engine.supervisor.locate import FIT_PARAMS, llama_server_cache_dir
from gpuwarden.widgets.build_dialog import BuildDialog
from gpuwarden.widgets.build_progress import (
    build_argv,
    built_path,
    error_text,
    exit_words,
    llama_server_missing,
    parse_progress,
)
from lifecycle_helpers import model

pytestmark = pytest.mark.qt

SAY = "gpuwarden setup: "
DEADLINE_MS = 10_000

# Prints what llama_build.py prints, one step each time the test creates a gate file.
STEPPED_BUILD = r"""
import pathlib, sys, time
gates = pathlib.Path(sys.argv[1])
def say(m): print("gpuwarden setup: " + m, file=sys.stderr, flush=True)
def wait(step):
    while not (gates / step).exists():
        time.sleep(0.01)
say("$ /usr/bin/python3 -m pip download --quiet --no-binary :all: --no-deps "
    "--disable-pip-version-check -d /tmp/gpuwarden-llama-x llama-cpp-python==0.3.36")
wait("configure")
say("$ cmake -S /tmp/gpuwarden-llama-x/src -B /tmp/gpuwarden-llama-x/build "
    "-DCMAKE_BUILD_TYPE=Release")
print("-- The C compiler identification is GNU 12.2.0", flush=True)
say("$ cmake --build /tmp/gpuwarden-llama-x/build --target llama-server llama-fit-params "
    "--parallel 2")
for p in (10, 40, 100):
    wait(str(p))
    print(f"[{p:3d}%] Building CXX object common/CMakeFiles/common.dir/arg.cpp.o", flush=True)
say("built /home/u/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server")
print("/home/u/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server")
"""

FAILING_BUILD = r"""
import sys
print("gpuwarden setup: $ cmake --build /tmp/b --target llama-server", file=sys.stderr)
print("[ 37%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", flush=True)
print("gpuwarden setup: error: cmake is not installed; install cmake and a C++ compiler",
      file=sys.stderr, flush=True)
sys.exit(1)
"""

# A build with a grandchild (as make under cmake): `sleep 60`. "polite": both die of SIGINT;
# "stubborn": both ignore it, so only the SIGKILL after the grace ends them; "orphan": the
# grandchild alone ignores it and outlives its parent. Writes argv[2] when Ctrl+C lets it
# clean up.
FAMILY_BUILD = r"""
import pathlib, signal, subprocess, sys
def deaf():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # kept across exec
if sys.argv[1] == "stubborn":
    deaf()
child = subprocess.Popen(["sleep", "60"], preexec_fn=deaf if sys.argv[1] == "orphan" else None)
try:  # before the line the test waits for: a Ctrl+C right after it still cleans up
    print(f"grandchild {child.pid}", flush=True)
    print("[ 12%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", flush=True)
    child.wait()
finally:
    pathlib.Path(sys.argv[2]).write_text("cleaned up")
"""


# -- reading the build's lines -----------------------------------------------------------------


@pytest.mark.parametrize(("line", "phase", "percent"), [
    (SAY + "$ /usr/bin/python3 -m pip download --quiet --no-binary :all: --no-deps -d /tmp/x "
           "llama-cpp-python==0.3.36", "download", None),
    (SAY + "$ cmake -S /tmp/x/vendor/llama.cpp -B /tmp/x/build -DCMAKE_BUILD_TYPE=Release",
     "configure", None),
    (SAY + "$ cmake --build /tmp/x/build --target llama-server llama-fit-params --parallel 16",
     "compile", None),
    ("[  3%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", "compile", 3),
    ("[ 42%] Building CXX object src/CMakeFiles/llama.dir/llama-model.cpp.o", "compile", 42),
    ("[100%] Built target llama-server", "compile", 100),
    ("\x1b[32m[ 57%] Linking CXX static library libllama.a\x1b[0m", "compile", 57),
    ("[ 61%] Building CUDA object ggml/src/ggml-cuda/CMakeFiles/ggml-cuda.dir/mmq.cu.o",
     "compile", 61),
    ("[123/456] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o", "compile", 26),
    (SAY + "built /home/u/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server", "done", 100),
    (SAY + "llama-server 0.3.36 (cpu) is already built: /c/llama-server", "done", 100),
    (SAY + "error: the build produced no llama-server", "failed", None),
    ("-- Detecting CXX compiler ABI info - done", None, None),
    ("make[2]: *** [ggml.c.o] Error 1", None, None),
    ("/tmp/x/ggml.c:12:5: warning: unused variable 'x' [-Wunused-variable]", None, None),
    ("[ 7%", None, None),
])
def test_each_line_of_the_build_says_its_step_and_percentage(line, phase, percent):
    assert parse_progress(line) == (phase, percent)


def test_the_binary_path_and_the_error_are_read_from_the_builds_own_words():
    assert built_path(SAY + "built /c/llama-server/0.3.36-cpu/llama-server") == \
        "/c/llama-server/0.3.36-cpu/llama-server"
    assert built_path(SAY + "llama-server 0.3.36 (cuda) is already built: /c/ls") == "/c/ls"
    assert built_path("built /not/ours") is None
    assert error_text(SAY + "error: cmake is not installed") == "cmake is not installed"
    assert error_text(SAY + "$ cmake --build b") is None


def test_the_exit_is_said_in_words():
    assert exit_words(0, crashed=False) == "it finished"
    assert exit_words(2, crashed=False) == "it exited with code 2"
    assert exit_words(9, crashed=True) == "it was killed by signal 9 (SIGKILL)"
    assert exit_words(250, crashed=True) == "it crashed"


def test_the_build_command_is_this_pythons_gpuwarden():
    assert build_argv(cuda=False) == [sys.executable, "-m", "gpuwarden", "setup",
                                      "llama-server"]
    assert build_argv(cuda=True)[-1] == "--cuda"


# -- whether to offer the build ------------------------------------------------------------------


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_llama_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without llama-server, no $GPUWARDEN_LLAMA_SERVER, an empty build cache."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("GPUWARDEN_LLAMA_SERVER", raising=False)


LLAMA_MODEL = Config(models=(model("a"), model("b", backend="llama-server")))


@pytest.mark.usefixtures("no_llama_server")
def test_the_build_is_offered_only_when_a_llama_server_model_has_no_binary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert llama_server_missing(LLAMA_MODEL)
    assert not llama_server_missing(Config(models=(model("a"),
                                                   model("c", backend="llama-cpp"))))
    assert not llama_server_missing(Config())
    # A configured path that does not exist still counts as missing (the engine says so).
    assert llama_server_missing(Config(models=LLAMA_MODEL.models,
                                       llama_server=tmp_path / "nowhere"))


@pytest.mark.usefixtures("no_llama_server")
@pytest.mark.parametrize("where", ["config", "env", "path", "cache"])
def test_a_binary_anywhere_the_engine_looks_means_no_offer(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = LLAMA_MODEL
    if where == "config":
        config = Config(models=LLAMA_MODEL.models,
                        llama_server=executable(tmp_path / "mine" / "llama-server"))
    elif where == "env":
        monkeypatch.setenv("GPUWARDEN_LLAMA_SERVER",
                           str(executable(tmp_path / "env" / "llama-server")))
    elif where == "path":
        executable(tmp_path / "empty-bin" / "llama-server")
    else:
        executable(llama_server_cache_dir() / "llama-server")
    assert not llama_server_missing(config)


# -- the dialog ------------------------------------------------------------------------------------


@pytest.fixture
def open_dialog(qtbot) -> Iterator[Callable[..., BuildDialog]]:
    made: list[BuildDialog] = []

    def _open(argv: Sequence[str], **kw: float) -> BuildDialog:
        dialog = BuildDialog(None, argv, **kw)
        qtbot.addWidget(dialog)
        made.append(dialog)
        dialog.show()
        dialog.start()
        return dialog

    yield _open
    for dialog in made:  # a failed test must not leave a build running
        dialog.stop_now()


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


def shown(widget) -> bool:
    return not widget.isHidden()


def test_the_bar_follows_the_compilers_percentages_and_success_says_where_it_is(
        qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(STEPPED_BUILD, str(tmp_path)))
    ok: list[bool] = []
    dialog.finished_ok.connect(lambda: ok.append(True))
    qtbot.waitUntil(lambda: dialog.status.text() == "Downloading the llama.cpp sources…",
                    timeout=DEADLINE_MS)
    assert dialog.bar.maximum() == 0  # busy: no percentage yet
    assert shown(dialog.cancel_button) and not shown(dialog.close_button)
    (tmp_path / "configure").touch()
    qtbot.waitUntil(lambda: dialog.status.text() == "Compiling…", timeout=DEADLINE_MS)
    assert dialog.bar.maximum() == 0
    for percent in (10, 40):
        (tmp_path / str(percent)).touch()
        qtbot.waitUntil(lambda p=percent: dialog.bar.value() == p, timeout=DEADLINE_MS)
        assert dialog.bar.maximum() == 100
        assert dialog.status.text() == f"Compiling: {percent} %"
    with qtbot.waitSignal(dialog.finished_ok, timeout=DEADLINE_MS):
        (tmp_path / "100").touch()
    assert ok == [True]
    assert dialog.status.text() == "Done: llama-server is built."
    assert "/home/u/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server" in \
        dialog.detail.text()
    assert dialog.binary == "/home/u/.cache/gpuwarden/llama-server/0.3.36-cpu/llama-server"
    assert dialog.bar.value() == 100
    assert shown(dialog.close_button) and not shown(dialog.cancel_button)
    assert "[ 40%] Building CXX object" in dialog.output.toPlainText()


def test_a_failed_build_shows_why_and_the_exit_code(qtbot, open_dialog):
    dialog = open_dialog(python(FAILING_BUILD))
    ok: list[bool] = []
    dialog.finished_ok.connect(lambda: ok.append(True))
    qtbot.waitUntil(lambda: shown(dialog.close_button), timeout=DEADLINE_MS)
    assert dialog.status.text() == "The build failed: it exited with code 1."
    assert dialog.detail.text() == "cmake is not installed; install cmake and a C++ compiler"
    assert dialog.output.isVisible()  # the last lines are on screen, from their start
    assert dialog.output.horizontalScrollBar().value() == 0
    close = dialog.close_button  # the dialog grew to hold the output and its buttons
    qtbot.waitUntil(lambda: dialog.rect().contains(
        QRect(close.mapTo(dialog, QPoint(0, 0)), close.size())), timeout=DEADLINE_MS)
    assert dialog.output.height() >= dialog.output.minimumHeight()
    assert "ggml.c.o" in dialog.output.toPlainText()
    assert dialog.bar.value() == 37
    assert ok == []


def test_a_build_killed_by_a_signal_says_which(qtbot, open_dialog):
    dialog = open_dialog(python("import os, signal\nprint('compiling', flush=True)\n"
                                "os.kill(os.getpid(), signal.SIGKILL)"))
    qtbot.waitUntil(lambda: shown(dialog.close_button), timeout=DEADLINE_MS)
    assert dialog.status.text() == "The build failed: it was killed by signal 9 (SIGKILL)."
    assert dialog.detail.text() == "compiling"  # its last line, when it said no error


def test_a_build_that_cannot_start_says_so(qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog([str(tmp_path / "no-such-program")])
    qtbot.waitUntil(lambda: shown(dialog.close_button), timeout=DEADLINE_MS)
    assert dialog.status.text() == "The build could not be started."
    assert "no-such-program" in dialog.detail.text()


def test_the_real_command_reports_a_cached_build_as_done(qtbot, open_dialog):
    binary = executable(llama_server_cache_dir() / "llama-server")
    executable(llama_server_cache_dir() / FIT_PARAMS)
    dialog = open_dialog(build_argv(cuda=False))
    with qtbot.waitSignal(dialog.finished_ok, timeout=30_000):
        pass
    assert dialog.binary == str(binary)
    assert str(binary) in dialog.detail.text()


def grandchild_of(qtbot, dialog: BuildDialog) -> int:
    qtbot.waitUntil(lambda: "grandchild" in dialog.output.toPlainText(), timeout=DEADLINE_MS)
    line = next(x for x in dialog.output.toPlainText().splitlines() if "grandchild" in x)
    return int(line.split()[1])


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_cancel_stops_the_build_and_its_grandchildren_like_ctrl_c(
        qtbot, open_dialog, tmp_path: Path):
    cleaned = tmp_path / "cleaned"
    dialog = open_dialog(python(FAMILY_BUILD, "polite", str(cleaned)))
    pid = grandchild_of(qtbot, dialog)
    leader = dialog._process.processId()
    assert alive(pid)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not alive(pid) and not alive(leader), timeout=DEADLINE_MS)
    qtbot.waitUntil(lambda: shown(dialog.close_button), timeout=DEADLINE_MS)
    assert dialog.status.text() == "Build cancelled."
    assert cleaned.read_text() == "cleaned up"  # SIGINT first: the build cleans up


def test_cancel_kills_a_build_that_ignores_ctrl_c_after_the_grace(
        qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "stubborn", str(tmp_path / "cleaned")),
                         kill_grace_s=0.3)
    pid = grandchild_of(qtbot, dialog)
    leader = dialog._process.processId()
    dialog.cancel()
    assert dialog.status.text() == "Stopping the build…"
    assert not dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not alive(pid) and not alive(leader), timeout=DEADLINE_MS)
    qtbot.waitUntil(lambda: dialog.status.text() == "Build cancelled.", timeout=DEADLINE_MS)


def test_cancel_kills_what_outlives_the_build_at_once(qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "orphan", str(tmp_path / "cleaned")),
                         kill_grace_s=60)
    pid = grandchild_of(qtbot, dialog)
    dialog.cancel()
    qtbot.waitUntil(lambda: not dialog.running, timeout=DEADLINE_MS)
    qtbot.waitUntil(lambda: not alive(pid), timeout=DEADLINE_MS)  # not 60 s later


def test_cancel_right_after_start_still_stops_it(qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "polite", str(tmp_path / "cleaned")),
                         kill_grace_s=60)
    dialog.cancel()  # before the process said it started
    qtbot.waitUntil(lambda: not dialog.running, timeout=DEADLINE_MS)
    assert dialog.status.text() == "Build cancelled."


def test_closing_the_dialog_while_it_builds_cancels_the_build(
        qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "polite", str(tmp_path / "cleaned")))
    pid = grandchild_of(qtbot, dialog)
    dialog.close()
    assert not dialog.isVisible()
    qtbot.waitUntil(lambda: not alive(pid) and not dialog.running, timeout=DEADLINE_MS)
    assert dialog.status.text() == "Build cancelled."


def test_quitting_the_application_stops_the_build_before_it_returns(
        qtbot, open_dialog, tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "stubborn", str(tmp_path / "cleaned")),
                         kill_grace_s=0.3)
    pid = grandchild_of(qtbot, dialog)
    dialog.stop_now()  # what QCoreApplication.aboutToQuit calls
    assert not dialog.running
    qtbot.waitUntil(lambda: not alive(pid), timeout=DEADLINE_MS)  # reaped by init


def test_cancel_and_close_after_the_end_do_nothing_harmful(qtbot, open_dialog):
    dialog = open_dialog(python(FAILING_BUILD))
    qtbot.waitUntil(lambda: shown(dialog.close_button), timeout=DEADLINE_MS)
    dialog.cancel()
    dialog.start()  # once only
    assert dialog.status.text() == "The build failed: it exited with code 1."
    dialog.close_button.click()
    assert not dialog.isVisible()


def test_the_build_runs_in_its_own_session_with_its_children(qtbot, open_dialog,
                                                              tmp_path: Path):
    dialog = open_dialog(python(FAMILY_BUILD, "polite", str(tmp_path / "cleaned")))
    pid = grandchild_of(qtbot, dialog)
    leader = dialog._process.processId()
    assert os.getsid(leader) == leader != os.getsid(0)  # never the window's own group
    assert os.getpgid(pid) == leader
