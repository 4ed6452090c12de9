"""How long ``make demo`` takes: ``ssb run configs/default.yaml`` in a fresh run directory, timed.

    python -m bench.demo [--config configs/default.yaml] [--dir /tmp/ssb-demo] [--out bench/results/demo.json]

``make demo`` is the CPU install, then ``ssb run configs/default.yaml``; this times the second part (the
install is pip's and the network's) as a subprocess, the way the Makefile runs it, in ``--dir`` (which
must not hold a finished run: a resumed run would time only what was left). It writes ``wall_seconds``
(the command, start to end), ``stages`` (each stage's seconds from the run's manifest), the load average
at the start (other work on the machine slows it), and ``provenance``. Rendered into README.md by
``python -m bench.render`` (``demo_time``). The run directory is kept: ``ssb signal --run DIR`` and the
report read it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ._meta import ROOT, provenance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--dir", default="/tmp/ssb-demo", help="runs_dir of the timed run (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "demo.json"))
    args = ap.parse_args(argv)
    prov = provenance(args.config)
    name = Path(args.config).stem
    run_dir = Path(args.dir) / name
    if (run_dir / "manifest.json").is_file():
        print(f"{run_dir} holds a run already: a resumed run would time only what was left; remove it first",
              file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "ssb.cli", "run", args.config, "--set", f"runs_dir={args.dir}", "--name", name]
    load = os.getloadavg()
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    wall = time.time() - t0
    if res.returncode != 0:
        print(f"`{' '.join(cmd)}` failed ({res.returncode})", file=sys.stderr)
        return res.returncode
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = {k: round(v.get("seconds_total", v.get("seconds")) or 0.0, 1)
              for k, v in manifest.get("stages", {}).items() if v.get("status") == "done"}
    doc = {"provenance": prov, "command": "ssb run " + os.path.relpath(args.config, ROOT), "config": name,
           "wall_seconds": round(wall, 1), "stages": stages, "load_avg_at_start": [round(x, 2) for x in load],
           "torch_threads": os.environ.get("OMP_NUM_THREADS") or "default (one per core)",
           "run_dir": str(run_dir),
           "note": "make demo = the CPU install (not timed: pip and the network) + this command"}
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"ssb run {name}: {wall / 60:.1f} min; saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
