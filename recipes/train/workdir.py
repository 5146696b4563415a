"""Guards around a run's work dir: one run at a time (a lock), and stopping cleanly on a signal.

``WorkDirLock``: ``<work_dir>/.lock`` held with ``flock`` for the whole run and naming the holder's
pid and host. A second run into the same folder fails at once with a clear error while the first keeps
running; the kernel drops the lock when its process dies, so a lock file left by a dead run is taken
over (and says so). Within one process a new run on the same folder supersedes the old one.

``StopOnSignal``: while training, Ctrl-C (SIGINT) and SIGTERM (how clusters preempt jobs) only set a
flag; the engine saves a checkpoint at the next step boundary and stops with exit code 3. A second
Ctrl-C stops at once (no checkpoint).
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from recipes.train.errors import BadInput

LOCK_NAME = ".lock"
_HELD: dict[Path, Any] = {}  # this process's open lock files, by resolved work dir


@atexit.register
def _release_all() -> None:
    for f in _HELD.values():
        f.close()
    _HELD.clear()


class WorkDirLock:
    """``with WorkDirLock(dir):`` or ``acquire()`` / ``release()``."""

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self._file: Any = None

    def acquire(self) -> WorkDirLock:
        key = self.work_dir.resolve()
        if key in _HELD:  # this process already runs there: the new run replaces the old one
            _HELD.pop(key).close()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise BadInput(
                f"work dir {str(self.work_dir)!r} is in use by a running training ({holder}); wait for it to "
                "finish or choose another --work-dir (a second run would move its files away)"
            ) from None
        f.seek(0)
        before = f.read().strip()
        if before:
            logging.getLogger("recipes").warning(
                f"[work_dir] took over the lock left by a run that is no longer running ({before})"
            )
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        _HELD[key] = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        _HELD.pop(self.work_dir.resolve(), None)
        try:
            self._file.seek(0)
            self._file.truncate()  # an empty lock file: nobody holds it
        except (OSError, ValueError):
            pass
        self._file.close()
        self._file = None

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class StopOnSignal:
    """Turn SIGINT / SIGTERM into ``self.signal`` (its name) for the duration of a ``with`` block."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked data worker: the main process does the stopping
            return
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signal.Signals(signum).name
        print(f"\n[{self.signal}] finishing the current step, then saving a checkpoint and stopping", flush=True)

    def __enter__(self) -> StopOnSignal:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
