"""What an ``ssb compare`` arm is and what each replicate changes: the arm names (:func:`parse_arms`), an
``ssb:...`` ablation's overrides and the stages it takes from its replicate (:func:`reused_stages`),
replicate ``r``'s seeds (:func:`replicate_overrides`) and copying finished stages between run
directories (:func:`copy_stages`). Read by :class:`comparison.arms.Compare`, ``--tune`` and the benchmarks."""

from __future__ import annotations

import json
import re
import shutil

from ..config import HINTS
from ..data.gym import MAX_DRAWS
from ..errors import SSBError
from ..rundir.run import Run
from ..rundir.table import stage_names
from .defaults import OVERRIDE_SEP

BASE_ARMS = ("base", "ssb", "sft", "rft", "grpo", "sdft")
CONTRASTIVE_TEMPLATE = "{question}\n({correct})\n\nA wrong solution (its answer {wrong_answer} is wrong):\n{wrong}"
SSB_STAGES = [s for s in stage_names(counts_toward_ssb_cost=True) if s != "rollout"]
UPSTREAM = ("rollout", "curate", "teacher", "logits")  # what SSB pays before distilling


class CompareError(SSBError, ValueError):
    pass


def parse_arms(spec: str) -> list[str]:
    arms = [a.strip() for a in spec.split(",") if a.strip()]
    for a in arms:
        if a.startswith("ssb@") and not (a[4:].isdigit() and int(a[4:]) >= 2):
            raise CompareError(f"arm {a!r}: ssb@<k> names SSB after k >= 2 rounds, e.g. ssb@2")
        if a not in BASE_ARMS and not a.startswith(("ssb:", "ssb@")):
            raise CompareError(f"unknown arm {a!r}: arms are {', '.join(BASE_ARMS)}, ssb@<rounds> or ssb:<hint> / "
                               "ssb:<key>=<value>")
    if "base" not in arms:
        arms.insert(0, "base")
    return arms


def ablation_overrides(arm: str, template: str | None) -> list[str]:
    """Overrides of an ``ssb:...`` arm: a hint name, or ``key=value`` overrides joined by ``+``
    (``ssb:distill.temperature=1+distill.ce_weight=0.5``)."""
    what = arm.split(":", 1)[1]
    if "=" in what:
        parts = re.split(OVERRIDE_SEP, what)
        bad = [x for x in parts if "=" not in x or not x.split("=", 1)[0]]
        if bad:
            raise CompareError(f"arm {arm!r}: {bad[0]!r} is not key=value (several overrides join with '+')")
        return parts
    if what not in HINTS:
        raise CompareError(f"arm {arm!r}: {what!r} is neither a teacher.hint ({', '.join(HINTS)}) nor key=value")
    out = [f"teacher.hint={what}"]
    if what == "contrastive" and "{wrong}" not in (template or ""):
        out.append("teacher.template=" + json.dumps(CONTRASTIVE_TEMPLATE))
    return out


STUDENT_ONLY = ("distill.", "lora.")  # what the student's training alone reads
SIGNAL_READS = ("distill.max_length",)  # ... except this: the teacher stage and the teacher signal read it too


def reused_stages(overrides: list[str], store: str) -> tuple[str, ...]:
    """The stages an ablation with ``overrides`` takes from its replicate as they are: the rollouts
    always; with overrides of the student's training only (``distill.*``, ``lora.*``), also curate, the
    teacher's pairs and the teacher signal (the latter not for a ``topk`` store when
    ``distill.temperature`` changes: its tail bucket is computed at the temperature), so the ablation
    trains on exactly its replicate's pairs and changes one thing."""
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    if not keys or not all(k.startswith(STUDENT_ONLY) and k not in SIGNAL_READS for k in keys):
        return ("rollout",)
    if store == "topk" and "distill.temperature" in keys:
        return ("rollout", "curate", "teacher")
    return UPSTREAM


STAGE_FILES = {"rollout": ("rollouts.jsonl",), "curate": ("selections.jsonl",),
               "teacher": ("pairs.jsonl", "teacher_rejects.jsonl"), "logits": ("teacher",)}


# reasoning-gym's entry i of seed s comes from Random(s + i): seed s + 1 repeats seed s shifted by one
DATA_SEED_STRIDE = MAX_DRAWS + 3


def replicate_overrides(cfg, r: int) -> list[str]:
    """Replicate ``r``'s seeds: every stage's seed + r, the data seed + r x DATA_SEED_STRIDE, a training draw
    of its own (before 2026-11-30 it was + r, and replicates shared 319 of 320 reasoning-gym problems)."""
    if r == 0:
        return []
    return [f"data.seed={cfg.data.seed + r * DATA_SEED_STRIDE}", f"rollout.seed={cfg.rollout.seed + r}",
            f"curate.seed={cfg.curate.seed + r}", f"teacher.seed={cfg.teacher.seed + r}",
            f"distill.seed={cfg.distill.seed + r}", f"grpo.seed={cfg.grpo.seed + r}", f"sdft.seed={cfg.sdft.seed + r}"]


def copy_stages(src: Run, dst: Run, stages: tuple[str, ...], files: tuple[str, ...]) -> None:
    """``dst`` starts from ``src``'s ``files`` and the manifest entries of ``stages`` (nothing regenerated)."""
    for f in files:
        s, d = src.file(f), dst.file(f)
        if s.is_dir() and not d.exists():
            shutil.copytree(s, d)
        elif s.is_file() and not d.exists():
            d.write_bytes(s.read_bytes())
    for st in stages:
        if not dst.stage_done(st):
            dst.set_stage(st, **{**src.stage(st), "copied_from": str(src.path)})
