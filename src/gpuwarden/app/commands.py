"""What happens between a click and the engine: commands go to the engine thread, their
answers come back to the status bar, and a Load first asks the engine what it would do,
showing the choice (load part of it, swap the named models out, cancel) when the model
will not fit whole. Nothing here waits: every question and command is a queued signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QWidget

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.engine.lifecycle.core_state import AdminResult
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.widgets.free_vram import FreeVramDialog
from gpuwarden.widgets.load_choice import LoadChoiceDialog
from gpuwarden.widgets.test_prompt import TestPromptDialog

COMMAND_TEXT = {"load": "Load", "unload": "Unload", "offload": "Move to CPU",
                "restart": "Restart", "pin": "Pin", "unpin": "Unpin",
                "make_room": "Free VRAM", "set_policy": "Eviction policy",
                "set_priority": "Priority", "emergency_stop": "Emergency stop"}

Answer = Callable[[str, bool], None]  # (text, warning)


class Commands(QObject):
    """Sends the window's commands and shows each answer with ``answer(text, warning)``."""

    def __init__(self, bridge: EngineBridge, parent: QWidget, answer: Answer) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._parent = parent
        self._answer = answer
        self._sent: dict[int, str] = {}
        self._previews: set[int] = set()
        self.dialog: LoadChoiceDialog | FreeVramDialog | None = None  # the one shown
        self._endpoints: dict[int, str] = {}  # test prompt: query id -> model
        self.test_prompts: dict[str, TestPromptDialog] = {}  # open, one per model
        bridge.command_finished.connect(self._on_finished)
        bridge.answered.connect(self._on_answered)

    @Slot(str, object)
    def send(self, command: str, args: tuple[Any, ...]) -> int:
        """A panel's action. Load asks for the engine's preview first."""
        if command == "load" and len(args) == 1:
            query = self._bridge.ask("load_preview", *args)
            self._previews.add(query)
            return query
        if command == "test_prompt" and len(args) == 1:
            query = self._bridge.ask("endpoint", *args)
            self._endpoints[query] = args[0]
            return query
        command_id = self._bridge.request(command, *args)
        self._sent[command_id] = command
        return command_id

    def free_vram(self, gpu: int = 0) -> None:
        """Ask which GPU and how much, then make room there."""
        snap = self._bridge.latest
        gpus = [g for g in snap.gpus if g.available] if snap is not None else []
        if not gpus:
            self._answer("Free VRAM: there is no GPU to free", True)
            return
        dialog = FreeVramDialog(gpus, self._bridge.rows, gpu, self._parent)
        dialog.chosen.connect(lambda index, gib: self.send("make_room", (index, gib)))
        self._show(dialog)

    @Slot(int, object)
    def _on_answered(self, query_id: int, preview: object) -> None:
        if query_id in self._endpoints:
            self._open_test_prompt(self._endpoints.pop(query_id), preview)
            return
        if query_id not in self._previews:
            return
        self._previews.discard(query_id)
        if isinstance(preview, AdminResult):
            self._say("load", preview)
        elif isinstance(preview, LoadPreview):
            if preview.fits:
                self.send_load(preview.model, "auto")
            else:
                dialog = LoadChoiceDialog(preview, self._parent)
                dialog.chosen.connect(self.send_load)
                self._show(dialog)

    @Slot(str, str)
    def send_load(self, model: str, how: str) -> None:
        command_id = self._bridge.request("load", model, how)
        self._sent[command_id] = "load"

    def _open_test_prompt(self, model: str, endpoint: object) -> None:
        """The test prompt dialog at the model's server, beside the window (not modal)."""
        if not isinstance(endpoint, tuple):
            self._answer(f"Test prompt: {model} is not ready to answer prompts", True)
            return
        old = self.test_prompts.pop(model, None)
        if old is not None:
            old.close()
        dialog = TestPromptDialog(model, endpoint[0], endpoint[1], self._parent)
        self.test_prompts[model] = dialog
        dialog.finished.connect(lambda _: self._forget_prompt(model, dialog))
        dialog.show()

    def _forget_prompt(self, model: str, dialog: TestPromptDialog) -> None:
        if self.test_prompts.get(model) is dialog:
            del self.test_prompts[model]
        dialog.deleteLater()

    def _show(self, dialog: LoadChoiceDialog | FreeVramDialog) -> None:
        if self.dialog is not None:
            self.dialog.reject()
        self.dialog = dialog
        dialog.finished.connect(lambda _: self._forget(dialog))
        dialog.open()  # window-modal, no nested event loop: the engine's signals keep coming

    def _forget(self, dialog: QObject) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()

    @Slot(int, object)
    def _on_finished(self, command_id: int, result: AdminResult) -> None:
        command = self._sent.pop(command_id, "")
        self._say(command, result)

    def _say(self, command: str, result: AdminResult) -> None:
        message = result.message or ("done" if result.ok else "refused")
        if result.ok:
            self._answer(message[:1].upper() + message[1:], False)
            return
        what = COMMAND_TEXT.get(command, command.replace("_", " ").capitalize())
        self._answer(f"{what} refused: {message}" if what else message, True)
