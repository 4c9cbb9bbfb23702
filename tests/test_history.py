import math

import numpy as np
import pytest

from gpuwarden.engine.telemetry.history import History, capacity_for
from helpers import gpu, snapshot


def test_capacity_covers_the_history_at_the_interval():
    assert capacity_for(3600, 1.0) == 3600
    assert capacity_for(3600, 0.25) == 14400
    assert capacity_for(1, 10) == 2


def test_frame_is_oldest_first_and_wraps_without_growing():
    h = History(capacity=5)
    h.append(snapshot(0.0, gpu(0)))
    size = h.nbytes
    for i in range(1, 12):
        h.append(snapshot(float(i), gpu(0, temperature_c=40.0 + i)))
    frame = h.frame()
    assert list(frame.t) == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert list(frame.series["gpu0.temperature_c"]) == [47.0, 48.0, 49.0, 50.0, 51.0]
    assert h.nbytes == size  # memory is fixed whatever the run time
    assert len(h) == 5


def test_na_fields_become_nan_and_late_series_are_nan_before_they_appear():
    h = History(capacity=10)
    h.append(snapshot(0.0, gpu(0, fan_speed_pct=None)))
    h.append(snapshot(1.0, gpu(0, fan_speed_pct=None), gpu(1)))
    frame = h.frame()
    assert "gpu0.fan_speed_pct" not in frame.series  # never reported: no series at all
    late = frame.series["gpu1.temperature_c"]
    assert math.isnan(late[0]) and late[1] == 40.0


def test_a_gpu_missing_from_a_sample_leaves_a_gap_not_a_stale_value():
    h = History(capacity=10)
    h.append(snapshot(0.0, gpu(0)))
    h.append(snapshot(1.0))
    h.append(snapshot(2.0, gpu(0)))
    temps = h.frame().series["gpu0.temperature_c"]
    assert temps[0] == 40.0 and math.isnan(temps[1]) and temps[2] == 40.0


def test_frame_since_keeps_only_the_recent_window_and_is_read_only():
    h = History(capacity=100)
    for i in range(100):
        h.append(snapshot(float(i), gpu(0), cpu_pct=float(i)))
    frame = h.frame(since=90.0)
    assert list(frame.t) == [float(i) for i in range(90, 100)]
    assert list(frame.series["host.cpu_pct"]) == [float(i) for i in range(90, 100)]
    with pytest.raises(ValueError):
        frame.series["host.cpu_pct"][0] = 1.0
    # the frame is a copy: later appends do not change it
    h.append(snapshot(100.0, gpu(0), cpu_pct=55.0))
    assert frame.t[-1] == 99.0


def test_one_hour_at_one_hertz_stays_small():
    h = History(capacity=capacity_for(3600, 1.0))
    for i in range(4000):
        h.append(snapshot(float(i), gpu(0), gpu(1)))
    assert h.nbytes < 2 * 1024 * 1024
    assert np.all(np.diff(h.frame().t) > 0)
