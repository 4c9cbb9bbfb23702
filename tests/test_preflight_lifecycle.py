"""Every load the lifecycle plans is priced by the pre-flight: bad model files are refused
before anything starts, placement auto takes the layers that fit, and the CUDA overhead
is learned from what models really held."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.lifecycle.config import ModelConfig
from gpuwarden.engine.lifecycle.planning import Planner
from gpuwarden.engine.safety.gguf_plan import plan_from_gguf
from gpuwarden.engine.safety.overhead import DEFAULT_OVERHEAD_MIB, OverheadBook
from helpers import drive
from lifecycle_helpers import model
from test_engine_facade import engine_for, row

CROWDED = """
[simulation]
gpus = 1
[[simulation.gpu]]
memory_total_mib = 24576

[[step]]
at = 1
action = "vram_grab"
owner = "game"
mib = 20776
"""


def test_a_file_that_is_no_gguf_is_refused_before_anything_starts(tmp_path: Path):
    text = tmp_path / "notes.gguf"
    text.write_text("these are my notes, not a model\n")
    bad = ModelConfig(name="bad", backend="llama-server", path=text, autostart=True)
    engine, _, events = engine_for(bad)
    refused = [e.to_dict()["message"] for e in events if e.type == "model.refused"]
    assert len(refused) == 1 and "not a GGUF" in refused[0]
    result = engine.load("bad")
    assert not result.ok and "bad cannot be loaded" in result.message
    assert "not a GGUF" in result.message
    assert not [e for e in events if e.type == "model.loading"]
    engine.close()


def test_placement_auto_takes_the_layers_that_fit_when_nothing_can_be_swapped(
        tmp_path: Path):
    engine, clock, events = engine_for(
        model("big", vram_mib=8000.0, placement="auto", layers=32),
        tmp_path=tmp_path, scenario=CROWDED)
    drive(engine, clock, 2.0)  # 3200 MiB free now (24576 - 300 - 20776 - ...)
    free = engine.snapshot().gpus[0].memory_free_mib
    assert engine.load("big").ok
    drive(engine, clock, 1.0)
    expected = int((free - 512.0) // 250.0)  # 8000 MiB over 32 layers, a 512 MiB margin
    big = row(engine, "big")
    assert big.device == "partial" and big.gpu_layers == expected
    loading = [e.to_dict()["placement"] for e in events if e.type == "model.loading"]
    assert loading == [f"partial ({expected} layers on GPU)"]
    engine.close()


def test_the_cuda_overhead_is_learned_per_gpu_and_kept(tmp_path: Path):
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    cfg = ModelConfig(name="tiny", backend="llama-server", path=path, context_size=512)
    book = OverheadBook(tmp_path / "gpu-overhead.json", FakeClock())
    planner = Planner(book)
    buffers = plan_from_gguf(path, 512).gpu_mib(cfg.layers)
    assert planner.estimate(cfg, "gpu") == pytest.approx(buffers + DEFAULT_OVERHEAD_MIB)
    planner.learn(cfg, cfg.layers, buffers + 700.0)  # NVML saw 700 MiB more than buffers
    assert planner.estimate(cfg, "gpu") == pytest.approx(buffers + 700.0)
    assert planner.estimate(cfg, "cpu") == 0.0
    again = OverheadBook(tmp_path / "gpu-overhead.json", FakeClock())
    assert again.load() == [] and again.get(0) == (700.0, "learned on this GPU")
    assert again.get(1) == (DEFAULT_OVERHEAD_MIB, "default")
    simulated = model("sim", vram_mib=1000.0)
    assert planner.estimate(simulated, "gpu") == 1000.0  # no CUDA in a simulation


def test_the_plan_comes_from_llama_cpp_when_its_fit_tool_is_built(tmp_path: Path,
                                                                 llama_server_bin: Path):
    from gpuwarden.engine.supervisor.locate import find_fit_params

    tool = find_fit_params(llama_server_bin)
    if tool is None:
        pytest.fail("llama-fit-params is not built beside llama-server: "
                    "run `gpuwarden setup llama-server`")
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    cfg = ModelConfig(name="tiny", backend="llama-server", path=path, context_size=512)
    planned = Planner(OverheadBook(None, FakeClock()), fit_tool=lambda: tool).plan(cfg)
    metadata = plan_from_gguf(path, 512)
    assert planned.source == "llama.cpp" and metadata.source == "metadata"
    assert planned.host_mib(0) == pytest.approx(metadata.host_mib(0), abs=3.0)


TWO_GPUS_ONE_BUSY = """
[simulation]
gpus = 2
[[simulation.gpu]]
memory_total_mib = 24576
[[simulation.gpu]]
memory_total_mib = 12288

[[step]]
at = 1
action = "vram_grab"
owner = "game"
mib = 20000
"""


def test_gpu_auto_loads_where_the_model_fits_best(tmp_path: Path):
    from dataclasses import replace

    auto = replace(model("m", vram_mib=6000.0, placement="gpu"), gpu_auto=True)
    engine, clock, _ = engine_for(auto, tmp_path=tmp_path, scenario=TWO_GPUS_ONE_BUSY)
    drive(engine, clock, 2.0)  # GPU 0: ~4 GB free; GPU 1 (smaller): ~12 GB free
    result = engine.load("m")
    assert result.ok and "on GPU 1, where it fits best" in result.message
    drive(engine, clock, 1.0)
    assert (row(engine, "m").gpu, row(engine, "m").device) == (1, "gpu")
    engine.close()


def test_gpu_auto_in_the_config_file():
    from gpuwarden.engine.lifecycle.config import parse_config

    config, problems = parse_config('[[models]]\nname = "m"\nbackend = "simulated"\n'
                                    'gpu = "auto"\n')
    assert problems == [] and config.models[0].gpu_auto
    _, bad = parse_config('[[models]]\nname = "m"\nbackend = "simulated"\ngpu = "any"\n')
    assert "one of: auto, or an integer from 0 to 63" in str(bad[0])


def test_a_server_sees_only_its_own_gpu_and_none_on_the_cpu(tmp_path: Path):
    from gpuwarden.engine.lifecycle.backend import Launch
    from gpuwarden.engine.supervisor.launch import gpu_environment

    cfg = ModelConfig(name="m", backend="llama-server", path=tmp_path / "m.gguf", gpu=1)
    on_gpu = Launch(cfg, "gpu", 32, 1, gpu_uuid="GPU-1234")
    assert gpu_environment(on_gpu) == {"CUDA_VISIBLE_DEVICES": "GPU-1234",
                                       "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpu_environment(Launch(cfg, "cpu", 0, 1)) == {"CUDA_VISIBLE_DEVICES": ""}


def test_the_engine_shows_the_preflight_verdict_before_a_load(tmp_path: Path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    engine, clock, _ = engine_for(
        model("small", vram_mib=2000.0, placement="gpu"),
        model("huge", vram_mib=8000.0, placement="gpu"),
        model("flex", vram_mib=8000.0, placement="auto"),
        ModelConfig(name="bad", backend="llama-server", path=text),
        tmp_path=tmp_path, scenario=CROWDED)
    drive(engine, clock, 2.0)  # about 3.2 GB free
    assert engine.preflight("small").kind == "fits"
    huge = engine.preflight("huge")
    assert huge.kind == "does-not-fit" and huge.needed_mib == 8000.0 and huge.margin_mib == 512
    flex = engine.preflight("flex")
    assert flex.kind == "fits-partially" and 0 < flex.gpu_layers < 32
    assert engine.preflight("bad").kind == "refused"
    assert engine.preflight("nope") is None
    engine.close()


GRAB_AFTER_CRASH = """
[simulation]
gpus = 1
[[simulation.gpu]]
memory_total_mib = 24576

[[step]]
at = 5
action = "crash"
model = "flex"
exit_code = 1

[[step]]
at = 5
action = "vram_grab"
owner = "game"
mib = 20000
"""


def test_a_restart_passes_the_preflight_and_takes_the_layers_that_fit_now(tmp_path: Path):
    from gpuwarden.engine.lifecycle.config import RestartConfig

    engine, clock, events = engine_for(
        model("flex", vram_mib=8000.0, placement="auto", eviction="never"),
        tmp_path=tmp_path, scenario=GRAB_AFTER_CRASH,
        restart=RestartConfig(backoff_base_s=2.0))
    engine.load("flex")
    drive(engine, clock, 4.0)
    assert row(engine, "flex").device == "gpu"
    drive(engine, clock, 5.0)  # crashed at 5, the game took the VRAM, restarted at 7
    restarted = [e.to_dict() for e in events if e.type == "model.loading"][-1]
    assert restarted["reason"] == "restart" and restarted["placement"].startswith("partial")
    assert row(engine, "flex").device == "partial"
    engine.close()
