"""Reading the config at start, and the per-model server log files."""

from pathlib import Path

import pytest

from gpuwarden.engine.supervisor import logfile
from gpuwarden.startup import ConfigFileMissing, read_config


def test_no_config_yet_is_a_note_not_an_error():
    config, notes, watched = read_config(None)
    assert config.models == () and "no config file" in notes[0]
    assert watched is not None and watched.name == "config.toml"  # watched until it appears


def test_an_explicit_config_that_does_not_exist_is_refused(tmp_path: Path):
    with pytest.raises(ConfigFileMissing, match=r"nope\.toml: no such config file"):
        read_config(tmp_path / "nope.toml")


def test_bad_entries_are_listed_and_the_count_of_good_ones_said(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text('[[models]]\nname = "ok"\nbackend = "simulated"\n\n'
                    '[[models]]\nname = "bad"\nbackend = "warp-drive"\n')
    config, notes, watched = read_config(path)
    assert watched == path
    assert [m.name for m in config.models] == ["ok"]
    assert "config.toml:7" in notes[0] and "warp-drive" in notes[0]
    assert notes[-1].startswith("1 valid model(s) loaded")


def test_a_big_log_is_rotated_when_the_next_server_starts(tmp_path: Path):
    path = tmp_path / "m.log"
    path.write_bytes(b"old line\n" * 200)
    with logfile.open_for_server(path, max_bytes=1000, backups=2) as f:
        f.write(b"fresh start\n")
    assert path.read_bytes() == b"fresh start\n"
    assert path.with_name("m.log.1").read_bytes().startswith(b"old line")
    assert logfile.tail(path) == ("fresh start",)
    assert logfile.tail(tmp_path / "missing.log") == ()


def test_read_from_returns_only_this_launchs_lines(tmp_path: Path):
    path = tmp_path / "m.log"
    path.write_text("earlier launch\n")
    offset = logfile.size(path)
    with logfile.open_for_server(path) as f:
        f.write(b"this launch\n")
    assert logfile.read_from(path, offset) == "this launch\n"
