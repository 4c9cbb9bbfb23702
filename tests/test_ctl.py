"""`gpuwarden ctl` against a live control API (tests/api_rig.py), in-process, and once end
to end: a real `gpuwarden headless` found by a real `gpuwarden ctl` through api.json.
Also what ctl relies on in the API: the newest kept seq, and open streams ended by a
stopping server."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from api_rig import LiveApi, live_api
from gpuwarden import cli, ctl
from gpuwarden.api.token import TOKEN_FILE
from gpuwarden.api.where import WHERE_FILE, read_where
from gpuwarden.ctl_format import event_line
from gpuwarden.engine.events import ModelCrashed
from gpuwarden.engine.paths import data_dir
from helpers import drive
from lifecycle_helpers import model
from test_config_reload import Lines, entry


def ask(api: LiveApi, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``gpuwarden ctl ARGV`` in-process against the rig: exit status, stdout, stderr."""
    code = ctl.main([*argv, "--url", api.url, "--token-file", str(api.folder / TOKEN_FILE)])
    out, err = capsys.readouterr()
    return code, out, err


def two_models(tmp_path: Path):
    """The rig with ``a`` (2 GiB, 1 s to load: load_a) and ``b`` configured, unloaded."""
    return live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0),
                    model("b", eviction="never"))


def load_a(api: LiveApi) -> None:
    api.engine.load("a")
    drive(api.engine, api.clock, 3.0)


def test_models_prints_the_panels_rows_as_a_table_or_the_apis_json(tmp_path, capsys):
    with two_models(tmp_path) as api:
        load_a(api)
        api.engine.set_priority("b", 5)
        code, out, _ = ask(api, capsys, "models")
        assert code == 0
        header, row_a, row_b, note = out.splitlines()
        assert header.split()[:4] == ["Model", "Backend", "State", "Device"]
        assert row_a.split()[:4] == ["a", "simulated", "ready", "gpu"]
        assert "2.0 GiB / 2.0 GiB" in row_a  # measured / estimated
        assert row_b.split()[:4] == ["b", "simulated", "unloaded", "unloaded"]
        assert row_b.split()[-2:] == ["5*", "never"]  # priority set for this run
        assert note.startswith("* set for this run")
        code, out, _ = ask(api, capsys, "models", "--json")
        assert code == 0 and json.loads(out) == api.client.get("/api/v1/models").json()


def test_status_prints_gpus_host_and_verdicts_or_the_apis_json(tmp_path, capsys):
    with two_models(tmp_path) as api:
        load_a(api)
        code, out, _ = ask(api, capsys, "status")
        assert code == 0
        assert "Simulated GPU 0" in out and "VRAM used / total" in out
        assert "model:a" in out  # its process on the GPU
        assert "Host  CPU" in out
        assert "Safety  gpu0: proceed" in out and "Safety  host: proceed" in out
        api.engine.pause_automation(True)
        code, out, _ = ask(api, capsys, "status", "--json")
        status = json.loads(out)
        assert code == 0 and status["automation_paused"] is True
        assert status["snapshot"]["gpus"][0]["index"] == 0 and "gpu0" in status["verdicts"]
        assert "Automation is paused" in ask(api, capsys, "status")[1]


def test_actions_print_the_answer_and_refusals_exit_1_saying_why(tmp_path, capsys):
    with two_models(tmp_path) as api:
        assert ask(api, capsys, "offload", "a") == (
            1, "", "gpuwarden ctl: a is not on a GPU (unloaded)\n")
        assert ask(api, capsys, "load", "a") == (0, "loading a\n", "")
        drive(api.engine, api.clock, 3.0)
        assert api.engine.model("a").state == "ready"
        assert ask(api, capsys, "offload", "a") == (0, "moving a to the CPU\n", "")
        drive(api.engine, api.clock, 3.0)
        assert api.engine.model("a").device == "cpu"
        assert ask(api, capsys, "restart", "a") == (0, "restarting a\n", "")
        drive(api.engine, api.clock, 3.0)
        assert ask(api, capsys, "unload", "a")[:2] == (0, "unloading a\n")
        drive(api.engine, api.clock, 1.0)
        assert api.engine.model("a").state == "unloaded"
        code, out, err = ask(api, capsys, "offload", "a", "--json")
        assert (code, err) == (1, "")
        assert json.loads(out) == {"error": {"message": "a is not on a GPU (unloaded)",
                                             "type": "refused"}}


def test_load_how_reaches_the_engine(tmp_path, capsys):
    with live_api(tmp_path, model("big", vram_mib=30000.0, layers=40)) as api:
        code, out, _ = ask(api, capsys, "load", "big", "--how", "partial")
        assert code == 0, out
        drive(api.engine, api.clock, 3.0)
        assert api.engine.model("big").device == "partial"


def test_an_unknown_model_exits_1_naming_it(tmp_path, capsys):
    with two_models(tmp_path) as api:
        assert ask(api, capsys, "load", "nope") == (
            1, "", "gpuwarden ctl: no model named 'nope'\n")
        assert ask(api, capsys, "restart", "a/../b")[0] == 1  # a name, never a path


def test_a_wrong_token_exits_3_saying_whose_it_is_and_changes_nothing(tmp_path, capsys,
                                                                      monkeypatch):
    with two_models(tmp_path) as api:
        wrong = tmp_path / "wrong-token"
        wrong.write_text("x" * 43 + "\n")
        code = ctl.main(["load", "a", "--url", api.url, "--token-file", str(wrong)])
        _, err = capsys.readouterr()
        assert code == 3
        assert f"gpuwarden at {api.url} refused the token from {wrong}" in err
        assert "Traceback" not in err
        monkeypatch.setenv("GPUWARDEN_TOKEN", "y" * 43)
        assert ctl.main(["models", "--url", api.url]) == 3
        assert "refused the token from GPUWARDEN_TOKEN" in capsys.readouterr().err
        monkeypatch.setenv("GPUWARDEN_TOKEN", api.token)
        assert ctl.main(["models", "--url", api.url]) == 0
        assert api.engine.model("a").state == "unloaded"


def test_it_finds_the_local_gpuwarden_by_itself(tmp_path, capsys, monkeypatch):
    with two_models(tmp_path) as api:
        monkeypatch.setattr(ctl, "data_dir", lambda: api.folder)
        assert read_where(api.folder) is not None  # api.json, written by the server
        assert ctl.main(["load", "a"]) == 0
        assert capsys.readouterr().out == "loading a\n"


def test_no_gpuwarden_running_exits_3_saying_how_to_start_one(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setattr(ctl, "data_dir", lambda: folder)
    (folder / TOKEN_FILE).write_text("t" * 43 + "\n")

    def fails() -> str:
        assert ctl.main(["models"]) == 3
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1
        return err

    assert "no gpuwarden is running here" in fails()
    assert "`gpuwarden headless`" in fails()
    (folder / "gpuwarden.lock").write_text(f"{os.getpid()}\n")  # running, no API
    assert "serves no control API" in fails() and "[api] enabled = false" in fails()
    (folder / "gpuwarden.lock").write_text("")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (folder / WHERE_FILE).write_text(json.dumps({"url": "http://127.0.0.1:9",
                                                 "pid": int(gone.stdout)}))
    assert "(pid " in fails() and "is no longer running" in fails()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (folder / WHERE_FILE).write_text(json.dumps({"url": f"http://127.0.0.1:{port}",
                                                 "pid": os.getpid()}))
    assert f"nothing answers at http://127.0.0.1:{port}: is gpuwarden running?" in fails()


def test_no_answer_in_time_exits_3(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("t" * 43)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        code = ctl.main(["status", "--url", url, "--token-file", str(token),
                         "--timeout", "0.3"])
    assert code == 3
    assert capsys.readouterr().err == (f"gpuwarden ctl: gpuwarden at {url} did not answer "
                                       "within 0.3 s (--timeout)\n")


@pytest.mark.parametrize(("argv", "says"), [
    ([], "the following arguments are required: COMMAND"),
    (["load"], "the following arguments are required: NAME"),
    (["models", "--url", "localhost:8737"], "expected http://HOST:PORT"),
    (["events", "--since", "-1"], "expected an event seq"),
    (["models", "--url", "http://127.0.0.1:9", "--token-file", "/nonexistent/token"],
     "cannot read the token file /nonexistent/token"),
])
def test_usage_mistakes_exit_2(argv, says, capsys):
    assert ctl.main(argv) == 2
    assert says in capsys.readouterr().err


def test_events_replays_the_kept_events_and_stops(tmp_path, capsys):
    with two_models(tmp_path) as api:
        load_a(api)
        kept = [e.to_dict() for e in api.engine.events_since(0)]
        code, out, _ = ask(api, capsys, "events")
        lines = out.splitlines()
        assert code == 0 and len(lines) == len(kept) >= 2
        assert "model.loading" in lines[0] and " a " in lines[0]
        assert "a is ready on GPU 0" in lines[1]  # the event log's sentence
        code, out, _ = ask(api, capsys, "events", "--json", "--since", str(kept[0]["seq"]))
        assert code == 0 and [json.loads(line) for line in out.splitlines()] == kept[1:]
        assert ask(api, capsys, "events", "--since", str(kept[-1]["seq"])) == (0, "", "")


class Output(io.StringIO):
    """stdout / stderr read by another thread while ctl writes to them."""

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.getvalue():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def follow_in_background(api: LiveApi, monkeypatch, then: Callable[[Output], None]
                         ) -> tuple[int, Output, Output]:
    """``ctl events --follow`` on this thread while ``then(stdout)`` runs on another."""
    out, err = Output(), Output()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    helper = threading.Thread(target=then, args=(out,), daemon=True)
    helper.start()
    code = ctl.main(["events", "--follow", "--url", api.url,
                     "--token-file", str(api.folder / TOKEN_FILE)])
    helper.join(10)
    return code, out, err


def test_follow_prints_new_events_until_ctrl_c(tmp_path, monkeypatch):
    with two_models(tmp_path) as api:
        load_a(api)
        main_thread = threading.main_thread().ident
        assert main_thread is not None and threading.get_ident() == main_thread

        def then(out: Output) -> None:
            out.wait_for("model.ready")  # the replay: the stream is open
            api.engine.unload("a")
            drive(api.engine, api.clock, 1.0)
            out.wait_for("model.unloaded")
            signal.pthread_kill(main_thread, signal.SIGINT)  # Ctrl+C, however it went

        code, out, err = follow_in_background(api, monkeypatch, then)
        assert code == 0 and err.getvalue() == ""
        types = [line.split()[1] for line in out.getvalue().splitlines()]
        assert types[:2] == ["model.loading", "model.ready"]
        assert "model.unloaded" in types


def test_follow_exits_3_when_gpuwarden_goes_away(tmp_path, monkeypatch):
    with two_models(tmp_path) as api:
        load_a(api)

        def then(out: Output) -> None:
            out.wait_for("model.ready")
            api.server.stop()

        code, _, err = follow_in_background(api, monkeypatch, then)
        assert code == 3
        assert err.getvalue() == f"gpuwarden ctl: gpuwarden at {api.url} stopped: its event " \
                                 "stream ended\n"


def test_gpuwarden_ctl_is_a_subcommand_of_gpuwarden(tmp_path, capsys):
    with two_models(tmp_path) as api:
        code = cli.main(["ctl", "load", "a", "--url", api.url, "--token-file",
                         str(api.folder / TOKEN_FILE)])
        assert (code, capsys.readouterr().out) == (0, "loading a\n")
    assert cli.main(["ctl", "models"]) == 3  # the test's own data folder: none running
    assert "no gpuwarden is running here" in capsys.readouterr().err


def test_latest_is_the_newest_kept_seq(tmp_path):
    with live_api(tmp_path, model("a", vram_mib=2000.0, load_time_s=1.0)) as api:
        kept = api.engine.events_since(0)
        first = kept[-1].seq if kept else 0
        assert api.client.get("/api/v1/events/latest").json() == {"seq": first}
        api.engine.load("a")
        drive(api.engine, api.clock, 3.0)
        newest = api.engine.events_since(0)[-1].seq
        assert newest > first
        assert api.client.get("/api/v1/events/latest").json() == {"seq": newest}


def test_a_stopping_server_ends_its_open_event_streams_at_once(tmp_path):
    with live_api(tmp_path, model("a")) as api:
        opened, ended = threading.Event(), threading.Event()

        def read() -> None:
            with api.client.stream("GET", "/api/v1/events",
                                   timeout=httpx.Timeout(10.0, read=60.0)) as reply:
                opened.set()
                for _ in reply.iter_lines():
                    pass
            ended.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert opened.wait(10)
        started = time.monotonic()
        api.server.stop()
        assert ended.wait(10)
        assert time.monotonic() - started < 2.0  # not the 5 s join, nor the 15 s keep-alive


def wait_until(ready: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def gpuwarden_ctl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gpuwarden", "ctl", *argv],
                          capture_output=True, text=True, timeout=60)


def test_a_real_ctl_finds_a_real_headless_gpuwarden_by_itself(tmp_path):
    """End to end: `gpuwarden headless` and `gpuwarden ctl` as the user runs them, in this
    test's own XDG folders (conftest), ctl finding it through api.json alone."""
    config = tmp_path / "config.toml"
    config.write_text("[api]\nport = 0\n\n" + entry("m", autostart=False, load_time_s=0.5))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuwarden", "--interval", "0.25", "headless", "--config",
         str(config), "--simulate", "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(proc)
    folder = data_dir()
    try:
        wait_until(lambda: read_where(folder) is not None or proc.poll() is not None)
        models = gpuwarden_ctl("models")
        assert models.returncode == 0, models.stderr
        assert models.stdout.splitlines()[1].split()[:3] == ["m", "simulated", "unloaded"]
        load = gpuwarden_ctl("load", "m")
        assert (load.returncode, load.stdout, load.stderr) == (0, "loading m\n", "")
        lines.wait("model.ready", model="m")
        rows = json.loads(gpuwarden_ctl("models", "--json").stdout)
        assert [(r["name"], r["state"]) for r in rows] == [("m", "ready")]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        lines.drain()
    assert proc.returncode == 0
    assert read_where(folder) is None  # removed when it stopped
    gone = gpuwarden_ctl("models")
    assert gone.returncode == 3 and "no gpuwarden is running here" in gone.stderr


def test_an_event_line_has_the_event_logs_sentence_even_over_json():
    crashed = ModelCrashed(model="m", kind="gpu_oom", exit_code=1,
                           log_tail=("loading", "CUDA error: out of memory"), ts=1.0, seq=7)
    over_json = json.loads(json.dumps(crashed.to_dict()))  # its tuple arrives as a list
    line = event_line(over_json)
    assert line.split()[1:3] == ["model.crashed", "m"]
    assert line.endswith(crashed.describe()) and "out of memory" in line
    newer = {"ts": 1.0, "seq": 8, "type": "model.teleported", "model": "m", "to": "mars"}
    assert event_line(newer).endswith("model=m, to=mars")  # a newer server's: its fields
