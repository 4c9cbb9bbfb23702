"""The pre-flight for one model file (engine/safety/estimate.py), as `gpuwarden estimate` and
the Add model dialog use it: the verdict's one-line headline, free VRAM from a snapshot,
and the notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.safety.estimate import estimate_file, free_vram_of, headline
from gpuwarden.engine.safety.gguf_plan import ModelRefused
from gpuwarden.engine.safety.preflight import (
    GpuChoice,
    Requested,
    plan_from_config_vram,
    preflight,
    refused,
)
from gpuwarden.engine.telemetry.snapshot import GpuSample, HostSample, Snapshot

PLAN = plan_from_config_vram(8192.0, 32, 4096)  # 256 MiB a layer


def _verdict(free: dict[int, float | None], requested: Requested = "auto",
             gpu: GpuChoice = "auto") -> str:
    return headline(preflight(PLAN, free, requested=requested, gpu=gpu, overhead_mib=512.0,
                              margin_mib=512.0))


def test_headlines() -> None:
    assert _verdict({0: 22_000.0}) == "Fits on GPU 0 (8.5 GiB of 21.5 GiB free)"
    assert _verdict({0: 1024 + 18 * 256.0}) == \
        "Fits 18 of 32 layers on GPU 0; the rest runs on the CPU"
    assert _verdict({0: 900.0}) == \
        "Does not fit on GPU 0: needs 9.0 GiB with the margin, 900 MiB free"
    assert _verdict({0: 22_000.0}, requested="gpu", gpu=3) == \
        "Does not fit on GPU 3 (there is no such GPU)"
    assert _verdict({0: None}) == "Fits on GPU 0 (its free VRAM is unknown)"
    assert _verdict({0: 22_000.0}, requested="cpu") == \
        "Runs on the CPU: no GPU memory needed (host RAM is not checked)"
    assert _verdict({}) == "No GPU found: every layer would run on the CPU"
    assert headline(refused(Path("/m/x.gguf"), "not a GGUF model file")) == \
        "Refused /m/x.gguf: not a GGUF model file"


def test_free_vram_of_a_snapshot() -> None:
    gpus = (GpuSample(0, "a", "u0", memory_free_mib=100.0),
            GpuSample(1, "b", "u1", available=False, memory_free_mib=5.0),
            GpuSample(2, "c", "u2"))
    assert free_vram_of(Snapshot(0.0, 1, "nvml", gpus, HostSample())) == {0: 100.0, 2: None}
    assert free_vram_of(None) == {}


def test_estimate_file_notes_and_refusals(tmp_path: Path) -> None:
    model = write_tiny_llama(tmp_path / "m.gguf", context_length=256)
    result = estimate_file(model, 1024, {0: 22_000.0}, overhead_mib=100.0)
    assert result.verdict.kind == "fits"
    assert result.verdict.overhead_mib == 100.0
    assert result.notes == ("note: a context of 1024 is more than the model's training "
                            "context (256); llama-server still allocates it all",)
    alone = estimate_file(model, 256, {})
    assert alone.verdict.overhead_mib == 650.0  # nothing learned: the default
    assert alone.notes == ("note: no GPU found: the model would run entirely on the CPU",)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(ModelRefused, match="not a GGUF model file"):
        estimate_file(text, 1024, {0: 22_000.0})
