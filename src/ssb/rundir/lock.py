"""One process owns a run directory: the ``.lock`` file in it.

Every command that writes into a run directory (``ssb run``, ``ssb STAGE --run``, ``ssb report``,
``ssb eval`` of a run into its ``eval/``) holds the lock while it works; a second one on the same
directory stops at once with one line naming the holder (pid, host, command, since when), instead
of two processes appending to the same JSONL files and overwriting each other's manifest.
Read-only commands (``ssb config show``, ``ssb data ...``, ``ssb model info``, ``ssb model merge``
of an adapter into another directory, ``ssb eval --out`` elsewhere) take no lock.

Mechanism: ``fcntl.flock`` on ``RUN/.lock``, whose JSON content names the holder. flock rather than
``O_CREAT|O_EXCL`` because the kernel drops a flock when its process dies, however it dies
(``kill -9``, OOM killer, power loss of a container): whether a lock is stale never rests on
guessing from a pid, which is wrong after pid reuse and meaningless across pid namespaces (two
containers on one host show the same host name and unrelated pids). The JSON content is only the
message: a lock that is free although its file still names a holder was left by a killed process;
it is taken over with a warning naming that process. The file is removed on release; an acquirer
that locked a file another process removed meanwhile notices (its inode is no longer the path's)
and tries again.

Where flock is unavailable (no ``fcntl``, or a file system that refuses locks) the content
decides, racily: a holder whose pid is alive on this host keeps the directory, any other is
taken over with a warning.

Release happens on normal exit, on an exception and on Ctrl-C (the context manager's
``finally``), with an ``atexit`` hook as a backstop for a lock acquired outside one. A forked
child closes its copy of the descriptor, so a worker outliving a killed holder never keeps the
lock (and the descriptor is not inherited across exec). Locks are re-entrant within a process (a stage command inside ``ssb run`` does not lock itself out).
Under ``accelerate launch`` only the main process takes the lock (``rundir.locked``): the
others are the same job.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SSBError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLockedError(SSBError, RuntimeError):
    """The run directory is owned by another live process."""


def _holder_text(info: dict) -> str:
    cmd = info.get("command") or "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (`{cmd}`, since {info.get('since', '?')})"


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, TypeError, ValueError):
        return True  # exists but not ours, or unknowable: assume alive
    return True


def _flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no flock."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP, ...: no kernel lock here


_HELD: dict[str, "RunLock"] = {}  # resolved path -> the lock this process holds on it


def _forget_in_child() -> None:
    """A forked child (a data-loader worker, ...) closes its copy of the lock's descriptor: else
    it would keep the flock alive after its parent died, and nothing of the lock is its to release."""
    for lock in list(_HELD.values()):
        try:
            os.close(lock._fd)
        except (OSError, TypeError):
            pass
        lock._fd, lock._depth = None, 0
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class RunLock:
    """The lock of one run directory; a re-entrant context manager."""

    def __init__(self, run_dir: str | Path, command: str | None = None):
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command if command is not None else " ".join(
            [Path(sys.argv[0]).name or "python", *sys.argv[1:]])
        self._fd: int | None = None
        self._depth = 0
        self._key = str(self.path.resolve())

    def acquire(self) -> "RunLock":
        held = _HELD.get(self._key)
        if held is not None:  # this process already owns the directory
            held._depth += 1
            return held
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):  # retried only when the file was replaced under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            got = _flock(fd)
            if got is False:
                os.close(fd)
                raise RunLockedError(self._busy_message())
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it after we opened it: try the new file
                os.close(fd)
                continue
            previous = _read(self.path)
            if previous and got is None and previous.get("pid") != os.getpid() and \
                    previous.get("host") == socket.gethostname() and _pid_alive(previous.get("pid")):
                os.close(fd)
                raise RunLockedError(self._busy_message(previous))
            if previous:
                alive = previous.get("host") == socket.gethostname() and _pid_alive(previous.get("pid"))
                log.warning("%s: taking over a stale lock of %s, which ended without releasing it%s",
                            self.path.parent, _holder_text(previous),
                            "" if not alive else " (a process with that pid runs, but it holds no lock)")
            self._write(fd)
            self._fd, self._depth = fd, 1
            _HELD[self._key] = self
            atexit.register(self._release_all)
            return self
        raise RunLockedError(f"{self.path.parent}: could not lock {self.path} (it keeps being replaced)")

    def _write(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _busy_message(self, info: dict | None = None) -> str:
        if info is None:
            for _ in range(20):  # the holder may not have written its name yet
                info = _read(self.path)
                if info:
                    break
                time.sleep(0.05)
        who = _holder_text(info) if info else "another process (it has not named itself yet)"
        return (f"run directory {self.path.parent} is in use by {who}; wait for it to finish or stop it "
                f"(a killed holder's lock is taken over automatically)")

    def release(self) -> None:
        held = _HELD.get(self._key)
        if held is None:
            return
        held._depth -= 1
        if held._depth <= 0:
            held._release_all()

    def _release_all(self) -> None:
        if self._fd is None:
            return
        _HELD.pop(self._key, None)
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody else sees a half state
        finally:
            os.close(self._fd)  # drops the flock
            self._fd, self._depth = None, 0
        atexit.unregister(self._release_all)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: str | Path) -> dict:
    """What ``RUN/.lock`` says about its holder ({} when there is no lock file)."""
    return _read(Path(run_dir) / LOCK_NAME)
