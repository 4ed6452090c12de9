"""The run-directory lock (runlock.py) with real processes: a second command on a locked run
stops with one line naming the holder; a lock left by a ``kill -9`` is taken over with a warning;
the lock goes away on normal exit, on an exception and on Ctrl-C. No model is loaded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssb import cli
from ssb.config import RunConfig
from ssb.rundir.lock import LOCK_NAME, RunLock, RunLockedError, holder
from ssb.rundir.run import Run, locked

SRC = Path(__file__).resolve().parents[1] / "src"

HOLDER = textwrap.dedent("""
    import sys, time
    from ssb.rundir.run import Run

    with Run.open(sys.argv[1]).locked():
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return Run.create(RunConfig(name="locked", runs_dir=str(tmp_path))).path


def _start_holder(tmp_path: Path, run_dir: Path, seconds: float = 120) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the holder owns the directory (or died)
    assert line.strip() == "locked", proc.stderr.read()[-3000:]
    return proc


def _stop(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=30)


def test_second_command_refused_then_stale_lock_taken_over(tmp_path, run_dir, capsys, caplog):
    proc = _start_holder(tmp_path, run_dir)
    try:
        info = holder(run_dir)
        assert (info["pid"], info["host"]) == (proc.pid, socket.gethostname())
        assert "holder.py" in info["command"] and info["since"]
        manifest = (run_dir / "manifest.json").read_text()

        # a stage command and `ssb run` on the same directory: one line naming the holder
        for argv in (["curate", "--run", str(run_dir)], ["report", "--run", str(run_dir)],
                     ["run", str(run_dir / "config.yaml"), "--only", "report"]):
            assert cli.main(argv) == 1, argv
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1, err
            assert err.startswith("ssb: error: run directory") and f"pid {proc.pid} on {socket.gethostname()}" in err
            assert "holder.py" in err and info["since"] in err
        assert (run_dir / "manifest.json").read_text() == manifest  # the refused commands wrote nothing
        assert holder(run_dir)["pid"] == proc.pid  # ... and left the holder's lock alone
    finally:
        _stop(proc)  # kill -9: the holder never releases

    assert holder(run_dir)["pid"] == proc.pid  # the file outlives its process
    with caplog.at_level("WARNING"), Run.open(run_dir).locked() as lock:
        assert lock.held and holder(run_dir)["pid"] == os.getpid()
    assert f"stale lock of pid {proc.pid}" in caplog.text
    assert not (run_dir / LOCK_NAME).exists()  # released on leaving the block


def test_ctrl_c_releases_the_lock(tmp_path, run_dir):
    proc = _start_holder(tmp_path, run_dir)
    _stop(proc, signal.SIGINT)
    assert "KeyboardInterrupt" in proc.stderr.read()
    assert not (run_dir / LOCK_NAME).exists()


def test_normal_exit_releases_the_lock(tmp_path, run_dir, caplog):
    proc = _start_holder(tmp_path, run_dir, seconds=0)
    assert proc.wait(timeout=30) == 0
    assert not (run_dir / LOCK_NAME).exists()
    with caplog.at_level("WARNING"), locked(run_dir):
        pass
    assert "stale" not in caplog.text


def test_exception_releases_and_reentry_is_allowed(run_dir):
    with pytest.raises(ValueError):
        with locked(run_dir):
            with locked(run_dir) as inner:  # a stage command inside `ssb run`: same process, same owner
                assert inner.held
            assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
            raise ValueError("boom")
    assert not (run_dir / LOCK_NAME).exists()
    lock = RunLock(run_dir).acquire()
    lock.release()
    assert not lock.held


def test_non_main_processes_of_a_launch_take_no_lock(run_dir, monkeypatch):
    monkeypatch.setattr("ssb.rundir.run._main_process", lambda: False)
    with locked(run_dir) as lock:
        assert lock is None and not (run_dir / LOCK_NAME).exists()


def test_lock_error_is_an_ssb_error():
    from ssb.errors import SSBError

    assert issubclass(RunLockedError, SSBError)


def test_a_directory_that_is_no_run_gets_no_lock_file(tmp_path, capsys):
    assert cli.main(["curate", "--run", str(tmp_path / "nope")]) == 1
    assert "is not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_a_forked_child_does_not_keep_the_lock(run_dir):
    """A child forked while the lock is held (a data-loader worker) closes its copy: when the
    parent dies without releasing (simulated: its descriptor closed, the file left), the lock is
    free even while the child lives."""
    import ssb.rundir.lock as runlock

    lock = RunLock(run_dir).acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: wait until told, then exit
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(lock._fd)  # the parent "dies": its flock goes, the file stays
    lock._fd = None
    runlock._HELD.clear()
    try:
        probe = subprocess.run([sys.executable, "-c", "import sys; from ssb.rundir.lock import RunLock\n"
                                "RunLock(sys.argv[1]).acquire(); print('got it')", str(run_dir)],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, PYTHONPATH=str(SRC)))
        assert probe.stdout.strip() == "got it", probe.stderr[-2000:]
        assert f"stale lock of pid {os.getpid()}" in probe.stderr
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)
