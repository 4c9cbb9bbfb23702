"""Config reload: what a re-read file changes, and that a bad edit never disturbs a
running model (a broken entry keeps its old settings, an unreadable file changes nothing)."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.engine.lifecycle.config import Config, ConfigProblem, load_config, parse_config
from gpuwarden.engine.lifecycle.config_diff import ConfigDiff, describe, diff_configs

BASE = """\
sample_interval_s = 1

[[models]]
name = "chat"
backend = "simulated"
vram_mib = 1000

[[models]]
name = "coder"
backend = "simulated"
idle_timeout_s = 30

[[models]]
name = "embed"
backend = "simulated"
placement = "cpu"
"""


def parse(text: str) -> tuple[Config, list[ConfigProblem]]:
    return parse_config(text, "config.toml", Path("/nonexistent"))


def running(text: str = BASE) -> Config:
    config, problems = parse(text)
    assert problems == []
    return config


def reload(new_text: str, old_text: str = BASE) -> ConfigDiff:
    new, problems = parse(new_text)
    return diff_configs(running(old_text), new, problems)


def names(config: Config) -> list[str]:
    return [m.name for m in config.models]


def test_the_same_file_changes_nothing() -> None:
    diff = reload(BASE)
    assert (diff.added, diff.removed, diff.changed, diff.kept, diff.settings_changed) == (
        (), (), (), (), ())
    assert diff.unusable is None and diff.empty
    assert diff.config == running()
    assert describe(diff) == "config unchanged"


def test_added_removed_and_changed_models() -> None:
    new_text = BASE.replace('name = "embed"', 'name = "embed-2"').replace(
        "idle_timeout_s = 30", "idle_timeout_s = 60")
    diff = reload(new_text)
    assert [m.name for m in diff.added] == ["embed-2"]
    assert diff.removed == ("embed",)
    assert [(m.name, m.idle_timeout_s) for m in diff.changed] == [("coder", 60.0)]
    assert names(diff.config) == ["chat", "coder", "embed-2"]
    assert describe(diff) == ("config reloaded: added embed-2; removed embed; "
                              "changed coder (applies at next load)")


def test_a_moved_entry_is_not_a_change() -> None:
    """Lines inserted above move every header line; only settings count."""
    moved = "# my models\n\n\n" + BASE
    diff = reload(moved)
    assert diff.changed == () and diff.empty
    assert diff.config.model("chat") == parse(moved)[0].model("chat")  # the new line


def test_a_broken_entry_keeps_the_running_model_as_it_was() -> None:
    broken = BASE.replace("idle_timeout_s = 30", "idle_timeout_s = -5")
    diff = reload(broken)
    assert diff.kept == ("coder",)
    assert diff.removed == () and diff.changed == ()
    assert names(diff.config) == ["chat", "coder", "embed"]  # still in its place
    assert diff.config.model("coder") == running().model("coder")
    assert describe(diff) == "config reloaded: kept coder as before (new entry has a problem)"


def test_a_broken_entry_still_lets_the_others_change() -> None:
    text = (BASE.replace("idle_timeout_s = 30", "idle_timeout_s = -5")
            .replace("vram_mib = 1000", "vram_mib = 2000"))
    diff = reload(text)
    assert diff.kept == ("coder",)
    assert [(m.name, m.vram_mib) for m in diff.changed] == [("chat", 2000.0)]


def test_a_broken_new_entry_is_not_added() -> None:
    text = BASE + '\n[[models]]\nname = "new"\nbackend = "simulated"\ncontext_size = 0\n'
    diff = reload(text)
    assert diff.added == () and diff.kept == ()
    assert names(diff.config) == ["chat", "coder", "embed"]
    assert describe(diff) == "config unchanged"


def test_a_duplicate_name_keeps_the_old_entry() -> None:
    """A pasted copy above the original: which one is meant is unclear, so neither."""
    pasted = '[[models]]\nname = "coder"\nbackend = "simulated"\nidle_timeout_s = 5\n\n'
    new, problems = parse(pasted + BASE)
    assert any(p.entry == "coder" for p in problems)
    diff = diff_configs(running(), new, problems)
    assert diff.kept == ("coder",) and diff.changed == ()
    assert diff.config.model("coder") == running().model("coder")


def test_a_broken_name_line_removes_no_model() -> None:
    """``name = coder`` (no quotes) is not TOML; ``nam = "coder"`` is an entry with no
    name: that entry may be the running model, so nothing is removed this time."""
    text = BASE.replace('name = "coder"', 'nam = "coder"')
    new, problems = parse(text)
    assert [p.entry for p in problems if p.entry] == ["models[2]", "models[2]"]
    diff = diff_configs(running(), new, problems)
    assert diff.removed == ()
    assert diff.kept == ("coder",)
    assert names(diff.config) == ["chat", "embed", "coder"]
    assert diff.config.model("coder") == running().model("coder")


def test_a_broken_name_line_still_adds_and_changes() -> None:
    text = (BASE.replace('name = "coder"', 'name = 7')
            .replace("vram_mib = 1000", "vram_mib = 2000")
            + '\n[[models]]\nname = "new"\nbackend = "simulated"\n')
    diff = reload(text)
    assert [m.name for m in diff.added] == ["new"]
    assert [m.name for m in diff.changed] == ["chat"]
    assert diff.removed == () and diff.kept == ("coder",)


def test_models_not_an_array_removes_no_model() -> None:
    diff = reload("models = 5\n")
    assert diff.removed == () and diff.unusable is None
    assert names(diff.config) == ["chat", "coder", "embed"]


def test_removing_every_model_on_purpose_removes_them() -> None:
    diff = reload("sample_interval_s = 1\n")
    assert diff.removed == ("chat", "coder", "embed")
    assert diff.config.models == ()


def test_a_toml_syntax_error_changes_nothing() -> None:
    old = running()
    new, problems = parse(BASE.replace('name = "coder"', "name = coder"))
    diff = diff_configs(old, new, problems)
    assert diff.unusable is not None and "invalid TOML" in diff.unusable
    assert "\n" not in diff.unusable and diff.unusable.startswith("config.toml:")
    assert diff.config is old and diff.empty
    assert (diff.added, diff.removed, diff.kept) == ((), (), ())
    assert describe(diff).startswith("config not reloaded, nothing changed: config.toml:")


def test_an_unreadable_file_changes_nothing(tmp_path: Path) -> None:
    old = running()
    new, problems = load_config(tmp_path / "gone.toml")
    diff = diff_configs(old, new, problems)
    assert diff.unusable is not None and "cannot read" in diff.unusable
    assert diff.config is old


def test_global_settings_come_from_the_new_file() -> None:
    text = BASE.replace("sample_interval_s = 1", "sample_interval_s = 2") + (
        "\n[pressure]\nvram_enter_pct = 95\n")
    diff = reload(text)
    assert diff.settings_changed == ("pressure", "sample_interval_s")
    assert diff.config.sample_interval_s == 2.0
    assert diff.config.pressure.vram.enter == 95.0
    assert describe(diff) == "config reloaded: pressure, sample interval settings changed"


def test_a_bad_global_setting_keeps_its_running_value() -> None:
    old = running(BASE.replace("sample_interval_s = 1", "sample_interval_s = 3"))
    new, problems = parse(BASE.replace("sample_interval_s = 1", "sample_interval_s = 99"))
    assert [p.field for p in problems] == ["sample_interval_s"]
    diff = diff_configs(old, new, problems)
    assert diff.settings_changed == ()
    assert diff.config.sample_interval_s == 3
    assert "sample_interval_s" in diff.kept


def test_a_typo_in_pressure_keeps_the_running_thresholds() -> None:
    old = running(BASE + "\n[pressure]\nvram_enter_pct = 98\nvram_clear_pct = 95\n")
    new, problems = parse(BASE + '\n[pressure]\nvram_enter_pct = "98%"\nvram_clear_pct = 95\n')
    assert problems  # the typo is reported ...
    diff = diff_configs(old, new, problems)
    assert diff.config.pressure == old.pressure  # ... and does not fall back to 90 %
    assert diff.settings_changed == () and "[pressure]" in diff.kept


def test_restart_and_llama_server_changes_are_named() -> None:
    text = ('llama_server = "/opt/llama-server"\n' + BASE
            + "\n[restart]\nmax_consecutive = 9\n")
    diff = reload(text)
    assert diff.settings_changed == ("restart", "llama_server")
    assert describe(diff) == "config reloaded: restart, llama-server path settings changed"


def test_describe_lists_everything_in_one_line() -> None:
    text = (BASE.replace('name = "embed"', 'name = "embed-2"')
            .replace("vram_mib = 1000", "vram_mib = 2000")
            .replace("idle_timeout_s = 30", "idle_timeout_s = -1")
            + "\n[pressure]\nram_enter_pct = 95\n")
    line = describe(reload(text))
    assert line == ("config reloaded: added embed-2; removed embed; changed chat "
                    "(applies at next load); kept coder as before (new entry has a problem); "
                    "pressure settings changed")
