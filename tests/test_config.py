"""The config loader: the shipped example loads cleanly, and every mistake becomes one
problem naming the file, line, model and key while the rest of the file still loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpuwarden.engine import paths
from gpuwarden.engine.lifecycle.config import (
    BACKEND_KINDS,
    EVICTION_POLICIES,
    MODEL_FIELDS,
    Config,
    ConfigProblem,
    DiskThreshold,
    Hysteresis,
    ModelConfig,
    PressureConfig,
    RestartConfig,
    default_config_path,
    load_config,
    parse_config,
)
from gpuwarden.engine.safety.limits import SafetyConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "config.toml"

GOOD = """\
sample_interval_s = 2

[[models]]
name = "alpha"
backend = "simulated"
vram_mib = 1000

[[models]]
name = "beta"
backend = "simulated"
idle_timeout_s = 30

[[models]]
name = "gamma"
backend = "simulated"
placement = "cpu"
"""


def parse(content: str, base_dir: Path | None = None) -> tuple[Config, list[ConfigProblem]]:
    return parse_config(content, "config.toml", base_dir)


def line_of(content: str, needle: str, nth: int = 0) -> int:
    """1-based number of the ``nth`` line containing ``needle``."""
    return [n for n, line in enumerate(content.splitlines(), 1) if needle in line][nth]


def names(config: Config) -> list[str]:
    return [m.name for m in config.models]


def only_problem(content: str) -> tuple[Config, ConfigProblem]:
    config, problems = parse(content)
    assert len(problems) == 1, problems
    return config, problems[0]


def test_shipped_example_loads_without_problems() -> None:
    config, problems = load_config(EXAMPLE)
    assert problems == []
    assert names(config) == ["chat-8b", "coder-14b", "embed-small"]
    chat = config.model("chat-8b")
    assert chat is not None
    assert (chat.eviction, chat.placement, chat.autostart, chat.vram_mib) == (
        "never", "gpu", True, 6200.0)
    assert config.model("embed-small") == dataclasses.replace(
        config.models[2], placement=20, eviction="pressure", priority=-5)
    assert {m.backend for m in config.models} == {"simulated"}
    assert config.source == str(EXAMPLE)
    assert config.models[0].line == line_of(EXAMPLE.read_text(), "[[models]]")


def test_defaults() -> None:
    config, problems = parse("")
    assert problems == []
    assert config == Config(source="config.toml")
    assert config.pressure.vram == Hysteresis(90.0, 80.0)
    assert config.pressure.cpu == Hysteresis(95.0, 80.0)
    assert config.pressure.disk == DiskThreshold(5.0, 10.0)
    assert config.restart == RestartConfig(1.0, 60.0, 600.0, 5, 120.0)
    assert config.sample_interval_s == 1.0
    assert Config().source == "<defaults>"
    assert Config().model("x") is None


def test_model_defaults_and_types() -> None:
    config, problems = parse(GOOD)
    assert problems == []
    assert names(config) == ["alpha", "beta", "gamma"]
    assert config.sample_interval_s == 2.0
    alpha = config.model("alpha")
    assert alpha == ModelConfig("alpha", "simulated", vram_mib=1000.0,
                                line=line_of(GOOD, "[[models]]", 0))
    beta = config.model("beta")
    assert beta is not None
    assert isinstance(beta.idle_timeout_s, float) and beta.idle_timeout_s == 30.0
    assert beta.line == line_of(GOOD, "[[models]]", 1)


def test_every_model_field_has_a_spec() -> None:
    assert set(MODEL_FIELDS) == {f.name for f in dataclasses.fields(ModelConfig)} - {
        "line", "gpu_auto", "key_lines"}  # gpu_auto: written as gpu = "auto"
    assert BACKEND_KINDS == ("llama-server", "llama-cpp", "simulated", "command", "torch")
    assert EVICTION_POLICIES == ("idle", "pressure", "never")


def test_all_global_settings_are_read() -> None:
    content = """\
sample_interval_s = 0.5
[pressure]
vram_enter_pct = 85
vram_clear_pct = 70
ram_enter_pct = 80
ram_clear_pct = 60
cpu_enter_pct = 99
cpu_clear_pct = 90
disk_free_enter_gib = 2
disk_free_clear_gib = 3.5
alert_debounce_s = 5
[restart]
backoff_base_s = 0.5
backoff_cap_s = 30
healthy_reset_s = 100
max_consecutive = 3
startup_timeout_s = 10
"""
    config, problems = parse(content)
    assert problems == []
    assert config.pressure == PressureConfig(
        Hysteresis(85, 70), Hysteresis(80, 60), Hysteresis(99, 90), DiskThreshold(2, 3.5), 5)
    assert config.restart == RestartConfig(0.5, 30, 100, 3, 10)
    assert config.sample_interval_s == 0.5


def test_full_model_entry(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    content = f"""\
[[models]]
name = "llama-8b"
backend = "llama-server"
path = "{model}"
context_size = 8192
placement = 0
gpu = 1
idle_timeout_s = 0
eviction = "pressure"
priority = 3
args = ["--flash-attn", "-t", "8"]
vram_mib = 5000.5
ram_mib = 6000
layers = 40
load_time_s = 2
autostart = true
"""
    config, problems = parse(content)
    assert problems == []
    assert config.models == (ModelConfig(
        "llama-8b", "llama-server", model, 8192, 0, 1, 0.0, "pressure", 3,
        ("--flash-attn", "-t", "8"), 5000.5, 6000.0, 40, 2.0, True, 1),)


def check_bad_entry(content: str, needle: str, entry: str, field: str, text: str) -> None:
    """``content`` has one problem, at the line holding ``needle``, naming ``entry`` and
    ``field``; the other models of GOOD still load."""
    config, problem = only_problem(content)
    line = line_of(content, needle)
    assert (problem.path, problem.line, problem.entry, problem.field) == (
        "config.toml", line, entry, field)
    assert text in problem.message
    assert str(problem).startswith(f"config.toml:{line}: ")
    assert set(names(config)) == {"alpha", "beta", "gamma"} - {entry}


@pytest.mark.parametrize(
    ("old", "new", "entry", "field", "text"),
    [
        ("vram_mib = 1000", "colour = 'red'", "alpha", "colour", "unknown key 'colour'; allowed"),
        ("vram_mib = 1000", "vram_mib = 'lots'", "alpha", "vram_mib",
         "'vram_mib' must be a positive number, got 'lots'"),
        ("idle_timeout_s = 30", "idle_timeout_s = -5", "beta", "idle_timeout_s",
         "'idle_timeout_s' must be a number >= 0, got -5"),
        ('placement = "cpu"', 'placement = "fast"', "gamma", "placement",
         "must be one of: gpu, cpu, auto, or an integer >= 0, got 'fast'"),
        ('placement = "cpu"', "placement = -1", "gamma", "placement", "got -1"),
        ('placement = "cpu"', "placement = 2.5", "gamma", "placement", "got 2.5"),
        ('placement = "cpu"', 'eviction = "sometimes"', "gamma", "eviction",
         "must be one of: idle, pressure, never, got 'sometimes'"),
        ('placement = "cpu"', "autostart = 1", "gamma", "autostart", "must be true or false"),
        ('placement = "cpu"', "args = [1, 2]", "gamma", "args", "must be an array of strings"),
        ('placement = "cpu"', "layers = 0", "gamma", "layers",
         "must be an integer from 1 to 100000"),
        ('name = "beta"\nbackend = "simulated"', 'name = "beta"\nbackend = "vllm"', "beta",
         "backend",
         "'backend' must be one of: llama-server, llama-cpp, simulated, command, torch, "
         "got 'vllm'"),
    ],
)
def test_bad_model_value_skips_only_that_entry(
    old: str, new: str, entry: str, field: str, text: str
) -> None:
    content = GOOD.replace(old, new)
    assert content != GOOD
    check_bad_entry(content, new.splitlines()[-1], entry, field, text)


def test_problem_text_names_the_model() -> None:
    _, problem = only_problem(GOOD.replace("idle_timeout_s = 30", "idle_timeout_s = -5"))
    line = line_of(GOOD, "idle_timeout_s")
    assert str(problem) == (
        f"config.toml:{line}: model 'beta': 'idle_timeout_s' must be a number >= 0, got -5")


def test_entry_without_name_is_named_by_position() -> None:
    content = GOOD.replace('name = "beta"\n', "")
    config, problem = only_problem(content)
    line = line_of(content, "[[models]]", 1)
    assert (problem.line, problem.entry, problem.field) == (line, "models[2]", "name")
    assert str(problem) == f"config.toml:{line}: models[2]: missing required key 'name'"
    assert names(config) == ["alpha", "gamma"]


def test_all_problems_of_an_entry_are_reported_in_file_order() -> None:
    content = GOOD.replace("idle_timeout_s = 30", "colour = 1\nidle_timeout_s = -5\ngpu = -1")
    config, problems = parse(content)
    assert [(p.field, p.line) for p in problems] == [
        ("colour", line_of(content, "colour")),
        ("idle_timeout_s", line_of(content, "idle_timeout_s")),
        ("gpu", line_of(content, "gpu = -1")),
    ]
    assert {p.entry for p in problems} == {"beta"}
    assert names(config) == ["alpha", "gamma"]


def test_duplicate_name_skips_the_second() -> None:
    content = GOOD.replace('name = "gamma"', 'name = "alpha"')
    config, problem = only_problem(content)
    line = line_of(content, 'name = "alpha"', 1)
    assert (problem.line, problem.entry, problem.field) == (line, "alpha", "name")
    assert f"duplicate model name 'alpha' (first used on line {line_of(content, '[[models]]')})" \
        in problem.message
    assert names(config) == ["alpha", "beta"]
    alpha = config.model("alpha")
    assert alpha is not None and alpha.vram_mib == 1000.0  # the first one


def test_missing_model_file(tmp_path: Path) -> None:
    content = GOOD.replace('backend = "simulated"\nidle_timeout_s', (
        'backend = "llama-server"\npath = "missing.gguf"\nidle_timeout_s'))
    config, problems = parse(content, tmp_path)
    assert len(problems) == 1
    problem = problems[0]
    line = line_of(content, "missing.gguf")
    assert (problem.line, problem.entry, problem.field) == (line, "beta", "path")
    assert problem.message == f"model file not found: {tmp_path / 'missing.gguf'}"
    assert names(config) == ["alpha", "gamma"]


def test_model_path_that_is_a_folder(tmp_path: Path) -> None:
    content = '[[models]]\nname = "m"\nbackend = "llama-server"\npath = "."\n'
    config, problems = parse(content, tmp_path)
    assert [(p.line, p.field) for p in problems] == [(4, "path")]
    assert problems[0].message.startswith("model path is not a file:")
    assert config.models == ()


def test_real_backend_needs_a_path() -> None:
    content = GOOD.replace('"beta"\nbackend = "simulated"', '"beta"\nbackend = "llama-cpp"')
    config, problem = only_problem(content)
    line = line_of(content, "[[models]]", 1)
    assert (problem.line, problem.entry, problem.field) == (line, "beta", "path")
    assert problem.message == "missing required key 'path'"
    assert names(config) == ["alpha", "gamma"]


def test_relative_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "tiny.gguf"
    model.write_bytes(b"GGUF")
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        '[[models]]\nname = "tiny"\nbackend = "llama-cpp"\npath = "models/tiny.gguf"\n',
        encoding="utf-8")
    config, problems = load_config(config_file)
    assert problems == []
    tiny = config.model("tiny")
    assert tiny is not None and tiny.path == model
    # the same text resolved against another folder does not find the file
    _, problems = parse(config_file.read_text(), tmp_path / "models")
    assert [p.field for p in problems] == ["path"]


def test_absolute_path_is_kept(tmp_path: Path) -> None:
    model = tmp_path / "abs.gguf"
    model.write_bytes(b"GGUF")
    content = f'[[models]]\nname = "a"\nbackend = "llama-server"\npath = "{model}"\n'
    config, problems = parse(content, tmp_path / "elsewhere")
    assert problems == []
    assert config.models[0].path == model


@pytest.mark.parametrize("kind", ["vram", "ram", "cpu"])
def test_clear_not_below_enter_falls_back_to_defaults(kind: str) -> None:
    content = f"[pressure]\n{kind}_enter_pct = 70\n{kind}_clear_pct = 75\nalert_debounce_s = 9\n"
    config, problem = only_problem(GOOD + content)
    assert (problem.line, problem.entry, problem.field) == (
        line_of(GOOD + content, f"{kind}_clear_pct"), None, f"{kind}_clear_pct")
    assert f"'{kind}_clear_pct' must be below '{kind}_enter_pct' (70), got 75" in problem.message
    assert "using the default" in problem.message
    assert getattr(config.pressure, kind) == getattr(PressureConfig(), kind)
    assert config.pressure.alert_debounce_s == 9.0  # the rest still applies
    assert names(config) == ["alpha", "beta", "gamma"]


def test_disk_clear_must_be_above_enter() -> None:
    content = "[pressure]\ndisk_free_enter_gib = 20\n"
    config, problem = only_problem(content)
    assert (problem.line, problem.field) == (2, "disk_free_enter_gib")
    assert "must be below 'disk_free_clear_gib' (10), got 20" in problem.message
    assert config.pressure.disk == DiskThreshold()


def test_bad_global_setting_falls_back_to_its_default() -> None:
    content = "sample_interval_s = 20\n[restart]\nbackoff_cap_s = 5\nmax_consecutive = 0\n"
    config, problems = parse(content + GOOD.replace("sample_interval_s = 2\n", ""))
    assert [(p.line, p.entry, p.field) for p in problems] == [
        (1, None, "sample_interval_s"), (4, None, "max_consecutive")]
    assert str(problems[0]) == ("config.toml:1: 'sample_interval_s' must be a number from "
                                "0.25 to 10, got 20; using the default sample_interval_s = 1")
    assert config.sample_interval_s == 1.0
    assert config.restart == RestartConfig(backoff_cap_s=5.0)
    assert names(config) == ["alpha", "beta", "gamma"]


def test_unknown_keys_in_tables_and_at_top_level() -> None:
    content = "colour = 1\n[pressure]\nvram_pct = 3\n[gui]\nx = 1\n" + GOOD
    config, problems = parse(content)
    assert [(p.line, p.field) for p in problems] == [(1, "colour"), (3, "vram_pct"), (4, "gui")]
    assert problems[1].message.startswith("[pressure]: unknown key 'vram_pct'; allowed keys:")
    assert names(config) == ["alpha", "beta", "gamma"]


def test_wrongly_shaped_tables() -> None:
    config, problems = parse('pressure = 3\nmodels = {name = "x"}\n')
    assert [(p.line, p.field) for p in problems] == [(1, None), (2, "models")]
    assert config.pressure == PressureConfig() and config.models == ()
    config, problems = parse('models = [3, {name = "a", backend = "simulated"}]\n')
    assert [(p.line, p.entry) for p in problems] == [(1, "models[1]")]
    assert names(config) == ["a"]


def test_problems_are_in_file_order() -> None:
    content = GOOD.replace("idle_timeout_s = 30", "idle_timeout_s = -1") + (
        "[pressure]\nram_enter_pct = 'high'\n")
    _, problems = parse("sample_interval_s = 0\n" + content.replace("sample_interval_s = 2\n", ""))
    lines = [p.line for p in problems]
    assert lines == sorted(lines) and len(lines) == 3


def test_syntax_error_gives_defaults_and_one_problem() -> None:
    content = GOOD.replace("vram_mib = 1000", "vram_mib = = 1000")
    config, problem = only_problem(content)
    line = line_of(content, "vram_mib")
    assert config == Config(source="config.toml")
    assert (problem.line, problem.entry, problem.field) == (line, None, None)
    assert problem.message.startswith("invalid TOML: ")
    assert f"(at line {line}, column" in problem.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config, problems = load_config(path)
    assert config == Config(source=str(path))
    assert [str(p) for p in problems] == [f"{path}: cannot read: No such file or directory"]
    assert problems[0].line is None


def test_unreadable_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"name = '\xff\xfe'\n")
    config, problems = load_config(path)
    assert config.models == ()
    assert len(problems) == 1 and problems[0].message.startswith("cannot read:")


def test_default_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "config_dir", lambda: tmp_path / "cfg")
    assert default_config_path() == tmp_path / "cfg" / "config.toml"


def test_unreadable_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "locked.gguf"
    model.write_bytes(b"GGUF")
    # chmod does not stop root, so the permission check itself is faked
    monkeypatch.setattr("gpuwarden.engine.lifecycle.config.os.access", lambda p, mode: False)
    content = GOOD + '[[models]]\nname = "locked"\nbackend = "llama-cpp"\npath = "locked.gguf"\n'
    config, problems = parse(content, tmp_path)
    assert [(p.line, p.entry, p.field) for p in problems] == [
        (line_of(content, "locked.gguf"), "locked", "path")]
    assert problems[0].message == f"model file is not readable: {model}"
    assert names(config) == ["alpha", "beta", "gamma"]


def test_the_documented_example_is_the_shipped_one() -> None:
    doc = (EXAMPLE.parent.parent / "config.md").read_text(encoding="utf-8")
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    documented, problems = parse(block)
    shipped, _ = load_config(EXAMPLE)
    assert problems == []
    assert [dataclasses.replace(m, line=None) for m in documented.models] == [
        dataclasses.replace(m, line=None) for m in shipped.models]
    assert (documented.pressure, documented.restart) == (shipped.pressure, shipped.restart)


def test_llama_server_binary_and_threads(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    content = (f'llama_server = "bin/llama-server"\n\n[[models]]\nname = "m"\n'
               f'backend = "llama-server"\npath = "{model}"\nthreads = 4\n')
    config, problems = parse_config(content, "config.toml", tmp_path)
    assert problems == []
    assert config.llama_server == tmp_path / "bin" / "llama-server"
    assert config.models[0].threads == 4
    _, problems = parse_config(content.replace("threads = 4", "threads = 0"), "config.toml",
                               tmp_path)
    assert [(p.line, p.field) for p in problems] == [(7, "threads")]


@pytest.mark.parametrize(("content", "field"), [
    ('llama_server = 3\n', "llama_server"),
    ('[[models]]\nname = "m"\nbackend = "simulated"\ncontext_size = 2147483648\n',
     "context_size"),
    ('[[models]]\nname = "m"\nbackend = "simulated"\nthreads = 100000\n', "threads"),
    ('[[models]]\nname = "m"\nbackend = "llama-server"\npath = "~nosuchuser/x.gguf"\n',
     "path"),
    ('[[models]]\nname = "m"\nbackend = "llama-server"\npath = "' + "x" * 5000 + '"\n',
     "path"),
])
def test_values_that_used_to_raise_are_problems(content: str, field: str) -> None:
    _, problems = parse_config(content, "config.toml")
    assert [p.field for p in problems] == [field]


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes('\ufeffsample_interval_s = 2\n'.encode())
    config, problems = load_config(path)
    assert problems == [] and config.sample_interval_s == 2.0


def test_a_backoff_start_above_its_cap_is_a_problem(tmp_path: Path) -> None:
    content = "[restart]\nbackoff_base_s = 100\nbackoff_cap_s = 1\n"
    config, problems = parse_config(content, "config.toml")
    assert [(p.line, p.field) for p in problems] == [(2, "backoff_base_s")]
    assert "at most" in problems[0].message
    assert (config.restart.backoff_base_s, config.restart.backoff_cap_s) == (1.0, 60.0)
    same, problems = parse_config("[restart]\nbackoff_base_s = 5\nbackoff_cap_s = 5\n")
    assert problems == [] and same.restart.backoff_cap_s == 5.0


# A model whose args hold a multi-line string with lines that look like a header and a
# key; only the lines outside it count (tomllib keeps no positions, so they are found).
MULTILINE = """\
[[models]]
name = "alpha"
backend = "simulated"
args = ["--system-prompt", QQQ
[[models]]
name = "fake"
gpu = 0
  [pressure]
QQQ]
gpu = GPU_A

[[models]]
name = "beta"
backend = "simulated"
gpu = GPU_B
"""


@pytest.mark.parametrize("quotes", ['"""', "'''"])
def test_lines_inside_a_multiline_string_are_not_headers_or_keys(quotes: str) -> None:
    content = MULTILINE.replace("QQQ", quotes)
    later = content.replace("GPU_A", "1").replace("GPU_B", "-1")
    config, problem = only_problem(later)
    line = line_of(later, "gpu = -1")
    assert (problem.line, problem.entry, problem.field) == (line, "beta", "gpu")
    assert str(problem).startswith(f"config.toml:{line}: model 'beta': 'gpu' must be")
    assert names(config) == ["alpha"]
    assert config.models[0].args[1] == '[[models]]\nname = "fake"\ngpu = 0\n  [pressure]\n'
    # a bad key after the string, in the same entry: its own line, not the one inside
    same = content.replace("GPU_A", "-1").replace("GPU_B", "2")
    _, problem = only_problem(same)
    assert (problem.line, problem.entry) == (line_of(same, "gpu = -1"), "alpha")
    config, problems = parse(content.replace("GPU_A", "1").replace("GPU_B", "2"))
    assert problems == []
    assert [m.line for m in config.models] == [1, line_of(content, "[[models]]", 2)]


def test_lines_inside_a_multiline_array_are_not_headers_or_keys() -> None:
    content = """\
[[models]]
name = "alpha"
backend = "simulated"
args = [
  "--a",  # a comment with a ] and a \"""
  '''
gpu = 0''', "]",
  "[[models]]",
[[1]]
]
gpu = -1
"""
    _, problems = parse(content)
    # args is not an array of strings ([[1]] is an array); both problems on their own lines
    assert [(p.line, p.field) for p in problems] == [(4, "args"), (11, "gpu")]
    content = content.replace("[[1]]\n", "").replace("gpu = -1", 'placement = "all"')
    _, problem = only_problem(content)
    assert (problem.line, problem.field) == (line_of(content, "placement"), "placement")


def test_line_numbers_count_only_toml_line_breaks() -> None:
    content = GOOD.replace("vram_mib = 1000", "vram_mib = 1000  # 1\u2028000 \x85")
    content = content.replace("idle_timeout_s = 30", "idle_timeout_s = -5")
    line = content.split("\n").index("idle_timeout_s = -5") + 1  # not str.splitlines
    _, problem = only_problem(content)
    assert problem.line == line == 11
    _, problem = only_problem(content.replace("\n", "\r\n"))
    assert problem.line == line


# -- [safety] ----------------------------------------------------------------------------

SAFETY = """\
[safety]
gpu_temp_warn_c = 78
gpu_temp_hard_c = 84
gpu_power_warn_w = 280
gpu_power_hard_w = 320
vram_pct = 95
cpu_temp_warn_c = 85
cpu_temp_hard_c = 92
cpu_pct = 90
ram_pct = 80
cooldown_margin_c = 4
cooldown_timeout_s = 120
"""


def test_safety_defaults_leave_limits_to_the_card() -> None:
    config, problems = parse(GOOD)
    assert problems == []
    assert config.safety == SafetyConfig() == Config().safety
    assert config.safety.gpu_temp_warn_c is None  # from the card, else the table
    assert (config.safety.cooldown_margin_c, config.safety.cooldown_timeout_s) == (5.0, 300.0)


def test_safety_table_is_read() -> None:
    config, problems = parse(GOOD + SAFETY)
    assert problems == []
    assert config.safety == SafetyConfig(78.0, 84.0, 280.0, 320.0, 95.0, 85.0, 92.0, 90.0, 80.0,
                                         4.0, 120.0)
    assert isinstance(config.safety.vram_pct, float)
    assert names(config) == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(("key", "value", "expects"), [
    ("gpu_temp_warn_c", "'hot'", "a number from 1 to 150, got 'hot'"),
    ("gpu_temp_hard_c", "200", "a number from 1 to 150, got 200"),
    ("gpu_power_warn_w", "0", "a positive number, got 0"),
    ("vram_pct", "true", "a number from 1 to 100, got true"),
    ("ram_pct", "101", "a number from 1 to 100, got 101"),
    ("cooldown_margin_c", "-1", "a number from 0 to 50, got -1"),
    ("cooldown_timeout_s", "[1]", "a number from 0 to 86400, got an array"),
])
def test_bad_safety_setting_falls_back_to_its_default(key: str, value: str, expects: str) -> None:
    content = GOOD + SAFETY.replace(f"\n{key} = ", f"\n{key} = {value}  # was ")
    config, problem = only_problem(content)
    assert (problem.line, problem.entry, problem.field) == (
        line_of(content, f"{key} = {value}"), None, key)
    assert f"'{key}' must be {expects}; using the default {key} = " in problem.message
    assert getattr(config.safety, key) == getattr(SafetyConfig(), key)
    assert config.safety.cpu_pct == 90.0  # the rest still applies
    assert names(config) == ["alpha", "beta", "gamma"]


def test_bad_safety_limit_says_where_its_default_comes_from() -> None:
    content = "[safety]\ngpu_temp_hard_c = 'x'\ncpu_pct = 0\n"
    _, problems = parse(content)
    assert [str(p) for p in problems] == [
        "config.toml:2: [safety]: 'gpu_temp_hard_c' must be a number from 1 to 150, got 'x'; "
        "using the default gpu_temp_hard_c = the card's slowdown, else 85",
        "config.toml:3: [safety]: 'cpu_pct' must be a number from 1 to 100, got 0; "
        "using the default cpu_pct = 95",
    ]


@pytest.mark.parametrize(("warn", "hard"), [("gpu_temp_warn_c", "gpu_temp_hard_c"),
                                            ("gpu_power_warn_w", "gpu_power_hard_w"),
                                            ("cpu_temp_warn_c", "cpu_temp_hard_c")])
@pytest.mark.parametrize("equal", [False, True])
def test_safety_warn_not_below_hard_falls_back_to_defaults(
    warn: str, hard: str, equal: bool
) -> None:
    content = GOOD + f"[safety]\n{hard} = 90\n{warn} = {90 if equal else 95}\nvram_pct = 80\n"
    config, problem = only_problem(content)
    assert (problem.line, problem.entry, problem.field) == (line_of(content, warn), None, warn)
    assert f"'{warn}' must be below '{hard}' (90), got {90 if equal else 95}" in problem.message
    assert f"using the default {warn} = " in problem.message and f", {hard} = " in problem.message
    assert (getattr(config.safety, warn), getattr(config.safety, hard)) == (None, None)
    assert config.safety.vram_pct == 80.0  # the rest still applies
    assert names(config) == ["alpha", "beta", "gamma"]


def test_only_one_of_a_safety_pair_is_not_checked_against_the_card() -> None:
    config, problems = parse("[safety]\ngpu_temp_warn_c = 95\n")
    assert problems == []  # the card's hard level is not known here: limits.py keeps order
    assert config.safety.gpu_temp_warn_c == 95.0


def test_safety_unknown_key_and_wrong_shape() -> None:
    content = "[safety]\ngpu_temp_c = 80\n"
    config, problem = only_problem(content)
    assert (problem.line, problem.field) == (2, "gpu_temp_c")
    assert problem.message.startswith("[safety]: unknown key 'gpu_temp_c'; allowed keys:")
    assert config.safety == SafetyConfig()
    config, problem = only_problem("safety = 3\n")
    assert (problem.line, problem.field) == (1, None)
    assert problem.message.endswith("; using the defaults")
    assert config.safety == SafetyConfig()


def test_safety_problems_are_in_file_order_with_the_rest() -> None:
    content = ("sample_interval_s = 0\n[safety]\nram_pct = 'x'\n"
               "[pressure]\nram_enter_pct = 'high'\n")
    _, problems = parse(content)
    assert [(p.line, p.field) for p in problems] == [
        (1, "sample_interval_s"), (3, "ram_pct"), (5, "ram_enter_pct")]
