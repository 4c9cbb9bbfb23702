"""Asked before a load that will not fit whole: load part of it, swap the named models
out, or cancel. Built from the engine's :class:`LoadPreview`; it only asks, and says the
choice with ``chosen(model, how)``."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.telemetry.snapshot import fmt_mib


def explain(p: LoadPreview) -> str:
    """Why the dialog is shown, in one or two sentences with the numbers."""
    free = "an unknown amount" if p.free_mib is None else fmt_mib(p.free_mib)
    return (f"{p.model} needs about {fmt_mib(p.need_mib)} on GPU {p.gpu} (with a "
            f"{fmt_mib(p.margin_mib)} safety margin on top), but only {free} is free.")


def partial_text(p: LoadPreview) -> str:
    if p.partial_layers <= 0:
        return "Run it on the CPU"
    return f"Load {p.partial_layers} of {p.total_layers} layers on GPU {p.gpu}"


def swap_text(p: LoadPreview) -> str:
    names = ", ".join(name for name, _ in p.swap)
    return f"Unload {names} ({fmt_mib(p.swap_frees_mib)}) and load it whole"


class LoadChoiceDialog(QDialog):
    """Modal to the window but never blocking it: shown with :meth:`open`."""

    chosen = Signal(str, str)  # (model, how: "partial" | "swap")

    def __init__(self, preview: LoadPreview, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.preview = preview
        self.setWindowTitle(f"Load {preview.model}?")
        text = QLabel(explain(preview))
        text.setWordWrap(True)
        text.setObjectName("loadChoiceText")
        detail = QLabel(self._detail())
        detail.setWordWrap(True)
        buttons = QDialogButtonBox()
        self.partial_button = self._button(buttons, partial_text(preview), "partial")
        self.swap_button: QPushButton | None = None
        if preview.swap:
            self.swap_button = self._button(buttons, swap_text(preview), "swap")
            self.swap_button.setDefault(True)
        else:
            self.partial_button.setDefault(True)
        self.cancel_button = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.clicked.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(detail)
        layout.addWidget(buttons)
        self.setMinimumWidth(460)

    def _detail(self) -> str:
        p = self.preview
        if p.partial_layers <= 0:
            part = "None of its layers fit on the GPU as it is: it would run on the CPU, slowly."
        else:
            rest = p.total_layers - p.partial_layers
            part = (f"Loading part of it keeps every other model; the {rest} layers that "
                    "do not fit run on the CPU, slower.")
        if not p.swap:
            return part + (" No swap is offered: the models on that GPU are pinned, busy "
                           "or used a moment ago, or would not free enough.")
        return part + " Swapping unloads the models named (gpuwarden brings them back " \
                      "once this one is idle)."

    def _button(self, box: QDialogButtonBox, text: str, how: str) -> QPushButton:
        button = box.addButton(text, QDialogButtonBox.ButtonRole.AcceptRole)
        assert isinstance(button, QPushButton)
        button.clicked.connect(lambda: self._choose(how))
        return button

    @Slot()
    def _choose(self, how: str) -> None:
        self.chosen.emit(self.preview.model, how)
        self.accept()
