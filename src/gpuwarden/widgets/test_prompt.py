"""Test prompt: send one prompt to a ready model's own server and watch the answer stream
in, with how many tokens came, how fast, and how long the first one took.

The request is the OpenAI-compatible ``/v1/chat/completions`` with ``stream: true`` on
127.0.0.1, sent by a :class:`QNetworkAccessManager` on the UI thread's event loop: the
answer is read piece by piece as ``readyRead`` says it arrived, so nothing waits.
Tokens are counted as streamed pieces; when the server's last chunk carries its own
``timings`` (llama-server does), its count and speed are shown instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QByteArray, QUrl, Signal, Slot
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

DEFAULT_PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 128
SILENCE_MS = 60_000  # no byte for this long: the request is given up


@dataclass
class StreamStats:
    """What the status line says, updated from each streamed chunk."""

    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    server_tokens: int | None = None  # llama-server's own count and speed, when sent
    server_per_s: float | None = None

    def took(self, now: float) -> None:
        self.tokens += 1
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at = now

    def per_second(self) -> float | None:
        if self.server_per_s is not None:
            return self.server_per_s
        if self.first_at is None or self.last_at is None or self.tokens < 2 \
                or self.last_at <= self.first_at:
            return None
        return (self.tokens - 1) / (self.last_at - self.first_at)

    def text(self) -> str:
        count = self.server_tokens if self.server_tokens is not None else self.tokens
        parts = [f"{count} token{'' if count == 1 else 's'}"]
        rate = self.per_second()
        if rate is not None:
            parts.append(f"{rate:.1f} tokens/s")
        if self.first_at is not None:
            parts.append(f"first token after {(self.first_at - self.started) * 1000:.0f} ms")
        return " · ".join(parts)


def split_events(buffer: bytes) -> tuple[list[str], bytes]:
    """The complete ``data:`` payloads in ``buffer`` and what is left of a partial line."""
    *lines, rest = buffer.split(b"\n")
    payloads = [line[5:].strip().decode("utf-8", "replace")
                for line in lines if line.startswith(b"data:")]
    return payloads, rest


def delta_text(chunk: dict[str, Any]) -> str:
    """The text a chat completion chunk adds ("" for a role-only or closing chunk)."""
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    content = (choices[0].get("delta") or {}).get("content")
    return content if isinstance(content, str) else ""


def error_line(model: str, url: str, reply: QNetworkReply, body: bytes) -> str:
    """One plain line for a request that failed."""
    status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
    if isinstance(status, int) and status >= 400:
        return f"{model} refused the prompt (HTTP {status}: {_server_message(body)})"
    error = reply.error()
    if error == QNetworkReply.NetworkError.ConnectionRefusedError:
        return f"Could not reach {model} at {url}: connection refused (is it still loaded?)"
    if error == QNetworkReply.NetworkError.RemoteHostClosedError:
        return f"{model} closed the connection before answering (was it stopped?)"
    if error == QNetworkReply.NetworkError.OperationCanceledError:
        return f"{model} sent nothing for {SILENCE_MS // 1000} s: gave up"
    return f"{model}: {reply.errorString()}"


def _server_message(body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:200] or "no reason given"
    return str(message)


class TestPromptDialog(QDialog):
    """Non-modal: shown with :meth:`show`; ``answered(status)`` when a stream ends well,
    ``failed(line)`` when it does not."""

    __test__ = False  # not a pytest class, despite its name

    answered = Signal(str)
    failed = Signal(str)

    def __init__(self, model_name: str, base_url: str, api_key: str,
                 parent: QWidget | None = None, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__(parent)
        self.model_name = model_name
        self.url = f"{base_url.rstrip('/')}/v1/chat/completions"
        self._key = api_key
        self._max_tokens = max_tokens
        self._network = QNetworkAccessManager(self)
        self._reply: QNetworkReply | None = None
        self._buffer = b""
        self._body = b""
        self._stopped = False
        self.stats = StreamStats()
        self.setWindowTitle(f"Test prompt: {model_name}")
        self.prompt = QPlainTextEdit(DEFAULT_PROMPT)
        self.prompt.setObjectName("testPromptInput")
        self.prompt.setMaximumHeight(self.fontMetrics().height() * 5)
        self.answer = QPlainTextEdit()
        self.answer.setObjectName("testPromptAnswer")
        self.answer.setReadOnly(True)
        self.answer.setPlaceholderText("The answer streams in here.")
        self.status = QLabel(f"Up to {max_tokens} tokens from {model_name}.")
        self.status.setObjectName("testPromptStatus")
        self.status.setWordWrap(True)
        self.send_button = QPushButton("Send")
        self.send_button.setToolTip("Send the prompt (Ctrl+Return)")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        QShortcut(QKeySequence("Ctrl+Return"), self, self.send)
        self._lay_out()
        self.resize(560, 420)

    def _lay_out(self) -> None:
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.send_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Prompt"))
        layout.addWidget(self.prompt)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Answer"))
        layout.addWidget(self.answer, 1)
        layout.addWidget(self.status)

    @property
    def busy(self) -> bool:
        return self._reply is not None

    @Slot()
    def send(self) -> None:
        """Send the prompt; a stream already running is stopped first."""
        if self._reply is not None:
            self.stop()
        request = QNetworkRequest(QUrl(self.url))
        request.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        request.setRawHeader(QByteArray(b"Authorization"),
                             QByteArray(f"Bearer {self._key}".encode()))
        request.setTransferTimeout(SILENCE_MS)
        body = {"messages": [{"role": "user", "content": self.prompt.toPlainText()}],
                "max_tokens": self._max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        self.answer.clear()
        self._buffer, self._body, self._stopped = b"", b"", False
        self.stats = StreamStats()
        self.status.setText(f"Waiting for {self.model_name}…")
        reply = self._network.post(request, QByteArray(json.dumps(body).encode()))
        reply.readyRead.connect(self._read)
        reply.finished.connect(self._finished)
        self._reply = reply
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)

    @Slot()
    def stop(self) -> None:
        if self._reply is not None:
            self._stopped = True
            self._reply.abort()  # finished() follows at once

    @Slot()
    def _read(self) -> None:
        reply = self._reply
        if reply is None:
            return
        data = reply.readAll().data()
        status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute)
        if isinstance(status, int) and status >= 400:
            self._body += data  # the error's JSON, read when it ends
            return
        payloads, self._buffer = split_events(self._buffer + data)
        for payload in payloads:
            self._take(payload)
        self.status.setText(self.stats.text())

    def _take(self, payload: str) -> None:
        if payload == "[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            return  # not JSON: nothing a user could read from it
        if not isinstance(chunk, dict):
            return
        text = delta_text(chunk)
        if text:
            self.stats.took(time.monotonic())
            cursor = self.answer.textCursor()
            cursor.movePosition(cursor.MoveOperation.End)
            cursor.insertText(text)
        timings = chunk.get("timings")
        if isinstance(timings, dict) and "predicted_per_second" in timings:
            self.stats.server_tokens = int(timings.get("predicted_n", self.stats.tokens))
            self.stats.server_per_s = float(timings["predicted_per_second"])

    @Slot()
    def _finished(self) -> None:
        reply = self._reply
        if reply is None:
            return
        if reply.isOpen():  # an aborted reply is closed: nothing left to read
            self._read()
        self._reply = None
        reply.deleteLater()
        self.send_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        if self._stopped:
            self.status.setText(f"Stopped · {self.stats.text()}")
        elif reply.error() != QNetworkReply.NetworkError.NoError:
            line = error_line(self.model_name, self.url, reply, self._body)
            self.status.setText(line)
            self.failed.emit(line)
        else:
            self.status.setText(self.stats.text())
            self.answered.emit(self.stats.text())

    def done(self, result: int) -> None:
        """Closing the dialog ends a stream still running."""
        self.stop()
        super().done(result)
