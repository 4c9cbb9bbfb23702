from pathlib import Path

import psutil

from gpuwarden.engine.telemetry.host import PsutilHostProbe, read_cpu_temperature, read_disk


def test_host_readings_are_plausible(tmp_path: Path):
    probe = PsutilHostProbe([tmp_path])
    h = probe.sample(0.0)
    assert h.ram_total_mib and h.ram_total_mib > 100
    assert 0 < (h.ram_used_mib or 0) <= h.ram_total_mib
    assert h.cpu_pct is not None and 0.0 <= h.cpu_pct <= 100.0
    assert h.per_core_pct is None
    assert len(h.disks) == 1 and h.disks[0].path == str(tmp_path)
    assert 0 < (h.disks[0].free_gib or 0) <= (h.disks[0].total_gib or 0)


def test_per_core_reads_every_core():
    h = PsutilHostProbe(per_core=True).sample(0.0)
    assert h.per_core_pct is not None and len(h.per_core_pct) == psutil.cpu_count()


def test_a_folder_that_does_not_exist_yet_reports_its_file_system(tmp_path: Path):
    disk = read_disk(tmp_path / "not" / "yet" / "made")
    assert disk.free_gib is not None and disk.free_gib > 0


def test_slow_fields_are_refreshed_only_every_few_seconds(tmp_path: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "gpuwarden.engine.telemetry.host.read_cpu_temperature", lambda: calls.append(1) or 55.0
    )
    probe = PsutilHostProbe([tmp_path], slow_every_s=5.0)
    for now in (0.0, 1.0, 4.9, 5.0, 6.0):
        h = probe.sample(now)
    assert len(calls) == 2 and h.cpu_temp_c == 55.0


def test_cpu_temperature_is_none_or_a_sane_number():
    t = read_cpu_temperature()
    assert t is None or -20 < t < 130
