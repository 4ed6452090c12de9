"""ssb.data (load, files, gym): built-in benchmarks, local files with bad rows, HF datasets, reasoning-gym."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssb.config import DataConfig, ReasoningGymTask
from ssb.data.files import load_file, load_hf_dataset, validate_file
from ssb.data.gym import reasoning_gym_problems
from ssb.data.load import BENCHMARKS, load_benchmark, load_problems
from ssb.data.problem import DataError, Problem, normalize_question, question_keys

# ----------------------------------------------------------------------------- benchmarks


@pytest.mark.parametrize(
    "name, split, rows", [("gsm8k", "train", 7473), ("gsm8k", "test", 1319), ("math500", "test", 500), ("aime2024", "test", 30)]
)
def test_benchmark_row_counts(name, split, rows):
    problems = load_benchmark(name, split)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    assert split in BENCHMARKS[name]


def test_benchmark_fields():
    m = load_benchmark("math500")[0]
    assert m.id == "test/precalculus/807.json" and m.metadata["subject"] == "Precalculus" and m.metadata["level"] == 2
    a = load_benchmark("aime2024")[0]
    assert a.answer == "204" and a.metadata["url"].startswith("https://")
    g = load_benchmark("gsm8k", "test")[0]
    assert g.answer == "18" and g.solution.endswith("#### 18")
    assert Problem.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_benchmark_unknown_split_or_name():
    with pytest.raises(DataError, match="no split 'train'"):
        load_benchmark("math500", "train")
    with pytest.raises(DataError, match="unknown benchmark"):
        load_benchmark("mmlu")


# ----------------------------------------------------------------------------- JSONL / CSV / parquet

GOOD = {"question": "What is 2+2?", "answer": "4"}


def _jsonl(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "probs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _j(obj) -> bytes:
    return json.dumps(obj).encode()


BAD_JSONL = [
    (_j({"question": "Q?"}), "answer", "missing"),
    (_j({"question": "   ", "answer": "1"}), "question", "empty"),
    ('{"question": "caf\xe9?", "answer": "1"}'.encode("latin-1"), "(line)", "not valid UTF-8"),
    (_j({"question": {"text": "Q?"}, "answer": "1"}), "question", "wrong type"),
    (_j({"question": ["Q?"], "answer": "1"}), "question", "wrong type"),
    (_j({"question": "Q?", "answer": ["1"]}), "answer", "wrong type"),
    (b'{"question": "Q?", "answer": ', "(line)", "invalid JSON"),
    (_j(["Q?", "1"]), "(row)", "expected an object"),
]


@pytest.mark.parametrize("line, field, reason", BAD_JSONL)
def test_bad_jsonl_row_names_file_line_field(tmp_path, line, field, reason):
    path = _jsonl(tmp_path, [_j(GOOD), b"", line, _j(GOOD)])
    with pytest.raises(DataError) as exc:
        load_file(path)
    assert str(exc.value).startswith(f"{path}:3: {field}: {reason}")
    assert exc.value.bad.line == 3 and exc.value.bad.field == field


def test_skip_bad_counts_every_bad_row(tmp_path):
    lines = [_j(GOOD)] + [line for line, _, _ in BAD_JSONL] + [_j({**GOOD, "question": "What is 3+3?"})]
    path = _jsonl(tmp_path, lines)
    res = load_file(path, skip_bad=True)
    assert len(res.problems) == 2
    assert [b.line for b in res.skipped] == list(range(2, 2 + len(BAD_JSONL)))
    assert [b.field for b in res.skipped] == [f for _, f, _ in BAD_JSONL]
    summary = validate_file(path)
    assert summary["rows"] == 2 + len(BAD_JSONL) and summary["ok"] == 2 and len(summary["bad"]) == len(BAD_JSONL)


def test_numbers_ids_extras_and_duplicates(tmp_path):
    rows = [
        {"pid": "a", "question": "Q1", "answer": 18, "solution": "S", "topic": "x"},
        {"pid": "b", "question": "Q2", "answer": 2.5},
        {"pid": 7, "question": "Q3", "answer": 4.0},
    ]
    path = _jsonl(tmp_path, [_j(r) for r in rows])
    probs = load_file(path, id_field="pid").problems
    assert [(p.id, p.answer) for p in probs] == [("a", "18"), ("b", "2.5"), ("7", "4")]
    assert probs[0].solution == "S" and probs[0].metadata == {"topic": "x"}
    assert [p.id for p in load_file(path).problems] == ["probs-0", "probs-1", "probs-2"]

    dup = _jsonl(tmp_path, [_j(rows[0]), _j(rows[1]), _j({**rows[1], "question": "Q4"})])
    with pytest.raises(DataError, match=r"probs.jsonl:3: pid: duplicate id 'b'"):
        load_file(dup, id_field="pid")
    assert len(load_file(dup, id_field="pid", skip_bad=True).problems) == 2


def test_custom_fields(tmp_path):
    path = _jsonl(tmp_path, [_j({"problem": "P?", "final": "9"})])
    assert load_file(path, question_field="problem", answer_field="final").problems[0].answer == "9"
    with pytest.raises(DataError, match=":1: answer: missing"):
        load_file(path, question_field="problem")


def test_csv_bad_rows(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(
        b'question,answer\n'
        b'"What is\n2+2?",4\n'  # a quoted field over two lines: lines 2-3
        b'What is 1+1?,\n'  # line 4: empty answer
        b',3\n'  # line 5: empty question
        b'Caf\xe9?,1\n'  # line 6: not UTF-8
        b'What is 5+5?,10\n'
    )
    with pytest.raises(DataError, match=r"p.csv:4: answer: empty"):
        load_file(path)
    res = load_file(path, skip_bad=True)
    assert [p.answer for p in res.problems] == ["4", "10"]
    assert [(b.line, b.field, b.reason) for b in res.skipped] == [
        (4, "answer", "empty"), (5, "question", "empty"), (6, "question", "not valid UTF-8")
    ]
    short = tmp_path / "short.csv"
    short.write_text("question,answer\nWhat is 1+1?\n")  # the row has no answer cell at all
    with pytest.raises(DataError, match=r"short.csv:2: answer: missing"):
        load_file(short)


def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    probs = load_benchmark("math500")[:20]
    table = pa.Table.from_pylist([{"id": p.id, "question": p.question, "answer": p.answer, **p.metadata} for p in probs])
    path = tmp_path / "m.parquet"
    pq.write_table(table, path)
    back = load_file(path, id_field="id").problems
    assert [(p.id, p.question, p.answer, p.metadata["level"]) for p in back] == [
        (p.id, p.question, p.answer, p.metadata["level"]) for p in probs
    ]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, {"question": "Q", "answer": None}]), bad)
    with pytest.raises(DataError, match=r"bad.parquet:2: answer: missing"):
        load_file(bad)


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="unsupported file type"):
        load_file(tmp_path / "x.txt")
    with pytest.raises(DataError, match="file not found"):
        load_file(tmp_path / "x.jsonl")


# ----------------------------------------------------------------------------- Hugging Face datasets


def test_hf_local_dataset_directory(tmp_path):
    d = tmp_path / "myset"
    (d / "data").mkdir(parents=True)
    rows = [{"q": f"What is {i}+{i}?", "a": str(2 * i)} for i in range(6)]
    (d / "data" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = load_hf_dataset(str(d), "train", question_field="q", answer_field="a")
    assert [p.answer for p in res.problems] == [r["a"] for r in rows]
    with pytest.raises(DataError, match="hf:.*myset:1: question: missing"):
        load_hf_dataset(str(d), "train")


def test_hf_save_to_disk_directory(tmp_path):
    import datasets

    ds = datasets.DatasetDict({"test": datasets.Dataset.from_list([GOOD, {**GOOD, "question": "What is 1+1?", "answer": "2"}])})
    ds.save_to_disk(str(tmp_path / "saved"))
    cfg = DataConfig(source=f"hf:{tmp_path / 'saved'}", split="test", shuffle=False)
    assert [p.answer for p in load_problems(cfg)] == ["4", "2"]
    with pytest.raises(DataError, match="no split 'train'"):
        load_hf_dataset(str(tmp_path / "saved"), "train")


# ----------------------------------------------------------------------------- reasoning-gym

TASKS = [ReasoningGymTask(name="chain_sum", weight=2), ReasoningGymTask(name="leg_counting", weight=1)]


def test_reasoning_gym_deterministic_and_weighted():
    a = reasoning_gym_problems(TASKS, size=9, seed=5)
    b = reasoning_gym_problems(TASKS, size=9, seed=5)
    c = reasoning_gym_problems(TASKS, size=9, seed=6)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    tasks = [p.metadata["task"] for p in a]
    assert tasks.count("chain_sum") == 6 and tasks.count("leg_counting") == 3
    assert a[0].id == "rg-chain_sum-s5-0" and a[0].metadata["source"] == "reasoning_gym"
    # the entry is JSON-serialisable (tuples became lists)
    assert json.loads(json.dumps(a[0].metadata["entry"])) == a[0].metadata["entry"]


def test_reasoning_gym_dedup_draws_more():
    # one-digit, two-term sums: only 19*19*2 distinct questions, so duplicates are certain
    task = ReasoningGymTask(name="chain_sum", options={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    probs = reasoning_gym_problems([task], size=120, seed=0)
    keys = [normalize_question(p.question) for p in probs]
    assert len(probs) == 120 and len(set(keys)) == 120
    assert max(int(p.id.rsplit("-", 1)[1]) for p in probs) >= 120  # had to draw past index 119


def test_reasoning_gym_exclusion_and_shortfall(caplog):
    train = reasoning_gym_problems(TASKS, size=30, seed=0)
    held = reasoning_gym_problems(TASKS, size=30, seed=0, exclude=question_keys(train))
    assert len(held) == 30 and not question_keys(held) & question_keys(train)
    tiny = ReasoningGymTask(name="chain_sum", options={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    with caplog.at_level("WARNING"):
        short = reasoning_gym_problems([tiny], size=2000, seed=0)
    assert len(short) < 2000 and "only" in caplog.text


def test_basic_arithmetic_answers_match_questions():
    from fractions import Fraction

    from ssb.data.gym import _exact_value

    probs = reasoning_gym_problems([ReasoningGymTask(name="basic_arithmetic")], size=300, seed=3)
    assert len(probs) == 300
    for p in probs:
        expr = p.metadata["entry"]["metadata"]["expression"]
        assert _exact_value(expr) == Fraction(p.answer), (expr, p.answer)


def test_basic_arithmetic_without_parentheses_keeps_only_answers_of_the_printed_expression():
    """reasoning-gym's basic_arithmetic prints its expression tree without parentheses but answers for
    the tree: `4 + 2 * 2` with 12. Such entries are dropped (counted), so every kept gold answer is the
    printed expression's value under the usual precedence."""
    from fractions import Fraction

    from ssb.data.gym import _exact_value

    task = ReasoningGymTask(name="basic_arithmetic", options={
        "min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1, "operators": ["+", "*"],
        "allow_parentheses": False, "allow_negation": False})
    stats: dict = {}
    probs = reasoning_gym_problems([task], size=200, seed=7, stats=stats)
    assert len(probs) == 200 and stats["basic_arithmetic"]["dropped_inconsistent"] > 20
    for p in probs:
        expr = p.question.removeprefix("Calculate ").rstrip(".")
        assert _exact_value(expr) == Fraction(p.answer), (p.question, p.answer)
    assert any(" + " in p.question and " * " in p.question.split(" + ")[1] for p in probs)  # a + b * c kept when right


# ----------------------------------------------------------------------------- load_problems


def test_load_problems_dispatch(tmp_path):
    a = load_problems(DataConfig(source="gsm8k", split="test", limit=5, seed=1))
    b = load_problems(DataConfig(source="gsm8k", split="test", limit=5, seed=1))
    assert [p.id for p in a] == [p.id for p in b] and len(a) == 5
    assert [p.id for p in load_problems(DataConfig(source="math500", split="test", shuffle=False, limit=2))] == [
        p.id for p in load_benchmark("math500")[:2]
    ]
    rg = load_problems(DataConfig(source="reasoning_gym", limit=4, tasks=TASKS))
    assert len(rg) == 4
    with pytest.raises(DataError, match="needs data.limit"):
        load_problems(DataConfig(source="reasoning_gym", tasks=TASKS))
    path = _jsonl(tmp_path, [_j(GOOD), b"{", _j({**GOOD, "question": "What is 3+3?"})])
    with pytest.raises(DataError, match=":2: "):
        load_problems(DataConfig(source=str(path)))
    assert len(load_problems(DataConfig(source=str(path), skip_bad=True))) == 2
    assert len(load_problems(DataConfig(source=str(path), skip_bad=True), exclude={"what is 2+2?"})) == 1
    with pytest.raises(DataError, match="unknown data source"):
        load_problems(DataConfig(source="nope"))


# ----------------------------------------------------------------------------- ssb data show --config (issue 38)


def test_data_show_config_prints_the_problems_the_config_draws(capsys):
    """`ssb data show reasoning_gym --task chain_sum` shows the generators' defaults; `--config` shows the
    problems a config trains on (its task options and seed, --set applied) and, with `holdout`, is scored on."""
    from ssb.cli import main
    from ssb.config import load_config
    from ssb.data.heldout import holdout_problems

    root = Path(__file__).resolve().parents[1]
    config = str(root / "configs" / "smoke.yaml")
    cfg = load_config(config, ["data.seed=3"])
    assert main(["data", "show", "--config", config, "--set", "data.seed=3", "--limit", "3", "--json"]) == 0
    shown = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [p["question"] for p in shown] == [p.question for p in load_problems(cfg.data)[:3]]
    assert main(["data", "show", "holdout", "--config", config, "--limit", "2", "--json"]) == 0
    held, _ = holdout_problems(load_config(config).eval.holdout, question_keys(load_problems(load_config(config).data)))
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [p.id for p in held[:2]]
    assert main(["data", "show", "--config", config, "--limit", "2"]) == 0
    assert "smoke.yaml: data, the training problems (16 in all)" in " ".join(capsys.readouterr().out.split())
    assert main(["data", "show", "gsm8k_typo", "--config", config]) == 1
    assert "'data' (the training problems) or 'holdout'" in capsys.readouterr().err
