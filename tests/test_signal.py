"""The teacher-signal diagnostic (``signal/diagnostic.py``, ``ssb signal``) and the hint-gain token weighting
of distill (issue 37): closed forms against autograd, the top-k store's bounds, the run driver against the
training loss itself, and distill with ``token_weighting: hint_gain`` on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_teacher_distill import PROBLEMS, make_run, sharp_model_dir  # noqa: F401  (a fixture)

from ssb.signal.diagnostic import (
    PAPER,
    confident_shares,
    forward_kl_logit_grad,
    gain_summary,
    hint_gains,
    loss_and_grad_sq,
    loss_variant,
    teacher_solution_logprobs,
    token_stats,
    topk_lse_bound,
    write_signal,
)
from ssb.signal.losses import TeacherSignal, distill_loss, token_terms
from ssb.signal.store import TeacherStore
from ssb.errors import ConfigError
from ssb.stages.logits import encode, run_logits

N, H, V = 29, 12, 40


class _Head(torch.nn.Module):
    def __init__(self, W):
        super().__init__()
        self.weight = torch.nn.Parameter(W)
        self.bias = None


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(V, H, generator=g)
    h_s = torch.randn(N, H, generator=g)
    h_t = h_s + 0.8 * torch.randn(N, H, generator=g)
    return W, h_s, h_t, torch.randint(0, V, (N,), generator=g)


def _signals(W, h_t, T, k):
    return {"dense": TeacherSignal("dense", logits=h_t @ W.t()),
            f"topk{k}": TeacherSignal("topk", temperature=T, **encode(h_t, "topk", torch.float32, _Head(W), k, T)),
            "topkV": TeacherSignal("topk", temperature=T, **encode(h_t, "topk", torch.float32, _Head(W), V, T))}


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_forward_kl_gradient_closed_form_is_autograds(logits, T):
    """d(T²·KL(p_T ‖ q_T))/dz = T·(q_T − p_T), per position; a top-k teacher's tail mass shared as the
    student's: the closed form equals torch autograd of the loss's own per-position terms."""
    W, h_s, h_t, targets = logits
    z = h_s @ W.t()
    for name, sig in _signals(W, h_t, T, 6).items():
        zz = z.clone().requires_grad_(True)
        token_terms(zz, sig, None, W, None, T)["kd"].sum().backward()
        closed = forward_kl_logit_grad(z, sig, W, None, T)
        torch.testing.assert_close(closed, zz.grad, rtol=1e-4, atol=1e-6, msg=name)
        _, g2 = loss_and_grad_sq(z, sig, targets, W, None, loss_variant({}, **PAPER), T)
        torch.testing.assert_close(g2, closed.pow(2).sum(-1), rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(token_stats(z, sig, targets, W, None, T)["paper_grad_sq"], g2, rtol=1e-4,
                                   atol=1e-7)
    dense = TeacherSignal("dense", logits=h_t @ W.t())
    stats = token_stats(z, dense, targets, W, None, T)
    p_T, q_T = F.softmax(h_t @ W.t() / T, -1), F.softmax(z / T, -1)
    torch.testing.assert_close(stats["kl"], (p_T * (p_T.log() - q_T.log())).sum(-1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats["teacher_entropy"], -(p_T * p_T.log()).sum(-1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats["hint_gain"], F.log_softmax(h_t @ W.t(), -1).gather(-1, targets[:, None])[:, 0]
                               - F.log_softmax(z, -1).gather(-1, targets[:, None])[:, 0])


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
def test_topk_teacher_logprob_is_bounded_and_exact_where_it_can_be(logits, T):
    """From a top-k store, the T = 1 normaliser's bound holds at every T; it is exact at T = 1 and when k covers
    the vocabulary; a top-k solution token's log-prob is then a lower bound of the exact one, and a solution
    token outside the top-k is flagged."""
    W, _, h_t, targets = logits
    exact = F.log_softmax(h_t @ W.t(), -1).gather(-1, targets[:, None])[:, 0]
    true_lse = torch.logsumexp(h_t @ W.t(), -1)
    for k in (5, 15, V):
        enc = encode(h_t, "topk", torch.float32, _Head(W), k, T)
        bound = topk_lse_bound(enc["topk_logits"], enc["lse"], T, V)
        assert bool((bound >= true_lse - 1e-4).all()), (k, T)
        sig = TeacherSignal("topk", temperature=T, **enc)
        est, in_tail = teacher_solution_logprobs(sig, targets, W, None, vocab_size=V)
        assert in_tail.tolist() == (~(enc["topk_ids"].long() == targets[:, None]).any(-1)).tolist()
        assert bool((est[~in_tail] <= exact[~in_tail] + 1e-4).all())
        if k == V or T == 1.0:
            torch.testing.assert_close(bound, true_lse, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(est[~in_tail], exact[~in_tail], rtol=1e-5, atol=1e-4)
    est, in_tail = teacher_solution_logprobs(TeacherSignal("hidden", hidden=h_t), targets, W, None)
    torch.testing.assert_close(est, exact)
    assert not in_tail.any()


def test_aggregates_on_known_numbers():
    loss = torch.tensor([1.0, 3.0, 0.0, 4.0])
    g2 = torch.tensor([1.0, 1.0, 2.0, 4.0])
    conf = torch.tensor([True, False, True, False])
    s = confident_shares(loss, g2, conf)
    assert s["confident_share_of_loss"] == pytest.approx(1 / 8) and s["confident_share_of_grad"] == pytest.approx(3 / 8)
    assert s["grad_sq_per_token_confident"] == pytest.approx(1.5) and s["grad_sq_per_token_rest"] == pytest.approx(2.5)
    g = gain_summary(torch.tensor([-1.0, -0.05, 0.0, 0.2, 0.6, 2.0, 3.0, 0.1]))
    assert g["share_above_0.5"] == pytest.approx(3 / 8) and g["share_below_-0.1"] == pytest.approx(1 / 8)
    assert g["q50"] == pytest.approx(0.15) and g["q05"] < g["q25"] < g["q50"] < g["q75"] < g["q95"]


# ----------------------------------------------------------------------------- a run


def _step0_kd(run, loaded, temperature=None):
    """The training loss's kd at step 0 (student = base), over every pair at once: distill's own items,
    collator and loss, independent of the diagnostic."""
    from ssb.rundir.jsonl import read_jsonl
    from ssb.signal.lm_head import answer_hidden_states
    from ssb.stages.distill import DistillCollator, build_items

    store = TeacherStore(run.file("teacher"))
    items, _ = build_items(read_jsonl(run.file("pairs.jsonl")), store, loaded.tokenizer, 8192)
    b = DistillCollator(loaded.tokenizer.pad_token_id, store.kind)([{**it, "teacher": store.get(it["id"])}
                                                                     for it in items])
    with torch.no_grad():
        h = answer_hidden_states(loaded.model, b["input_ids"], b["attention_mask"], b["answer_mask"])
    rows = {name: b[f"teacher_{name}"] for name in ("hidden", "topk_ids", "topk_logits", "lse") if f"teacher_{name}" in b}
    sig = TeacherSignal(store.kind, temperature=store.temperature, **rows)
    head = loaded.model.get_output_embeddings()
    T = run.cfg.distill.temperature if temperature is None else temperature
    return float(distill_loss(h, head.weight, None, sig, temperature=T).kd), items, store


@pytest.mark.filterwarnings("ignore:the topk teacher store is lossy")
@pytest.mark.parametrize("store", ["hidden", "topk"])
def test_signal_of_a_run_is_the_training_loss_at_step_0(tmp_path, sharp_model_dir, store):  # noqa: F811
    from ssb.models import load_model

    run = make_run(tmp_path, sharp_model_dir, logits={"store": store, "topk": 4, "batch_size": 6})
    run_logits(run)
    loaded = load_model(run.cfg.model)
    if store == "topk":  # its tail bucket is at the run's temperature: another one cannot be diagnosed
        with pytest.raises(ConfigError, match="tail bucket"):
            write_signal(run, variants={"t1": {"temperature": 1.0}}, loaded=loaded)
    t1 = {"t1": {"temperature": 1.0}} if store == "hidden" else {}
    path, out = write_signal(run, variants={"jsd": {"divergence": "jsd", "jsd_beta": 0.3},
                                            "weighted": {"token_weighting": "hint_gain"}, **t1}, loaded=loaded)
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    kd, items, st = _step0_kd(run, loaded)
    assert out["pairs"] == len(PROBLEMS) and out["tokens"] == st.index["n_tokens"]
    paper = out["losses"]["paper"]
    assert paper["loss_per_token"] == pytest.approx(kd, rel=1e-4)
    assert out["losses"]["run"]["loss_per_token"] == pytest.approx(kd, rel=1e-4)  # the run's loss is the paper's
    assert out["confident_share_of_grad"] == paper["confident_share_of_grad"]
    assert set(out["losses"]) == {"paper", "run", "jsd", "weighted", *t1}
    if t1:  # a variant's own temperature: the training loss at T = 1
        assert out["losses"]["t1"]["settings"]["temperature"] == 1.0
        assert out["losses"]["t1"]["loss_per_token"] == pytest.approx(_step0_kd(run, loaded, 1.0)[0], rel=1e-4)
    assert out["losses"]["jsd"]["settings"]["divergence"] == "jsd" and out["losses"]["jsd"]["loss_per_token"] < kd
    for v in out["losses"].values():
        assert all(v[k] is None or 0 <= v[k] <= 1 for k in ("confident_share_of_grad", "confident_share_of_loss"))
    # the hint gains distill weighs tokens by are the diagnostic's
    gains = hint_gains(loaded.model, st, items, loaded.tokenizer.pad_token_id)
    flat = torch.tensor([x for it in items for x in gains[it["id"]]])
    assert out["hint_gain"]["mean"] == pytest.approx(float(flat.double().mean()), rel=1e-4, abs=1e-6)
    assert len(out["top_hint_gain"]) == 10 and all("[[" in t["context"] for t in out["top_hint_gain"])
    tops = [t["hint_gain"] for t in out["top_hint_gain"]]
    assert tops == sorted(tops, reverse=True) and tops[0] == pytest.approx(float(flat.max()), abs=1e-3)
    assert (out["teacher_logprob"] == "exact") == (store == "hidden")
    assert store == "hidden" or out["teacher_tokens_in_tail"] > 0  # k = 4: some solution tokens are in the tail


def test_ssb_signal_command(tmp_path, sharp_model_dir, capsys):  # noqa: F811
    from ssb.cli import main

    run = make_run(tmp_path, sharp_model_dir, logits={"batch_size": 6})
    run_logits(run)
    assert main(["signal", "--run", str(run.path), "--json", "--limit", "2", "--variant", "divergence=reverse_kl"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"] == 2 and out["losses"]["variant"]["settings"]["divergence"] == "reverse_kl"
    assert run.file("signal.json").is_file()
    assert main(["signal", "--run", str(run.path), "--limit", "1", "--variant", "divergence=jsd",
                 "--variant", "kd_weight=0", "--variant", "ce_weight=1"]) == 1  # a contradictory variant
    assert "kd_weight is 0" in capsys.readouterr().err
    from bench.signal_shares import main as bench_main

    # the per-task script, over the same function
    assert bench_main(["--run", f"tiny={run.path}", "--limit", "2", "--out", str(tmp_path / "signal.json")]) == 0
    (task,) = json.loads((tmp_path / "signal.json").read_text())["tasks"]
    assert task["task"] == "tiny" and task["losses"]["variant"]["settings"]["token_weighting"] == "hint_gain"
    assert task["losses"]["paper"]["confident_share_of_grad"] == out["losses"]["paper"]["confident_share_of_grad"]
    # --best-from: each task's loss chosen on validation (the suite's ssb_best_choice) beside the paper's
    suite = tmp_path / "tasks.json"
    suite.write_text(json.dumps({"tasks": [{"name": "tiny", "ssb_best_choice": {
        "arm": "ssb:distill.temperature=1+distill.ce_weight=0.5",
        "overrides": ["distill.temperature=1", "distill.ce_weight=0.5"]}}, {"name": "other"}]}))
    assert bench_main(["--run", f"tiny={run.path}", "--limit", "2", "--best-from", str(suite),
                       "--out", str(tmp_path / "signal.json")]) == 0
    (task,) = json.loads((tmp_path / "signal.json").read_text())["tasks"]
    best = task["losses"]["ssb_best"]["settings"]
    assert best["temperature"] == 1 and best["ce_weight"] == 0.5 and task["ssb_best"]["arm"].startswith("ssb:")
    assert task["confident_share_of_grad"] == {k: task["losses"][k]["confident_share_of_grad"]
                                               for k in ("paper", "ssb_best")}


def test_distill_with_hint_gain_weights(tmp_path, sharp_model_dir):  # noqa: F811
    """distill.token_weighting=hint_gain trains (the weights reach the loss) and its base forward is counted."""
    from ssb.report.ledger import stage_counts
    from ssb.rundir.jsonl import read_jsonl
    from ssb.stages.distill import run_distill

    run = make_run(tmp_path, sharp_model_dir, logits={"batch_size": 6}, lora={"r": 2, "alpha": 2},
                   distill={"epochs": 1, "batch_size": 3, "token_weighting": "hint_gain", "divergence": "jsd"})
    run_logits(run)
    info = run_distill(run)
    seq_tokens = info["trained_tokens"]  # one epoch: every student sequence's tokens
    assert info["forward_tokens"] == seq_tokens and stage_counts(run, "distill")["forward_tokens"] == seq_tokens
    log = read_jsonl(run.file("train_log.jsonl"))
    assert len(log) == 2 and all(r["kd"] > 0 for r in log)
