"""Editing the config file from a front end: the user's comments, blank lines and key order
survive every edit, a refused edit leaves the file byte for byte as it was, and the file
is replaced atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gpuwarden.engine.config_edit import (
    ConfigEditError,
    add_model,
    remove_model,
    set_setting,
    update_model,
)
from gpuwarden.engine.lifecycle.config import load_config

USER_FILE = """\
# My models. Keep the chat model pinned!
sample_interval_s = 1.0  # once a second

[[models]]
name = "chat"   # the one I use most
backend = "simulated"
vram_mib = 6200
# threads = 8   (not yet)

# the coder, for work

[[models]]
name = "coder"
backend = "simulated"  # until the GGUF is here
priority = 3  # above embed
vram_mib = 9800

# pressure: the defaults are too eager for me
[pressure]
vram_enter_pct = 92  # a bit higher
vram_clear_pct = 80
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _user_lines_kept(path: Path, *, but: tuple[str, ...] = ()) -> None:
    """Every line the user wrote is still there, in the same order, and each comment still
    has the blank line above it (``but``: lines the edit was meant to change or drop)."""
    now = _lines(path)
    wanted = [line for line in USER_FILE.splitlines() if line.strip() and line not in but]
    rest = iter(now)
    assert all(line in rest for line in wanted), "\n".join(now)  # a subsequence of now
    for comment in ("# the coder, for work", "# pressure: the defaults are too eager for me"):
        if comment not in but:
            assert now[now.index(comment) - 1] == "", "\n".join(now)


def _models(path: Path) -> dict[str, object]:
    config, problems = load_config(path)
    assert problems == []
    return {m.name: m for m in config.models}


# -- add ----------------------------------------------------------------------------------------


def test_add_appends_an_entry_and_keeps_every_comment(cfg: Path) -> None:
    add_model(cfg, {"name": "embed", "backend": "simulated", "vram_mib": 900,
                    "priority": -5, "gpu": "auto", "autostart": True, "ram_mib": None})
    _user_lines_kept(cfg)
    text = cfg.read_text()
    # The new entry sits after the last one, before the comment about [pressure].
    assert text.index('name = "embed"') < text.index("# pressure: the defaults")
    assert "\nram_mib" not in text  # None: left out
    config, problems = load_config(cfg)
    assert problems == []
    embed = config.model("embed")
    assert embed is not None
    assert (embed.vram_mib, embed.priority, embed.gpu_auto, embed.autostart) == \
        (900.0, -5, True, True)
    assert config.pressure.vram.enter == 92  # the user's settings still read


def test_add_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    add_model(path, {"name": "one", "backend": "simulated"})
    add_model(path, {"name": "two", "backend": "simulated", "placement": 12})
    assert [m.name for m in load_config(path)[0].models] == ["one", "two"]
    assert load_config(path)[0].models[1].placement == 12


def test_add_to_a_file_without_models_or_a_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# just a comment\nsample_interval_s = 2")
    add_model(path, {"name": "one", "backend": "simulated"})
    text = path.read_text()
    assert text.startswith("# just a comment\nsample_interval_s = 2\n")
    assert load_config(path)[0].sample_interval_s == 2


def test_a_duplicate_name_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigEditError, match="'coder' is already") as exc:
        add_model(cfg, {"name": "coder", "backend": "simulated"})
    assert exc.value.field == "name"
    assert cfg.read_text() == USER_FILE


@pytest.mark.parametrize(("fields", "field"), [
    ({"context_size": -1}, "context_size"),
    ({"placement": "fast"}, "placement"),
    ({"eviction": "sometimes"}, "eviction"),
    ({"colour": "blue"}, "colour"),
    ({"backend": "vllm"}, "backend"),
])
def test_an_invalid_value_is_refused_and_nothing_is_written(
    cfg: Path, fields: dict[str, object], field: str
) -> None:
    before = cfg.read_bytes()
    with pytest.raises(ConfigEditError) as exc:
        add_model(cfg, {"name": "bad", "backend": "simulated", **fields})
    assert exc.value.field == field
    assert field in str(exc.value)
    assert "using the default" not in str(exc.value)
    assert cfg.read_bytes() == before


def test_a_missing_model_file_is_refused(cfg: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigEditError, match="model file not found") as exc:
        add_model(cfg, {"name": "real", "backend": "llama-server",
                        "path": tmp_path / "nowhere.gguf"})
    assert exc.value.field == "path"
    assert cfg.read_text() == USER_FILE


def test_a_nameless_entry_is_refused(cfg: Path) -> None:
    for name in (None, "", "  ", 3):
        with pytest.raises(ConfigEditError, match="name"):
            add_model(cfg, {"name": name, "backend": "simulated"})
    assert cfg.read_text() == USER_FILE


# -- update ---------------------------------------------------------------------------------------


def test_update_changes_only_the_given_keys(cfg: Path) -> None:
    update_model(cfg, "coder", {"priority": 7, "vram_mib": None, "context_size": 8192})
    _user_lines_kept(cfg, but=("priority = 3  # above embed", "vram_mib = 9800"))
    assert "priority = 7  # above embed" in _lines(cfg)  # the comment stays on its line
    assert "vram_mib = 9800" not in cfg.read_text()
    text = cfg.read_text()
    # The new key joins the entry, before the blank line and the [pressure] comment.
    assert text.index("context_size = 8192") < text.index("# pressure: the defaults")
    assert text.index('name = "coder"') < text.index("context_size = 8192")
    coder = load_config(cfg)[0].model("coder")
    assert coder is not None
    assert (coder.priority, coder.vram_mib, coder.context_size) == (7, None, 8192)


def test_update_keeps_comment_lines_under_the_last_key(cfg: Path) -> None:
    update_model(cfg, "chat", {"eviction": "never"})
    lines = _lines(cfg)
    assert lines.index("eviction = \"never\"") == lines.index("# threads = 8   (not yet)") + 1
    _user_lines_kept(cfg)


def test_rename_and_its_refusals(cfg: Path) -> None:
    with pytest.raises(ConfigEditError, match="'chat' is already"):
        update_model(cfg, "coder", {"name": "chat"})
    with pytest.raises(ConfigEditError, match="no model named 'nope'"):
        update_model(cfg, "nope", {"priority": 1})
    with pytest.raises(ConfigEditError, match="'idle_timeout_s'"):
        update_model(cfg, "coder", {"idle_timeout_s": -5})
    assert cfg.read_text() == USER_FILE
    update_model(cfg, "coder", {"name": "coder-2"})
    assert sorted(_models(cfg)) == ["chat", "coder-2"]


def test_removing_a_required_key_is_refused(cfg: Path) -> None:
    with pytest.raises(ConfigEditError, match="backend") as exc:
        update_model(cfg, "chat", {"backend": None})
    assert exc.value.field == "backend"
    assert cfg.read_text() == USER_FILE


def test_a_problem_elsewhere_does_not_block_an_edit(cfg: Path) -> None:
    """An entry the reader already skips does not stop a good edit of another one."""
    broken = '[[models]]\nname = "broken"\nbackend = "simulated"\npriority = 1.5\n\n'
    cfg.write_text(USER_FILE.replace("# pressure:", broken + "# pressure:"))
    update_model(cfg, "chat", {"priority": 2})
    config, problems = load_config(cfg)
    assert [p.entry for p in problems] == ["broken"]
    chat = config.model("chat")
    assert chat is not None and chat.priority == 2


# -- remove ---------------------------------------------------------------------------------------


def test_remove_keeps_the_comments_around_the_entry(cfg: Path) -> None:
    remove_model(cfg, "coder")
    assert sorted(_models(cfg)) == ["chat"]
    coder_lines = ('name = "coder"', 'backend = "simulated"  # until the GGUF is here',
                   "priority = 3  # above embed", "vram_mib = 9800", "[[models]]")
    _user_lines_kept(cfg, but=coder_lines)
    assert "[[models]]" in cfg.read_text()  # chat's header


def test_remove_the_first_and_then_the_last(cfg: Path) -> None:
    remove_model(cfg, "chat")
    text = cfg.read_text()
    assert "# the coder, for work" in text
    assert text.index("# the coder, for work") < text.index('name = "coder"')
    remove_model(cfg, "coder")
    assert "[[models]]" not in cfg.read_text()
    assert load_config(cfg)[0].models == ()
    for kept in ("# My models. Keep the chat model pinned!", "# the coder, for work",
                 "# pressure: the defaults are too eager for me", "[pressure]",
                 "vram_enter_pct = 92  # a bit higher"):
        assert kept in _lines(cfg)


def test_remove_an_unknown_name(cfg: Path) -> None:
    with pytest.raises(ConfigEditError, match="no model named 'nope'"):
        remove_model(cfg, "nope")
    assert cfg.read_text() == USER_FILE


# -- settings -------------------------------------------------------------------------------------


def test_set_setting_in_tables_old_and_new(cfg: Path) -> None:
    set_setting(cfg, "pressure", "vram_enter_pct", 95)
    set_setting(cfg, "pressure", "ram_enter_pct", 85)
    set_setting(cfg, "safety", "vram_margin_mib", 1024)
    set_setting(cfg, "", "sample_interval_s", 2)
    set_setting(cfg, "", "llama_server", "/opt/llama/llama-server")
    lines = _lines(cfg)
    assert "vram_enter_pct = 95  # a bit higher" in lines
    assert "sample_interval_s = 2  # once a second" in lines
    # a new top-level key goes with the others, before the first table
    assert lines.index('llama_server = "/opt/llama/llama-server"') < lines.index("[[models]]")
    config, problems = load_config(cfg)
    assert problems == []
    assert (config.pressure.vram.enter, config.pressure.ram.enter) == (95, 85)
    assert config.safety.vram_margin_mib == 1024
    assert config.sample_interval_s == 2
    set_setting(cfg, "pressure", "vram_enter_pct", None)  # back to the default
    assert load_config(cfg)[0].pressure.vram.enter == 90
    assert "# pressure: the defaults are too eager for me" in cfg.read_text()


@pytest.mark.parametrize(("table", "key", "value", "words"), [
    ("pressure", "vram_clear_pct", 95, "must be below 'vram_enter_pct'"),
    ("pressure", "vram_enter_pct", 150, "from 0 to 100"),
    ("pressure", "bogus", 1, "unknown key 'bogus'"),
    ("", "sample_interval_s", 60, "0.25 to 10"),
    ("restart", "max_consecutive", 0, "max_consecutive"),
])
def test_a_bad_setting_is_refused(cfg: Path, table: str, key: str, value: object,
                                  words: str) -> None:
    with pytest.raises(ConfigEditError, match=words) as exc:
        set_setting(cfg, table, key, value)
    assert "using the default" not in str(exc.value)
    assert cfg.read_text() == USER_FILE


def test_nested_tables_by_dotted_name(tmp_path: Path) -> None:
    """A nested table is made as TOML nests it; the reader refuses what it does not know."""
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigEditError, match="unknown key 'extra'"):
        set_setting(path, "extra.deep", "x", 1)
    assert not path.exists()
    with pytest.raises(ConfigEditError, match="not a table name"):
        set_setting(path, "pressure..x", "x", 1)
    path.write_text("[pressure]\nvram_enter_pct = 90\n")
    with pytest.raises(ConfigEditError, match=r"'pressure\.vram_enter_pct' is not a table"):
        set_setting(path, "pressure.vram_enter_pct", "x", 1)


# -- the file itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    'sample_interval_s = \n[[models]]\nname = "x"\n',  # not TOML
    "[pressure]\nvram_enter_pct = 90\n[pressure]\nram_enter_pct = 90\n",  # a table twice
])
def test_a_broken_file_is_never_overwritten(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    for edit in (lambda: add_model(path, {"name": "x2", "backend": "simulated"}),
                 lambda: set_setting(path, "pressure", "cpu_enter_pct", 90),
                 lambda: remove_model(path, "x")):
        with pytest.raises(ConfigEditError, match="not valid TOML"):
            edit()
    assert path.read_text() == text


def test_a_layout_tomlkit_would_rearrange_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = ('[[models]]\nname = "a"\nbackend = "simulated"\n\n[restart]\nmax_consecutive = 2'
            '\n\n[[models]]\nname = "b"\nbackend = "simulated"\n')
    path.write_text(text)
    with pytest.raises(ConfigEditError, match="in an editor"):
        update_model(path, "b", {"priority": 1})
    assert path.read_text() == text


def test_inline_models_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = 'models = [{ name = "a", backend = "simulated" }]\n'
    path.write_text(text)
    with pytest.raises(ConfigEditError, match=r"\[\[models\]\]"):
        update_model(path, "a", {"priority": 1})
    assert path.read_text() == text


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigEditError, match="UTF-8"):
        add_model(path, {"name": "x", "backend": "simulated"})
    assert path.read_bytes() == b"# caf\xe9\n"


def test_the_write_is_atomic_and_keeps_the_mode(cfg: Path) -> None:
    cfg.chmod(0o600)
    inode = cfg.stat().st_ino
    add_model(cfg, {"name": "embed", "backend": "simulated"})
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert cfg.stat().st_ino != inode  # a new file renamed over the old one
    assert sorted(os.listdir(cfg.parent)) == ["config.toml"]  # no temporary file left


def test_a_failed_write_leaves_the_file_and_no_temporary(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        set_setting(cfg, "pressure", "vram_enter_pct", 95)
    assert cfg.read_text() == USER_FILE
    assert sorted(os.listdir(cfg.parent)) == ["config.toml"]


def test_values_that_toml_cannot_hold_are_refused(cfg: Path) -> None:
    with pytest.raises(ConfigEditError, match="'args'") as exc:
        update_model(cfg, "chat", {"args": {"a": object()}})
    assert exc.value.field == "args"
    update_model(cfg, "chat", {"args": ("--batch-size", "1024")})
    chat = load_config(cfg)[0].model("chat")
    assert chat is not None and chat.args == ("--batch-size", "1024")
