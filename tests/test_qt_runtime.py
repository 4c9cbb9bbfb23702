"""Guards against Qt binding bugs that would crash a long-running app."""

import sys

import pytest
from PySide6.QtCore import QObject, Signal, Slot

pytestmark = pytest.mark.qt


class _Emitter(QObject):
    bare = Signal()
    carrying = Signal(object)

    @Slot()
    def sink(self) -> None:
        return None


def test_signal_emit_does_not_steal_references(qapp):
    """PySide6 6.12.0 drops a reference to True on every emit; the app then aborts after
    a few hours of 1 Hz ticks. Refuse to run on a binding with that bug."""
    emitter = _Emitter()
    emitter.bare.connect(emitter.sink)
    emitter.carrying.connect(lambda _obj: None)
    before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(200):
        emitter.bare.emit()
        emitter.carrying.emit(1.5)
    after = sys.getrefcount(True), sys.getrefcount(None)
    assert after[0] >= before[0] - 5, "Signal.emit() steals references to True"
    assert after[1] >= before[1] - 5, "Signal.emit() steals references to None"
