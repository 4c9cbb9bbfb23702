"""The test prompt: a ready model's own server (the real llama-server, a tiny generated
GGUF) streams an answer into the dialog with its speed; a wrong key, a stopped model and
a model without a chat API each get one plain line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gguf_factory import write_tiny_llama
from gpuwarden.engine.lifecycle.config import Config, ModelConfig
from gpuwarden.widgets.test_prompt import DEFAULT_PROMPT, TestPromptDialog, split_events
from lifecycle_helpers import model
from torch_factory import tiny_transformers

__all__ = ["tiny_transformers"]  # the fixture, used by name

pytestmark = pytest.mark.qt


def tiny_config(tmp_path: Path, llama_server_bin: Path) -> Config:
    path = write_tiny_llama(tmp_path / "tiny.gguf")
    tiny = ModelConfig(name="tiny", backend="llama-server", path=path, placement="cpu",
                       context_size=256, args=("--threads", "1", "--parallel", "1"))
    return Config(models=(tiny, model("sim", load_time_s=0.1)),
                  llama_server=llama_server_bin)


def ready_window(qtbot, window_with, config: Config):
    bridge, window = window_with(config)
    qtbot.waitUntil(lambda: len(bridge.rows) == 2, timeout=10_000)
    panel = window.model_panel
    panel.select("tiny")
    assert not panel.test_prompt_action.isEnabled()  # not loaded yet
    window.commands.send("load", ("tiny",))
    window.commands.send("load", ("sim",))
    qtbot.waitUntil(lambda: all(r.state == "ready" for r in bridge.rows), timeout=60_000)
    return bridge, window


def open_dialog(qtbot, window) -> TestPromptDialog:
    panel = window.model_panel
    panel.select("tiny")
    assert panel.test_prompt_action.isEnabled()
    panel.test_prompt_action.trigger()
    qtbot.waitUntil(lambda: "tiny" in window.commands.test_prompts, timeout=10_000)
    return window.commands.test_prompts["tiny"]


def test_a_ready_model_streams_an_answer_with_its_speed(qtbot, window_with, tmp_path,
                                                        llama_server_bin):
    bridge, window = ready_window(qtbot, window_with, tiny_config(tmp_path, llama_server_bin))
    dialog = open_dialog(qtbot, window)
    assert dialog.isVisible() and not dialog.isModal()
    assert dialog.prompt.toPlainText() == DEFAULT_PROMPT
    with qtbot.waitSignal(dialog.answered, timeout=30_000):
        dialog.send_button.click()
    assert dialog.answer.toPlainText()  # some text streamed in
    status = dialog.status.text()
    assert "tokens/s" in status and "first token after" in status, status
    assert dialog.stats.server_per_s is not None  # llama-server's own numbers are shown
    assert dialog.send_button.isEnabled() and not dialog.stop_button.isEnabled()
    window.commands.send("unload", ("tiny",))  # the model stops: the next prompt says so
    qtbot.waitUntil(lambda: bridge.rows[0].state == "unloaded", timeout=30_000)
    with qtbot.waitSignal(dialog.failed, timeout=10_000) as failed:
        dialog.send_button.click()
    assert "tiny" in failed.args[0] and "connection refused" in failed.args[0]
    assert dialog.status.text() == failed.args[0] and "\n" not in failed.args[0]


def test_a_wrong_key_is_one_plain_line(qtbot, window_with, tmp_path, llama_server_bin):
    _, window = ready_window(qtbot, window_with, tiny_config(tmp_path, llama_server_bin))
    url = open_dialog(qtbot, window).url.removesuffix("/v1/chat/completions")
    dialog = TestPromptDialog("tiny", url, "not-the-key")
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.failed, timeout=10_000) as failed:
        dialog.send()
    assert failed.args[0] == "tiny refused the prompt (HTTP 401: Invalid API Key)"
    assert dialog.answer.toPlainText() == ""


def test_a_simulated_model_has_no_endpoint_and_no_test_prompt(qtbot, window_with, tmp_path,
                                                              llama_server_bin):
    bridge, window = window_with(Config(models=(model("sim", load_time_s=0.1),)))
    qtbot.waitUntil(lambda: len(bridge.rows) == 1, timeout=10_000)
    window.commands.send("load", ("sim",))
    qtbot.waitUntil(lambda: bridge.rows[0].state == "ready", timeout=10_000)
    window.model_panel.select("sim")
    assert not window.model_panel.test_prompt_action.isEnabled()
    answers: dict[int, object] = {}
    bridge.answered.connect(lambda query, answer: answers.update({query: answer}))
    query = bridge.ask("endpoint", "sim")
    qtbot.waitUntil(lambda: query in answers, timeout=10_000)
    assert answers[query] is None
    window.commands.send("test_prompt", ("sim",))  # asked anyway: a plain answer
    qtbot.waitUntil(lambda: "not ready to answer" in window.command_label.text(),
                    timeout=10_000)
    assert window.commands.test_prompts == {}


def test_stop_ends_a_stream_and_says_so(qtbot):
    with socket.socket() as server:  # accepts and never answers: a stream that hangs
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        dialog = TestPromptDialog("slow", f"http://127.0.0.1:{server.getsockname()[1]}", "k")
        qtbot.addWidget(dialog)
        dialog.send()
        assert dialog.busy and dialog.stop_button.isEnabled()
        dialog.stop_button.click()
        assert not dialog.busy and dialog.send_button.isEnabled()
        assert dialog.status.text() == "Stopped · 0 tokens"


def test_events_split_across_reads_are_put_back_together():
    payloads, rest = split_events(b'data: {"a": 1}\n\ndata: {"b"')
    assert payloads == ['{"a": 1}'] and rest == b'data: {"b"'
    payloads, rest = split_events(rest + b': 2}\n\ndata: [DONE]\n\n')
    assert payloads == ['{"b": 2}', "[DONE]"] and rest == b""


def test_a_torch_model_answers_the_test_prompt_from_its_worker(qtbot, window_with,
                                                                tiny_transformers):
    """The same dialog against gpuwarden's torch worker (a tiny random Transformers
    model on the CPU): streamed text, its speed, the worker's 401 in one line."""
    torch_model = ModelConfig(name="tiny", backend="torch", path=tiny_transformers,
                              placement="cpu", layers=1, threads=1)
    _, window = ready_window(qtbot, window_with,
                                  Config(models=(torch_model, model("sim", load_time_s=0.1))))
    dialog = open_dialog(qtbot, window)
    dialog.prompt.setPlainText("Say hi.")
    with qtbot.waitSignal(dialog.answered, timeout=60_000):
        dialog.send_button.click()
    assert dialog.answer.toPlainText()
    assert "tokens/s" in dialog.status.text(), dialog.status.text()
    other = TestPromptDialog("tiny", dialog.url.removesuffix("/v1/chat/completions"), "nope")
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.failed, timeout=10_000) as failed:
        other.send()
    assert failed.args[0] == "tiny refused the prompt (HTTP 401: invalid API key)"
