"""What the teacher's distribution says about a run's solutions, before any training.

    python -m bench.teacher_signal --run runs/default [--limit 85]

The student learns the teacher's distribution over each pair's solution, so a teacher that
disagrees with the solution (wants other words, wants to end the turn early, or prefers
other digits for the answer) teaches exactly that. This scores every pair's solution under
several teacher conversations with one forward pass each (no generation) and reports, per
conversation:

* ``argmax_miss``: fraction of solution tokens where the teacher's top token is another one;
* ``early_end``: fraction of pairs where the teacher's top token is end-of-turn somewhere
  before the solution ends;
* ``mean_logprob``: mean log-prob per solution token;
* ``answer_argmax_acc`` / ``answer_logprob``: the same on the tokens of the first stated
  result (after the first ``=`` up to ``.`` or a line end), where the arithmetic is decided;
* ``boxed_argmax_acc`` / ``boxed_prob``: at the token that opens ``\\boxed`` in the answer line,
  where the format is decided: the teacher's top token right, and its probability (geometric
  mean over pairs). A hint worded ``(The answer is 120.)`` pulls this down and the student
  learns to drop ``\\boxed``.

Conversations: ``run`` (the pairs' own ``teacher_messages``), ``student`` (the bare question,
what the student sees), ``no_examples`` (the run's hinted turn without the worked examples),
``contrastive`` (the paper's hint: the answer and the most common wrong rollout,
``bench/quality.py``'s template), ``answer`` (the verified answer after the question, unboxed),
``answer_boxed`` (the same in the ``\\boxed`` format, the default ``teacher.answer_hint``) and
``value`` (only the number). ``--arms`` picks some of them (each costs one forward pass per pair).
Writes ``bench/results/teacher_signal.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from ssb.models import load_model
from ssb.prompts import teacher_prompt
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.signal.alignment import align_pair, answer_slice

from ._meta import ROOT, provenance

CONTRASTIVE = ("A correct solution:\n{correct}\n\nA wrong solution (its answer {wrong_answer} is wrong):\n"
               "{wrong}\n\n{question}")


def conversations(pair: dict, wrong_text: str) -> dict[str, list[dict]]:
    st, q, ans = pair["student_messages"], pair["problem"]["question"], pair["answer"]
    hinted = pair["teacher_messages"][-1]
    return {
        "run": pair["teacher_messages"],
        "student": st,
        "no_examples": [st[0], hinted],
        "contrastive": st[:-1] + [{"role": "user", "content": teacher_prompt(
            q, f"The answer is {ans}.", wrong_text, pair["wrong_answer"], "contrastive", CONTRASTIVE)}],
        "answer": st[:-1] + [{"role": "user", "content": f"{q}\n(The answer is {ans}.)"}],
        "answer_boxed": st[:-1] + [{"role": "user", "content": f"{q}\n(The answer is \\boxed{{{ans}}}.)"}],
        "value": st[:-1] + [{"role": "user", "content": f"{q}\n({ans})"}],
    }


def boxed_position(pieces: list[str]) -> int | None:
    """Index of the token holding the backslash of the first ``\\boxed`` in the reply: where the
    teacher decides between the boxed format and a bare number."""
    at = "".join(pieces).find("\\boxed")
    if at < 0:
        return None
    end = 0
    for i, t in enumerate(pieces):
        end += len(t)
        if end > at:
            return i
    return None


def answer_positions(pieces: list[str]) -> list[int]:
    eq = next((i for i, t in enumerate(pieces) if "=" in t), None)
    out: list[int] = []
    if eq is None:
        return out
    for j in range(eq + 1, len(pieces)):
        if "." in pieces[j] or "\n" in pieces[j]:
            break
        out.append(j)
    return out


def score(run_dir: str, limit: int | None, arms: str | None) -> tuple[Run, int, dict]:
    """Every pair of ``run_dir`` (the first ``limit``) under each conversation: (run, pairs, results)."""
    run = Run.open(run_dir)
    pairs = read_jsonl(run.file("pairs.jsonl"))[:limit]
    if not pairs:
        raise SystemExit(f"{run.file('pairs.jsonl')}: no pairs")
    rollouts = {r["id"]: r for r in read_jsonl(run.file("rollouts.jsonl"))}
    lm = load_model(run.cfg.model)
    model, tok = lm.model, lm.tokenizer
    acc: dict[str, dict[str, float]] = {}
    for p in pairs:
        wrong = rollouts[p["id"]]["completions"][p["wrong_index"]]
        for name, msgs in conversations(p, wrong).items():
            if arms and name not in arms.split(","):
                continue
            a = align_pair(tok, msgs, p["student_messages"], p["solution"])
            ids = torch.tensor([a.teacher_prompt_ids + a.reply_ids], device=model.device)
            with torch.no_grad():
                logits = model(ids).logits[0, answer_slice(len(a.teacher_prompt_ids), len(a.reply_ids))].float().cpu()
            tgt = torch.tensor(a.reply_ids)
            lp = logits.log_softmax(-1)
            top = logits.argmax(-1)
            tlp = lp[torch.arange(len(tgt)), tgt]
            s = acc.setdefault(name, {k: 0.0 for k in ("pairs", "tokens", "miss", "lp", "early", "ans", "ans_ok", "ans_lp",
                                                       "box", "box_ok", "box_lp")})
            s["pairs"] += 1
            s["tokens"] += len(tgt)
            s["miss"] += (top != tgt).sum().item()
            s["lp"] += tlp.sum().item()
            s["early"] += bool((top[:-1] == tgt[-1]).any())
            pieces = [tok.decode([t]) for t in a.reply_ids]
            b = boxed_position(pieces)
            if b is not None:
                s["box"] += 1
                s["box_ok"] += int(top[b] == tgt[b])
                s["box_lp"] += tlp[b].item()
            pos = answer_positions(pieces)
            s["ans"] += len(pos)
            s["ans_ok"] += sum(int(top[j] == tgt[j]) for j in pos)
            s["ans_lp"] += sum(tlp[j].item() for j in pos)
    results = {name: {"argmax_miss": s["miss"] / s["tokens"], "early_end": s["early"] / s["pairs"],
                      "mean_logprob": s["lp"] / s["tokens"],
                      "answer_argmax_acc": s["ans_ok"] / max(1, s["ans"]),
                      "answer_logprob": s["ans_lp"] / max(1, s["ans"]),
                      "boxed_argmax_acc": s["box_ok"] / max(1, s["box"]),
                      "boxed_prob": math.exp(s["box_lp"] / max(1, s["box"]))} for name, s in acc.items()}
    return run, len(pairs), results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, action="append",
                    help="a run directory; repeat it to score several (the file then lists them under `runs`)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--arms", default=None, help="comma-separated conversations to score (default: all)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "teacher_signal.json"))
    args = ap.parse_args()
    docs = []
    for run_dir in args.run:
        run, n, results = score(run_dir, args.limit, args.arms)
        print(f"{n} pairs of {run.path}\n")
        print(f"{'teacher sees':14} {'argmax_miss':>11} {'early_end':>9} {'mean_lp':>8} {'ans_acc':>8} {'ans_lp':>7} "
              f"{'box_acc':>8} {'box_p':>6}")
        for name, r in results.items():
            print(f"{name:14} {r['argmax_miss']:11.3f} {r['early_end']:9.3f} {r['mean_logprob']:8.3f} "
                  f"{r['answer_argmax_acc']:8.3f} {r['answer_logprob']:7.3f} {r['boxed_argmax_acc']:8.3f} "
                  f"{r['boxed_prob']:6.3f}")
        docs.append({"run": str(run.path), "name": run.cfg.name, "pairs": n, "model": run.cfg.model.name_or_path,
                     "results": results, "provenance": provenance(run.file("config.yaml"))})
    out = docs[0] if len(docs) == 1 else {"runs": docs, "provenance": provenance(None),
                                          "command": "python -m bench.teacher_signal " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nsaved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
