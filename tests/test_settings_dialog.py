"""The Settings dialog: values in force and defaults shown apart, Save writes only what
changed into a real config file that keeps its comments (and the reader takes it), bad
combinations and refusals name the field and leave the file alone, Reset takes a key out,
and the app's own preferences round-trip through QSettings."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QDialog, QPushButton

from gpuwarden.engine.lifecycle.config import Config, load_config
from gpuwarden.widgets import app_prefs
from gpuwarden.widgets.setting_row import SettingRow, dim_colour
from gpuwarden.widgets.settings_dialog import SettingsDialog
from gpuwarden.widgets.theme import DARK, LIGHT, Theme

pytestmark = pytest.mark.qt

CONFIG = """\
# my limits (this comment must survive)
sample_interval_s = 0.5  # twice a second

[pressure]
vram_enter_pct = 92  # higher than the default
vram_clear_pct = 85

# the card throttles early
[safety]
gpu_temp_hard_c = 84

[[models]]
name = "chat"  # the one I use
backend = "simulated"
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def prefs_file(tmp_path: Path) -> Path:
    return tmp_path / "gpuwarden.ini"


def prefs_at(file: Path) -> QSettings:
    return QSettings(str(file), QSettings.Format.IniFormat)


@pytest.fixture
def open_dialog(qtbot, path: Path, prefs_file: Path):
    def _open(config_path: Path | None = path, theme: Theme = DARK,
              config: Config | None = None) -> SettingsDialog:
        if config is None:
            config = load_config(config_path)[0] if config_path is not None else Config()
        dialog = SettingsDialog(theme, config, config_path, prefs_at(prefs_file))
        qtbot.addWidget(dialog)
        dialog.open()
        return dialog

    return _open


def save(qtbot, dialog: SettingsDialog) -> list[str]:
    with qtbot.waitSignal(dialog.saved, timeout=5000) as blocker:
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert dialog.result() == QDialog.DialogCode.Accepted and not dialog.isVisible()
    return list(blocker.args[0])


def text_colour(row: SettingRow) -> str:
    return row.spin.palette().color(QPalette.ColorRole.Text).name()


@pytest.mark.parametrize("theme", [DARK, LIGHT])
def test_the_values_in_force_are_shown_and_defaults_are_dim(open_dialog, theme: Theme):
    dialog = open_dialog(theme=theme)
    rows = dialog.rows
    enter, ram = rows["pressure.vram_enter_pct"], rows["pressure.ram_enter_pct"]
    assert (enter.spin.value(), enter.spin.suffix()) == (92, " %")
    assert enter.default_note.isHidden() and text_colour(enter) != dim_colour(theme).name()
    assert ram.spin.value() == 90 and not ram.default_note.isHidden()  # not in the file
    assert text_colour(ram) == dim_colour(theme).name()
    assert rows["sample_interval_s"].spin.text() == "0.50 s"
    assert rows["pressure.disk_free_enter_gib"].spin.suffix() == " GiB"
    assert rows["safety.gpu_power_warn_w"].spin.suffix() == " W"
    hard, warn = rows["safety.gpu_temp_hard_c"], rows["safety.gpu_temp_warn_c"]
    assert (hard.spin.value(), hard.spin.suffix(), hard.auto.isChecked()) == (84, " °C", False)
    assert warn.auto is not None and warn.auto.isChecked()  # left to the card
    assert warn.stack.currentWidget() is warn.auto_label and not warn.card_note.isHidden()
    assert "slowdown" in warn.card_note.text()
    assert all(row.changed_note.isHidden() for row in rows.values())
    assert dialog.header.text().startswith(f"Settings in {dialog.config_path}")


def test_a_new_vram_threshold_is_written_with_the_comments_kept(qtbot, open_dialog,
                                                                  path: Path):
    dialog = open_dialog()
    dialog.rows["pressure.vram_enter_pct"].set_value(95)
    assert not dialog.rows["pressure.vram_enter_pct"].changed_note.isHidden()
    assert save(qtbot, dialog) == ["pressure.vram_enter_pct"]
    assert path.read_text() == CONFIG.replace("vram_enter_pct = 92", "vram_enter_pct = 95")
    config, problems = load_config(path)
    assert problems == [] and config.pressure.vram.enter == 95


def test_both_levels_moved_past_each_other_are_written_in_an_order_that_stays_valid(
        qtbot, open_dialog, path: Path):
    """Lowering both (92/85 -> 70/60) must write the clear level first, raising both
    (90/80 -> 98/95) the enter level first: the reader checks every single write."""
    dialog = open_dialog()
    for name, value in (("vram_enter_pct", 70), ("vram_clear_pct", 60),
                        ("ram_enter_pct", 98), ("ram_clear_pct", 95)):
        dialog.rows[f"pressure.{name}"].set_value(value)
    assert sorted(save(qtbot, dialog)) == ["pressure.ram_clear_pct", "pressure.ram_enter_pct",
                                           "pressure.vram_clear_pct", "pressure.vram_enter_pct"]
    config, problems = load_config(path)
    assert problems == []
    assert (config.pressure.vram.enter, config.pressure.vram.clear) == (70, 60)
    assert (config.pressure.ram.enter, config.pressure.ram.clear) == (98, 95)


def test_clear_above_enter_is_refused_naming_the_field_and_the_file_stays(
        qtbot, open_dialog, path: Path):
    before = path.read_bytes()
    dialog = open_dialog()
    clear = dialog.rows["pressure.vram_clear_pct"]
    clear.set_value(93)  # the enter level is 92
    assert "“VRAM pressure clears below” must be below “VRAM pressure at”" in \
        dialog.problem.text()
    assert DARK.state_bad in clear.label.styleSheet()
    assert not dialog.save_button.isEnabled()
    dialog.save()
    assert dialog.isVisible() and path.read_bytes() == before
    clear.set_value(91)  # fixed: the message goes and Save comes back
    assert dialog.problem.text() == "" and dialog.save_button.isEnabled()
    assert clear.label.styleSheet() == ""


def test_a_refusal_by_the_config_check_names_the_field_and_what_was_saved(
        qtbot, open_dialog, path: Path):
    """Another editor lowered backoff_cap_s while the dialog was open: the dialog's
    backoff_base_s is refused by config_edit; the key written before it stays written."""
    dialog = open_dialog()
    dialog.rows["pressure.vram_enter_pct"].set_value(95)
    dialog.rows["restart.backoff_base_s"].set_value(5)
    edited = CONFIG + "\n[restart]\nbackoff_cap_s = 2  # by hand\n"
    path.write_text(edited)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    message = dialog.problem.text()
    assert message.startswith("Not saved: “First restart after”:")
    assert "'backoff_base_s' must be at most 'backoff_cap_s' (2)" in message
    assert message.endswith("Saved before it: VRAM pressure at.")
    base = dialog.rows["restart.backoff_base_s"]
    assert DARK.state_bad in base.label.styleSheet()
    assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == "Restarts"
    assert dialog.isVisible()
    assert path.read_text() == edited.replace("vram_enter_pct = 92", "vram_enter_pct = 95")
    base.set_value(1.5)  # fixed: only what is still unsaved is written
    assert save(qtbot, dialog) == ["pressure.vram_enter_pct", "restart.backoff_base_s"]
    config, problems = load_config(path)
    assert problems == [] and config.restart.backoff_base_s == 1.5
    assert config.pressure.vram.enter == 95 and "# by hand" in path.read_text()


def test_reset_to_default_takes_the_key_out_of_the_file(qtbot, open_dialog, path: Path):
    dialog = open_dialog()
    clear = dialog.rows["pressure.vram_clear_pct"]
    qtbot.mouseClick(clear.reset_button, Qt.MouseButton.LeftButton)
    assert clear.spin.value() == 80 and not clear.default_note.isHidden()
    assert not clear.reset_button.isEnabled()
    hard = dialog.rows["safety.gpu_temp_hard_c"]
    assert hard.auto is not None
    hard.auto.setChecked(True)  # "From the card": the key goes
    assert sorted(save(qtbot, dialog)) == ["pressure.vram_clear_pct", "safety.gpu_temp_hard_c"]
    text = path.read_text()
    assert "vram_clear_pct" not in text and "gpu_temp_hard_c" not in text
    assert "# the card throttles early" in text and "vram_enter_pct = 92  #" in text
    config, problems = load_config(path)
    assert problems == [] and config.pressure.vram.clear == 80
    assert config.safety.gpu_temp_hard_c is None


def test_reset_this_tab_takes_out_the_tabs_keys_only(qtbot, open_dialog, path: Path):
    dialog = open_dialog()
    page = dialog.pages["Pressure"]
    button = next(b for b in page.findChildren(QPushButton)
                  if b.text() == "Reset this tab to defaults")
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert sorted(save(qtbot, dialog)) == ["pressure.vram_clear_pct", "pressure.vram_enter_pct"]
    config, _ = load_config(path)
    assert (config.pressure.vram.enter, config.pressure.vram.clear) == (90, 80)
    assert config.safety.gpu_temp_hard_c == 84 and config.sample_interval_s == 0.5


def test_cancel_writes_nothing(qtbot, open_dialog, path: Path, prefs_file: Path):
    dialog = open_dialog()
    dialog.rows["pressure.vram_enter_pct"].set_value(99)
    dialog.leave_running.setChecked(True)
    qtbot.mouseClick(dialog.buttons.button(dialog.buttons.StandardButton.Cancel),
                     Qt.MouseButton.LeftButton)
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert path.read_text() == CONFIG
    assert app_prefs.leave_running(prefs_at(prefs_file)) is False


def test_leave_running_and_history_round_trip_through_qsettings(qtbot, open_dialog,
                                                                path: Path, prefs_file: Path):
    first = open_dialog()
    assert not first.leave_running.isChecked() and first.history.value() == 60
    first.leave_running.setChecked(True)
    first.history.setValue(120)
    assert save(qtbot, first) == [app_prefs.LEAVE_RUNNING, app_prefs.HISTORY_S]
    assert path.read_text() == CONFIG  # not in the config file
    assert app_prefs.leave_running(prefs_at(prefs_file)) is True
    assert app_prefs.history_seconds(prefs_at(prefs_file)) == 7200
    second = open_dialog()
    assert second.leave_running.isChecked() and second.history.value() == 120
    second.leave_running.setChecked(False)
    assert save(qtbot, second) == [app_prefs.LEAVE_RUNNING]
    assert app_prefs.leave_running(prefs_at(prefs_file)) is False


def test_without_a_config_file_the_config_fields_are_read_only(qtbot, open_dialog,
                                                               prefs_file: Path):
    dialog = open_dialog(None)
    assert "without a config file" in dialog.header.text()
    for row in dialog.rows.values():
        assert not row.spin.isEnabled() and not row.reset_button.isEnabled()
        assert row.auto is None or not row.auto.isEnabled()
    assert dialog.rows["pressure.vram_enter_pct"].spin.value() == 90  # in force
    assert dialog.leave_running.isEnabled()
    dialog.leave_running.setChecked(True)
    assert save(qtbot, dialog) == [app_prefs.LEAVE_RUNNING]
    assert app_prefs.leave_running(prefs_at(prefs_file)) is True


def test_a_file_that_is_not_toml_is_shown_read_only_and_never_written(qtbot, open_dialog,
                                                                      path: Path):
    config = load_config(path)[0]  # in force from before the bad edit
    path.write_text(CONFIG + "oops = \n")
    dialog = open_dialog(config=config)
    assert "is not valid TOML" in dialog.header.text()
    enter = dialog.rows["pressure.vram_enter_pct"]
    assert enter.spin.value() == 92 and not enter.spin.isEnabled()
    assert not dialog.rows["pressure.ram_enter_pct"].default_note.isHidden()
    assert save(qtbot, dialog) == []
    assert path.read_text() == CONFIG + "oops = \n"


def test_a_missing_file_shows_defaults_and_is_created_on_save(qtbot, open_dialog,
                                                              tmp_path: Path):
    path = tmp_path / "new" / "config.toml"
    dialog = open_dialog(path)
    assert not dialog.rows["sample_interval_s"].default_note.isHidden()
    dialog.rows["sample_interval_s"].set_value(2)
    assert save(qtbot, dialog) == ["sample_interval_s"]
    assert path.read_text() == "sample_interval_s = 2\n"
