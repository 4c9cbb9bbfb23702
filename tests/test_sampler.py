
import pytest

from gpuwarden.engine.clock import FakeClock
from gpuwarden.engine.events import Event, EventBus, GpuLost
from gpuwarden.engine.telemetry.probe import GpuReading, NoGpuProbe
from gpuwarden.engine.telemetry.sampler import Sampler, check_interval
from helpers import ScriptedGpuProbe, StaticHostProbe, gpu


def make(probe=None, clock=None, **kw):
    clock = clock or FakeClock()
    bus = EventBus(clock=clock)
    events: list[Event] = []
    bus.subscribe(events.append)
    sampler = Sampler(probe or ScriptedGpuProbe(), StaticHostProbe(), bus=bus, clock=clock, **kw)
    return sampler, events, clock


def test_tick_publishes_a_snapshot_and_records_history():
    sampler, _, clock = make()
    seen = []
    sampler.subscribe(seen.append)
    first = sampler.tick()
    clock.advance(1.0)
    second = sampler.tick()
    assert seen == [first, second]
    assert (first.seq, second.seq) == (1, 2)
    assert second.ts - first.ts == 1.0
    assert second.gpus[0].name == "Test GPU 0" and second.host.cpu_pct == 12.0
    assert len(sampler.history) == 2


def test_probe_events_are_stamped_in_order():
    lost = GpuReading(gpus=(gpu(0, available=False),), events=(GpuLost(gpu=0, message="gone"),))
    sampler, events, clock = make(ScriptedGpuProbe(GpuReading(gpus=(gpu(0),)), lost))
    sampler.tick()
    clock.advance(2.0)
    sampler.tick()
    assert [e.type for e in events] == ["gpu.lost"]
    assert events[0].ts == clock.time() and events[0].seq == 1


def test_a_failing_probe_is_reported_once_and_sampling_goes_on():
    probe = ScriptedGpuProbe()
    probe.fail_with = RuntimeError("driver exploded")
    sampler, events, clock = make(probe)
    for _ in range(5):
        snap = sampler.tick()
        clock.advance(1.0)
    assert [e.type for e in events] == ["probe.error"]
    assert "driver exploded" in events[0].to_dict()["message"]
    assert snap.gpus == () and snap.host.cpu_pct == 12.0
    probe.fail_with = None
    assert sampler.tick().gpus[0].index == 0


def test_no_gpu_probe_gives_a_note_and_source_none():
    sampler, _, _ = make(NoGpuProbe("No NVIDIA GPU; try --simulate"))
    snap = sampler.tick()
    assert snap.gpu_source == "none" and snap.gpus == ()
    assert "--simulate" in (snap.gpu_note or "")


def test_replacing_the_gpu_probe_closes_the_old_one():
    old, new = ScriptedGpuProbe(), ScriptedGpuProbe(source="nvml")
    sampler, _, _ = make(old)
    sampler.replace_gpu_probe(new)
    assert old.closed
    assert sampler.tick().gpu_source == "nvml"


@pytest.mark.parametrize("bad", [0.0, 0.1, -1.0, 10.5])
def test_interval_outside_the_range_is_refused_with_a_sentence(bad):
    with pytest.raises(ValueError, match=r"between 0\.25 and 10"):
        check_interval(bad)
