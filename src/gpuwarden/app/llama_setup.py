"""Building llama-server from the window: File > Build llama-server…, and an offer when a
llama-server model could not start because the binary is missing. The build runs as a
child process in its own dialog (progress, output, Cancel); the models that waited for
it are loaded once it is done. The engine looks for the binary at every launch, so no
restart is needed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMessageBox, QWidget

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.engine.events import Event, ModelCrashed
from gpuwarden.widgets.build_dialog import BuildDialog
from gpuwarden.widgets.build_progress import llama_server_missing
from gpuwarden.widgets.theme import Theme

Send = Callable[[str, tuple[str, ...]], object]


class LlamaSetup(QObject):
    def __init__(self, bridge: EngineBridge, theme: Theme, parent: QWidget, send: Send,
                 argv: Sequence[str] | None = None) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._theme = theme
        self._parent = parent
        self._send = send
        self._argv = argv  # None: `python -m gpuwarden setup llama-server`
        self.dialog: BuildDialog | None = None
        self.offer: QMessageBox | None = None
        self.waiting: set[str] = set()  # models to load once it is built

    def build(self) -> None:
        """Start the build (or bring its dialog to the front while it runs)."""
        if self.dialog is not None and self.dialog.running:
            self.dialog.raise_()
            self.dialog.activateWindow()
            return
        dialog = BuildDialog(self._parent, self._argv, theme=self._theme)
        dialog.finished_ok.connect(self._built)
        self.dialog = dialog
        dialog.show()
        dialog.start()

    def on_event(self, event: Event) -> None:
        """A llama-server model that could not start for want of the binary: offer the
        build (once while the offer is open), without waiting for the answer."""
        if not isinstance(event, ModelCrashed) or event.kind != "launch_failed":
            return
        model = self._bridge.config.model(event.model)
        if model is None or model.backend != "llama-server" or \
                not llama_server_missing(self._bridge.config):
            return
        self.waiting.add(event.model)
        if self.offer is not None or (self.dialog is not None and self.dialog.running):
            return
        offer = QMessageBox(QMessageBox.Icon.Question, "llama-server is not installed",
                            f"{event.model} needs llama-server, which is not installed. "
                            "Build it now from the llama.cpp sources? It takes about 5 to "
                            "10 minutes; the models that need it load when it is done.",
                            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                            self._parent)
        offer.finished.connect(lambda _: self._answered(offer))
        self.offer = offer
        offer.open()

    def _answered(self, offer: QMessageBox) -> None:
        self.offer = None
        offer.deleteLater()
        if offer.clickedButton() is offer.button(QMessageBox.StandardButton.Yes):
            self.build()
        else:
            self.waiting.clear()

    def _built(self) -> None:
        for name in sorted(self.waiting):
            self._send("load", (name,))
        self.waiting.clear()
