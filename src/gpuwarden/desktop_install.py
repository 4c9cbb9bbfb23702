"""`gpuwarden install-desktop`: gpuwarden in the Linux application menu, per user, no root.

Writes the desktop entry ``$XDG_DATA_HOME/applications/gpuwarden.desktop`` (it starts
``gpuwarden-gui`` by its absolute path), the icon in the user's hicolor theme (the SVG and
PNGs rendered from it with Qt) and, with ``--autostart``, an entry in
``$XDG_CONFIG_HOME/autostart`` that starts the app minimised to the tray at login.
``--uninstall`` removes those files and nothing else: a desktop entry is removed only when
it carries the mark this command writes, so a hand-made one of the same name stays. Every
write is atomic. Exit status: 0 done, 1 the app or a file could not be found or written,
2 not Linux or a bad option.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gpuwarden.engine.atomic import atomic_write_bytes, atomic_write_text

APP_ID = "gpuwarden"
GUI_SCRIPT = "gpuwarden-gui"
MINIMIZED_FLAG = "--minimized"
PNG_SIZES = (16, 22, 24, 32, 48, 64, 128, 256)
MARK_KEY = "X-GPUWarden-Installed-By"
MARK = f"{MARK_KEY}=gpuwarden install-desktop"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DESCRIPTION = "Put gpuwarden in the application menu of this user (Linux, no root)."

# Characters that make an Exec argument need double quotes (Desktop Entry spec, "The Exec
# key"), and those that must be backslash-escaped inside the quotes.
_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
_ESCAPED_IN_QUOTES = frozenset("\"`$\\")


class InstallError(Exception):
    """Something the user must fix before the entry can be written; the message says what."""


@dataclass(frozen=True)
class Places:
    """Where the files go: the XDG data and config folders of the user."""

    data_home: Path
    config_home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Places:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())
        return cls(_xdg_dir(env, "XDG_DATA_HOME", home / ".local" / "share"),
                   _xdg_dir(env, "XDG_CONFIG_HOME", home / ".config"))

    @property
    def menu_entry(self) -> Path:
        return self.data_home / "applications" / f"{APP_ID}.desktop"

    @property
    def autostart_entry(self) -> Path:
        return self.config_home / "autostart" / f"{APP_ID}.desktop"

    @property
    def svg_icon(self) -> Path:
        return self._icons / "scalable" / "apps" / f"{APP_ID}.svg"

    def png_icon(self, size: int) -> Path:
        return self._icons / f"{size}x{size}" / "apps" / f"{APP_ID}.png"

    def icons(self) -> Iterator[Path]:
        yield self.svg_icon
        for size in PNG_SIZES:
            yield self.png_icon(size)

    @property
    def _icons(self) -> Path:
        return self.data_home / "icons" / "hicolor"


def _xdg_dir(env: Mapping[str, str], name: str, default: Path) -> Path:
    """The spec: a relative (or empty) value is invalid and ignored."""
    value = env.get(name, "")
    return Path(value) if os.path.isabs(value) else default


def find_gui() -> Path:
    """The absolute path of the program that opens the window: the bundle's own executable
    when frozen (PyInstaller), else ``gpuwarden-gui`` beside the running Python, else on
    PATH."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).absolute()
    beside = Path(sys.executable).absolute().parent / GUI_SCRIPT
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(GUI_SCRIPT)
    if found:
        return Path(found).absolute()
    raise InstallError(f"{GUI_SCRIPT} was found neither beside {sys.executable} nor on PATH: "
                       "install gpuwarden first (`make run`, or `pip install .`)")


def quote_exec_arg(arg: str) -> str:
    """One argument of an Exec key: quoted and escaped as the Desktop Entry spec says,
    then escaped once more as a string value (a backslash is written twice)."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in arg):
        raise InstallError(f"a control character in {arg!r} cannot go in a desktop entry")
    arg = arg.replace("%", "%%")
    if any(c in _RESERVED for c in arg):
        arg = '"' + "".join("\\" + c if c in _ESCAPED_IN_QUOTES else c for c in arg) + '"'
    return arg.replace("\\", "\\\\")


def entry_text(gui: Path, *, autostart: bool = False) -> str:
    """The text of the menu entry, or with ``autostart`` of the login entry."""
    path = str(gui)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InstallError(f"the path {gui} is not UTF-8, which a desktop entry needs") from None
    argv = [path, MINIMIZED_FLAG] if autostart else [path]
    comment = ("Start gpuwarden in the system tray at login" if autostart
               else "Live GPU graphs and the local models that run on them")
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",
        "Name=gpuwarden",
        "GenericName=GPU and model monitor",
        f"Comment={comment}",
        f"Exec={' '.join(quote_exec_arg(a) for a in argv)}",
        f"TryExec={path.replace(chr(92), chr(92) * 2)}",
        f"Icon={APP_ID}",
        "Terminal=false",
        "Categories=System;Monitor;",
        "Keywords=GPU;NVIDIA;VRAM;LLM;llama;monitor;",
        f"StartupWMClass={APP_ID}",
        MARK,
    ]
    return "\n".join(lines) + "\n"


def render_png(svg: bytes, size: int) -> bytes:
    """The icon as a ``size`` x ``size`` PNG, drawn by Qt's SVG renderer (no display)."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QImage, QImageWriter, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(QByteArray(svg))
    if not renderer.isValid():
        raise InstallError("the bundled icon is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    writer = QImageWriter(buffer, QByteArray(b"png"))
    if not writer.write(image):
        raise InstallError(f"Qt could not encode the {size} px icon: {writer.errorString()}")
    return bytes(data.data())


def bundled_svg() -> bytes:
    return (resources.files("gpuwarden.resources") / f"{APP_ID}.svg").read_bytes()


def install(places: Places, gui: Path, *, autostart: bool = False) -> list[Path]:
    """Write the menu entry, the icons and (``autostart``) the login entry; return them."""
    svg = bundled_svg()
    written: list[Path] = []
    atomic_write_bytes(places.svg_icon, svg)
    written.append(places.svg_icon)
    for size in PNG_SIZES:
        atomic_write_bytes(places.png_icon(size), render_png(svg, size))
        written.append(places.png_icon(size))
    atomic_write_text(places.menu_entry, entry_text(gui))
    written.append(places.menu_entry)
    if autostart:
        written.append(install_autostart(places, gui))
    return written


def install_autostart(places: Places, gui: Path) -> Path:
    """Start gpuwarden minimised to the tray at login."""
    atomic_write_text(places.autostart_entry, entry_text(gui, autostart=True))
    return places.autostart_entry


def uninstall(places: Places) -> tuple[list[Path], list[Path]]:
    """Remove what :func:`install` writes: (removed, left because not ours)."""
    removed: list[Path] = []
    kept: list[Path] = []
    for entry in (places.menu_entry, places.autostart_entry):
        if not entry.is_file():
            continue
        if is_ours(entry):
            entry.unlink()
            removed.append(entry)
        else:
            kept.append(entry)
    for icon in places.icons():
        if icon.is_file():
            icon.unlink()
            removed.append(icon)
    return removed, kept


def is_ours(entry: Path) -> bool:
    """Whether ``entry`` was written by ``gpuwarden install-desktop`` (carries its mark)."""
    try:
        return MARK in entry.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uninstall", action="store_true",
                        help="remove the menu entry, the icons and the login entry")
    parser.add_argument("--autostart", action="store_true",
                        help="also start gpuwarden minimised to the tray at login")


def run(args: argparse.Namespace) -> int:
    """`gpuwarden install-desktop [--autostart] [--uninstall]`, options from add_arguments."""
    if not sys.platform.startswith("linux"):
        print("gpuwarden install-desktop: error: only Linux desktops are supported "
              f"(this is {sys.platform}); see installer/README.md", file=sys.stderr)
        return EXIT_USAGE
    places = Places.from_env()
    try:
        if args.uninstall:
            return _report_uninstall(*uninstall(places))
        gui = find_gui()
        install(places, gui, autostart=args.autostart)
    except (InstallError, OSError) as exc:
        print(f"gpuwarden install-desktop: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"installed {places.menu_entry} (runs {gui}) and {len(PNG_SIZES) + 1} icons "
          f"under {places.data_home / 'icons' / 'hicolor'}")
    if args.autostart:
        print(f"installed {places.autostart_entry}: starts minimised to the tray at login")
    elif places.autostart_entry.is_file():
        print(f"kept {places.autostart_entry} from an earlier --autostart")
    return EXIT_OK


def _report_uninstall(removed: list[Path], kept: list[Path]) -> int:
    for path in removed:
        print(f"removed {path}")
    for path in kept:
        print(f"left {path}: not written by gpuwarden install-desktop")
    if not removed and not kept:
        print("nothing to remove: gpuwarden install-desktop had not installed anything here")
    return EXIT_OK
