"""Shared fixtures: a tiny randomly initialised model (fast unit tests) that uses the
embedded model's real tokenizer and chat template, and the real embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Never touch the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    from ssb.config import ModelConfig
    from ssb.models import load_tokenizer

    return load_tokenizer(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> Path:
    """A 2-layer Llama with random weights and the embedded tokenizer, saved to disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from ssb.models import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M-Instruct (cached safetensors copy after the first load)."""
    from ssb.models import load_model

    return load_model("embedded", device="cpu")


@pytest.fixture(scope="session")
def chatml_tokenizer(embedded_tokenizer):
    """The embedded tokenizer with a Qwen2.5-style ChatML template (default system prompt,
    '<|im_end|>\\n' after each turn), for alignment tests against a second template."""
    import copy

    tok = copy.deepcopy(embedded_tokenizer)
    tok.chat_template = (
        "{%- if messages[0]['role'] == 'system' %}"
        "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
        "{%- else %}"
        "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- for message in messages %}"
        "{%- if not (message.role == 'system' and loop.first) %}"
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    return tok
