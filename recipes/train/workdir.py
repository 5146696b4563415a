"""Guards around a run's work dir: one run at a time (a lock), and stopping cleanly on a signal.

``WorkDirLock``: ``<work_dir>/.lock`` held with ``flock`` for the whole run and naming the holder's
pid and host. A second run into the same folder fails at once with a clear error while the first keeps
running; the kernel drops the lock when its process dies, so a lock file left by a dead run is taken
over (and says so). Within one process a new run on the same folder supersedes the old one.

``StopOnSignal``: while training, Ctrl-C (SIGINT) and SIGTERM (how clusters preempt jobs) only set a
flag; the engine saves a checkpoint at the next step boundary and stops with exit code 3. A second
Ctrl-C stops at once (no checkpoint).

``check_work_dir`` / ``set_aside_earlier_run``: a run writes ``.zoo_recipes_run`` (``RUN_MARKER``) first
thing into its work dir. A fresh run may move an earlier run's files into ``previous/<time>/`` only where
that marker is: a non-empty folder without it (a user's documents, the dataset, a symlink to either) is
refused and nothing in it is touched. ``tools/show_lr.py``'s own ``show_lr/`` folder stays where it is.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from recipes.train.errors import BadInput

LOCK_NAME = ".lock"
RUN_MARKER = ".zoo_recipes_run"  # written by tools/train.py into every work dir it uses
SHOW_LR_DIR = "show_lr"  # tools/show_lr.py's default output folder inside a config's work dir
KEPT = {LOCK_NAME, RUN_MARKER, "previous", SHOW_LR_DIR}  # never moved aside by a fresh run
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


def _foreign_entries(work_dir: Path) -> list[str]:
    """What is in ``work_dir`` besides this tool's own lock, marker, ``previous/`` and ``show_lr/``."""
    return sorted(p.name for p in work_dir.iterdir() if p.name not in KEPT)


def check_output_folder(path: str | Path, option: str) -> Path:
    """A folder a tool will create or write into (``option`` names it): a file or a dangling link there is refused."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadInput(f"{option} {str(path)!r} is a link to {os.readlink(path)!r}, which does not exist; give a "
                       "new folder, or create the folder the link points to")  # fmt: skip
    if path.exists() and not path.is_dir():
        raise BadInput(f"{option} {str(path)!r} is a file, not a folder; give a folder (nothing was written)")
    return path


def check_work_dir(work_dir: str | Path) -> None:
    """Refuse a work dir that is a file, or a non-empty folder no run of tools/train.py wrote (no marker)."""
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise BadInput(f"work dir {str(work_dir)!r} is a file, not a folder; choose another --work-dir")
    check_output_folder(work_dir, "--work-dir")
    if not work_dir.is_dir() or (work_dir / RUN_MARKER).is_file():
        return
    foreign = _foreign_entries(work_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise BadInput(
            f"work dir {str(work_dir)!r} holds files no training run wrote ({shown}); nothing was moved. Choose a "
            f"new or empty --work-dir (if it is a run of an older version, create an empty {RUN_MARKER} in it)"
        )


def set_aside_earlier_run(work_dir: str | Path, resuming: bool) -> Path | None:
    """Mark ``work_dir`` as a run's; a fresh run moves an earlier run's files to ``previous/<time>/`` (returned).

    Call with the lock held. ``check_work_dir`` first: only a marked folder has anything to move.
    """
    work_dir = Path(work_dir)
    check_work_dir(work_dir)
    marker = work_dir / RUN_MARKER
    if not marker.exists():
        marker.write_text("written by tools/train.py: a later run may move this folder's files into previous/\n")
    old = _foreign_entries(work_dir)
    if not old or resuming:
        return None
    dest = work_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for name in old:
        shutil.move(str(work_dir / name), str(dest / name))
    return dest
