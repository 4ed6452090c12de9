"""Stage 4 (teacher store) and stage 5 (distillation) on the tiny model."""

import json

import pytest
import torch

from ssb.config import RunConfig
from ssb.rundir.jsonl import read_jsonl
from ssb.rundir.run import Run
from ssb.signal.store import TeacherStore, TeacherStoreError
from ssb.stages.logits import run_logits

SYSTEM = "You are a careful math tutor. Give the final answer as \\boxed{ANSWER}."
PROBLEMS = [("What is 2 + 3?", "2 + 3 = 5.\n\\boxed{5}"),
            ("What is 7 times 6?", "7 * 6 = 42.\n\\boxed{42}"),
            ("Tom has 9 apples and eats 4. How many are left?", "9 - 4 = 5 apples.\n\\boxed{5}"),
            ("What is 10 divided by 2?", "10 / 2 = 5.\n\\boxed{5}"),
            ("A box holds 3 rows of 4 eggs. How many eggs?", "3 * 4 = 12 eggs.\n\\boxed{12}"),
            ("What is 15 minus 8?", "15 - 8 = 7.\n\\boxed{7}")]


def write_pairs(path, problems=PROBLEMS):
    with open(path, "w") as f:
        for i, (q, sol) in enumerate(problems):
            ans = sol.split("boxed{")[1].rstrip("}")
            f.write(json.dumps({
                "id": f"p{i}",
                "student_messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                "teacher_messages": [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": f"{q}\nHint: a verified solution ends with {ans}."}],
                "solution": sol, "answer": ans,
            }) + "\n")


def make_run(tmp_path, tiny_model_dir, name="t", **sections):
    cfg = RunConfig(name=name, runs_dir=str(tmp_path), model={"name_or_path": str(tiny_model_dir), "device": "cpu"},
                    **sections)
    run = Run.create(cfg)
    write_pairs(run.file("pairs.jsonl"))
    return run


@pytest.fixture(scope="module")
def hidden_run(tmp_path_factory, tiny_model_dir):
    run = make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir, logits={"batch_size": 4, "shard_size": 2})
    run_logits(run)
    return run


def test_hidden_store_layout_and_rows(hidden_run, tiny_model):
    index = json.loads(hidden_run.file("teacher/index.json").read_text())
    assert index["store"] == "hidden" and index["dtype"] == "float16"
    assert index["n_examples"] == len(PROBLEMS) and len(index["shards"]) == 3
    assert set(index["fingerprint"]) >= {"tokenizer_vocab", "special_tokens", "chat_template", "weights"}
    assert not list(hidden_run.path.glob("teacher/*.pkl")) and not list(hidden_run.path.glob("teacher/*.pt"))
    st = hidden_run.stage("logits")
    assert st["status"] == "done" and st["answer_tokens"] == index["n_tokens"]
    assert st["bytes_per_token"] < 4 * len(tiny_model.tokenizer)

    store = TeacherStore(hidden_run.file("teacher"))
    store.check_model(tiny_model.model, tiny_model.tokenizer)
    # independent of the code that wrote the store: the model's plain forward over the teacher
    # sequence (no hooks, no answer mask), and the positions that predict each reply token
    model, tok = tiny_model.model, tiny_model.tokenizer
    rec = read_jsonl(hidden_run.file("pairs.jsonl"))[3]
    full = tok.apply_chat_template(rec["teacher_messages"] + [{"role": "assistant", "content": rec["solution"]}],
                                   tokenize=True)
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    prompt = tok.apply_chat_template(rec["teacher_messages"], add_generation_prompt=True, tokenize=True)
    p = len(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    reply = store.reply_ids("p3")
    assert full[p: p + len(reply)] == reply and tok.decode(reply[:-1]) == rec["solution"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0]
    own = logits[p - 1: p - 1 + len(reply)]  # position i predicts token i + 1
    rows = store.get("p3")["hidden"]
    assert rows.dtype == torch.float16 and rows.shape == (len(reply), model.config.hidden_size)
    torch.testing.assert_close(model.lm_head(rows.float()), own, rtol=0, atol=2e-3)


def test_logits_resume_recomputes_only_missing_shard(hidden_run):
    before = json.loads(hidden_run.file("teacher/index.json").read_text())
    hidden_run.file("teacher/shard-00001.safetensors").unlink()
    info = run_logits(hidden_run)
    assert info["resumed"] == 4 and info["computed"] == 2
    after = json.loads(hidden_run.file("teacher/index.json").read_text())
    assert sorted(e["id"] for e in after["examples"]) == sorted(e["id"] for e in before["examples"])
    TeacherStore(hidden_run.file("teacher"))


def test_topk_store(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir, logits={"store": "topk", "topk": 8}, distill={"temperature": 1.0})
    info = run_logits(run)
    store = TeacherStore(run.file("teacher"))
    rows = store.get("p0")
    n = len(store.reply_ids("p0"))
    assert rows["topk_ids"].shape == (n, 8) and rows["topk_logits"].shape == (n, 8) and rows["lse"].shape == (n,)
    assert store.temperature == 1.0 and info["store"] == "topk"
    # the model's own forward logits at the reply-predicting positions give the same top-k and lse
    from ssb.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu")
    rec = read_jsonl(run.file("pairs.jsonl"))[0]
    prompt = lm.tokenizer.apply_chat_template(rec["teacher_messages"], add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    with torch.no_grad():
        own = lm.model(input_ids=torch.tensor([prompt + store.reply_ids("p0")])).logits[0, len(prompt) - 1: -1]
    assert torch.equal(rows["topk_ids"].long(), own.topk(8).indices)
    torch.testing.assert_close(rows["topk_logits"].float(), own.topk(8).values, rtol=0, atol=2e-3)
    torch.testing.assert_close(rows["lse"], torch.logsumexp(own, -1), rtol=0, atol=1e-4)


def test_topk_warns_above_temperature_one(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir, logits={"store": "topk", "topk": 4})
    with pytest.warns(UserWarning, match="lossy"):
        run_logits(run)


@pytest.mark.parametrize("part", ["tokenizer_vocab", "special_tokens", "chat_template", "weights"])
def test_fingerprint_guard_names_the_part(hidden_run, tiny_model, tmp_path, part):
    import shutil

    copy = tmp_path / "teacher"
    shutil.copytree(hidden_run.file("teacher"), copy)
    index = json.loads((copy / "index.json").read_text())
    index["fingerprint"][part] = "0" * 16
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(TeacherStoreError, match=part):
        TeacherStore(copy).check_model(tiny_model.model, tiny_model.tokenizer)


def test_changed_weights_are_refused(hidden_run, tiny_model_dir):
    from ssb.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu")
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(1.01)
    with pytest.raises(TeacherStoreError, match="weights"):
        TeacherStore(hidden_run.file("teacher")).check_model(lm.model, lm.tokenizer)


def test_truncated_and_empty_stores_are_refused(hidden_run, tmp_path):
    import shutil

    copy = tmp_path / "teacher"
    shutil.copytree(hidden_run.file("teacher"), copy)
    shard = copy / "shard-00000.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(TeacherStoreError, match="truncated"):
        TeacherStore(copy)
    # a truncated file whose index entry was "fixed" up is still caught by safetensors itself
    index = json.loads((copy / "index.json").read_text())
    index["shards"][0]["bytes"] = shard.stat().st_size
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(TeacherStoreError, match="truncated or corrupt"):
        TeacherStore(copy)
    index["examples"], index["shards"], index["n_tokens"] = [], [], 0
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(TeacherStoreError, match="empty"):
        TeacherStore(copy)


@pytest.fixture(scope="module")
def sharp_model_dir(tmp_path_factory, embedded_tokenizer):
    """The tiny model with larger initial weights: its predictions depend on the context enough
    that the hint makes teacher and student differ (the default init gives KL ~ 1e-4)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = embedded_tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, initializer_range=0.15,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("sharp-model")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_distill_overfits_and_saves_loadable_adapter(tmp_path, sharp_model_dir):
    tiny_model_dir = sharp_model_dir
    from peft import PeftModel

    from ssb.models import load_model
    from ssb.stages.distill import merge_adapter, run_distill

    run = make_run(tmp_path, tiny_model_dir, logits={"batch_size": 4}, lora={"r": 8, "alpha": 16},
                   distill={"epochs": 10, "batch_size": 3, "lr": 1e-2,
                            "ce_weight": 0.01, "chunk_size": 16})
    run_logits(run)
    info = run_distill(run)
    log = read_jsonl(run.file("train_log.jsonl"))
    assert len(log) == info["steps"] == 20
    assert {"loss", "kd", "ce", "grad_norm", "learning_rate", "answer_tokens_per_example"} <= set(log[0])
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.5 * first, (first, last)
    assert abs(log[0]["loss"] - (log[0]["kd"] + 0.01 * log[0]["ce"])) < 1e-3 * max(1.0, log[0]["loss"])
    st = run.stage("distill")
    assert st["status"] == "done" and st["examples"] == len(PROBLEMS) and st["answer_tokens"] > 0

    base = load_model(str(tiny_model_dir), device="cpu")
    student = PeftModel.from_pretrained(base.model, str(run.file("student")))
    lora = [n for n, _ in student.named_parameters() if "lora_" in n]
    assert lora and any(float(p.abs().sum()) > 0 for n, p in student.named_parameters() if "lora_B" in n)

    merged = merge_adapter(run.cfg.model, run.file("student"), tmp_path / "merged")
    m2 = load_model(merged["out"], device="cpu")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(m2.model(ids).logits, student(input_ids=ids).logits, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- building blocks


def test_answer_slice_selects_the_positions_that_predict_the_reply(tiny_model):
    from ssb.signal.alignment import answer_slice

    assert list(range(10))[answer_slice(4, 3)] == [3, 4, 5]
    prompt, reply = [11, 12, 13, 14], [21, 22, 23]
    seq = prompt + reply
    assert [seq[i + 1] for i in range(len(seq))[answer_slice(len(prompt), len(reply))]] == reply
    # the model's own causal-LM loss over the reply (labels shifted inside transformers) is the
    # cross-entropy of the logits at exactly these positions
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 198, 11, 12, 13]])
    p, r = 8, 3
    with torch.no_grad():
        out = tiny_model.model(input_ids=ids, labels=torch.tensor([[-100] * p + ids[0, p:].tolist()]))
    mine = torch.nn.functional.cross_entropy(out.logits[0, answer_slice(p, r)], ids[0, p:])
    torch.testing.assert_close(mine, out.loss)


def test_distill_collator_pads_and_marks_answer_positions():
    from ssb.stages.distill import DistillCollator

    feats = [{"input_ids": [5, 6, 7, 8, 9], "prompt_len": 3, "teacher": {"hidden": torch.full((2, 4), 1.0)}},
             {"input_ids": [5, 6, 7, 8, 9, 10, 11], "prompt_len": 4, "teacher": {"hidden": torch.full((3, 4), 2.0)}}]
    b = DistillCollator(pad_id=0, kind="hidden")(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0], [5, 6, 7, 8, 9, 10, 11]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7]
    assert b["labels"].tolist() == [[-100, -100, -100, 8, 9, -100, -100], [-100] * 4 + [9, 10, 11]]
    assert b["answer_mask"].tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0]]
    # each answer position predicts the next token, which is a reply token; row-major order = targets order
    nxt = b["input_ids"][:, 1:][b["answer_mask"][:, :-1]]
    assert nxt.tolist() == b["targets"].tolist() == [8, 9, 9, 10, 11]
    assert int((b["labels"] != -100).sum()) == int(b["answer_mask"].sum()) == 5  # the Trainer's token count
    assert b["teacher_hidden"][:, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]


def test_check_head_on_a_plain_head(tiny_model):
    from ssb.signal.alignment import align_pair
    from ssb.stages.logits import check_head

    rec = json.loads(json.dumps({"t": [{"role": "user", "content": "What is 2 + 3? Hint: 5."}],
                                 "s": [{"role": "user", "content": "What is 2 + 3?"}]}))
    pair = align_pair(tiny_model.tokenizer, rec["t"], rec["s"], "2 + 3 = 5.\n\\boxed{5}")
    assert 0 <= check_head(tiny_model.model, pair, tiny_model.tokenizer.pad_token_id) < 1e-4


def test_kd_is_zero_at_step_0_when_teacher_prompt_equals_student_prompt(tmp_path):
    """The alignment invariant on the real embedded model: with the teacher shown exactly the
    student's prompt, teacher and student are the same model on the same tokens at step 0 (LoRA
    starts as the identity), so the first logged KD must be ~0; any off-by-one between the stored
    teacher rows and the student's answer positions would make it large."""
    from ssb.stages.distill import run_distill

    cfg = RunConfig(name="same", runs_dir=str(tmp_path), model={"name_or_path": "embedded", "device": "cpu"},
                    logits={"dtype": "float32"},
                    lora={"r": 2, "alpha": 2, "target_modules": ["q_proj"]}, distill={"epochs": 1,
                             "batch_size": 2, "logging_steps": 1, "temperature": 1.0})
    run = Run.create(cfg)
    with open(run.file("pairs.jsonl"), "w") as f:
        for i, (q, sol) in enumerate(PROBLEMS[:2]):
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            f.write(json.dumps({"id": f"p{i}", "student_messages": msgs, "teacher_messages": msgs,
                                "solution": sol}) + "\n")
    run_logits(run)
    run_distill(run)
    log = read_jsonl(run.file("train_log.jsonl"))
    assert len(log) == 1
    assert 0 <= log[0]["kd"] < 1e-4, log[0]


def test_resume_point_skips_a_checkpoint_killed_while_saving(tmp_path):
    from ssb.training import resume_point

    ck, log = tmp_path / "checkpoints", tmp_path / "train_log.jsonl"
    assert resume_point(ck, log) is None
    (ck / "checkpoint-1").mkdir(parents=True)
    (ck / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    (ck / "checkpoint-2").mkdir()  # killed before trainer_state.json, which the Trainer writes last
    (ck / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"partial")
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2)))
    assert resume_point(ck, log) == str(ck / "checkpoint-1")
    assert not (ck / "checkpoint-2").exists()
    assert [r["step"] for r in read_jsonl(log)] == [1]  # step 2 is retrained and logged again
    log.write_text(json.dumps({"step": 1}) + "\n")
    (ck / "checkpoint-1" / "trainer_state.json").write_text('{"glob')  # torn
    assert resume_point(ck, log) is None and not log.exists()


def test_warmup_ratio_is_a_share_of_the_optimizer_steps(tmp_path, tiny_model_dir):
    """distill.warmup_ratio=0.5 over 10 optimizer steps: the Trainer's own scheduler, built
    from the stage's training arguments, warms the lr up over steps 0-5, then decays it."""
    from ssb.errors import ConfigError
    from ssb.stages.distill import DistillTrainer
    from ssb.training import training_args

    run = make_run(tmp_path, tiny_model_dir, distill={"warmup_ratio": 0.5, "lr": 1e-3, "lr_scheduler": "linear"})
    dc = run.cfg.distill
    trainer = DistillTrainer(model=torch.nn.Linear(2, 2), args=training_args(run, dc, torch.device("cpu")),
                             distill_cfg=dc, store_kind="hidden", store_temperature=None)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert lrs == pytest.approx([0.0, 2e-4, 4e-4, 6e-4, 8e-4, 1e-3, 8e-4, 6e-4, 4e-4, 2e-4])
    assert trainer.args.get_warmup_steps(7) == 4  # ceil(0.5 * 7): a share, whatever the step count

    # 1 or more would be read as a number of steps: refused, naming the field
    for bad in (1.0, 2.0, -0.1):
        with pytest.raises(ConfigError, match=r"distill.warmup_ratio=.* set distill.warmup_ratio in \[0, 1\)"):
            training_args(run, dc.model_copy(update={"warmup_ratio": bad}), torch.device("cpu"))
