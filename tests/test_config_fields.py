"""The config documents itself and says where each value came from (issue 38): every field of the
whole model has a description; ``ssb config show --describe`` prints each with its value and origin;
the top-level ``seed`` seeds every stage seed left unset; a bad key or value fails naming the field,
its origin and, for a typo, the key it probably meant; the docs keep the code default and the shipped
config apart."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from ssb.cli import main
from ssb.config import STAGE_SEEDS, RunConfig, describe_config, dump_config, load_config, override_config
from ssb.config_fields import Section, leaves, likely_keys, models_in, values, yaml_line
from ssb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
CONFIGS = [c for c in CONFIGS if "accelerate" not in c.parts]


def undocumented(model: type[BaseModel]) -> list[str]:
    """Every field of ``model`` and of each section inside it (nested sections, a list's items and
    a section beside None included, at every place it appears) without a description; a field
    typed as a section is documented by its class's docstring."""
    missing = [path for path, f in leaves(model) if not (f.description or "").strip()]

    def sections(m, prefix=""):
        for name, f in m.model_fields.items():
            for inner in models_in(f.annotation):
                if not (inner.__doc__ or "").strip():
                    missing.append(f"{prefix}{name} ({inner.__name__} has no docstring)")
                sections(inner, f"{prefix}{name}.")

    sections(model)
    return missing


def test_every_config_field_has_a_description():
    missing = undocumented(RunConfig)
    assert missing == [], "config fields without a description: " + ", ".join(missing)


def test_the_walk_names_an_undocumented_field_anywhere():
    class Inner(Section):
        """Documented."""

        ok: int = Field(1, description="fine")
        bare: int = 2

    class Outer(Section):
        """Documented."""

        top: str = "x"
        one: Inner = Field(default_factory=Inner)
        many: list[Inner] = Field(default_factory=list, description="items")
        maybe: Inner | None = Field(None, description="or none")

    assert undocumented(Outer) == ["top", "one.bare", "many.bare", "maybe.bare"]
    # a walk that stops at the first place of a section type (the docs' tables) lists it once
    assert [p for p, _ in leaves(Outer, once=True)] == ["top", "one.ok", "one.bare", "many", "maybe"]


# ----------------------------------------------------------------------------- ssb config show --describe


def test_describe_prints_every_field_with_its_value_origin_and_description(capsys):
    cfg = load_config(ROOT / "configs/smoke.yaml", ["rollout.k=3", "seed=5"])
    text = describe_config(cfg, "configs/smoke.yaml", ["rollout.k=3", "seed=5"])
    heads = [line for line in text.splitlines()[1:] if not line.startswith("    ")]
    paths = [p for p, *_ in values(cfg)]
    assert [h.split(" = ")[0] for h in heads] == paths and len(paths) > 100
    origin = {h.split(" = ")[0]: re.search(r"\[([^\]]+)\]$", h).group(1) for h in heads}
    assert origin["rollout.k"] == "--set" and origin["seed"] == "--set"
    assert origin["name"] == "file" and origin["data.limit"] == "file" and origin["eval.holdout.seed"] == "file"
    assert origin["data.tasks"] == "file" and origin["rollout.temperature"] == "file"
    assert origin["model.revision"] == "code default" and origin["grpo.lr"] == "code default"
    assert {origin[f"{s}.seed"] for s in STAGE_SEEDS} == {"seed"} and origin["data.seed"] == "file"
    assert "rollout.seed = 5  [seed]" in text and "rollout.k = 3  [--set]" in text
    assert "(no description)" not in text
    # a renamed key given by --set is marked --set under its new name
    assert "lora.r = 4  [--set]" in describe_config(load_config(None, ["distill.lora_r=4"]), None, ["distill.lora_r=4"])


def test_config_show_describe_on_the_command_line(capsys):
    assert main(["config", "show", "--describe", "configs/default.yaml", "--set", "teacher.retries=2"]) == 0
    out = capsys.readouterr().out
    assert "teacher.retries = 2  [--set]" in out and "teacher.hint = correct  [file]" in out
    assert "grpo.generator = trl  [code default]" in out and "\n    who samples GRPO's completions" in out
    for path, *_ in values(load_config("configs/default.yaml")):
        assert f"\n{path} = " in out, path
    assert main(["config", "show", "configs/default.yaml"]) == 0  # without the flag: the YAML as before
    assert capsys.readouterr().out == dump_config(load_config("configs/default.yaml"))


# ----------------------------------------------------------------------------- the top-level seed


def test_set_seed_moves_every_stage_seed_not_set_explicitly(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 0\ndata: {seed: 4}\nteacher: {seed: 11}\n")
    base = load_config(p)
    assert {s: getattr(base, s).seed for s in STAGE_SEEDS} == {**dict.fromkeys(STAGE_SEEDS, 0), "teacher": 11}
    cfg = load_config(p, ["seed=7", "grpo.seed=3"])
    seeds = {s: getattr(cfg, s).seed for s in STAGE_SEEDS}
    assert seeds == {**dict.fromkeys(STAGE_SEEDS, 7), "teacher": 11, "grpo": 3}  # set in the file / by --set: kept
    assert cfg.data.seed == 4 and load_config(None, ["seed=7"]).data.seed == 0  # the problems do not follow seed
    # the resolved config a run writes records every seed; read back it is the same config
    again = RunConfig.model_validate(__import__("yaml").safe_load(dump_config(cfg)))
    assert again == cfg and dump_config(again) == dump_config(cfg)
    # a later seed (assigned, or an override of a loaded config) still moves the unset ones only
    cfg.seed = 9
    assert (cfg.rollout.seed, cfg.eval.seed, cfg.teacher.seed, cfg.grpo.seed) == (9, 9, 11, 3)
    moved = override_config(load_config(p), ["seed=2"])
    assert (moved.rollout.seed, moved.teacher.seed, moved.data.seed) == (2, 11, 4)
    # a section passed in is copied, not changed
    section = RunConfig().rollout
    assert RunConfig(seed=5, rollout=section).rollout.seed == 5 and section.seed == 0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_configs_keep_their_effective_seeds(path):
    """Every shipped config sets no stage seed and a top-level seed of 0 (or none): its stages keep
    the seed 0 they had before the top-level seed was read."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert raw.get("seed", 0) == 0 and not any("seed" in (raw.get(s) or {}) for s in STAGE_SEEDS)
    cfg = load_config(path)
    assert all(getattr(cfg, s).seed == 0 for s in STAGE_SEEDS)


# ----------------------------------------------------------------------------- errors


def test_an_unknown_key_names_the_likely_key_and_its_origin(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(ROOT / "configs/default.yaml", ["distill.temprature=1"])
    msg = str(exc.value)
    assert "distill.temprature (--set distill.temprature=1): unknown key; did you mean distill.temperature?" in msg
    assert "Extra inputs" not in msg
    p = tmp_path / "typo.yaml"
    p.write_text("rollout:\n  k: 2\ndistill:\n  epochs: 1\n  temprature: 1\ndata:\n  tasks:\n    - name: x\n"
                 "      wieght: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert f"distill.temprature ({p}, line 5): unknown key; did you mean distill.temperature?" in msg
    assert f"data.tasks.0.wieght ({p}, line 9): unknown key; did you mean data.tasks.weight?" in msg
    # a wrong section, a key in the wrong section, nothing close
    assert likely_keys(RunConfig, "distil") == ["distill"]
    assert likely_keys(RunConfig, "rollout.max_new_tokens") == ["generation.max_new_tokens", "eval.max_new_tokens"]
    assert likely_keys(RunConfig, "rollout.zzzzzz") == []
    with pytest.raises(ConfigError, match=r"rollout.zzzzzz \(--set rollout.zzzzzz=1\): unknown key \(ssb config show"):
        load_config(None, ["rollout.zzzzzz=1"])
    assert yaml_line("a:\n  b: [1, {c: 2}]\n", ("a", "b", 1, "c")) == 2 and yaml_line("a: 1\n", ("b",)) is None
    assert yaml_line("x: 1\nrounds: 0\n", ("rounds", "n")) == 2  # a shorthand: its line
    p.write_text("data:\n  tasks:\n    - weight: 2\n")  # a missing key: the item it is missing from
    with pytest.raises(ConfigError, match=rf"data.tasks.0.name \({re.escape(str(p))}, line 3\): required, not given"):
        load_config(p)


@pytest.mark.parametrize("override, field", [
    ("rollout.k=0", "rollout.k = 0"), ("distill.temperature=-1", "distill.temperature = -1"),
    ("distill.temperature=0", "distill.temperature = 0"), ("grpo.lr=0", "grpo.lr = 0"),
    ("distill.lr=-0.001", "distill.lr = -0.001"), ("data.limit=0", "data.limit = 0"),
    ("teacher.retries=-1", "teacher.retries = -1"), ("eval.n=0", "eval.n = 0"), ("lora.r=0", "lora.r = 0"),
    ("rollout.top_p=1.5", "rollout.top_p = 1.5"), ("grpo.num_generations=1", "grpo.num_generations = 1"),
    ("teacher.gates.leak_ngram=0", "teacher.gates.leak_ngram = 0"),
])
def test_out_of_range_values_fail_naming_the_field(override, field):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert f"  {field} (--set {override}): " in str(exc.value)


def test_a_bad_value_in_a_file_names_its_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nrollout:\n  k: 0\n")
    with pytest.raises(ConfigError, match=rf"rollout.k = 0 \({re.escape(str(p))}, line 3\): Input should be greater"):
        load_config(p)


def test_one_override_string_is_one_override():
    assert load_config(ROOT / "configs/smoke.yaml", "data.limit=8").data.limit == 8
    assert override_config(RunConfig(), "rollout.k=3").rollout.k == 3


# ----------------------------------------------------------------------------- the docs: two defaults


def test_the_reference_shows_code_default_and_shipped_config_apart():
    from bench.render.config import render_config_reference

    text = render_config_reference()
    assert "| field | type | code default | `configs/default.yaml` | description |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `teacher.hint` |"))
    assert "| `answer` | **`correct`** |" in row  # the code default, and the shipped value that differs
    assert "| `grpo.generator` |" in text and "| `data.skip_bad` |" in text and "| `eval.top_p` |" in text
    assert "<!-- results: config_reference -->" in (ROOT / "docs/configuration.md").read_text()


def test_the_docs_call_no_value_that_differs_from_the_shipped_config_the_default():
    """A field whose code default and shipped value differ: no doc calls either value "the default"
    (``answer`` (default), (default `answer`)); say "code default" or "shipped config"."""
    code, shipped = RunConfig(), load_config(ROOT / "configs/default.yaml")
    differ = []
    for path, _ in leaves(RunConfig):
        try:
            a, b = _get(code, path), _get(shipped, path)
        except AttributeError:  # inside a list, or a section that is None
            continue
        if a != b and isinstance(a, (str, int, float)) and isinstance(b, (str, int, float)):
            differ += [str(a), str(b)]
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    bad = []
    for doc in docs:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            for v in differ:
                if re.search(rf"`{re.escape(v)}` \((the )?default\b|\(default `{re.escape(v)}`", line):
                    bad.append(f"{doc.relative_to(ROOT)}:{n}: {v}")
    assert not bad, "say 'code default' or 'shipped config': " + "; ".join(bad)


def _get(cfg, path):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg
