"""`gpuwarden doctor` (gpuwarden/doctor.py), run in-process with private XDG folders
(tests/conftest.py) and a faked or real capability inspection."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpuwarden import doctor
from gpuwarden.engine.runtime import TelemetryOptions, take_snapshot
from gpuwarden.engine.safety.capabilities import Capabilities, GpuCapability
from gpuwarden.engine.telemetry.snapshot import HostSample, Snapshot

GIB = 1024**3


def fake_caps(**kw: object) -> Capabilities:
    base: dict[str, object] = dict(
        os_name="Linux", os_release="6.8.0", os_description="Ubuntu 24.04 (kernel 6.8.0)",
        wsl2=False, driver_version="550.54.15", cuda_driver_version="12.4",
        gpus=(GpuCapability(0, "NVIDIA GeForce RTX 3090", "GPU-a", (8, 6), 24 * GIB),
              GpuCapability(1, "Tesla T4", "GPU-b", None, None)),
        gpu_source="nvml", cpu_model="Test CPU", cpu_cores=8, cpu_threads=16,
        ram_total_bytes=64 * GIB, torch_note="torch is not installed (optional).")
    base.update(kw)
    return Capabilities(**base)  # type: ignore[arg-type]


NO_DRIVER = "No NVIDIA GPU driver found (test)."


@pytest.fixture(autouse=True)
def no_gpu_unless_simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's GPUs never leak into a report: no GPU, unless --simulate asks for
    simulated ones (read for real)."""
    def snapshot(options: TelemetryOptions) -> Snapshot:
        if options.simulate is not None:
            return take_snapshot(options)
        return Snapshot(ts=0.0, seq=0, gpu_source="none", gpus=(), host=HostSample(),
                        gpu_note=NO_DRIVER)

    monkeypatch.setattr(doctor, "take_snapshot", snapshot)


def run(capsys: pytest.CaptureFixture[str], argv: list[str],
        caps: Capabilities | None = None) -> tuple[int, str, str]:
    c = caps or fake_caps()
    rc = doctor.main(argv, inspect=lambda: c)
    out, err = capsys.readouterr()
    return rc, out, err


def data_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "gpuwarden"


def test_text_report_is_printed_saved_and_its_path_printed_last(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, [])
    assert rc == 0 and err == ""
    for heading in ("System", "NVIDIA", "PyTorch", "dtype policy", "llama-server", "Config",
                    "Files", "Limits"):
        assert f"\n{heading}" in out
    assert "GPU 0:   NVIDIA GeForce RTX 3090: compute capability 8.6, 24.0 GiB, bfloat16 yes" \
        in out
    assert "GPU 1:   Tesla T4: compute capability n/a, n/a, bfloat16 n/a" in out
    assert "driver:  550.54.15 (supports CUDA 12.4)" in out
    # bfloat16 on this machine: the T4's capability is unknown -> float16, with the reason
    assert "bfloat16 -> float16  bfloat16 became float16: whether the GPU supports" in out
    last = out.rstrip("\n").splitlines()[-1]
    assert last.startswith("report saved to ")
    saved = Path(last.removeprefix("report saved to "))
    assert saved.parent == data_dir()
    assert saved.name.startswith("doctor-") and saved.suffix == ".txt"
    assert len(saved.stem) == len("doctor-YYYYmmdd-HHMMSS")
    assert saved.read_text() + "\nreport saved to " + str(saved) + "\n" == out
    assert list(data_dir().glob(".*.tmp")) == []  # atomic write left nothing behind


def test_json_parses_and_names_the_saved_report(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, ["--json"])
    assert rc == 0
    report = json.loads(out)
    assert report["capabilities"]["gpus"][0]["compute_capability"] == "8.6"
    assert report["capabilities"]["bf16_supported"] is None
    policy = {d["requested"]: d for d in report["dtype_policy"]}
    assert policy["bfloat16"]["dtype"] == "float16" and policy["bfloat16"]["changed"]
    assert policy["float32"]["dtype"] == "float32"
    assert report["llama_server"]["found"] in (True, False)
    assert report["files"]["data_dir"]["path"] == str(data_dir())
    assert report["files"]["journal"]["path"] == str(data_dir() / "events.jsonl")
    assert report["limits"]["gpus"] == []
    assert report["limits"]["host"]["ram_pct"] == {"value": 85.0, "source": "default",
                                                   "note": None}
    saved = Path(report["report_file"])
    assert saved.is_file() and "dtype policy" in saved.read_text()  # the text report
    assert err.strip() == f"report saved to {saved}"


def test_save_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.txt"
    rc, out, _ = run(capsys, ["--save", str(target)])
    assert rc == 0 and target.is_file()
    assert out.rstrip().endswith(f"report saved to {target}")
    assert not data_dir().exists() or not list(data_dir().glob("doctor-*"))


def test_save_path_that_cannot_be_written(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    rc, out, err = run(capsys, ["--save", str(blocker / "report.txt")])
    assert rc == 1
    assert "System" in out  # the report is still printed
    assert "could not save the report" in err


def test_missing_config_file_is_exit_2(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    rc, out, err = run(capsys, ["--config", str(missing)])
    assert rc == 2 and out == ""
    assert err == f"gpuwarden doctor: error: {missing}: no such config file\n"


def test_config_problems_are_listed(capsys: pytest.CaptureFixture[str],
                                    tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[models]]\nname = "ok"\nbackend = "simulated"\nvram_mib = 100\n\n'
                   '[[models]]\nname = "bad"\nbackend = "nonsense"\n')
    rc, out, _ = run(capsys, ["--config", str(cfg)])
    assert rc == 0
    assert f"file:    {cfg}\n" in out
    assert "models:  1" in out
    assert f"{cfg}:" in out and "nonsense" in out  # file:line: the problem
    assert "the entries above were skipped" in out


def test_default_config_not_written_yet(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, [])
    assert rc == 0
    assert "(does not exist)" in out and "no config file at" in out


def test_llama_server_missing_says_how_to_get_it(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc, out, _ = run(capsys, [])
    assert rc == 0
    assert "llama-server\n  not found." in out
    assert "To get it, run: gpuwarden setup llama-server" in out


def test_llama_server_found_on_path(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "llama-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    rc, out, _ = run(capsys, ["--json"])
    assert rc == 0
    assert json.loads(out)["llama_server"] == {"found": True, "path": str(exe),
                                               "message": None, "hint": None}


def test_files_writable_and_not(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rc, out, _ = run(capsys, ["--json", "--save", str(tmp_path / "r.txt")])
    assert rc == 0
    files = json.loads(out)["files"]
    assert files["data_dir"]["writable"] and files["journal"]["writable"]
    assert "will be" in files["data_dir"]["note"]  # not created yet

    blocked = tmp_path / "xdg-data-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked))
    rc, out, _ = run(capsys, ["--save", str(tmp_path / "r2.txt")])
    assert rc == 0
    assert f"data folder: {blocked / 'gpuwarden'}: NOT writable" in out
    assert "journal:" in out and "NOT writable" in out.split("journal:")[1]


def test_existing_data_folder_is_probed_for_real(capsys: pytest.CaptureFixture[str]) -> None:
    data_dir().mkdir(parents=True)
    (data_dir() / "events.jsonl").write_text("")
    rc, out, _ = run(capsys, ["--json"])
    assert rc == 0
    files = json.loads(out)["files"]
    assert files["data_dir"] == {"path": str(data_dir()), "exists": True, "writable": True,
                                 "note": None}
    assert files["journal"]["writable"] and files["journal"]["exists"]
    assert not list(data_dir().glob(".gpuwarden-doctor-*"))  # the probe file is gone


def test_no_gpu_machine(capsys: pytest.CaptureFixture[str]) -> None:
    caps = fake_caps(gpus=(), gpu_source="none", driver_version=None, cuda_driver_version=None,
                     gpu_note="No NVIDIA driver found: the NVML library is not installed.")
    rc, out, _ = run(capsys, [], caps)
    assert rc == 0
    assert "driver:  n/a (supports CUDA n/a)" in out
    assert "No NVIDIA driver found" in out
    assert "bfloat16 -> float32" in out


def test_limits_heading_only_when_the_section_has_lines() -> None:
    assert doctor.limits_section(None) == []
    assert doctor.limits_section({}) == []


def test_limits_without_a_gpu_are_the_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, [])
    assert rc == 0
    section = out[out.index("\nLimits"):]
    assert "\n  no GPU found: only the host's limits apply\n" in section
    assert NO_DRIVER in section
    assert "GPU 0 (" not in section
    for line in ("CPU temperature warn: 90 C       (default)",
                 "CPU temperature hard: 95 C       (default)",
                 "CPU use:              95 %       (default)",
                 "RAM:                  85 %       (default)"):
        assert f"\n    {line}\n" in section
    assert "cooldown: 5 C under warn before loads go on; a load waits up to 300 s" in section
    rc, out, _ = run(capsys, ["--json"])
    limits = json.loads(out)["limits"]
    assert limits["gpus"] == [] and limits["gpu_source"] == "none"
    assert limits["gpu_note"].startswith("no GPU found") and limits["gpu_reason"] == NO_DRIVER
    assert {v["source"] for v in limits["host"].values()} == {"default"}


def test_limits_of_simulated_gpus_come_from_the_card(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, ["--simulate", "2", "--json"])
    assert rc == 0
    limits = json.loads(out)["limits"]
    assert limits["gpu_source"] == "simulated" and limits["gpu_note"] is None
    assert [g["gpu"] for g in limits["gpus"]] == [0, 1]
    g = limits["gpus"][0]
    assert g["temp_hard_c"] == {"value": 88.0, "source": "card", "note": "card slowdown"}
    assert g["temp_warn_c"]["value"] == 83.0 and g["temp_warn_c"]["source"] == "card"
    assert g["power_warn_w"]["value"] == pytest.approx(332.5)
    assert g["power_hard_w"]["value"] == pytest.approx(367.5)
    assert g["power_hard_w"]["source"] == "card" and "350 W" in g["power_hard_w"]["note"]
    assert g["vram_pct"] == {"value": 90.0, "source": "default", "note": None}
    rc, out, _ = run(capsys, ["--simulate"])
    section = out[out.index("\nLimits"):]
    assert "\n  GPU 0 (Simulated GPU 0)\n" in section and "GPU 1" not in section
    assert "\n    temperature hard:     88 C       (card slowdown)\n" in section
    assert "no GPU found" not in section


def test_limits_from_the_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[safety]\ngpu_temp_hard_c = 80\nvram_pct = 75\ncpu_pct = 70\n"
                   "ram_pct = 60\ncooldown_margin_c = 3\n")
    rc, out, _ = run(capsys, ["--config", str(cfg), "--simulate", "--json"])
    assert rc == 0
    report = json.loads(out)
    assert report["config"]["notes"] == []
    limits = report["limits"]
    g = limits["gpus"][0]
    assert g["temp_hard_c"] == {"value": 80.0, "source": "config", "note": None}
    # The card's warn (83 C) would be above the configured hard: derived from it instead.
    assert g["temp_warn_c"] == {"value": 75.0, "source": "config",
                                "note": "derived from gpu_temp_hard_c"}
    assert g["power_hard_w"]["source"] == "card"
    assert g["vram_pct"]["source"] == "config" and g["vram_pct"]["value"] == 75.0
    host = limits["host"]
    assert (host["cpu_pct"]["value"], host["cpu_pct"]["source"]) == (70.0, "config")
    assert (host["ram_pct"]["value"], host["ram_pct"]["source"]) == (60.0, "config")
    assert host["cpu_temp_hard_c"]["source"] == "default"
    assert limits["cooldown_margin_c"] == 3.0
    rc, out, _ = run(capsys, ["--config", str(cfg), "--simulate"])
    assert "temperature warn:     75 C       (config: derived from gpu_temp_hard_c)" in out
    assert "RAM:                  60 %       (config)" in out


def test_bad_simulate_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run(capsys, ["--simulate", "99"])
    assert exc.value.code == 2
    assert "between 1 and 8" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[[step]]\nat = 1\ngpu = 0\nnonsense = true\n")
    rc, out, err = run(capsys, ["--simulate", str(bad)])
    assert rc == 2 and out == ""
    assert err.startswith("gpuwarden doctor: error: ") and str(bad) in err
    assert len(err.strip().splitlines()) == 1


def test_gpus_that_cannot_be_read_still_give_a_report(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(options: TelemetryOptions) -> Snapshot:
        raise RuntimeError("NVML fell over")

    monkeypatch.setattr(doctor, "take_snapshot", broken)
    rc, out, _ = run(capsys, ["--json"])
    assert rc == 0
    limits = json.loads(out)["limits"]
    assert limits["gpus"] == [] and limits["gpu_source"] is None
    assert "NVML fell over" in limits["gpu_reason"]
    assert limits["host"]["cpu_pct"]["value"] == 95.0


def test_two_reports_in_one_second_are_both_kept() -> None:
    first = doctor.default_report_path(now=1_700_000_000.0)
    first.parent.mkdir(parents=True)
    first.write_text("x")
    second = doctor.default_report_path(now=1_700_000_000.0)
    assert second != first and second.name.endswith("-2.txt")


def test_real_inspection_never_raises(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as it is (real NVML, real torch if installed)."""
    monkeypatch.setattr(doctor, "take_snapshot", take_snapshot)
    rc = doctor.main(["--json"])
    out, _ = capsys.readouterr()
    assert rc == 0
    report = json.loads(out)
    caps = report["capabilities"]
    assert caps["gpus"] or caps["gpu_note"]
    limits = report["limits"]
    assert limits["gpus"] or limits["gpu_note"]
    assert limits["host"]["ram_pct"]["value"] > 0
    assert Path(report["report_file"]).is_file()
