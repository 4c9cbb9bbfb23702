"""`gpuwarden install-desktop`: valid desktop entries, real icons, and an uninstall that
removes exactly what it wrote, all in a temporary home."""

from __future__ import annotations

import configparser
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden import desktop_install
from gpuwarden.cli import main
from gpuwarden.desktop_install import PNG_SIZES, Places, bundled_svg, entry_text, install


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    return home


@pytest.fixture
def places(home: Path) -> Places:
    return Places(home / "data", home / "config")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["install-desktop", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def unescape(value: str) -> str:
    """A string value of a desktop entry as the spec reads it (\\s \\n \\t \\r \\\\)."""
    out, chars = [], iter(value)
    for c in chars:
        out.append({"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[next(chars)]
                   if c == "\\" else c)
    return "".join(out)


def exec_argv(value: str) -> list[str]:
    """The arguments of an Exec value, unquoted as the Desktop Entry spec says."""
    argv: list[str] = []
    chars = iter(unescape(value).replace("%%", "\0"))
    word: list[str] | None = None
    for c in chars:
        if c == " ":
            if word is not None:
                argv.append("".join(word))
            word = None
        elif c == '"':
            word = word or []
            for q in chars:
                if q == '"':
                    break
                word.append(next(chars) if q == "\\" else q)
        else:
            word = [*(word or []), c]
    if word is not None:
        argv.append("".join(word))
    return [a.replace("\0", "%") for a in argv]


def check_entry(path: Path) -> dict[str, str]:
    """Validate one desktop entry: desktop-file-validate where installed, and always a
    strict parse; return its keys."""
    validator = shutil.which("desktop-file-validate")
    if validator:
        done = subprocess.run([validator, str(path)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "error" not in done.stdout + done.stderr
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "[Desktop Entry]"
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",),
                                          comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)  # duplicate groups or keys raise
    assert parser.sections() == ["Desktop Entry"]
    keys = dict(parser["Desktop Entry"])
    assert keys["Type"] == "Application"
    assert keys["Name"]
    assert keys["Icon"] == "gpuwarden"
    assert keys["Terminal"] == "false"
    assert keys["Categories"].endswith(";")
    program = Path(exec_argv(keys["Exec"])[0])
    assert program.is_absolute()
    assert os.access(program, os.X_OK), program
    return keys


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_installs_a_valid_menu_entry_that_starts_the_gui_beside_this_python(
        capsys: pytest.CaptureFixture[str], places: Places) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    keys = check_entry(places.menu_entry)
    gui = Path(sys.executable).absolute().parent / "gpuwarden-gui"
    assert exec_argv(keys["Exec"]) == [str(gui)]
    assert str(places.menu_entry) in out and str(gui) in out
    assert not places.autostart_entry.exists()


def test_icons_are_real_pngs_of_each_size_and_the_svg(
        capsys: pytest.CaptureFixture[str], places: Places) -> None:
    assert run(capsys)[0] == 0
    for size in PNG_SIZES:
        icon = places.data_home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / \
            "gpuwarden.png"
        assert png_size(icon) == (size, size)
    svg = places.data_home / "icons" / "hicolor" / "scalable" / "apps" / "gpuwarden.svg"
    assert svg.read_bytes() == bundled_svg()


def test_autostart_entry_starts_minimised(capsys: pytest.CaptureFixture[str],
                                          places: Places) -> None:
    code, out, _ = run(capsys, "--autostart")
    assert code == 0
    keys = check_entry(places.autostart_entry)
    assert places.autostart_entry == places.config_home / "autostart" / "gpuwarden.desktop"
    assert exec_argv(keys["Exec"])[1:] == ["--minimized"]
    assert "tray at login" in out
    check_entry(places.menu_entry)


def test_uninstall_removes_all_it_wrote_and_nothing_else(
        capsys: pytest.CaptureFixture[str], home: Path, places: Places) -> None:
    others = [places.data_home / "applications" / "firefox.desktop",
              places.data_home / "icons" / "hicolor" / "48x48" / "apps" / "firefox.png",
              places.config_home / "autostart" / "syncthing.desktop",
              places.data_home / "gpuwarden" / "events.jsonl"]
    for other in others:
        other.parent.mkdir(parents=True, exist_ok=True)
        other.write_text("not ours")
    assert run(capsys, "--autostart")[0] == 0
    code, out, _ = run(capsys, "--uninstall")
    assert code == 0
    left = sorted(p for p in home.rglob("*") if p.is_file())
    assert left == sorted(others)
    assert out.count("removed ") == len(PNG_SIZES) + 3  # the SVG and two entries
    assert run(capsys, "--uninstall")[1].startswith("nothing to remove")


def test_uninstall_leaves_a_hand_made_entry_of_the_same_name(
        capsys: pytest.CaptureFixture[str], places: Places) -> None:
    handmade = "[Desktop Entry]\nType=Application\nName=mine\nExec=/opt/gw/run\n"
    places.menu_entry.parent.mkdir(parents=True)
    places.menu_entry.write_text(handmade)
    code, out, _ = run(capsys, "--uninstall")
    assert code == 0
    assert places.menu_entry.read_text() == handmade
    assert f"left {places.menu_entry}: not written by gpuwarden install-desktop" in out


def test_installing_again_replaces_the_files_and_leaves_no_temporary_ones(
        capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert run(capsys, "--autostart")[0] == 0
    first = sorted(p for p in home.rglob("*") if p.is_file())
    assert run(capsys, "--autostart")[0] == 0
    assert sorted(p for p in home.rglob("*") if p.is_file()) == first


@pytest.mark.parametrize("folder", ["my apps", "a\"b'c$d`e\\f", "100% (x86_64); ~me & co"])
def test_an_odd_program_path_is_quoted_so_it_reads_back_whole(
        tmp_path: Path, places: Places, folder: str) -> None:
    gui = tmp_path / folder / "gpuwarden-gui"
    gui.parent.mkdir()
    gui.write_text("#!/bin/sh\n")
    gui.chmod(0o755)
    install(places, gui, autostart=True)
    for entry in (places.menu_entry, places.autostart_entry):
        keys = check_entry(entry)
        assert exec_argv(keys["Exec"])[0] == str(gui)
        assert unescape(keys["TryExec"]) == str(gui)


def test_a_control_character_in_the_path_is_refused() -> None:
    with pytest.raises(desktop_install.InstallError, match="control character"):
        entry_text(Path("/opt/bad\nname/gpuwarden-gui"))


def test_without_the_gui_program_it_says_what_to_do_and_writes_nothing(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, home: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = run(capsys)
    assert code == 1
    assert "gpuwarden-gui was found neither beside" in err
    assert not any(p.is_file() for p in home.rglob("*"))


def test_not_linux_is_refused_with_status_2(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch,
                                            home: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    code, out, err = run(capsys)
    assert code == 2
    assert "only Linux desktops are supported (this is win32)" in err
    assert out == ""
    assert not any(home.rglob("*"))


def test_xdg_folders_default_under_home_and_relative_ones_are_ignored() -> None:
    env = {"HOME": "/home/ann", "XDG_DATA_HOME": "rel/data", "XDG_CONFIG_HOME": ""}
    places = Places.from_env(env)
    assert places.menu_entry == Path("/home/ann/.local/share/applications/gpuwarden.desktop")
    assert places.autostart_entry == Path("/home/ann/.config/autostart/gpuwarden.desktop")
    env = {"HOME": "/home/ann", "XDG_DATA_HOME": "/d", "XDG_CONFIG_HOME": "/c"}
    assert Places.from_env(env).svg_icon == Path("/d/icons/hicolor/scalable/apps/gpuwarden.svg")


def test_the_top_level_parser_also_reaches_it(capsys: pytest.CaptureFixture[str],
                                              places: Places) -> None:
    assert main(["-v", "install-desktop", "--autostart"]) == 0
    check_entry(places.autostart_entry)
