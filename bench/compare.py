"""`ssb compare` on a config, its results saved with provenance: ``bench/results/compare.json``.

    python -m bench.compare [--config configs/default.yaml] [--dir runs/default-compare] [ssb compare flags]

A thin caller of ``ssb compare`` (``src/ssb/comparison/arms.py``): it runs (or resumes) the comparison with the
flags given (``--arms``, ``--replicates``, ``--n``, ``--k-max``, ``--k-values``, ``--grpo-points``, ``--no-curves``,
``--tune``, ``--set``), then writes the comparison's ``results.json`` with ``provenance`` (commit, dirty paths,
config sha256) and ``invocations`` (every invocation's commit: a rerun resumes the same directory,
so the first one trained what later ones only re-aggregate) to ``--out``. ``commit`` is the commit
of this invocation. Rendered into README/docs by ``python -m bench.render``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ssb.comparison import defaults
from ssb.comparison.arms import Compare
from ssb.comparison.spec import parse_arms

from ._meta import ROOT, dirty_paths, provenance


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--dir", default=None, help="the comparison's directory (default: <runs_dir>/<name>-compare)")
    ap.add_argument("--arms", default=defaults.ARMS)
    ap.add_argument("--replicates", type=int, default=defaults.REPLICATES)
    ap.add_argument("--n", type=int, default=defaults.N)
    ap.add_argument("--seed", type=int, default=defaults.SEED)
    ap.add_argument("--grpo-points", type=int, default=defaults.GRPO_POINTS)
    ap.add_argument("--k-max", type=int, default=defaults.K_MAX)
    ap.add_argument("--no-curves", dest="curves", action="store_false", help="final adapters only")
    ap.add_argument("--k-values", default=",".join(map(str, defaults.K_VALUES)))
    ap.add_argument("--tune", action="store_true", help="ssb compare --tune: every trainable arm's lr searched first")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "compare.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    prov = {**provenance(args.config), "dirty_paths": dirty_paths()}
    old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    same_dir = old.get("dir") == (args.dir and str(Path(args.dir)))
    history = old.get("invocations", []) if same_dir else []
    prov["invocations"] = history + [{k: prov[k] for k in ("commit", "dirty", "dirty_paths", "date")}]
    t0 = time.time()
    ks = tuple(int(k) for k in args.k_values.split(",") if k) if args.k_max else ()
    doc = Compare(args.config, parse_arms(args.arms), args.replicates, args.n, args.seed,
                  Path(args.dir) if args.dir else None, args.set + (["tune.enabled=true"] if args.tune else []),
                  grpo_points=args.grpo_points,
                  k_max=args.k_max, k_values=ks, curves=args.curves).run()
    invocations = prov.pop("invocations")
    out = {"provenance": prov, "commit": prov["commit"], "invocations": invocations,
           "trained_at_commit": invocations[0]["commit"],
           "command": "python -m bench.compare " + " ".join(sys.argv[1:]), **doc,
           "wall_seconds_bench_invocation": round(time.time() - t0, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(doc["verdict"]))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
