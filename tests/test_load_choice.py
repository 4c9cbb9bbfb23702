"""Loading a model that does not fit whole: the preview the window shows first, and the
user's choice (swap the named models out, load part of it, or the engine's own pick)."""

from __future__ import annotations

from gpuwarden.engine.lifecycle.core_state import AdminResult
from gpuwarden.engine.lifecycle.policy import LoadPreview
from gpuwarden.engine.lifecycle.state import ACTIVE_WINDOW_S
from helpers import drive
from lifecycle_helpers import model
from test_engine_facade import GIB, engine_for, row


def two_big_models():
    engine, clock, events = engine_for(model("a", vram_mib=14 * GIB, placement="gpu"),
                                       model("b", vram_mib=14 * GIB))
    assert engine.load("a").ok
    drive(engine, clock, 2.0 + ACTIVE_WINDOW_S)  # no longer "just used": it may be swapped
    assert row(engine, "a").state == "ready"
    return engine, clock, events


def preview(engine, name: str) -> LoadPreview:
    found = engine.load_preview(name)
    assert isinstance(found, LoadPreview), found
    return found


def test_a_model_in_use_a_moment_ago_is_not_offered_for_a_swap():
    engine, clock, _ = engine_for(model("a", vram_mib=14 * GIB, placement="gpu"),
                                  model("b", vram_mib=14 * GIB))
    engine.load("a")
    drive(engine, clock, 2.0)
    assert preview(engine, "b").swap == ()
    engine.close()


def test_the_preview_names_what_a_swap_would_unload_and_what_fits_without_one():
    engine, _, _ = two_big_models()
    p = preview(engine, "b")
    assert not p.fits and p.gpu == 0
    assert [name for name, _ in p.swap] == ["a"] and p.swap_frees_mib >= 14 * GIB
    assert 0 < p.partial_layers < p.total_layers == 32
    assert p.free_mib is not None and p.need_mib > p.free_mib
    loaded = engine.load_preview("a")
    assert isinstance(loaded, AdminResult) and loaded.ok and "already" in loaded.message
    engine.close()


def test_load_partially_keeps_the_others_and_puts_the_layers_that_fit_on_the_gpu():
    engine, clock, events = two_big_models()
    layers = preview(engine, "b").partial_layers
    answer = engine.load("b", "partial")
    assert answer.ok and f"{layers} of 32 layers" in answer.message
    drive(engine, clock, 2.0)
    b = row(engine, "b")
    assert (b.state, b.device, b.gpu_layers) == ("ready", "partial", layers)
    assert row(engine, "a").state == "ready"
    assert not [e for e in events if e.type == "swap.evicted"]
    engine.close()


def test_load_with_a_swap_unloads_the_named_models_and_loads_it_whole():
    engine, clock, events = two_big_models()
    answer = engine.load("b", "swap")
    assert answer.ok and "unloading a" in answer.message
    drive(engine, clock, 3.0)
    assert (row(engine, "b").state, row(engine, "b").device) == ("ready", "gpu")
    assert row(engine, "a").state == "unloaded"
    assert [(e.model, e.for_model) for e in events if e.type == "swap.evicted"] == [("a", "b")]
    engine.close()


def test_a_swap_that_cannot_free_enough_is_refused_and_nothing_moves():
    engine, clock, _ = engine_for(model("a", vram_mib=14 * GIB, placement="gpu",
                                        eviction="never"),
                                  model("b", vram_mib=14 * GIB))
    engine.load("a")
    drive(engine, clock, 2.0)
    assert preview(engine, "b").swap == ()
    answer = engine.load("b", "swap")
    assert not answer.ok and "would not free enough" in answer.message
    drive(engine, clock, 1.0)
    assert (row(engine, "a").state, row(engine, "b").state) == ("ready", "unloaded")
    engine.close()


def test_a_bad_choice_or_an_unknown_model_is_refused_in_words():
    engine, _, _ = two_big_models()
    bad = engine.load("b", "sideways")
    assert not bad.ok and "partial" in bad.message and "'sideways'" in bad.message
    unknown = engine.load_preview("nope")
    assert isinstance(unknown, AdminResult) and not unknown.ok and "'nope'" in unknown.message
    engine.close()


def test_a_cpu_model_always_fits_and_offers_no_swap():
    engine, _, _ = engine_for(model("c", placement="cpu"))
    p = preview(engine, "c")
    assert p.fits and p.gpu is None and p.swap == ()
    engine.close()
