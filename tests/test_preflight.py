"""The pre-flight: a plan and the free VRAM per GPU -> one verdict, with its figures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpuwarden.engine.safety.memory import MemoryPlan
from gpuwarden.engine.safety.preflight import (
    DEFAULT_MARGIN_MIB,
    Verdict,
    plan_from_config_vram,
    preflight,
    refused,
)

OVERHEAD = 300.0
MARGIN = 512.0
RESERVE = OVERHEAD + MARGIN


def _plan(layers: int = 4) -> MemoryPlan:
    """100 MiB a layer, 10 MiB of KV a layer, 50 MiB of output, 20 MiB of compute."""
    return MemoryPlan(
        source="metadata",
        layer_weights_mib=(100.0,) * layers,
        output_mib=50.0,
        host_only_mib=30.0,
        kv_per_layer_mib=10.0,
        compute_gpu_mib=20.0,
        compute_host_mib=5.0,
        context_size=4096,
    )


PLAN = _plan()
FULL = PLAN.gpu_mib(4)  # 400 + 40 + 50 + 20 = 510
# -ngl N as llama.cpp counts it: the output layer first, then the last N - 1 layers
TWO = PLAN.gpu_mib(2)  # 50 + 100 + 10 + 20 = 180
THREE = PLAN.gpu_mib(3)  # 50 + 200 + 20 + 20 = 290


def _check(free: dict[int, float | None], **kw: object) -> Verdict:
    options: dict[str, object] = {"requested": "auto", "gpu": "auto",
                                  "overhead_mib": OVERHEAD, "margin_mib": MARGIN}
    options.update(kw)
    return preflight(PLAN, free, **options)  # type: ignore[arg-type]


def _line(verdict: Verdict, label: str) -> str:
    found = [line for line in verdict.lines if line.startswith(f"{label}: ")]
    assert len(found) == 1, verdict.lines
    return found[0]


def test_the_sample_plan_adds_up() -> None:
    assert (FULL, TWO, THREE) == (510.0, 180.0, 290.0)


def test_fits_with_every_layer() -> None:
    v = _check({0: FULL + RESERVE})
    assert (v.kind, v.gpu, v.gpu_layers, v.total_layers) == ("fits", 0, 4, 4)
    assert v.needed_mib == FULL + OVERHEAD
    assert v.free_mib == FULL + RESERVE
    assert (v.margin_mib, v.overhead_mib, v.source) == (MARGIN, OVERHEAD, "metadata")
    assert v.ok
    assert v.message == (
        "Fits on GPU 0: needs 810 MiB (CUDA overhead included) + 512 MiB margin, "
        "1,322 MiB free: 0.0 MiB to spare."
    )


def test_the_margin_and_overhead_count() -> None:
    assert _check({0: FULL + RESERVE - 1}).kind == "fits-partially"
    assert _check({0: FULL + RESERVE - 1}, margin_mib=MARGIN - 1).kind == "fits"
    assert _check({0: FULL + RESERVE - 1}, overhead_mib=OVERHEAD - 1).kind == "fits"


def test_fits_partially_with_the_most_layers_that_fit() -> None:
    v = _check({0: TWO + RESERVE + 1})
    assert (v.kind, v.gpu, v.gpu_layers) == ("fits-partially", 0, 2)
    assert v.ok
    assert "2 of 4 layers fit on GPU 0" in v.message
    assert "2 layers need 480 MiB" in v.message
    assert v.needed_mib == TWO + OVERHEAD
    # -ngl 2: the output layer and the last repeating layer
    assert _line(v, "weights").startswith("weights: 150 MiB (1 of 4 layers + output;")


def test_strict_gpu_does_not_fit_when_only_some_layers_would() -> None:
    v = _check({0: TWO + RESERVE + 1}, requested="gpu")
    assert (v.kind, v.gpu, v.gpu_layers) == ("does-not-fit", 0, 0)
    assert not v.ok
    assert "only 2 of 4 layers" in v.message.lower()
    assert v.needed_mib == FULL + OVERHEAD  # what the full offload would need
    assert "short" in v.message


def test_does_not_fit_when_not_one_layer_fits() -> None:
    v = _check({0: 400.0})
    assert (v.kind, v.gpu_layers) == ("does-not-fit", 0)
    assert "not even one layer" in v.message.lower()
    assert "922 MiB short" in v.message


def test_cpu_fits_with_no_layers() -> None:
    v = _check({0: 0.0}, requested="cpu")
    assert (v.kind, v.gpu, v.gpu_layers, v.needed_mib) == ("fits", None, 0, 0.0)
    assert "CPU" in v.message
    assert _check({0: 0.0}, requested=0).kind == "fits"


def test_a_number_of_layers_is_a_ceiling() -> None:
    v = _check({0: 10_000.0}, requested=2)
    assert (v.kind, v.gpu_layers, v.total_layers) == ("fits", 2, 4)
    assert _check({0: 10_000.0}, requested=99).gpu_layers == 4
    v = _check({0: PLAN.gpu_mib(1) + RESERVE}, requested=3)
    assert (v.kind, v.gpu_layers) == ("fits-partially", 1)


def test_auto_prefers_the_gpu_that_takes_every_layer() -> None:
    v = _check({0: TWO + RESERVE, 1: FULL + RESERVE})
    assert (v.kind, v.gpu, v.gpu_layers) == ("fits", 1, 4)
    assert "GPU 1 (chosen of 2)" in v.message


def test_auto_then_prefers_the_most_layers() -> None:
    v = _check({0: TWO + RESERVE, 1: THREE + RESERVE, 2: 100.0})
    assert (v.kind, v.gpu, v.gpu_layers) == ("fits-partially", 1, 3)


def test_auto_breaks_ties_by_free_memory_then_index() -> None:
    assert _check({0: 5000.0, 1: 9000.0}).gpu == 1
    assert _check({0: 9000.0, 1: 9000.0}).gpu == 0


def test_an_explicit_gpu_is_the_only_candidate() -> None:
    v = _check({0: 100_000.0, 1: TWO + RESERVE}, gpu=1)
    assert (v.kind, v.gpu, v.gpu_layers) == ("fits-partially", 1, 2)
    assert "GPU 1" in v.message
    assert "chosen" not in v.message


def test_a_missing_gpu_does_not_fit() -> None:
    v = _check({0: 100_000.0}, gpu=3)
    assert (v.kind, v.gpu) == ("does-not-fit", 3)
    assert "no GPU 3" in v.message


def test_unknown_free_memory_is_assumed_to_fit_and_said() -> None:
    v = _check({0: None})
    assert (v.kind, v.gpu, v.gpu_layers, v.free_mib) == ("fits", 0, 4, None)
    assert "the free VRAM is unknown" in v.message
    assert _line(v, "free") == "free: unknown on GPU 0"


def test_auto_prefers_a_known_full_fit_over_an_unknown_gpu() -> None:
    assert _check({0: None, 1: FULL + RESERVE}).gpu == 1
    assert _check({0: None, 1: TWO + RESERVE}).gpu == 0  # unknown beats a partial fit


def test_no_gpu_at_all() -> None:
    v = _check({})
    assert (v.kind, v.gpu, v.gpu_layers, v.needed_mib) == ("fits", None, 0, 0.0)
    assert "no gpu" in v.message.lower()
    assert _check({}, requested="gpu").kind == "does-not-fit"
    assert _check({}, requested=2).kind == "fits-partially"


def test_lines_show_every_figure() -> None:
    v = _check({0: 2000.0})
    labels = [line.split(":")[0] for line in v.lines]
    assert labels == ["weights", "KV cache", "compute", "CUDA overhead", "needed", "free",
                      "margin"]
    assert _line(v, "weights").startswith("weights: 450 MiB (4 of 4 layers + output;")
    assert _line(v, "KV cache") == "KV cache: 40 MiB (4096 cells x 4 layers)"
    assert _line(v, "compute") == "compute: 20 MiB"
    assert _line(v, "CUDA overhead") == "CUDA overhead: 300 MiB"
    assert _line(v, "needed") == "needed: 810 MiB"
    assert _line(v, "free") == "free: 2,000 MiB on GPU 0"
    assert _line(v, "margin") == "margin: 512 MiB"


def test_default_margin() -> None:
    v = preflight(PLAN, {0: 5000.0}, requested="auto", gpu="auto", overhead_mib=0.0)
    assert v.margin_mib == DEFAULT_MARGIN_MIB == 512.0


def test_refused() -> None:
    v = refused("/models/x.gguf", "not a GGUF model file.")
    assert (v.kind, v.gpu, v.gpu_layers, v.lines) == ("refused", None, 0, ())
    assert v.message == "Refused /models/x.gguf: not a GGUF model file."
    assert not v.ok
    # a reason that already names the file is not prefixed twice
    assert refused("/m.gguf", "/m.gguf: truncated").message == "Refused /m.gguf: truncated."
    assert v.to_dict()["kind"] == "refused"


def test_config_vram_splits_evenly_and_overrides() -> None:
    plan = plan_from_config_vram(6000.0, 30, 8192)
    assert plan.source == "config"
    assert plan.layers == 30
    assert plan.gpu_mib(30) == pytest.approx(6000.0)
    assert plan.gpu_mib(15) == pytest.approx(3000.0)
    assert plan.kv_per_layer_mib == plan.compute_gpu_mib == plan.output_mib == 0.0
    assert plan.context_size == 8192
    v = preflight(plan, {0: 6000.0 + RESERVE}, requested="auto", gpu=0,
                  overhead_mib=OVERHEAD, margin_mib=MARGIN)
    assert (v.kind, v.source) == ("fits", "config")
    with pytest.raises(ValueError):
        plan_from_config_vram(100.0, 0, 4096)
    with pytest.raises(ValueError):
        plan_from_config_vram(float("nan"), 4, 4096)


def test_to_dict_is_plain() -> None:
    d = _check({0: 2000.0}).to_dict()
    assert d["kind"] == "fits"
    assert d["lines"] == list(_check({0: 2000.0}).lines)


@given(
    layers=st.integers(1, 64),
    free=st.floats(0, 20_000),
    overhead=st.floats(0, 1000),
    margin=st.floats(0, 1000),
)
def test_the_layers_placed_fit_and_one_more_would_not(
    layers: int, free: float, overhead: float, margin: float
) -> None:
    plan = _plan(layers)
    v = preflight(plan, {0: free}, requested="auto", gpu=0, overhead_mib=overhead,
                  margin_mib=margin)
    n = v.gpu_layers
    if n:
        assert plan.gpu_mib(n) + overhead + margin <= free
    if n < layers:
        assert plan.gpu_mib(n + 1) + overhead + margin > free
    assert v.kind == ("fits" if n == layers else "fits-partially" if n else "does-not-fit")
