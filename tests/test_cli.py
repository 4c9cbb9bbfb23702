"""The command line: status output and clear refusals of bad input (no tracebacks)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuwarden.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_with_two_simulated_gpus(capsys):
    code, out, _ = run_cli(capsys, "status", "--json", "--simulate", "2")
    assert code == 0
    data = json.loads(out)
    assert data["gpu_source"] == "simulated"
    assert [g["index"] for g in data["gpus"]] == [0, 1]
    assert data["gpus"][0]["memory_total_mib"] > 0
    assert data["host"]["ram_total_mib"] > 0


def _nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


needs_no_driver = pytest.mark.skipif(_nvml_works(), reason="this machine has an NVIDIA driver")


@needs_no_driver
def test_status_table_without_a_driver_says_so_and_offers_simulate(capsys, monkeypatch):
    code, out, _ = run_cli(capsys, "status")
    assert code == 0
    assert "--simulate" in out and "Host" in out


def test_status_table_with_simulated_gpu_shows_readings(capsys):
    code, out, _ = run_cli(capsys, "--simulate", "status")
    assert code == 0
    assert "Simulated" in out and "GiB" in out and "°C" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["status", "--simulate", "0"], "between 1 and 8"),
        (["status", "--simulate", "-2"], "between 1 and 8"),
        (["--interval", "-1"], "between 0.25 and 10"),
        (["--interval", "abc"], "--interval"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["status", "--simulate", "nope.toml"], "neither a number of GPUs"),
    ],
)
def test_bad_options_are_refused_with_a_message_and_exit_2(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_malformed_scenario_names_the_file_and_line(capsys, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[step]]\nat = 1\naction = "explode"\n')
    code, _, err = run_cli(capsys, "status", "--simulate", str(bad))
    assert code == 2
    assert "bad.toml:3" in err and "explode" in err and "Traceback" not in err


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    env.update(extra)
    return env


@needs_no_driver
def test_without_a_display_the_app_explains_and_prints_a_snapshot():
    proc = subprocess.run(
        [sys.executable, "-m", "gpuwarden"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "no graphical display" in proc.stderr
    assert "--simulate" in proc.stdout and "Host" in proc.stdout


def test_the_window_starts_and_quits_cleanly_with_a_simulated_gpu():
    proc = subprocess.run(
        [sys.executable, "-m", "gpuwarden", "--simulate", "2", "--quit-after", "1.5"],
        env=_env(QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [
    ["--history", "nan", "status"], ["--history", "inf", "status"],
    ["--history", "1e9", "status"], ["--quit-after", "nan"],
    ["headless", "--duration", "nan"], ["status", "--simulate", "x" * 5000],
])
def test_unreasonable_numbers_and_names_are_refused_cleanly(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err


def test_a_scenario_profile_that_contradicts_the_defaults_is_a_scenario_error(capsys, tmp_path):
    bad = tmp_path / "idle.toml"
    bad.write_text("[[simulation.gpu]]\nidle_power_w = 400\n")
    code, _, err = run_cli(capsys, "status", "--simulate", str(bad))
    assert code == 2 and "idle.toml" in err and "idle_power_w" in err


def test_doctor_runs_from_the_command_line_and_prints_json(tmp_path):
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.run([sys.executable, "-m", "gpuwarden", "doctor", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert Path(report["report_file"]).is_file()
    missing = subprocess.run([sys.executable, "-m", "gpuwarden", "doctor", "--config",
                              str(tmp_path / "nope.toml")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "nope.toml" in missing.stderr
    assert "Traceback" not in missing.stderr
