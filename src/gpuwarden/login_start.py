"""Start gpuwarden at login, minimised to the tray (Settings > Window): the same autostart
entry ``gpuwarden install-desktop --autostart`` writes, added or removed on its own. Linux
only (XDG autostart); no Qt."""

from __future__ import annotations

import sys
from pathlib import Path

from gpuwarden.desktop_install import InstallError, Places, find_gui, install_autostart, is_ours


def supported() -> bool:
    """Whether this platform starts programs at login from an XDG autostart entry."""
    return sys.platform.startswith("linux")


def is_on(places: Places | None = None) -> bool:
    """Whether an autostart entry for gpuwarden is there (ours or one made by hand)."""
    return (places or Places.from_env()).autostart_entry.is_file()


def turn_on(places: Places | None = None) -> Path:
    """Write the autostart entry; :class:`InstallError` or OSError says why it could not."""
    return install_autostart(places or Places.from_env(), find_gui())


def turn_off(places: Places | None = None) -> None:
    """Remove the autostart entry if gpuwarden wrote it; one made by hand is left, with an
    :class:`InstallError` that says so."""
    entry = (places or Places.from_env()).autostart_entry
    if not entry.is_file():
        return
    if not is_ours(entry):
        raise InstallError(f"{entry} was not written by gpuwarden: remove it by hand")
    entry.unlink()
