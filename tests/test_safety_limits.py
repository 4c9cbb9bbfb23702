"""Safety limits: the configured value beats the card's, the card's beats the built-in
table, and every limit knows where it came from."""

from __future__ import annotations

import math

import pytest

from gpuwarden.engine.safety.limits import (
    GpuLimits,
    HostLimits,
    Limit,
    SafetyConfig,
    gpu_limits,
    host_limits,
)
from gpuwarden.engine.telemetry.snapshot import GpuSample


def card(slowdown: float | None = None, power_limit: float | None = None) -> GpuSample:
    return GpuSample(index=1, name="Test GPU", uuid="GPU-1",
                     temperature_slowdown_c=slowdown, power_limit_w=power_limit)


def test_the_table_when_the_card_knows_nothing() -> None:
    limits = gpu_limits(card(), SafetyConfig())
    assert limits == GpuLimits(
        1, Limit(80.0, "default"), Limit(85.0, "default"), Limit(250.0, "default"),
        Limit(300.0, "default"), Limit(90.0, "default"), 5.0)
    assert limits.temp_hard_c.origin == "default"


def test_the_cards_own_thresholds() -> None:
    limits = gpu_limits(card(slowdown=92, power_limit=300), SafetyConfig())
    assert (limits.temp_warn_c.value, limits.temp_hard_c.value) == (87.0, 92.0)
    assert (limits.temp_warn_c.source, limits.temp_hard_c.source) == ("card", "card")
    assert limits.temp_hard_c.origin == "card slowdown"
    assert limits.temp_warn_c.origin == "card slowdown - 5 C"
    assert limits.power_warn_w.value == pytest.approx(285.0)
    assert limits.power_hard_w.value == pytest.approx(315.0)
    assert limits.power_warn_w.source == limits.power_hard_w.source == "card"
    assert limits.power_warn_w.origin == "95% of the card's 300 W limit"
    assert limits.vram_pct == Limit(90.0, "default")  # the card has no VRAM threshold


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_a_nonsense_card_value_falls_back_to_the_table(bad: float) -> None:
    limits = gpu_limits(card(slowdown=bad, power_limit=bad), SafetyConfig())
    assert limits.temp_hard_c == Limit(85.0, "default")
    assert limits.power_hard_w == Limit(300.0, "default")


def test_only_one_of_the_cards_thresholds_known() -> None:
    limits = gpu_limits(card(power_limit=200), SafetyConfig())
    assert limits.temp_warn_c.source == "default"
    assert limits.power_warn_w.source == "card"


def test_configured_values_beat_the_card() -> None:
    cfg = SafetyConfig(gpu_temp_warn_c=70, gpu_temp_hard_c=78, gpu_power_warn_w=150,
                       gpu_power_hard_w=180, vram_pct=95, cooldown_margin_c=3)
    limits = gpu_limits(card(slowdown=92, power_limit=300), cfg)
    assert limits == GpuLimits(
        1, Limit(70, "config"), Limit(78, "config"), Limit(150, "config"),
        Limit(180, "config"), Limit(95, "config"), 3)
    assert limits.temp_hard_c.origin == "config"


def test_one_configured_value_beside_the_cards_other() -> None:
    limits = gpu_limits(card(slowdown=92, power_limit=300), SafetyConfig(gpu_temp_warn_c=80))
    assert limits.temp_warn_c == Limit(80, "config")
    assert limits.temp_hard_c == Limit(92, "card", "card slowdown")


def test_a_configured_warn_above_the_cards_hard_moves_the_hard() -> None:
    limits = gpu_limits(card(slowdown=90, power_limit=300),
                        SafetyConfig(gpu_temp_warn_c=93, gpu_power_warn_w=400))
    assert limits.temp_warn_c == Limit(93, "config")
    assert limits.temp_hard_c == Limit(98, "config", "derived from gpu_temp_warn_c")
    assert limits.power_hard_w.value == pytest.approx(400 * 105 / 95)
    assert limits.power_hard_w.source == "config"


def test_a_configured_hard_below_the_tables_warn_moves_the_warn() -> None:
    limits = gpu_limits(card(), SafetyConfig(gpu_temp_hard_c=75, gpu_power_hard_w=200))
    assert limits.temp_hard_c == Limit(75, "config")
    assert limits.temp_warn_c == Limit(70, "config", "derived from gpu_temp_hard_c")
    assert limits.power_warn_w.value == pytest.approx(200 * 95 / 105)
    assert limits.power_warn_w.value < limits.power_hard_w.value


def test_host_limits_from_the_table_and_the_config() -> None:
    assert host_limits(SafetyConfig()) == HostLimits(
        Limit(90, "default"), Limit(95, "default"), Limit(95, "default"), Limit(85, "default"),
        5.0)
    cfg = SafetyConfig(cpu_temp_warn_c=80, cpu_temp_hard_c=88, cpu_pct=70, ram_pct=60,
                       cooldown_margin_c=2)
    assert host_limits(cfg) == HostLimits(
        Limit(80, "config"), Limit(88, "config"), Limit(70, "config"), Limit(60, "config"), 2)


def test_host_pair_kept_in_order() -> None:
    limits = host_limits(SafetyConfig(cpu_temp_hard_c=85))
    assert limits.cpu_temp_warn_c == Limit(80, "config", "derived from cpu_temp_hard_c")
    limits = host_limits(SafetyConfig(cpu_temp_warn_c=97))
    assert limits.cpu_temp_hard_c == Limit(102, "config", "derived from cpu_temp_warn_c")


@pytest.mark.parametrize("pair", [("gpu_temp_warn_c", "gpu_temp_hard_c"),
                                  ("gpu_power_warn_w", "gpu_power_hard_w"),
                                  ("cpu_temp_warn_c", "cpu_temp_hard_c")])
def test_safety_config_refuses_warn_not_below_hard(pair: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match=f"{pair[0]} .* must be below {pair[1]}"):
        SafetyConfig(**{pair[0]: 90.0, pair[1]: 90.0})


def test_safety_config_refuses_negative_margins() -> None:
    with pytest.raises(ValueError):
        SafetyConfig(cooldown_margin_c=-1)
