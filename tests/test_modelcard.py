"""The model card (modelcard.py) the report writes into each trained adapter: its front matter
parses as YAML and names the base model, PEFT and the method; its numbers are the eval summary's.

Fast here, on test_report's synthetic run directory (every file each stage writes; the adapters'
``adapter_config.json`` added); on the real smoke run in test_pipeline.py
(``test_smoke_run_writes_model_cards``, which reuses its run and calls :func:`check_card`)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_report import make_synthetic_run

from ssb.report.modelcard import _adapter_digest, _front_matter, write_model_card
from ssb.report.paired import pct
from ssb.rundir.run import Run


def check_card(run_dir: Path, adapter: str, method: str, label: str) -> str:
    """Assert ``run_dir/adapter/README.md`` is a model card of ``method`` whose held-out numbers
    are those of ``eval/<label>/summary.json``; returns its text."""
    text = (run_dir / adapter / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "peft" and front["base_model"]
    assert {"ssb", "lora", method} <= set(front["tags"])
    run = Run.open(run_dir)
    if run.cfg.model.name_or_path == "embedded":
        assert (front["base_model"], front["license"]) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    for heading in ("## How it was made", "## Held-out results", "## How to load it"):
        assert heading in text
    assert f"- **Method:** `{method}`" in text
    assert "PeftModel.from_pretrained" in text
    cfg_sha = __import__("hashlib").sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    assert cfg_sha in text
    assert f"r = {run.cfg.lora.r}, alpha = {run.cfg.lora.alpha}" in text
    summary = json.loads((run_dir / "eval" / label / "summary.json").read_text())
    for bench, b in summary["benches"].items():
        total = b["n_problems"] * b.get("samples_per_problem", 1)
        row = (f"| {bench} | {label} | {pct(b['accuracy'])}% | {b['correct']}/{total} | "
               f"[{pct(b['ci'][0])}, {pct(b['ci'][1])}]% |")
        assert row in text, (row, text)
    assert "Not evaluated" not in text and "Warning" not in text
    assert "**one replicate**" in text and "ssb compare " in text  # report/replicated.py
    return text


def _adapters(run: Run) -> None:
    for sub, r in (("student", 32), ("grpo", 32)):
        d = run.file(sub)
        d.mkdir(parents=True, exist_ok=True)
        (d / "adapter_config.json").write_text(json.dumps({
            "r": r, "lora_alpha": 32, "lora_dropout": 0.0, "peft_type": "LORA",
            "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": "/cache/somewhere"}))
        (d / "adapter_model.safetensors").write_bytes(b"weights of " + sub.encode())
        (d / "README.md").write_text("---\nlibrary_name: peft\n---\n# Model Card for Model ID\n")  # PEFT's


def _stamp_evals(run: Run) -> None:
    """Eval records carry the digest of the adapter they evaluated (stages/evaluate.py)."""
    for label, sub in (("ssb", "student"), ("grpo", "grpo")):
        path = run.file(f"eval/{label}/holdout.jsonl")
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        for r in recs:
            r["model"] = {"base": "embedded", "adapter_sha256": _adapter_digest(run.file(sub))}
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_report_writes_a_card_per_adapter(tmp_path):
    from ssb.stages.report import write_report

    run = make_synthetic_run(tmp_path)
    _adapters(run)
    _stamp_evals(run)
    write_report(run)
    text = check_card(run.path, "student", "ssb", "ssb")
    assert "Model Card for Model ID" not in text  # PEFT's blank template replaced
    assert "**Training problems:** 40" in text and "**Verified teacher pairs (training examples):** 11" in text
    assert "| holdout | base |" in text and "| holdout | ssb − base | 200 |" in text
    assert "30 optimizer steps" in text
    grpo = check_card(run.path, "grpo", "grpo", "grpo")
    assert "| holdout | grpo − base | 200 |" in grpo and "teacher pairs" not in grpo
    assert "38000 generated tokens" in grpo


def test_digest_matches_the_eval_stage():
    from ssb.stages.evaluate import adapter_digest

    d = Path(__file__).resolve().parent  # any directory: no adapter_* files gives the empty digest
    assert _adapter_digest(d) == adapter_digest(d)


def test_digest_matches_on_real_files(tmp_path):
    from ssb.stages.evaluate import adapter_digest

    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "tokenizer.json").write_text("not part of it")
    assert _adapter_digest(tmp_path) == adapter_digest(tmp_path)


def test_card_before_any_eval_and_after_retraining(tmp_path):
    run = make_synthetic_run(tmp_path)
    _adapters(run)
    text = write_model_card(run, run.file("student"), "ssb").read_text()
    assert "Warning" not in text  # records without a digest stamp: nothing to compare
    _stamp_evals(run)
    (run.file("student") / "adapter_model.safetensors").write_bytes(b"retrained")
    text = write_model_card(run, run.file("student"), "ssb").read_text()
    assert "**Warning:** these results are of another adapter" in text
    for label in ("ssb", "base", "grpo"):
        for f in run.file(f"eval/{label}").iterdir():
            f.unlink()
        run.file(f"eval/{label}").rmdir()
    run.file("eval/compare.json").unlink(missing_ok=True)
    text = write_model_card(run, run.file("student"), "ssb").read_text()
    assert "Not evaluated" in text
    assert _front_matter(text)["tags"] == ["ssb", "lora"]
