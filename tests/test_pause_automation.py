"""Pausing automation: gpuwarden's own decisions (idle unloads, pressure relief, restarts
after a crash) wait until it is resumed; the user's commands and safety limits do not."""

from __future__ import annotations

from pathlib import Path

from gpuwarden.engine.alerts import AlertBoard
from gpuwarden.engine.events import AutomationChanged
from gpuwarden.engine.lifecycle.config import RestartConfig
from gpuwarden.widgets.model_table import state_text
from helpers import drive
from lifecycle_helpers import model
from test_engine_facade import engine_for, row

CRASH = """
[simulation]
gpus = 1
[[step]]
at = 2.0
action = "crash"
model = "chat"
"""


def test_paused_idle_models_stay_and_resume_unloads_them():
    engine, clock, events = engine_for(model("chat", idle_timeout_s=5.0))
    engine.load("chat")
    drive(engine, clock, 1.0)
    answer = engine.pause_automation(True)
    assert answer.ok and "paused" in answer.message and engine.automation_paused
    drive(engine, clock, 30.0)
    assert row(engine, "chat").state == "ready"  # long past its idle timeout
    assert engine.unload("chat").ok  # the user's own commands still work
    drive(engine, clock, 1.0)
    engine.load("chat")
    drive(engine, clock, 1.0)
    assert engine.pause_automation(False).ok and not engine.automation_paused
    drive(engine, clock, 10.0)
    assert row(engine, "chat").state == "unloaded"
    said = [e for e in events if isinstance(e, AutomationChanged)]
    assert [e.paused for e in said] == [True, False]
    assert said[0].severity == "warning" and "safety limits still act" in said[0].describe()
    engine.close()


def test_a_crash_while_paused_waits_for_the_resume_to_restart(tmp_path: Path):
    engine, clock, _ = engine_for(model("chat", load_time_s=0.1), tmp_path=tmp_path,
                                  scenario=CRASH, restart=RestartConfig(backoff_base_s=1.0))
    engine.load("chat")
    drive(engine, clock, 1.0)
    engine.pause_automation(True)
    drive(engine, clock, 20.0)
    held = row(engine, "chat")
    assert held.state == "restarting" and held.restart_in_s is None
    assert state_text(held) == "restart on resume"
    engine.pause_automation(False)
    drive(engine, clock, 2.0)
    assert row(engine, "chat").state == "ready"
    engine.close()


def test_pausing_twice_says_so_and_a_bad_value_is_refused():
    engine, _, events = engine_for(model("chat"))
    engine.pause_automation(True)
    again = engine.pause_automation(True)
    assert again.ok and again.message == "automation is already paused"
    assert sum(isinstance(e, AutomationChanged) for e in events) == 1
    assert not engine.pause_automation("yes").ok  # type: ignore[arg-type]
    engine.close()


def test_the_alert_stays_while_paused():
    board = AlertBoard()
    board.apply(AutomationChanged(paused=True, ts=1.0))
    [alert] = board.active()
    assert (alert.title, alert.level, alert.dismissable) == ("Automation paused", "warning",
                                                             False)
    board.apply(AutomationChanged(paused=False, ts=2.0))
    assert board.active() == ()
