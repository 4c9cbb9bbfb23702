"""What the torch worker holds: a model loaded from a Transformers causal-LM folder
(config + safetensors weights, with ``transformers``; pickled weights are refused) or a
``torch.export`` (``.pt2``) / TorchScript (``.pt``, ``.ts``) file, on the GPU or the CPU;
moved between them in place; and the text it generates.

Errors a person must fix are :class:`LoadError` (the worker prints "failed to load
model: ..." so the engine classifies the death as ``load_error`` and does not retry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gpuwarden.engine.safety.capabilities import inspect_capabilities
from gpuwarden.engine.safety.dtype import DtypeChoice, normalise_dtype, select_safe_dtype

EXPORT_SUFFIXES = (".pt2",)
SCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MIB = 1024.0 * 1024.0


class LoadError(RuntimeError):
    """The model cannot be loaded as given (wrong folder, pickled weights, no transformers)."""


def choose_dtype(requested: str, device: str) -> DtypeChoice:
    """The dtype a Transformers model runs in: float32 on the CPU; on the GPU what
    :func:`select_safe_dtype` makes of ``requested`` for the GPU this process sees."""
    want = normalise_dtype(requested)
    if device == "cpu":
        return DtypeChoice("float32", "float32 on the CPU: half precision there is slow or "
                                      "unsupported." if want != "float32" else
                           "float32 as requested.", want)
    return select_safe_dtype(want, inspect_capabilities())


class TorchModel:
    """One loaded model. ``lock`` serialises generation and moves (one at a time)."""

    def __init__(self, module: Any, tokenizer: Any | None, kind: str, device: str,
                 dtype: DtypeChoice | None = None) -> None:
        self.module, self.tokenizer, self.kind, self.device = module, tokenizer, kind, device
        self.dtype = dtype  # None: an exported or scripted module keeps its own
        self.lock = threading.Lock()

    @property
    def is_text(self) -> bool:
        return self.kind == "transformers" and self.tokenizer is not None

    def move(self, device: str) -> None:
        """The weights to ``device`` ("cuda" or "cpu") in place; the cache allocator's
        free blocks are given back, so the driver (NVML) sees the memory freed."""
        with self.lock:
            if self.dtype is None:
                self.module.to(device)
            else:
                self.dtype = choose_dtype(self.dtype.requested, device)
                self.module.to(device=device, dtype=_DTYPES[self.dtype.dtype])
            self.device = device
            if device == "cpu" and torch.cuda.is_available():
                torch.cuda.empty_cache()

    def run(self, inputs: list[Any]) -> Any:
        """An exported or scripted module called on ``inputs`` (nested lists -> tensors)."""
        tensors = [torch.tensor(x, device=self.device) for x in inputs]
        with self.lock, torch.inference_mode():
            out = self.module(*tensors)
        return out.tolist() if isinstance(out, torch.Tensor) else \
            [o.tolist() for o in out]

    # -- text ------------------------------------------------------------------------------

    def prompt_ids(self, prompt: str, messages: tuple[dict[str, str], ...]) -> Any:
        tok = self.tokenizer
        assert tok is not None
        if messages:
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(list(messages), tokenize=False,
                                               add_generation_prompt=True)
            else:  # no template in the folder: the plain transcript
                text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + \
                    "assistant:"
        else:
            text = prompt
        ids = tok(text, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0 and tok.bos_token_id is not None:
            ids = torch.tensor([[tok.bos_token_id]])
        return ids.to(self.device)

    def generate(self, ids: Any, max_tokens: int, temperature: float) -> Generation:
        """The text to come, piece by piece (iterate it while holding ``lock``); a prompt
        and max_tokens beyond the model's context is a ValueError saying so."""
        context = getattr(getattr(self.module, "config", None), "max_position_embeddings", None)
        if isinstance(context, int) and ids.shape[1] + max_tokens > context:
            raise ValueError(f"the prompt ({ids.shape[1]} tokens) and max_tokens ({max_tokens})"
                             f" exceed the model's context of {context} tokens")
        return Generation(self, ids, max_tokens, temperature)

    def vram_reserved_mib(self) -> float:
        """What torch's caching allocator holds on the GPU (0 on the CPU)."""
        if self.device == "cpu" or not torch.cuda.is_available():
            return 0.0
        return float(torch.cuda.memory_reserved()) / _MIB


class Generation:
    """Text pieces as they are generated (greedy at temperature 0), with the KV cache.
    Ends at the end-of-text token (``finish`` "stop") or ``max_tokens`` ("length")."""

    def __init__(self, model: TorchModel, ids: Any, max_tokens: int,
                 temperature: float) -> None:
        self.model, self.ids, self.max_tokens, self.temperature = \
            model, ids, max_tokens, temperature
        self.prompt_tokens = int(ids.shape[1])
        self.tokens: list[int] = []
        self.finish = "length"

    def __iter__(self) -> Iterator[str]:
        model, tok = self.model, self.model.tokenizer
        assert tok is not None
        past, step, shown = None, self.ids, ""
        with torch.inference_mode():
            for _ in range(self.max_tokens):
                out = model.module(input_ids=step, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = _pick(out.logits[:, -1, :].float(), self.temperature)
                if token == tok.eos_token_id:
                    self.finish = "stop"
                    return
                self.tokens.append(token)
                step = torch.tensor([[token]], device=model.device)
                text = tok.decode(self.tokens, skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # not half a character
                    yield text[len(shown):]
                    shown = text

    def text(self) -> str:
        """All of it (generating what is left)."""
        return "".join(self)


def _pick(logits: Any, temperature: float) -> int:
    if temperature <= 0:
        return int(logits.argmax(dim=-1)[0])
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1)[0, 0])


def load(path: Path, device: str, dtype: str) -> TorchModel:
    """The model at ``path`` on ``device`` ("cuda" or "cpu"), a Transformers one in the
    safe form of ``dtype`` (:func:`choose_dtype`); LoadError says what is wrong."""
    if path.is_dir():
        return _load_transformers(path, device, choose_dtype(dtype, device))
    suffix = path.suffix.lower()
    module: Any
    if suffix in EXPORT_SUFFIXES:
        module = torch.export.load(str(path)).module()
        return TorchModel(module.to(device), None, "export", device)
    if suffix in SCRIPT_SUFFIXES:
        jit: Any = torch.jit  # untyped
        module = jit.load(str(path), map_location="cpu").eval()
        return TorchModel(module.to(device), None, "torchscript", device)
    raise LoadError(f"{path} is neither a Transformers folder nor a {', '.join(EXPORT_SUFFIXES)}"
                    f" (torch.export) or {', '.join(SCRIPT_SUFFIXES)} (TorchScript) file")


def _load_transformers(folder: Path, device: str, dtype: DtypeChoice) -> TorchModel:
    if not (folder / "config.json").is_file():
        raise LoadError(f"{folder} has no config.json: not a Transformers model folder")
    if not any(folder.glob("*.safetensors")):
        raise LoadError(f"{folder} has no .safetensors weights (gpuwarden never loads "
                        "pickled .bin weights: convert them with safetensors first)")
    try:
        import transformers
    except ImportError:
        raise LoadError("transformers is not installed: pip install 'gpuwarden[torch]'") \
            from None
    module: Any
    try:
        module = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=_DTYPES[dtype.dtype], use_safetensors=True, local_files_only=True,
            trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise LoadError(f"{folder}: {exc}") from None
    tokenizer = None
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    module.eval()
    return TorchModel(module.to(device), tokenizer, "transformers", device, dtype)
