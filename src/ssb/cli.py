"""Command line: a thin argument layer over the stage functions.

    ssb run CONFIG [--set section.field=value ...]     whole pipeline, resumable
    ssb rollout|curate|teacher|logits|distill|grpo|report --run runs/NAME
    ssb compare CONFIG --arms base,ssb,sft,rft,grpo,sdft --replicates 3   arms on shared rollouts, per FLOP
    ssb eval --model PATH_OR_RUN --bench gsm8k,math500,aime2024
    ssb data show|validate ...      ssb model info|merge ...     ssb config show CONFIG
    ssb signal --run runs/NAME [--json]     what the teacher signal carries (RUN/signal.json)

Imports of ssb modules are inside the commands, each marked: ``config`` pulls in pydantic
(~0.3 s) and ``models`` torch, and ``ssb --help`` needs neither. The stage commands and
their help come from the stage table (``rundir/table.py``, standard library only).

Errors meant for the user (every :class:`ssb.errors.SSBError`, and a missing or unreadable
file) print as ``ssb: error: MESSAGE`` with exit status 1; ``--debug`` shows the traceback
instead. Anything else is a bug and keeps its traceback.

Commands that write into a run directory (``run``, the stage commands, ``report``, ``eval`` of a
run into its ``eval/``) hold the directory's lock (``rundir/lock.py``); the read-only ones
(``config``, ``data``, ``model``, ``eval --out`` elsewhere) do not.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import SSBError
from .rundir.table import STAGES, get_stage, stage_names

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (problems, replicates, completions, tokens)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# ----------------------------------------------------------------------------- run / stages


def cmd_run(args) -> int:
    from .config import load_config  # lazy: pydantic, keeps `ssb --help` fast
    from .pipeline import run_pipeline  # lazy: pydantic, keeps `ssb --help` fast

    cfg = load_config(args.config, args.set)
    if args.name:
        cfg.name = args.name
    run_pipeline(cfg, only=args.only, skip=args.skip, force=args.force, config_file=args.config,
                 overrides=args.set + ([f"name={args.name}"] if args.name else []))
    return EXIT_OK


@contextmanager
def _owned_run(args):
    """The run of ``--run``, its directory locked for the command (``rundir/lock.py``): stage
    commands and the report write into it."""
    from .rundir.run import Run, locked  # lazy: pydantic, keeps `ssb --help` fast

    Run.open(args.run)  # a directory that is no run: the usual error, and no lock file left in it
    with locked(args.run):
        yield Run.open(args.run, args.set)


def cmd_stage(args) -> int:
    from .pipeline import call_stage  # lazy: pydantic, keeps `ssb --help` fast

    with _owned_run(args) as run:
        stats = call_stage(run, get_stage(args.command))
    _print_json(stats)
    return EXIT_OK


def cmd_report(args) -> int:
    from .stages.report import write_report  # lazy: pydantic, keeps `ssb --help` fast

    with _owned_run(args) as run:
        path = write_report(run)
    print(f"wrote {path}")
    return EXIT_OK


def cmd_signal(args) -> int:
    from .rundir.run import Run, locked  # lazy: torch, keeps `ssb --help` fast
    from .signal.diagnostic import parse_variant, summary_lines, write_signal

    Run.open(args.run)  # a directory that is no run: the usual error, and no lock file left in it
    with locked(args.run):
        variants = {"variant": parse_variant(args.variant)} if args.variant else None
        path, out = write_signal(Run.open(args.run), variants=variants, limit=args.limit)
    if args.json:
        _print_json(out)
    else:
        print("\n".join(summary_lines(out)))
        print(f"wrote {path}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from .comparison.arms import Compare  # lazy: pydantic, keeps `ssb --help` fast
    from .comparison.spec import parse_arms
    from .comparison.results import markdown

    ks = tuple(int(k) for k in args.k_values.split(",") if k) if args.k_max else ()
    overrides = args.set + (["tune.enabled=true"] if args.tune else [])
    doc = Compare(args.config, parse_arms(args.arms), args.replicates, args.n, args.seed, args.dir, overrides,
                  grpo_points=args.grpo_points, k_max=args.k_max, k_values=ks, curves=args.curves).run()
    print(markdown(doc))
    print(f"wrote {doc['dir']}/results.json, results.md, plots/")
    return EXIT_OK


def cmd_eval(args) -> int:
    from .cli_eval import evaluate_cli  # lazy: pydantic, keeps `ssb --help` fast

    evaluate_cli(args)
    return EXIT_OK


# ----------------------------------------------------------------------------- data


def cmd_data_show(args) -> int:
    from rich.console import Console  # lazy: ~0.06 s, only for the table
    from rich.table import Table

    from .config import DataConfig, ReasoningGymTask  # lazy: pydantic, keeps `ssb --help` fast
    from .data.load import load_problems  # lazy: pydantic, keeps `ssb --help` fast

    if args.config:
        problems, what = _config_problems(args)
    elif args.source is None:
        raise SSBError("ssb data show: give a SOURCE (gsm8k, reasoning_gym, a file, ...) or --config CONFIG")
    elif args.source == "reasoning_gym":
        tasks = [ReasoningGymTask(name=t) for t in (args.task or ["chain_sum"])]
        cfg = DataConfig(source="reasoning_gym", tasks=tasks, limit=args.limit, seed=args.seed, shuffle=False)
        problems, what = load_problems(cfg), "reasoning_gym (the generators' default options)"
    else:
        cfg = DataConfig(source=args.source, split=args.split, limit=args.limit, shuffle=False,
                         question_field=args.question_field, answer_field=args.answer_field)
        problems, what = load_problems(cfg), args.source
    if args.json:
        for p in problems:
            print(json.dumps(p.to_dict(), ensure_ascii=False))
        return EXIT_OK
    table = Table(title=f"{what} ({len(problems)} shown)", show_lines=True)
    table.add_column("id", overflow="fold")
    table.add_column("question", overflow="fold", ratio=4)
    table.add_column("answer", overflow="fold")
    for p in problems:
        table.add_row(p.id, p.question, p.answer)
    Console().print(table)
    return EXIT_OK


def _config_problems(args) -> tuple[list, str]:
    """The first ``--limit`` problems a config trains on (``data``) or is scored on (``holdout``:
    ``eval.holdout``, without the config's training questions, as a run draws it), and a title."""
    from .config import load_config  # lazy: pydantic, keeps `ssb --help` fast
    from .data.heldout import holdout_problems
    from .data.load import load_problems
    from .data.problem import question_keys

    cfg = load_config(args.config, args.set)
    which = args.source or "data"
    if which == "data":
        problems = load_problems(cfg.data)
        what = f"{args.config}: data, the training problems ({len(problems)} in all)"
    elif which == "holdout":
        problems, _ = holdout_problems(cfg.eval.holdout, question_keys(load_problems(cfg.data)))
        what = f"{args.config}: eval.holdout, the held-out problems ({len(problems)} in all)"
    else:
        raise SSBError(f"ssb data show --config: SOURCE is 'data' (the training problems) or 'holdout' (the "
                       f"held-out ones), not {which!r}")
    return problems[: args.limit] if args.limit is not None else problems, what


def cmd_data_validate(args) -> int:
    from .data.files import validate_file  # lazy: pydantic, keeps `ssb --help` fast

    report = validate_file(args.file, question_field=args.question_field, answer_field=args.answer_field,
                           id_field=args.id_field)
    _print_json(report)
    for w in report.get("warnings", []):
        print(f"ssb: warning: {args.file}: {w}", file=sys.stderr)
    bad = report.get("bad") or []
    if bad:
        first = bad[0]
        print(f"ssb: error: {len(bad)} of {report['rows']} rows are bad; first: "
              f"{first['file']}:{first['line']}: {first['field']}: {first['reason']}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# ----------------------------------------------------------------------------- model


def cmd_model_info(args) -> int:
    from rich.console import Console  # lazy: ~0.06 s, only for the table
    from rich.table import Table

    from .cli_eval import check_local  # lazy: pydantic, keeps `ssb --help` fast
    from .config import ModelConfig, load_config
    from .models import adapter_summary, fingerprint, load_model, model_summary  # lazy: torch

    check_local("model info", args.model)
    info = adapter_summary(args.model)  # an adapter: what it is and its base, without loading either
    run_cfg = Path(args.model).parent / "config.yaml"
    if info is not None and run_cfg.is_file():  # an adapter of a run: the base model as the run names it
        info["run's model.name_or_path"] = load_config(run_cfg).model.name_or_path
    if info is None:
        cfg = ModelConfig(name_or_path=args.model, gguf_file=args.gguf_file, device=args.device,
                          trust_remote_code=args.trust_remote_code)
        lm = load_model(cfg)
        info = model_summary(lm)
        info["fingerprint"] = fingerprint(lm.model, lm.tokenizer, args.model)["combined"]
    if args.json:
        _print_json(info)
        return EXIT_OK
    table = Table(title="adapter" if "base_model" in info else "model", show_header=False)
    for k, v in info.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
    Console().print(table)
    return EXIT_OK


def cmd_model_merge(args) -> int:
    from .config import ModelConfig  # lazy: pydantic, keeps `ssb --help` fast
    from .stages.distill import merge_adapter  # lazy: torch, transformers

    out = merge_adapter(ModelConfig(name_or_path=args.base), args.adapter, args.out)
    print(f"wrote merged model to {out}")
    return EXIT_OK


def cmd_config_show(args) -> int:
    from .config import describe_config, dump_config, load_config  # lazy: pydantic, keeps `ssb --help` fast

    cfg = load_config(args.config, args.set)
    print(describe_config(cfg, args.config, args.set) if args.describe else dump_config(cfg), end="")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ssb",
        description="Semantic Soft Bootstrapping: RL-free self-distillation for reasoning LLMs.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def with_set(sp):
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set rollout.k=8 (repeatable)")
        return sp

    sp = with_set(sub.add_parser("run", help="run every stage into runs/NAME (resumes a partial run)"))
    sp.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    sp.add_argument("--name", help="run name (default: the config's name)")
    sp.add_argument("--only", nargs="+", metavar="STAGE",
                    help="run only these stages, of: " + ", ".join(stage_names()))
    sp.add_argument("--skip", nargs="+", metavar="STAGE", default=[], help="skip these stages")
    sp.add_argument("--force", nargs="+", metavar="STAGE", default=[], help="rerun these stages from scratch")
    sp.set_defaults(fn=cmd_run)

    for stage in STAGES:  # `ssb NAME --run DIR` for every stage but the evals (`ssb eval` below)
        if stage.is_eval:
            continue
        sp = with_set(sub.add_parser(stage.name, help=stage.help))
        sp.add_argument("--run", required=True, help="run directory, e.g. runs/default")
        sp.set_defaults(fn=cmd_report if stage.name == "report" else cmd_stage)

    from .comparison import defaults as compare_defaults  # standard library only
    from .report.replicated import recorded_cost  # standard library only

    cost = recorded_cost()
    sp = with_set(sub.add_parser(
        "compare", help="SSB against base, SFT, RFT, GRPO and SDFT on shared rollouts, replicated, per FLOP (resumable)",
        description="Every arm trained on shared rollouts in each replicate, all evaluated on the same held-out "
        "problems, differences pooled over the replicates: what a single `ssb run` cannot show. Cost: every "
        "replicate is a whole run with every arm, plus the curves and the K-sensitivity pass: hours on a CPU"
        + (f"; {cost}" if cost else "") + ". --no-curves and --k-max 0 make it cheaper; rerunning the same "
        "command resumes it."))
    sp.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    sp.add_argument("--arms", default=compare_defaults.ARMS,
                    help="comma-separated: base, ssb, sft, rft, grpo, sdft (on-policy self-distillation), ssb@<k> (after k rounds), ssb:<hint> or "
                    "ssb:<key>=<value> (ablations); default: %(default)s")
    sp.add_argument("--replicates", type=count, default=compare_defaults.REPLICATES,
                    help="replicates (default: %(default)s); replicate i > 0 moves data.seed by i x a stride and "
                    "every stage's seed by i: reasoning-gym draws other training problems; a file or benchmark is "
                    "reshuffled, so other problems only where data.limit keeps fewer than all (and data.shuffle "
                    "is on)")
    sp.add_argument("--n", type=count, default=compare_defaults.N,
                    help="held-out problems, the same for every model (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=compare_defaults.SEED,
                    help="seed of the held-out draw (default: %(default)s)")
    sp.add_argument("--grpo-points", type=int, default=compare_defaults.GRPO_POINTS,
                    help="GRPO adapters saved along its budget, for the curve (default: %(default)s)")
    sp.add_argument("--no-curves", dest="curves", action="store_false", default=compare_defaults.CURVES,
                    help="final adapters only: no per-epoch, half-pairs or GRPO-point evaluations (faster; "
                    "default: with curves)")
    sp.add_argument("--k-max", type=int, default=compare_defaults.K_MAX,
                    help="K of the K-sensitivity rollout pass on replicate 0 (default: %(default)s; 0: skip it)")
    sp.add_argument("--k-values", default=",".join(map(str, compare_defaults.K_VALUES)),
                    help="K values SSB is trained at in the K-sensitivity pass (default: %(default)s)")
    sp.add_argument("--tune", action="store_true",
                    help="first search every trainable arm's learning rate (the same trials for each, "
                    "tune.lr_factors x its configured lr) on replicate 0, scored on a validation draw, never the "
                    "held-out problems; the chosen values train every replicate (tune.enabled; default: off)")
    sp.add_argument("--dir", default=None, help="output directory (default: <runs_dir>/<name>-compare)")
    sp.set_defaults(fn=cmd_compare)

    sp = sub.add_parser("signal", help="what the teacher signal carries: per reply token the hinted teacher against "
                        "the base model, into RUN/signal.json",
                        description="After the logits stage: the base model's and the hinted teacher's probability "
                        "of each solution token, their KL at distill.temperature, the hint gain, and the share of the "
                        "loss and of its gradient on the tokens the base already predicts (docs/method.md).")
    sp.add_argument("--run", required=True, help="run directory with pairs.jsonl and teacher/, e.g. runs/default")
    sp.add_argument("--json", action="store_true", help="print the whole result as JSON instead of a summary")
    sp.add_argument("--limit", type=count, default=None, help="the first N pairs only (default: all)")
    sp.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE",
                    help="a distill loss setting to evaluate beside the paper's and the run's, e.g. "
                    "--variant divergence=jsd --variant token_weighting=hint_gain (repeatable; default: none)")
    sp.set_defaults(fn=cmd_signal)

    sp = sub.add_parser("eval", help="stage 6: pass@k with confidence intervals on benchmarks",
                        description="Evaluate a model, an adapter, or every model of a run. Settings not given "
                        "here come from the run's config (--model RUN or an adapter inside a run), else --config, "
                        "else the code's defaults (greedy pass@1 on gsm8k).")
    sp.add_argument("--model", default="embedded",
                    help="a Hub id (org/name), a local model directory or .gguf file, a PEFT adapter directory, "
                    "or a run directory: its base model and every adapter (default: %(default)s, the bundled "
                    "SmolLM2-135M-Instruct)")
    sp.add_argument("--base", default=None, help="base model for an adapter (default: the run's model, else the "
                    "adapter's own adapter_config.json)")
    sp.add_argument("--bench", default=None,
                    help="comma-separated: gsm8k,math500,aime2024,holdout (default: the run's eval.benches, else gsm8k)")
    sp.add_argument("--data", default=None, help="a JSONL/Parquet/CSV of problems instead of --bench")
    sp.add_argument("--limit", type=count, default=None,
                    help="evaluate the first N problems of each benchmark or file, holdout included (default: the "
                    "config's eval.limit; unset: all)")
    sp.add_argument("--n", type=count, default=None,
                    help="completions per problem (pass@k for k <= n; default: the config's eval.n)")
    sp.add_argument("--temperature", type=float, default=None,
                    help="sampling temperature (default: the config's eval.temperature, 0 = greedy; 0.7 when --n > "
                    "1 and the config's is 0)")
    sp.add_argument("--max-new-tokens", type=count, default=None,
                    help="longest completion in tokens; longer ones are cut and counted as truncated (default: the "
                    "config's eval.max_new_tokens, else generation.max_new_tokens)")
    sp.add_argument("--backend", default=None, choices=["hf", "llamacpp", "vllm"],
                    help="generation backend (default: the config's generation.backend): hf (any model, CPU or "
                    "GPU), llamacpp (GGUF on CPU, no adapters), vllm (GPU)")
    sp.add_argument("--config", default=None,
                    help="config whose prompt, generation and eval settings to use (default: the code's defaults; "
                    "a run's own config wins over it)")
    sp.add_argument("--out", default=None, help="output directory (default: the run's eval/<label>, else "
                    "eval/<model name>)")
    sp.set_defaults(fn=cmd_eval)

    # data helpers
    dp = sub.add_parser("data", help="inspect built-in benchmarks and validate your own data")
    dsub = dp.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sp = with_set(dsub.add_parser(
        "show", help="print problems: of a source, or those a config trains on (--config)",
        description="Print the first --limit problems of a source (reasoning_gym: the generators' default "
        "options), or with --config the problems that config trains on (SOURCE 'data', the default) or is "
        "scored on (SOURCE 'holdout': eval.holdout without the training questions, as a run draws it)."))
    sp.add_argument("source", nargs="?", default=None,
                    help="gsm8k, math500, aime2024, reasoning_gym, a file, or hf:NAME; with --config: data or holdout")
    sp.add_argument("--config", default=None,
                    help="show the problems this YAML config draws, its data section's options and seed "
                    "(with --set overrides)")
    sp.add_argument("--split", default="test", help="split of a benchmark or hf: dataset (default: %(default)s)")
    sp.add_argument("--limit", type=count, default=5, help="problems shown (default: %(default)s)")
    sp.add_argument("--task", action="append",
                    help="reasoning-gym task name (repeatable; default: chain_sum), at its default options")
    sp.add_argument("--seed", type=int, default=0, help="reasoning-gym seed (default: %(default)s)")
    sp.add_argument("--question-field", default="question",
                    help="column of a file holding the question (default: %(default)s)")
    sp.add_argument("--answer-field", default="answer",
                    help="column of a file holding the answer (default: %(default)s)")
    sp.add_argument("--json", action="store_true", help="print JSONL instead of a table")
    sp.set_defaults(fn=cmd_data_show)
    sp = dsub.add_parser("validate", help="check a JSONL/Parquet/CSV file of problems")
    sp.add_argument("file", help="the .jsonl, .parquet or .csv file")
    sp.add_argument("--question-field", default="question",
                    help="column holding the question (default: %(default)s)")
    sp.add_argument("--answer-field", default="answer", help="column holding the answer (default: %(default)s)")
    sp.add_argument("--id-field", default=None,
                    help="column holding a unique id (default: none: ids are <file stem>-<row>)")
    sp.set_defaults(fn=cmd_data_validate)

    # model helpers
    mp = sub.add_parser("model", help="inspect a model, merge an adapter")
    msub = mp.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    sp = msub.add_parser("info", help="load a model and print its name, size, vocab, template, load time; "
                         "an adapter directory: its kind, base model and rank, without loading")
    sp.add_argument("model", nargs="?", default="embedded",
                    help="a Hub id, a local model directory or .gguf file, or a PEFT adapter directory (default: "
                    "%(default)s)")
    sp.add_argument("--gguf-file", default=None, help="the .gguf file inside a model directory or Hub repository")
    sp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: %(default)s)")
    sp.add_argument("--trust-remote-code", action="store_true",
                    help="let transformers run the model repository's own Python code")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp.set_defaults(fn=cmd_model_info)
    sp = msub.add_parser("merge", help="merge a LoRA adapter into its base and save a standalone model")
    sp.add_argument("adapter", help="adapter directory, e.g. runs/default/student")
    sp.add_argument("out", help="output directory")
    sp.add_argument("--base", default="embedded", help="base model the adapter was trained on (default: %(default)s)")
    sp.set_defaults(fn=cmd_model_merge)

    cp = sub.add_parser("config", help="print a resolved config")
    csub = cp.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    sp = with_set(csub.add_parser("show", help="print the config with defaults and overrides applied"))
    sp.add_argument("config", help="YAML config, e.g. configs/default.yaml")
    sp.add_argument("--describe", action="store_true",
                    help="every field with its value, where the value came from (file, --set, code default, or "
                    "the top-level seed) and its description, instead of YAML")
    sp.set_defaults(fn=cmd_config_show)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "fn", None):
        parser.print_help()
        return EXIT_USAGE
    t0 = time.time()
    try:
        code = args.fn(args)
    except KeyboardInterrupt:
        print("\nssb: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (SSBError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # errors meant for the user (and OS errors naming a path): one message, no traceback
        if args.debug:
            raise
        print(f"ssb: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    logging.getLogger("ssb").debug("done in %.1fs", time.time() - t0)
    return code


if __name__ == "__main__":
    sys.exit(main())
