"""The CLI's help: every option of every subcommand says what it does and its default; every config key
the help, the stage table and the report name exists; ``ssb compare``'s defaults are the Python API's."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from ssb.cli import build_parser

FILE_SUFFIXES = {"md", "json", "jsonl", "yaml", "py", "png", "csv", "parquet", "gguf", "safetensors", "txt"}


def parsers(parser: argparse.ArgumentParser, prog: str = "ssb"):
    """``(command, parser)`` for the parser and every subcommand's, depth first."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{prog} {name}")


def options():
    """``(command, action)`` for every argument of every command but ``-h`` and the subcommand slots."""
    for prog, parser in parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                yield prog, action


def help_texts() -> list[str]:
    out = []
    for prog, parser in parsers(build_parser()):
        out += [parser.description or ""] + [a.help or "" for a in parser._actions]
        out += [c.help or "" for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                for c in a._choices_actions]
    return out


def test_every_option_of_every_command_has_a_help_that_shows_its_default():
    missing, no_default = [], []
    for prog, action in options():
        name = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            missing.append(f"{prog} {name}")
            continue
        default = action.default
        shown = "%(default)" in action.help or "default" in action.help
        if default not in (None, False, [], argparse.SUPPRESS) and not isinstance(action, argparse._StoreFalseAction) \
                and not shown:
            no_default.append(f"{prog} {name} (default {default!r})")
    assert not missing, f"options without a help text: {missing}"
    assert not no_default, f"options whose help does not show their default: {no_default}"


def test_compare_help_shows_its_defaults_and_cost():
    from ssb.comparison import defaults

    parser = dict(parsers(build_parser()))["ssb compare"]
    text = " ".join(parser.format_help().split())
    for flag, value in (("--replicates", defaults.REPLICATES), ("--n", defaults.N), ("--k-max", defaults.K_MAX)):
        action = next(a for a in parser._actions if flag in a.option_strings)
        assert action.default == value and "%(default)s" in action.help, flag
    assert f"(default: {defaults.REPLICATES})" in text and "(default: 400)" in text and "(default: 10;" in text
    assert "hours on a CPU" in text
    assert "other training problems and seeds" not in text and "reasoning-gym draws other training problems" in text


def test_compare_defaults_are_one_for_the_command_the_api_and_the_class():
    import ssb.api
    from ssb.comparison import defaults
    from ssb.comparison.arms import Compare
    from ssb.report.replicated import compare_arms

    args = build_parser().parse_args(["compare", "c.yaml"])
    api = inspect.signature(ssb.api.compare).parameters
    cls = inspect.signature(Compare.__init__).parameters
    assert (args.arms, api["arms"].default) == (defaults.ARMS, defaults.ARMS) == (compare_arms(), compare_arms())
    for name in ("replicates", "n", "seed"):
        assert getattr(args, name) == api[name].default == getattr(defaults, name.upper()), name
    assert args.grpo_points == cls["grpo_points"].default and args.curves is cls["curves"].default
    assert args.k_max == cls["k_max"].default == 10  # the API ran k_max=0 before: no K-sensitivity pass
    assert tuple(int(k) for k in args.k_values.split(",")) == cls["k_values"].default


def test_eval_help_describes_its_options():
    text = dict(parsers(build_parser()))["ssb eval"].format_help()
    for flag, words in (("--limit", "first N problems"), ("--temperature", "greedy"),
                        ("--max-new-tokens", "truncated"), ("--backend", "llamacpp (GGUF")):
        assert flag in text and words in " ".join(text.split()), flag


def config_keys(text: str) -> set[str]:
    """``section.field`` names in ``text`` whose section is a section of the config (file names left out)."""
    from ssb.config import RunConfig

    sections = set(RunConfig.model_fields)
    return {f"{a}.{b}" for a, b in re.findall(r"(?<![\w/.<])([a-z_]+)\.([a-z_]+)\b", text)
            if a in sections and b not in FILE_SUFFIXES}


def is_config_key(key: str) -> bool:
    from ssb.config import RunConfig

    section, field = key.split(".")
    cls = RunConfig.model_fields[section].annotation
    return field in getattr(cls, "model_fields", {}) or isinstance(getattr(cls, field, None), property)


def test_every_config_key_the_help_the_stage_table_and_the_report_name_exists(tmp_path):
    from test_report import make_synthetic_run

    from ssb.rundir.table import STAGES
    from ssb.stages.report import write_report

    report = write_report(make_synthetic_run(tmp_path)).read_text()
    assert "off (`rounds.n: 1`)" in report and "rounds.enabled" not in report  # a property, not a key
    texts = [report, *help_texts(), *(s.help for s in STAGES), *(a for s in STAGES for a in s.about),
             *(s.off_setting or "" for s in STAGES)]
    named = config_keys("\n".join(texts))
    assert {"rounds.n", "baselines.sft", "grpo.enabled", "eval.benches", "distill.save_steps"} <= named
    assert not [k for k in named if not is_config_key(k)]
    assert not is_config_key("rounds.nope") and config_keys("see report.md and eval/holdout.problems.jsonl") == set()


@pytest.mark.parametrize("command", ["compare", "eval", "data show", "model info"])
def test_help_renders(command, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command.split(), "--help"])
    assert exc.value.code == 0 and "usage: ssb" in capsys.readouterr().out
