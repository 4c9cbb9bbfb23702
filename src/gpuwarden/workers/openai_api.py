"""The OpenAI-style request and reply shapes a worker speaks (``/v1/completions``,
``/v1/chat/completions``, streamed as server-sent events like llama-server's): pure
functions from JSON to JSON, so each is tested without a model."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

MAX_TOKENS_DEFAULT = 256
MAX_TOKENS_LIMIT = 32_768


class BadRequest(ValueError):
    """A request the worker refuses (HTTP 400), with a message naming the field."""


@dataclass(frozen=True)
class TextRequest:
    """What to generate: a prompt or chat messages, how much, how."""

    chat: bool
    prompt: str  # /v1/completions only
    messages: tuple[dict[str, str], ...]  # /v1/chat/completions only
    max_tokens: int
    temperature: float
    stream: bool


def parse_text_request(body: bytes, *, chat: bool) -> TextRequest:
    """A request body read into a :class:`TextRequest`; BadRequest names what is wrong."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return TextRequest(chat=chat,
                       prompt="" if chat else _prompt(data),
                       messages=_messages(data) if chat else (),
                       max_tokens=_int(data, "max_tokens", MAX_TOKENS_DEFAULT),
                       temperature=_number(data, "temperature", 0.8),
                       stream=_bool(data, "stream"))


def _prompt(data: dict[str, Any]) -> str:
    prompt = data.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string")
    return prompt


def _messages(data: dict[str, Any]) -> tuple[dict[str, str], ...]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise BadRequest(f"'messages[{i}]' must be an object with string 'role' and "
                             "'content'")
        out.append({"role": m["role"], "content": m["content"]})
    return tuple(out)


def _int(data: dict[str, Any], key: str, default: int) -> int:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or \
            not 1 <= value <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"'{key}' must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    return value


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 5:
        raise BadRequest(f"'{key}' must be a number from 0 to 5")
    return float(value)


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be true or false")
    return value


class Reply:
    """The reply to one request: its id and model name, whole or as stream chunks."""

    def __init__(self, request: TextRequest, model: str) -> None:
        self.request, self.model = request, model
        prefix = "chatcmpl" if request.chat else "cmpl"
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.object = "chat.completion" if request.chat else "text_completion"

    def whole(self, text: str, finish: str, prompt_tokens: int, tokens: int) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.request.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "choices": [choice],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                          "total_tokens": prompt_tokens + tokens}}

    def chunk(self, text: str, finish: str | None = None) -> bytes:
        """One server-sent event carrying ``text`` (and the finish reason on the last)."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.request.chat:
            choice["delta"] = {"content": text} if text or finish is None else {}
        else:
            choice["text"] = text
        body = {"id": self.id, "object": f"{self.object}.chunk", "created": self.created,
                "model": self.model, "choices": [choice]}
        return sse(body)


def sse(body: dict[str, Any] | str) -> bytes:
    data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def error_body(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}
