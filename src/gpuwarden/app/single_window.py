"""One gpuwarden window per user: launching the app again brings the running window forward.

The running window listens on a local socket (:class:`WindowBeacon`); a second start of the
window that finds the instance lock held connects (:func:`ask_running_window`), sends one
line, ``show`` or ``show <target>``, and leaves once the window answers ``ok``.

The socket is named after the user and the lock file, so a gpuwarden with other data
folders (another lock) has its own. Only the lock's holder listens, so a socket file found
at start-up was left by a run that crashed: it is removed before listening.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket
from PySide6.QtWidgets import QWidget

from gpuwarden.engine.supervisor.instance_lock import default_lock_path

__all__ = ["WindowBeacon", "ask_running_window", "beacon_name", "bring_forward",
           "hand_over_to_running_window", "parse_request", "watch_for_second_launch"]

log = logging.getLogger(__name__)

MAX_LINE = 256  # a request longer than this is not one of ours
OK = b"ok\n"
REQUEST_TIMEOUT_MS = 2000  # a client that connects and says nothing is dropped after this
SECOND_START_WAIT_MS = 3000  # how long a second start waits for the window's answer


def beacon_name(lock_path: Path | None = None) -> str:
    """The socket's path: in the user's runtime folder (``XDG_RUNTIME_DIR``, private to the
    user) when there is one, else the temp folder; named after the uid and the lock file."""
    lock = lock_path if lock_path is not None else default_lock_path()
    digest = hashlib.sha256(str(lock).encode()).hexdigest()[:12]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    folder = runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()
    return os.path.join(folder, f"gpuwarden-{os.getuid()}-{digest}.sock")


def parse_request(line: str) -> str | None:
    """``show`` -> ``""``; ``show model qwen`` -> ``"model qwen"``; anything else -> None."""
    verb, _, target = line.strip().partition(" ")
    return target.strip() if verb == "show" else None


class WindowBeacon(QObject):
    """Listens for a second launch; ``show_requested(target)`` when one asks for the window
    (``target`` is ``""`` or what follows ``show``, e.g. ``"model qwen"``)."""

    show_requested = Signal(str)

    def __init__(self, name: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name if name is not None else beacon_name()
        self._server = QLocalServer(self)
        self._server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        self._server.newConnection.connect(self._accept)

    def listen(self) -> bool:
        """Start listening, replacing a socket file left by a crashed run. False (and a
        warning in the log) when the socket cannot be made: second launches then say that
        gpuwarden is already running, as before."""
        QLocalServer.removeServer(self.name)
        if self._server.listen(self.name):
            return True
        log.warning("a second launch cannot bring this window forward: cannot listen on "
                    "%s: %s", self.name, self._server.errorString())
        return False

    @property
    def listening(self) -> bool:
        return self._server.isListening()

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._server.close()

    def _accept(self) -> None:
        while self._server.hasPendingConnections():
            sock = self._server.nextPendingConnection()
            sock.disconnected.connect(sock.deleteLater)
            sock.readyRead.connect(partial(self._read, sock))
            QTimer.singleShot(REQUEST_TIMEOUT_MS, sock, sock.abort)
            self._read(sock)  # the request may have come with the connection

    def _read(self, sock: QLocalSocket) -> None:
        if not sock.canReadLine():
            if sock.bytesAvailable() > MAX_LINE:
                sock.abort()
            return
        line = bytes(sock.readLine(MAX_LINE + 1).data()).decode("utf-8", "replace")
        target = parse_request(line)
        if target is None:
            log.warning("ignored a request on %s: %r", self.name, line[:40])
            sock.abort()
            return
        log.info("brought forward by a second launch%s", f" ({target})" if target else "")
        self.show_requested.emit(target)
        sock.write(OK)
        sock.disconnectFromServer()


def ask_running_window(target: str = "", timeout_ms: int = 1000,
                       name: str | None = None) -> bool:
    """Ask the running gpuwarden window to come forward: True once it answered. False at
    once when no window listens (none runs, or a headless one), or after ``timeout_ms``
    when it does not answer (hung). Needs no QApplication."""
    deadline = time.monotonic() + timeout_ms / 1000

    def left_ms() -> int:
        return max(0, round((deadline - time.monotonic()) * 1000))

    sock = QLocalSocket()
    try:
        sock.connectToServer(name if name is not None else beacon_name())
        if not sock.waitForConnected(left_ms()):
            return False
        sock.write(f"show {target}".strip().encode() + b"\n")
        if not sock.waitForBytesWritten(left_ms()):
            return False
        while not sock.canReadLine():
            if left_ms() == 0 or not sock.waitForReadyRead(left_ms()):
                return False
        return bytes(sock.readLine(MAX_LINE).data()) == OK
    finally:
        sock.abort()


def hand_over_to_running_window() -> int | None:
    """For a second start of the window: 0 once the running window came forward, None
    when it did not answer (the caller then says gpuwarden is already running)."""
    if not ask_running_window(timeout_ms=SECOND_START_WAIT_MS):
        return None
    print("gpuwarden: brought the running window to the front", file=sys.stderr)
    return 0


def bring_forward(window: QWidget) -> None:
    """Show the window (also when hidden to the tray or minimised, keeping it maximised if
    it was), raise it and give it the focus. Some Wayland desktops only mark it as asking
    for attention: they let no program take the focus by itself."""
    window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()


def watch_for_second_launch(window: QWidget) -> WindowBeacon:
    """The beacon of this window, listening, that brings it forward; it lives as long as
    the window."""
    beacon = WindowBeacon(parent=window)
    beacon.show_requested.connect(lambda _target: bring_forward(window))
    beacon.listen()
    return beacon
