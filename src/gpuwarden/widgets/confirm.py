"""One way to ask "are you sure?": Yes or Cancel, Cancel the default."""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget


def confirm(parent: QWidget | None, title: str, text: str, *, warning: bool = False) -> bool:
    """Whether the user said Yes (``warning``: the warning icon, for what cannot be
    undone, such as an emergency stop)."""
    ask = QMessageBox.warning if warning else QMessageBox.question
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel
    return ask(parent, title, text, buttons,
               QMessageBox.StandardButton.Cancel) == QMessageBox.StandardButton.Yes
