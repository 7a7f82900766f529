"""Advisory locks between recallscope processes: one writer per run directory, and per model cache entry.

A lock is ``flock(2)`` on a small lock file that is never deleted (deleting a lock file that
another process has open and is waiting on lets two processes hold "the" lock at once). The
kernel releases the lock when its holder exits, however it exits (kill -9 included), so a
lock is never left behind by a dead process. The holder writes its PID, host, command and start
time into the file so that a refused process can name it; a clean release empties the file, so
a lock taken over from a file that still names a holder was left by a process that ended
without releasing it (killed), which the taker says (:attr:`FileLock.taken_over`).

An exclusive lock is re-entrant within one process (the run layer takes the run directory's lock
in ``execute_many`` and again in the ``execute`` of its single cell); shared locks let several
readers of a model cache load it at once while a writer waits for them. Linux and other POSIX
systems only (``fcntl``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import UserError

_HELD: dict[str, "_Held"] = {}  # lock file (real path) -> this process's hold on it
_GUARD = threading.Lock()


@dataclass
class _Held:
    fd: int
    exclusive: bool
    depth: int


class Busy(UserError):
    """Another process holds the lock (and the caller asked not to wait)."""


class LockFileError(UserError):
    """The lock file cannot be made or locked (a read-only or full filesystem): ``oserror`` says why."""

    def __init__(self, message: str, oserror: OSError):
        super().__init__(message)
        self.oserror = oserror


def holder_of(path: Path) -> dict:
    """What the lock file says about its holder ({} when empty or unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict) -> str:
    """``PID 123 on host (recallscope run ..., since 12:00:01)`` from a lock file's content."""
    if not holder:
        return "another process"
    text = f"PID {holder.get('pid', '?')}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        text += f" on {holder['host']}"
    details = [str(holder["command"])[:120]] if holder.get("command") else []
    if isinstance(holder.get("started"), (int, float)):
        details.append("since " + time.strftime("%H:%M:%S", time.localtime(holder["started"])))
    return text + (f" ({', '.join(details)})" if details else "")


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "/recallscope")):
        argv[0] = "recallscope"
    return " ".join(argv)


class FileLock:
    """``flock`` on ``path`` (created when missing). ``what`` names the locked thing in messages
    (``--out runs/demo``, ``the model cache ...``)."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        self.taken_over: dict = {}  # the holder named in the file when we took it (ended without releasing)
        self._acquired = False

    def _key(self) -> str:
        return os.path.realpath(self.path)

    def acquire(self, exclusive: bool = True, wait: bool = False, on_wait: Callable[[str], None] | None = None) -> "FileLock":
        """Take the lock. Without ``wait``, a lock held elsewhere raises :class:`Busy` (one line
        naming the holder); with it, ``on_wait`` gets one line and the call blocks until the
        holder releases. UserError when the lock file cannot be created (a read-only place)."""
        with _GUARD:
            held = _HELD.get(self._key())
            if held is not None:
                if exclusive and not held.exclusive:
                    raise RuntimeError(f"{self.what}: a shared lock of this process cannot become exclusive")
                held.depth += 1
                self._acquired = True
                return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise LockFileError(f"{self.what}: cannot create its lock file {self.path} ({exc.strerror})", exc) from exc
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockFileError(f"{self.what}: cannot lock {self.path} ({exc.strerror})", exc) from exc
                holder = describe_holder(holder_of(self.path))
                if not wait:
                    raise Busy(f"{self.what} is in use by {holder}; wait for it to finish, or rerun with --wait") from None
                if on_wait is not None:
                    on_wait(f"{self.what} is in use by {holder}; waiting for it")
                fcntl.flock(fd, mode)
            if exclusive:
                self.taken_over = holder_of(self.path)
                os.ftruncate(fd, 0)
                record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(), "started": time.time()}
                os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        with _GUARD:
            _HELD[self._key()] = _Held(fd, exclusive, 1)
        self._acquired = True
        return self

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with _GUARD:
            held = _HELD.get(self._key())
            if held is None:
                return
            held.depth -= 1
            if held.depth > 0:
                return
            del _HELD[self._key()]
        try:
            if held.exclusive:
                os.ftruncate(held.fd, 0)  # a clean release: the next taker finds no holder named
        except OSError:
            pass
        finally:
            fcntl.flock(held.fd, fcntl.LOCK_UN)
            os.close(held.fd)

    def __enter__(self) -> "FileLock":
        if not self._acquired:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_here(path: Path) -> bool:
    """Whether this process holds the lock on ``path``."""
    with _GUARD:
        return os.path.realpath(path) in _HELD
