"""Tiny real PyTorch models written on the fly (no download): a random 2-layer Llama
Transformers folder with a byte-level tokenizer and a chat template, and a small module
exported with ``torch.export`` and scripted with TorchScript."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "assistant:")


def write_tiny_transformers(folder: Path, seed: int = 0) -> Path:
    """A causal LM of a few hundred KB: loads in about a second, generates (never the
    end-of-text token: its answers are always as long as asked)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    bos, eos = len(vocab), len(vocab) + 1
    vocab |= {"<s>": bos, "</s>": eos}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    # The model's outputs stop short of "</s>" (the last id): it never ends an answer
    # early, so every answer is max_tokens long whatever the random weights are.
    config = LlamaConfig(vocab_size=len(vocab) - 1, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=4096, bos_token_id=bos, eos_token_id=eos)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


class _Affine:
    """y = x @ W.T + b with fixed numbers, so a test knows the answer."""

    WEIGHT = [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]
    BIAS = [0.5, -0.5]

    @classmethod
    def module(cls):  # type: ignore[no-untyped-def]
        import torch

        linear = torch.nn.Linear(3, 2)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(cls.WEIGHT))
            linear.bias.copy_(torch.tensor(cls.BIAS))
        return linear.eval()

    @classmethod
    def expected(cls, row: list[float]) -> list[float]:
        return [sum(w * x for w, x in zip(ws, row, strict=True)) + b
                for ws, b in zip(cls.WEIGHT, cls.BIAS, strict=True)]


affine = _Affine


def write_tiny_export(path: Path) -> Path:
    import torch

    exported = torch.export.export(affine.module(), (torch.zeros(1, 3),))
    torch.export.save(exported, str(path))
    return path


def write_tiny_script(path: Path) -> Path:
    import torch

    with warnings.catch_warnings():  # deprecated in favour of torch.export, still loaded
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(affine.module()), str(path))
    return path


@pytest.fixture(scope="session")
def tiny_transformers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers", reason="the [torch] extra is not installed")
    return write_tiny_transformers(tmp_path_factory.mktemp("torch") / "tiny")
