"""What a person reads: the terminal table and the one-line summaries in the window."""

from gpuwarden.console import render_status
from gpuwarden.engine.telemetry.snapshot import GpuProcess, HostSample, Snapshot
from gpuwarden.widgets.gpu_panel import gpu_summary, process_summary
from gpuwarden.widgets.host_panel import host_summary
from helpers import gpu


def test_unsupported_fields_read_n_a_everywhere():
    g = gpu(0, fan_speed_pct=None, power_draw_w=None, throttle_reasons=None)
    snap = Snapshot(ts=0.0, seq=1, gpu_source="nvml", gpus=(g,), host=HostSample())
    table = render_status(snap)
    assert "n/a / 200 W" in table  # power draw n/a, limit known
    assert "fan n/a" in gpu_summary(g)
    assert "CPU n/a" in host_summary(HostSample())


def test_a_lost_gpu_says_so():
    g = gpu(1, available=False)
    snap = Snapshot(ts=0.0, seq=1, gpu_source="nvml", gpus=(g,), host=HostSample())
    assert "GPU lost" in render_status(snap)
    assert "GPU lost" in gpu_summary(g)


def test_idle_is_not_called_throttling():
    assert "throttled" not in gpu_summary(gpu(0, throttle_reasons=("gpu_idle",)))
    assert "throttled: sw_thermal" in gpu_summary(
        gpu(0, throttle_reasons=("gpu_idle", "sw_thermal")))


def test_processes_are_listed_biggest_first_with_n_a_memory():
    procs = (GpuProcess(10, "small", 100.0, "compute"), GpuProcess(11, "llama-server", 9000.0,
             "compute"), GpuProcess(12, "Xorg", None, "graphics"))
    text = process_summary(gpu(0, processes=procs))
    assert text.index("llama-server") < text.index("small")
    assert "8.8 GiB" in text and "Xorg (pid 12) n/a" in text
    assert process_summary(gpu(0, processes=None)) == "Processes: n/a"
    snap = Snapshot(ts=0.0, seq=1, gpu_source="nvml", gpus=(gpu(0, processes=procs),),
                    host=HostSample())
    assert "llama-server" in render_status(snap)
