"""The scenario parser: the shipped example parses, and every mistake in a file is
reported as one line naming the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuwarden.engine.telemetry.scenario import (
    Scenario,
    ScenarioError,
    Step,
    StepCursor,
    integer,
    known_actions,
    load_scenario,
    parse_scenario,
    register_action,
    text,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "thermal-and-vram.toml"

GOOD = """\
[simulation]
gpus = 2
seed = 7

[[step]]
at = 10
action = "vram_grab"
owner = "blender"
mib = 6000

[[step]]
at = 3
action = "load"
gpu = 1
util_pct = 50
"""


def parse(content: str) -> Scenario:
    return parse_scenario(content, "scenario.toml")


def error_of(content: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse(content)
    return info.value


def line_of(content: str, needle: str) -> int:
    """1-based number of the first line containing ``needle``."""
    return next(n for n, line in enumerate(content.splitlines(), 1) if needle in line)


def test_shipped_example_parses() -> None:
    scenario = load_scenario(EXAMPLE)
    assert scenario.gpus == 2
    assert scenario.seed == 7
    assert scenario.profiles[0]["name"] == "Simulated RTX 4090"
    assert scenario.profiles[0]["power_limit_w"] == 450
    ats = [s.at for s in scenario.steps]
    assert ats == sorted(ats)
    assert {s.action for s in scenario.steps} >= {"vram_grab", "gpu_lost", "gpu_back"}
    assert scenario.source.endswith("thermal-and-vram.toml")


def test_steps_sorted_stably_with_defaults_filled_in() -> None:
    content = GOOD + '\n[[step]]\nat = 3\naction = "gpu_lost"\ngpu = 1\n'
    scenario = parse(content)
    assert [(s.at, s.action) for s in scenario.steps] == [
        (3.0, "load"),
        (3.0, "gpu_lost"),
        (10.0, "vram_grab"),
    ]
    grab = scenario.steps[2]
    assert grab.gpu == 0
    assert dict(grab.args) == {"owner": "blender", "mib": 6000}
    assert grab.line == line_of(content, "[[step]]")
    assert "owner=blender" in grab.describe()


def test_simulation_section_is_optional() -> None:
    scenario = parse('[[step]]\nat = 0\naction = "vram_grab"\nmib = 10\n')
    assert (scenario.gpus, scenario.seed, scenario.profiles) == (1, 0, ())
    assert scenario.steps[0].args["owner"] == "external"
    assert parse("") == Scenario(source="scenario.toml")


def test_gpus_defaults_to_the_number_of_profiles() -> None:
    scenario = parse('[[simulation.gpu]]\nname = "a"\n[[simulation.gpu]]\nname = "b"\n')
    assert scenario.gpus == 2
    assert [p["name"] for p in scenario.profiles] == ["a", "b"]


def test_toml_syntax_error_names_line_and_column() -> None:
    content = GOOD.replace("seed = 7", "seed = = 7")
    err = error_of(content)
    assert str(err).startswith(f"scenario.toml:{line_of(content, 'seed')}: invalid TOML")
    assert f"(at line {line_of(content, 'seed')}, column" in str(err)
    assert err.line == 3


def test_unknown_action_lists_the_known_ones() -> None:
    content = GOOD.replace('"load"', '"explode"')
    err = error_of(content)
    line = line_of(content, "explode")
    assert str(err).startswith(f"scenario.toml:{line}: step 2: unknown action 'explode'")
    assert "known actions: " in str(err)
    assert all(a in str(err) for a in ("vram_grab", "gpu_lost", "power_spike"))
    assert (err.line, err.field) == (line, "action")


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    content = GOOD.replace("util_pct = 50", "util = 50")
    err = error_of(content)
    line = line_of(content, "util = 50")
    assert str(err) == (
        f"scenario.toml:{line}: step 2 (load): unknown key 'util'; "
        "allowed keys: action, at, gpu, util_pct"
    )
    assert err.field == "util"


def test_unknown_key_in_simulation_and_profile() -> None:
    err = error_of("[simulation]\ngpus = 1\ncolour = 'red'\n")
    assert str(err).startswith("scenario.toml:3: [simulation]: unknown key 'colour'")
    err = error_of("[simulation]\ngpus = 1\n[[simulation.gpu]]\nname = 'x'\nvolts = 3\n")
    assert str(err).startswith("scenario.toml:5: [[simulation.gpu]] 1: unknown key 'volts'")
    assert "memory_total_mib" in str(err)
    err = error_of("title = 'x'\n")
    assert str(err).startswith("scenario.toml:1: the file: unknown key 'title'")


def test_wrong_type_names_the_field_and_value() -> None:
    content = GOOD.replace("mib = 6000", "mib = 'lots'")
    err = error_of(content)
    line = line_of(content, "lots")
    assert str(err) == (
        f"scenario.toml:{line}: step 1 (vram_grab): 'mib' must be a positive number, got 'lots'"
    )
    assert (err.path, err.line, err.field) == ("scenario.toml", line, "mib")


@pytest.mark.parametrize(
    ("old", "new", "field", "expect"),
    [
        ("mib = 6000", "mib = 0", "mib", "must be a positive number, got 0"),
        ("mib = 6000", "mib = true", "mib", "must be a positive number, got true"),
        ("util_pct = 50", "util_pct = 101", "util_pct", "must be a number from 0 to 100"),
        ("gpus = 2", "gpus = 9", "gpus", "must be an integer from 1 to 8, got 9"),
        ("seed = 7", "seed = 1.5", "seed", "must be an integer, got 1.5"),
        ('owner = "blender"', "owner = 5", "owner", "must be a non-empty string, got 5"),
        ("at = 10", "at = nan", "at", "must be a number >= 0, got nan"),
    ],
)
def test_bad_values(old: str, new: str, field: str, expect: str) -> None:
    content = GOOD.replace(old, new)
    err = error_of(content)
    line = line_of(content, new)
    assert str(err).startswith(f"scenario.toml:{line}: ")
    assert f"'{field}' {expect}" in str(err)
    assert err.field == field


def test_negative_at() -> None:
    content = GOOD.replace("at = 3", "at = -3")
    err = error_of(content)
    line = line_of(content, "at = -3")
    assert str(err) == f"scenario.toml:{line}: step 2 (load): 'at' must be a number >= 0, got -3"


def test_gpu_out_of_range() -> None:
    content = GOOD.replace("gpu = 1", "gpu = 2")
    err = error_of(content)
    line = line_of(content, "gpu = 2")
    assert str(err) == (
        f"scenario.toml:{line}: step 2 (load): 'gpu' must be < 2 "
        "(the scenario simulates 2 GPUs), got 2"
    )
    err = error_of(GOOD.replace("gpu = 1", "gpu = -1"))
    assert "'gpu' must be an integer from 0 to 1, got -1" in str(err)


def test_missing_required_field_points_at_the_step_header() -> None:
    content = GOOD.replace("mib = 6000\n", "")
    err = error_of(content)
    line = line_of(content, "[[step]]")
    assert str(err) == f"scenario.toml:{line}: step 1 (vram_grab): missing required key 'mib'"
    assert err.field == "mib"
    err = error_of('[[step]]\naction = "gpu_lost"\n')
    assert str(err) == "scenario.toml:1: step 1 (gpu_lost): missing required key 'at'"
    err = error_of("[[step]]\nat = 1\n")
    assert str(err) == "scenario.toml:1: step 1: missing required key 'action'"


def test_nth_step_header_is_found() -> None:
    steps = "".join(f'[[step]]\nat = {i}\naction = "gpu_back"\n\n' for i in range(5))
    content = steps + '[[step]]\nat = 9\naction = "power_spike"\nwatts = 600\n'
    err = error_of(content)
    assert err.line == line_of(content, "power_spike") - 2
    assert "step 6 (power_spike): missing required key 'duration_s'" in str(err)


def test_too_many_profiles_and_bad_profile_values() -> None:
    content = "[simulation]\ngpus = 1\n[[simulation.gpu]]\n[[simulation.gpu]]\nname = 'x'\n"
    err = error_of(content)
    assert err.line == 4
    assert "only 1 GPU(s) are simulated" in str(err)
    content = "[[simulation.gpu]]\npower_limit_w = 100\nidle_power_w = 150\n"
    err = error_of(content)
    assert str(err).startswith(
        "scenario.toml:3: [[simulation.gpu]] 1: 'idle_power_w' must be below"
    )


def test_step_must_be_an_array_of_tables() -> None:
    err = error_of("step = 3\n")
    assert str(err).startswith("scenario.toml:1: 'step' must be an array of tables")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"
    assert info.value.line is None


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.replace("mib = 6000", "mib = -1"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"mine\.toml:9: step 1 \(vram_grab\): 'mib'"):
        load_scenario(path)


def test_registered_actions_parse_and_a_cursor_hands_them_out_once() -> None:
    register_action("test_crash", {"model": text(), "exit_code": integer(default=1)})
    register_action("test_crash", {"model": text(), "exit_code": integer(default=1)})  # same: ok
    with pytest.raises(ValueError, match="already registered"):
        register_action("test_crash", {"model": text()})
    with pytest.raises(ValueError, match="common step keys"):
        register_action("test_bad", {"at": text()})
    assert "test_crash" in known_actions()
    scenario = parse(GOOD + '[[step]]\nat = 5\naction = "test_crash"\nmodel = "llama"\n')
    cursor = StepCursor(scenario.steps, actions={"test_crash"})
    assert cursor.due(4.9) == ()
    (crash,) = cursor.due(5.0)
    assert crash.text("model") == "llama"
    assert crash.args["exit_code"] == 1
    assert cursor.due(100) == ()
    assert cursor.remaining == 0


def test_cursor_keeps_order_and_hands_out_each_step_once() -> None:
    steps = [Step(at, "gpu_back", 0, {}, None) for at in (0.0, 1.0, 1.0, 2.5)]
    cursor = StepCursor(steps)
    assert cursor.due(0.0) == (steps[0],)
    assert cursor.due(1.0) == (steps[1], steps[2])
    assert cursor.due(1.0) == ()
    assert cursor.due(10.0) == (steps[3],)
