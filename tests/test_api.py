"""The Python API (``ssb.load_config``, ``ssb.run``, ``ssb.Run``, ``ssb.compare``): importable
lazily from ``ssb``, runs the pipeline's stages on the tiny model, reads a run back."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def test_import_ssb_stays_light_and_resolves_the_api():
    code = ("import sys, ssb; heavy = {'torch', 'pydantic', 'transformers'} & set(sys.modules); "
            "assert not heavy, heavy; from ssb import api; "
            "assert ssb.run is api.run and ssb.Run is api.Run and ssb.load_config is api.load_config; "
            "import ssb.stages.report; assert ssb.compare is api.compare, ssb.compare; "
            "assert {'run', 'Run', 'compare', 'load_config'} <= set(dir(ssb)); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_missing_attribute_says_so():
    import ssb

    try:
        ssb.nothing_here  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def _config(tmp_path, tiny_model_dir):
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump({
        "name": "api", "runs_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": str(tiny_model_dir), "device": "cpu"},
        "data": {"source": "gsm8k", "limit": 2},
        "generation": {"max_new_tokens": 4, "batch_size": 4},
        "rollout": {"k": 2},
    }))
    return f


def test_run_limited_stages_and_open_the_run(tmp_path, tiny_model_dir):
    import ssb

    path = _config(tmp_path, tiny_model_dir)
    cfg = ssb.load_config(path, ["rollout.k=3"])
    assert cfg.rollout.k == 3 and cfg.name == "api"
    run = ssb.run(path, only=["rollout", "curate"], overrides=["rollout.k=3"])
    assert isinstance(run, ssb.Run) and run.path == tmp_path / "runs" / "api"
    stages = run.manifest()["stages"]
    assert stages["rollout"]["status"] == "done" and stages["curate"]["status"] == "done"
    assert "teacher" not in stages  # only=[...]
    assert [len(r["completions"]) for r in _read(run.file("rollouts.jsonl"))] == [3, 3]

    # a RunConfig goes in as it is, with overrides and a name on top
    again = ssb.run(cfg, only=["rollout"], overrides=["rollout.k=2"], name="api2")
    assert again.path.name == "api2" and again.cfg.rollout.k == 2

    opened = ssb.Run.open(run.path)
    assert opened.cfg.rollout.k == 3 and opened.manifest() == run.manifest()
    assert opened.pairs() == [] and opened.evaluations() == {}


def test_run_readers(tmp_path, tiny_model_dir):
    import ssb

    run = ssb.run(_config(tmp_path, tiny_model_dir), only=["report"])
    pair = {"id": "p0", "student_messages": [], "teacher_messages": [], "solution": "2", "answer": "2"}
    run.file("pairs.jsonl").write_text(json.dumps(pair) + "\n")
    for label, acc in (("base", 0.25), ("ssb", 0.5)):
        (run.file("eval") / label).mkdir(parents=True, exist_ok=True)
        (run.file("eval") / label / "summary.json").write_text(json.dumps({"label": label, "accuracy": acc}))
    opened = ssb.Run.open(run.path)
    assert opened.pairs() == [pair]
    assert {k: v["accuracy"] for k, v in opened.evaluations().items()} == {"base": 0.25, "ssb": 0.5}


def test_compare_calls_the_arms_compare(monkeypatch, tmp_path):
    import ssb
    from ssb.comparison import arms

    seen = {}

    class Fake:
        def __init__(self, *args, **kw):
            seen["args"], seen["kw"] = args, kw

        def run(self):
            return {"done": True}

    monkeypatch.setattr(arms, "Compare", Fake)
    assert ssb.compare("c.yaml", arms=["ssb", "grpo"], replicates=1, n=8, out=tmp_path, k_max=0) == {"done": True}
    assert seen["args"] == ("c.yaml", ["base", "ssb", "grpo"], 1, 8, 20261122, tmp_path, [])
    assert seen["kw"] == {"k_max": 0}


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_overrides_on_a_config_object_are_checked_like_a_file(tmp_path):
    """ssb.run(RunConfig, overrides=...) checks them as --set does (a ConfigError naming the field, before any
    work) and a top-level seed override still moves the stage seeds the config left unset."""
    import pytest

    import ssb
    from ssb.config import override_config
    from ssb.errors import ConfigError

    cfg = ssb.load_config("configs/smoke.yaml", [f"runs_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="rollout.k"):
        ssb.run(cfg, overrides=["rollout.k=0"])
    assert not any(tmp_path.iterdir())  # nothing written
    assert override_config(cfg, ["seed=5"]).rollout.seed == 5
