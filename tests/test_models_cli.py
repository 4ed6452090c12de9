"""Model loading (local path, embedded GGUF + cache), fingerprints, and the CLI surface."""

import subprocess
import sys

import pytest
import torch

from ssb.cli import main
from ssb.models import ModelLoadError, fingerprint, fingerprint_diff, load_model, resolve_dtype


def test_load_local_directory_and_fingerprint_parts(tiny_model_dir, tiny_model):
    lm = tiny_model
    assert lm.model.config.num_hidden_layers == 2 and lm.tokenizer.chat_template
    fp = fingerprint(lm.model, lm.tokenizer, str(tiny_model_dir))
    again = fingerprint(load_model(str(tiny_model_dir), device="cpu").model, lm.tokenizer, "other-id")
    assert fingerprint_diff(fp, again) == []  # model_id is informational
    tok2 = type(lm.tokenizer).from_pretrained(tiny_model_dir)
    tok2.chat_template = "{{ messages }}"
    assert fingerprint_diff(fp, fingerprint(lm.model, tok2, "x")) == ["chat_template"]


def test_fingerprint_sees_changed_weights(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    fp = fingerprint(lm.model, lm.tokenizer, "m")
    with torch.no_grad():
        lm.model.lm_head.weight[0, 0] += 1.0
    assert fingerprint_diff(fp, fingerprint(lm.model, lm.tokenizer, "m")) == ["weights"]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "nope.gguf"), device="cpu")


def test_dtype_selection():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.slow
def test_embedded_model_loads_from_cache(embedded_model):
    lm = embedded_model
    assert lm.model.config.vocab_size == 49152 and lm.model.config.hidden_size == 576
    assert "<|im_start|>" in lm.tokenizer.chat_template
    again = load_model("embedded", device="cpu")
    assert again.from_cache
    a = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(lm.model(a).logits, again.model(a).logits, atol=1e-5)


def test_cli_help_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "ssb.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("run", "rollout", "curate", "logits", "distill", "eval", "grpo", "report", "data", "model"):
        assert f"    {cmd} " in out or f"    {cmd}\n" in out


def test_cli_model_info(tiny_model_dir, capsys):
    assert main(["model", "info", str(tiny_model_dir), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"vocab_size": 49152' in out and '"chat_template": true' in out and "load_seconds" in out


def test_cli_bad_config_is_an_error_not_a_traceback(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("rollout: {k: many}\n")
    assert main(["config", "show", str(p)]) == 1
    assert "rollout.k" in capsys.readouterr().err


def test_cli_model_info_on_an_adapter_says_what_it_is_without_loading(tmp_path, capsys):
    """`ssb model info runs/x/student`: a LoRA adapter, its base model and rank (and its parameter count,
    read from the safetensors header), without loading the base model."""
    import json

    from safetensors.torch import save_file

    run = tmp_path / "run"
    adapter = run / "student"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["v_proj", "q_proj"],
        "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    save_file({"a.lora_A.weight": torch.zeros(8, 64), "a.lora_B.weight": torch.zeros(64, 8)},
              str(adapter / "adapter_model.safetensors"))
    (run / "config.yaml").write_text("model: {name_or_path: embedded}\n")
    assert main(["model", "info", str(adapter), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"].startswith("LoRA adapter") and info["rank (r)"] == 8 and info["alpha"] == 16
    assert info["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert info["run's model.name_or_path"] == "embedded"
    assert info["parameters"] == 2 * 8 * 64 and info["target_modules"] == "q_proj, v_proj"
    assert main(["model", "info", str(adapter)]) == 0
    out = capsys.readouterr().out
    assert "LoRA adapter" in out and "rank (r)" in out
