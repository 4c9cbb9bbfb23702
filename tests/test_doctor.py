"""`gpuwarden doctor` (gpuwarden/doctor.py), run in-process with private XDG folders
(tests/conftest.py) and a faked or real capability inspection."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpuwarden import doctor
from gpuwarden.engine.safety.capabilities import Capabilities, GpuCapability

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
                    "Files"):
        assert f"\n{heading}" in out
    assert "Limits" not in out  # the placeholder section is empty: no heading
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
    assert report["limits"] == []
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


def test_limits_heading_only_when_the_section_has_lines(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.limits_section() == []
    monkeypatch.setattr(doctor, "limits_section", lambda: ["GPU 0: 83 C slowdown"])
    rc, out, _ = run(capsys, [])
    assert rc == 0
    assert "\nLimits\n  GPU 0: 83 C slowdown\n" in out


def test_two_reports_in_one_second_are_both_kept() -> None:
    first = doctor.default_report_path(now=1_700_000_000.0)
    first.parent.mkdir(parents=True)
    first.write_text("x")
    second = doctor.default_report_path(now=1_700_000_000.0)
    assert second != first and second.name.endswith("-2.txt")


def test_real_inspection_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    """This machine as it is (real NVML, real torch if installed)."""
    rc = doctor.main(["--json"])
    out, _ = capsys.readouterr()
    assert rc == 0
    report = json.loads(out)
    caps = report["capabilities"]
    assert caps["gpus"] or caps["gpu_note"]
    assert Path(report["report_file"]).is_file()
