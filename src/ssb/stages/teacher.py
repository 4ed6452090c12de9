"""Stage 3: the hinted teacher's solution for each selected problem, vetted by the gates.

    ssb teacher --run runs/NAME

For every problem of ``selections.jsonl`` (curate) one solution becomes a training pair.
Where it comes from is ``teacher.solution`` (generated from the hinted prompt of
:func:`prompts.teacher_messages`, or a verified correct rollout the hinted prompt only scores)
and what that prompt shows is ``teacher.hint`` (:meth:`Candidate.hint`); what each value does:
:class:`config.TeacherConfig`, docs/method.md.

Each pair records the hint (``hint``) and what stood in the ``{correct}`` place
(``hint_correct``: ``rollout:I``, ``answer`` or null). A problem without a correct rollout
(kept by ``curate.keep: any_wrong``, beyond the paper) has no rollout to score or show: its
solution is generated whatever ``teacher.solution`` says (``solution_source: generate``,
``correct_index: null``), and a rollout in the hint is replaced by the gold answer in
``teacher.answer_hint``'s wording; ``contrastive`` still shows the wrong trace. The gates
are the same; ``shows_work`` measures length against the first worked example's solution
(``prompt.examples``) instead of the correct rollout, or skips the length check without one.

Every candidate goes through the gates of :data:`gates.GATES`, in that order:
:func:`gates.check_reply` runs the text gates, this stage ``plausible`` (its score, the
reply's mean log-prob per token under the bare student prompt, is always recorded).
Passing solutions go to ``pairs.jsonl``; problems with none go to
``teacher_rejects.jsonl`` with every rejected reply, its gate and the reason. Both are
append-only: a killed run resumes where it stopped, and stops at ``teacher.max_pairs``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..data.problem import Problem
from ..errors import SSBError
from ..generation.engine import Generator, Sampling, derive_seed
from ..generation.factory import make_generator
from ..grading.answers import ANSWER_FORMATS
from ..grading.gates import GATE_ORDER, Privileged, Verdict, asks_boxed, check_reply, privileged_text
from ..grading.grade import grade
from ..models import LoadedModel, load_model
from ..prompts import check_teacher_template, student_messages, teacher_messages
from ..rundir.jsonl import JsonlWriter, read_jsonl
from ..rundir.run import Run
from ..signal.alignment import align_pair, answer_slice

OUTPUT = "pairs.jsonl"
REJECTS = "teacher_rejects.jsonl"
GENERATING = ("generate", "generate_or_rollout")  # the teacher.solution values that generate


class TeacherError(SSBError, RuntimeError):
    pass


# ----------------------------------------------------------------------------- one problem


class Candidate:
    """One problem on its way to a pair: its rollouts, selection and the replies tried."""

    def __init__(self, row: dict, sel: dict, cfg: RunConfig):
        self.row, self.sel, self.cfg = row, sel, cfg
        self.problem = Problem.from_dict(row["problem"])
        self.student = student_messages(cfg.prompt, self.problem.question)
        self.tokens = 0
        self.prompt_tokens = 0  # prompt tokens encoded, over every attempt (report/ledger.py's prefill)
        self.forward_tokens = 0  # tokens of the plausibility forward (student prompt + solution; the ledger's forward)
        self.formats: list[str] = []
        self.rejected: list[dict] = []
        self.attempts = 0
        self._privileged: Privileged | None = None

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def has_correct(self) -> bool:
        """False for a problem kept without a correct rollout (``curate.keep: any_wrong``)."""
        return self.sel["correct_index"] is not None

    def hint(self, scored: int | None = None) -> tuple[str | None, str | None]:
        """(what the hinted prompt shows in the ``{correct}`` place, its ``hint_correct`` label)
        for ``teacher.hint``: the verified answer in ``teacher.answer_hint``'s wording
        (``answer``), a correct rollout (``correct``, ``contrastive``) or nothing (``none``).
        ``scored``: the rollout being scored as the solution, never shown: another correct
        rollout takes its place, else the answer. Without a correct rollout: the gold answer."""
        mode = self.cfg.teacher.hint
        if mode == "none":
            return None, None
        if mode != "answer" and self.has_correct:
            comps = self.row["completions"]
            indices = self.sel.get("correct_indices") or [self.sel["correct_index"]]
            if scored is None:
                return comps[self.sel["correct_index"]], f"rollout:{self.sel['correct_index']}"
            others = [j for j in indices if j != scored and comps[j].strip() != comps[scored].strip()]
            if others:
                return comps[others[0]], f"rollout:{others[0]}"
        answer = self.problem.answer
        if scored is not None:
            answer = self.row["extracted"][scored] or answer  # verified equal to the gold answer
        return self.cfg.teacher.answer_hint.replace("ANSWER", str(answer)), "answer"

    def hinted(self, correct_text: str | None) -> list[dict]:
        tc = self.cfg.teacher
        wrong = self.row["completions"][self.sel["wrong_index"]]
        return teacher_messages(self.cfg.prompt, self.problem.question, correct_text, wrong,
                                self.sel["wrong_answer"], tc.hint, tc.template, tc.examples)

    def privileged(self) -> Privileged:
        tc = self.cfg.teacher
        if self._privileged is None:
            self._privileged = privileged_text(self.cfg.prompt, tc.template, tc.hint, tc.gates.leak_ngram,
                                               student_text=self.problem.question)
        return self._privileged

    def reference(self) -> tuple[str | None, str]:
        """(text, name) that ``shows_work`` measures a reply's length against: the correct
        rollout; without one the first worked example's solution; (None, ...) when there is
        no example either, and only the length criterion is skipped."""
        if self.has_correct:
            return self.row["completions"][self.sel["correct_index"]], "correct rollout"
        examples = self.cfg.prompt.examples
        return (examples[0].solution if examples else None), "worked example"

    def vet(self, text: str, finish_reason: str, source: str) -> Verdict:
        g = grade(self.problem, text)
        self.formats.append(g.fmt)
        reference, name = self.reference()
        v = check_reply(text, correct=g.correct, finished=finish_reason == "stop", outcome=g.outcome.value,
                        cfg=self.cfg.teacher.gates, privileged=self.privileged(), reference=reference,
                        reference_name=name, want_boxed=asks_boxed(self.cfg.prompt))
        if not v.ok:
            self.reject(text, source, v.gate, v.reason)
        return v

    def reject(self, text: str, source: str, gate: str | None, reason: str) -> None:
        self.rejected.append({"source": source, "gate": gate, "reason": reason, "text": text[:400]})

    def rollout_solution(self) -> tuple[str, int, list[dict], str] | None:
        """(rollout text, its index, the hinted messages that score it, hint label) for the
        first correct rollout that passes the gates; None without one."""
        if not self.has_correct:
            return None
        comps = self.row["completions"]
        indices = self.sel.get("correct_indices") or [self.sel["correct_index"]]
        for idx in indices:
            v = self.vet(comps[idx], "stop", "rollout")
            if not v.ok:
                continue
            text, label = self.hint(scored=idx)
            return comps[idx], idx, self.hinted(text), label
        return None


def pair_record(c: Candidate, messages: list[dict], solution: str, source: str, attempts: int,
                scored_index: int | None, hint: str | None) -> dict[str, Any]:
    """The line of ``pairs.jsonl`` for candidate ``c``'s ``solution`` (from ``source``)."""
    return {"id": c.id, "problem": c.row["problem"], "student_messages": c.student, "teacher_messages": messages,
            "solution": solution, "answer": c.row["problem"]["answer"], "solution_source": source,
            "scored_rollout": scored_index, "hint_correct": hint,
            **{k: c.sel[k] for k in ("correct_index", "wrong_index", "wrong_answer", "wrong_count", "wrong_groups")},
            "hint": c.cfg.teacher.hint, "teacher_attempts": attempts, "teacher_tokens": c.tokens,
            "teacher_prompt_tokens": c.prompt_tokens,
            "teacher_formats": c.formats, "rejected_replies": c.rejected}


# ----------------------------------------------------------------------------- plausibility


@torch.no_grad()
def student_logprobs(loaded: LoadedModel, records: list[dict], max_length: int,
                     batch_size: int = 8) -> list[tuple[float, int]]:
    """Mean log-prob per reply token of each record's ``solution`` under its bare
    ``student_messages`` (one forward pass of the base model, no generation), and the tokens that
    forward pass read (student prompt + solution: the ledger's ``forward_tokens``)."""
    model, tok = loaded.model, loaded.tokenizer
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[float] = []
    for b in range(0, len(records), batch_size):
        pairs = [align_pair(tok, r["student_messages"], r["student_messages"], r["solution"], max_length)
                 for r in records[b : b + batch_size]]
        width = max(len(p.student_ids) for p in pairs)
        ids = torch.full((len(pairs), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(pairs):
            ids[i, : len(p.student_ids)] = torch.tensor(p.student_ids)
            attn[i, : len(p.student_ids)] = 1
        logp = model(input_ids=ids.to(dev), attention_mask=attn.to(dev)).logits.float().log_softmax(-1)
        for i, p in enumerate(pairs):
            sl = answer_slice(len(p.student_prompt_ids), len(p.reply_ids))
            target = torch.tensor(p.reply_ids, device=dev)
            out.append((float(logp[i, sl].gather(-1, target[:, None]).mean()), len(p.student_ids)))
    return out


# ----------------------------------------------------------------------------- the stage


def run_teacher(run: Run, loaded: LoadedModel | None = None, generator: Generator | None = None) -> dict:
    """Build ``pairs.jsonl`` from ``selections.jsonl``; return the funnel stats."""
    sel_path = _selections(run)
    with run.stage_run("teacher") as info:
        selections = read_jsonl(sel_path)
        todo, tally = _pending(run, selections)
        loaded, generator = _load(run, todo, loaded, generator)
        with _outputs(run, todo) as (pairs, rejects):
            for chunk in _chunks(todo, run.cfg.generation.batch_size, tally):
                found = _solve_chunk(chunk, generator, tally)
                _score_plausibility(chunk, found, loaded)
                _write(chunk, found, pairs, rejects, tally)
        stats = _stats(run, selections, tally)
        info.update(stats)
    return stats


@dataclass
class _Tally:
    """This invocation's counts: pairs in ``pairs.jsonl`` (at most ``cap``), tokens generated, seconds it took."""

    pairs: int
    cap: int
    tokens: int = 0
    seconds: float = 0.0


def _selections(run: Run) -> Path:
    """Curate's ``selections.jsonl``, once it is there and the teacher template fits ``teacher.hint``."""
    tc = run.cfg.teacher
    if tc.template:
        check_teacher_template(tc.template, tc.hint)
    path = run.file("selections.jsonl")
    if not path.exists():
        raise TeacherError(f"{path} not found: run `ssb curate --run {run.path}` first")
    return path


def _pending(run: Run, selections: list[dict]) -> tuple[list[Candidate], _Tally]:
    """The selected problems neither paired nor rejected yet (a killed run resumes there), none
    once ``teacher.max_pairs`` pairs are written, and the tally of the pairs there are."""
    pairs_path = run.file(OUTPUT)
    pairs_path.touch()  # downstream stages find the (possibly empty) file
    rows = {r["id"]: r for r in read_jsonl(run.file("rollouts.jsonl"))}
    written = read_jsonl(pairs_path)
    done = {r["id"] for r in written} | {r["id"] for r in read_jsonl(run.file(REJECTS))}
    cap = run.cfg.teacher.max_pairs
    tally = _Tally(pairs=len(written), cap=cap if cap is not None else len(selections))
    if tally.pairs >= tally.cap:
        return [], tally
    return [Candidate(rows[s["id"]], s, run.cfg) for s in selections if s["id"] not in done and s["id"] in rows], tally


def _load(run: Run, todo: list[Candidate], loaded: LoadedModel | None, generator: Generator | None):
    """The model and generator ``todo`` needs, loaded unless given: the generator where a solution is
    generated (``teacher.solution`` or no correct rollout to score), the model for it or to score
    plausibility (on a vLLM run its HF copy sits on the CPU, so only then when the gate is on)."""
    cfg = run.cfg
    generate = cfg.teacher.solution in GENERATING or any(not c.has_correct for c in todo)
    if not todo or not (generate or cfg.teacher.gates.plausible or cfg.generation.backend != "vllm"):
        return loaded, generator
    if loaded is None:
        loaded = load_model(cfg.model, device="cpu" if cfg.generation.backend == "vllm" else None)
    if generator is None and generate:
        generator = make_generator(cfg.generation, loaded, cfg.model)
    return loaded, generator


@contextmanager
def _outputs(run: Run, todo: list[Candidate]) -> Iterator[tuple[JsonlWriter | None, JsonlWriter | None]]:
    """``pairs.jsonl`` and ``teacher_rejects.jsonl`` open to append to, when there is anything to do."""
    if not todo:
        yield None, None
        return
    with JsonlWriter(run.file(OUTPUT)) as pairs, JsonlWriter(run.file(REJECTS)) as rejects:
        yield pairs, rejects


def _chunks(todo: list[Candidate], size: int, tally: _Tally) -> Iterator[list[Candidate]]:
    """``todo`` in chunks of ``generation.batch_size``, none larger than the pairs left to ``tally.cap``."""
    pos = 0
    while pos < len(todo) and tally.pairs < tally.cap:
        chunk = todo[pos : pos + min(max(1, size), tally.cap - tally.pairs)]
        pos += len(chunk)
        yield chunk


def _solve_chunk(chunk: list[Candidate], generator: Generator | None, tally: _Tally) -> dict[str, dict]:
    """A pair record for each candidate with a solution past the gates, by id: generated (where
    ``teacher.solution`` generates, or there is no correct rollout), else a correct rollout."""
    solution = chunk[0].cfg.teacher.solution
    to_generate = chunk if solution in GENERATING else [c for c in chunk if not c.has_correct]
    found = _generate_round(to_generate, generator, tally) if to_generate else {}
    if solution in ("rollout", "generate_or_rollout"):
        for c in chunk:
            got = None if c.id in found else c.rollout_solution()
            if got is not None:
                text, idx, msgs, hint = got
                found[c.id] = pair_record(c, msgs, text, "rollout", c.attempts, idx, hint)
    return found


def _generate_round(chunk: list[Candidate], generator: Generator, tally: _Tally) -> dict[str, dict]:
    """Sample the hinted teacher for every candidate, with retries, until a reply passes."""
    cfg, tc = chunk[0].cfg, chunk[0].cfg.teacher
    sampling = Sampling(n=1, temperature=tc.temperature, top_k=tc.top_k,
                        max_new_tokens=cfg.generation.max_new_tokens, seed=tc.seed)
    hints = {c.id: c.hint() for c in chunk}
    msgs = {c.id: c.hinted(hints[c.id][0]) for c in chunk}
    found: dict[str, dict] = {}
    pending = list(chunk)
    for attempt in range(1 + max(0, tc.retries)):
        if not pending:
            break
        t0 = time.time()
        outs = generator.generate([msgs[c.id] for c in pending], sampling, progress=f"teacher (try {attempt + 1})",
                                  seeds=[derive_seed(tc.seed, c.id, attempt) for c in pending])
        tally.seconds += time.time() - t0
        still = []
        for c, (comp,) in zip(pending, outs):
            c.tokens += comp.completion_tokens
            c.prompt_tokens += comp.prompt_tokens
            c.attempts += 1
            tally.tokens += comp.completion_tokens
            if c.vet(comp.text, comp.finish_reason, "generate").ok:
                found[c.id] = pair_record(c, msgs[c.id], comp.text, "generate", c.attempts, None, hints[c.id][1])
            else:
                still.append(c)
        pending = still
    return found


def _score_plausibility(chunk: list[Candidate], found: dict[str, dict], loaded: LoadedModel | None) -> None:
    """Record each found solution's ``student_logprob`` (the ``plausible`` gate's score, measured
    whenever the model is loaded, and its forward pass counted: ``Candidate.forward_tokens``); with
    the gate on, reject the solutions below its threshold."""
    cfg, gc = chunk[0].cfg, chunk[0].cfg.teacher.gates
    scored = [c for c in chunk if c.id in found]
    if scored and loaded is not None:
        recs = [found[c.id] for c in scored]
        for c, r, (lp, n) in zip(scored, recs, student_logprobs(loaded, recs, cfg.distill.max_length)):
            r["student_logprob"] = round(lp, 4)
            c.forward_tokens += n
    for c in chunk:
        r = found.get(c.id)
        if r is not None and gc.plausible and r["student_logprob"] < gc.min_student_logprob:
            c.reject(r["solution"], r["solution_source"], "plausible",
                     f"mean log-prob {r['student_logprob']:.2f} under the student prompt < {gc.min_student_logprob:g}")
            del found[c.id]


def _write(chunk: list[Candidate], found: dict[str, dict], pairs: JsonlWriter, rejects: JsonlWriter,
           tally: _Tally) -> None:
    """Each candidate's pair to ``pairs.jsonl`` (up to ``tally.cap``), or, without a solution, the
    problem and every rejected reply to ``teacher_rejects.jsonl``."""
    tc = chunk[0].cfg.teacher
    for c in chunk:
        r = found.get(c.id)
        if r is None:
            rejects.write({"id": c.id, "attempts": c.attempts, "rejected_replies": c.rejected,
                           "reasons": [x["gate"] for x in c.rejected], "teacher_tokens": c.tokens,
                           "teacher_prompt_tokens": c.prompt_tokens, "student_forward_tokens": c.forward_tokens,
                           "teacher_formats": c.formats, "hint": tc.hint, "solution": tc.solution})
        elif tally.pairs < tally.cap:
            r["rejected_replies"] = c.rejected
            r["student_forward_tokens"] = c.forward_tokens
            pairs.write(r)
            tally.pairs += 1


def _stats(run: Run, selections: list[dict], tally: _Tally) -> dict:
    """The teacher funnel over every pair and reject so far (tried, kept, each rejected reply by its gate),
    this invocation's throughput and, with ``curate.keep: any_wrong``, the problems without a correct rollout."""
    tc = run.cfg.teacher
    pairs, rejects = read_jsonl(run.file(OUTPUT)), read_jsonl(run.file(REJECTS))
    by_gate: Counter = Counter(dict.fromkeys(GATE_ORDER, 0))
    formats: Counter = Counter(dict.fromkeys(ANSWER_FORMATS, 0))
    for r in pairs + rejects:
        by_gate.update(x["gate"] for x in r.get("rejected_replies", []))
        formats.update(r.get("teacher_formats", []))
    lps = [r["student_logprob"] for r in pairs if r.get("student_logprob") is not None]
    stats = {"teacher_tried": len(pairs) + len(rejects), "teacher_verified": len(pairs), "teacher_failed": len(rejects),
             "pairs_written": len(pairs), "replies_rejected_by_gate": dict(by_gate),
             "pairs_by_source": dict(Counter(r.get("solution_source", "generate") for r in pairs)),
             "teacher_formats": dict(formats),
             "teacher_tokens": sum(r.get("teacher_tokens", 0) for r in pairs + rejects),
             "verified_on_retry": sum(r.get("teacher_attempts", 1) > 1 for r in pairs),
             "student_logprob_mean": round(sum(lps) / len(lps), 4) if lps else None,
             "student_logprob_min": round(min(lps), 4) if lps else None}
    if run.cfg.curate.keep == "any_wrong":  # only then: with the paper's "both" the manifest is unchanged
        unsolved = {s["id"] for s in selections if s["correct_index"] is None}
        stats.update(tried_without_correct=sum(r["id"] in unsolved for r in pairs + rejects),
                     pairs_without_correct=sum(r["id"] in unsolved for r in pairs))
    stats.update(selected=len(selections), max_pairs=tc.max_pairs, solution=tc.solution, hint=tc.hint,
                 max_pairs_reached=tc.max_pairs is not None and len(pairs) >= tc.max_pairs,
                 new_teacher_tokens=tally.tokens,
                 tokens_per_s=round(tally.tokens / tally.seconds, 1) if tally.seconds > 0 else None)
    return stats
