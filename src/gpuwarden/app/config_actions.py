"""The window's edits of the config file: add a model, edit or remove the selected one,
and the Settings dialog. Each is written to the file (comments and layout kept); the
running engine picks the change up through its live reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QSettings
from PySide6.QtWidgets import QWidget

from gpuwarden.app.bridge import EngineBridge
from gpuwarden.engine.config_edit import ConfigEditError, remove_model
from gpuwarden.engine.lifecycle.config import ModelConfig, load_config
from gpuwarden.engine.supervisor.locate import find_fit_tool
from gpuwarden.widgets.app_prefs import LEAVE_RUNNING, leave_running
from gpuwarden.widgets.confirm import confirm
from gpuwarden.widgets.model_editor import EDITABLE_BACKENDS, ModelEditor
from gpuwarden.widgets.settings_dialog import SettingsDialog
from gpuwarden.widgets.theme import Theme

Answer = Callable[[str, bool], None]  # (text, warning)
NO_FILE = "gpuwarden was started without a config file it can write (--config)"


class ConfigActions(QObject):
    def __init__(self, bridge: EngineBridge, theme: Theme, parent: QWidget,
                 answer: Answer) -> None:
        super().__init__(parent)
        self._bridge = bridge
        self._theme = theme
        self._parent = parent
        self._answer = answer
        self.dialog: ModelEditor | SettingsDialog | None = None  # the one shown

    @property
    def path(self) -> Path | None:
        return self._bridge.config_path

    def add_model(self) -> None:
        if self.path is None:
            self._answer(f"Cannot add a model: {NO_FILE}", True)
            return
        self._show(ModelEditor(self._theme, self.path, lambda: self._bridge.latest,
                               self._parent, fit_tool=find_fit_tool))

    def edit_model(self, name: str) -> None:
        found = self._entry(name, "edit")
        if found is not None and found.backend not in EDITABLE_BACKENDS:
            self._answer(f"{name} is a {found.backend} model: the dialog edits GGUF models "
                         f"only; edit its entry in {self.path} (File > Open config)", True)
            return
        if found is not None and self.path is not None:
            self._show(ModelEditor.edit(self._theme, self.path, lambda: self._bridge.latest,
                                        found, self._parent, find_fit_tool))

    def settings(self, prefs: QSettings) -> None:
        """The Settings dialog: thresholds and limits written to the config file (the
        engine reloads them), the app's own preferences to ``prefs``."""
        dialog = SettingsDialog(self._theme, self._bridge.config, self.path, prefs,
                                self._parent)
        dialog.saved.connect(lambda names: self._settings_saved(names, prefs))
        self._show(dialog)

    def _settings_saved(self, names: list[str], prefs: QSettings) -> None:
        if LEAVE_RUNNING in names:
            self._bridge.set_leave_running(leave_running(prefs))
        in_file = [n for n in names if not n.startswith("app/")]
        if in_file:
            self._answer(f"Saved {len(in_file)} setting(s) to {self.path}; the engine reads "
                         "them in a moment", False)
        elif names:
            self._answer("Saved", False)

    def remove_model(self, name: str) -> None:
        if self._entry(name, "remove") is None or self.path is None:
            return
        if not confirm(self._parent, f"Remove {name}?",
                       f"Remove {name} from {self.path}? A running {name} is stopped. The "
                       "model file itself stays on disk."):
            return
        try:
            remove_model(self.path, name)
        except ConfigEditError as exc:
            self._answer(f"Remove refused: {exc}", True)
            return
        self._answer(f"Removed {name} from {self.path}", False)

    def _entry(self, name: str, what: str) -> ModelConfig | None:
        """The model's entry as the file has it now (not as it ran)."""
        if self.path is None:
            self._answer(f"Cannot {what} {name}: {NO_FILE}", True)
            return None
        found = load_config(self.path)[0].model(name)
        if found is None:
            self._answer(f"Cannot {what} {name}: it is not in {self.path} (any more)", True)
        return found

    def _show(self, dialog: ModelEditor | SettingsDialog) -> None:
        if self.dialog is not None:
            self.dialog.reject()
        self.dialog = dialog
        if isinstance(dialog, ModelEditor):
            dialog.saved.connect(lambda name: self._answer(
                f"Saved {name} to {self.path}; the engine reads it in a moment", False))
        dialog.finished.connect(lambda _: self._forget(dialog))
        dialog.open()

    def _forget(self, dialog: ModelEditor | SettingsDialog) -> None:
        if self.dialog is dialog:
            self.dialog = None
        dialog.deleteLater()
