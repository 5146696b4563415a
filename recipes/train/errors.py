"""Exit codes and the one-line error convention shared by every tool (``tools/*.py``).

Exit status: 0 done; 1 stopped on a non-finite loss (the last good checkpoint is kept); 2 bad
input (config, data, checkpoint, command line); 3 interrupted (Ctrl-C / SIGTERM; a checkpoint was
saved and the message says how to resume); 4 an unexpected error (a bug: the traceback is printed).
"""

from __future__ import annotations

import errno
import functools
import sys
import traceback
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_NONFINITE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 3
EXIT_UNEXPECTED = 4


class BadInput(ValueError):
    """A config, data file, checkpoint or command-line value the user must fix; the message names it."""


class NonFiniteLoss(RuntimeError):
    """The loss, a gradient or the weights became NaN or inf; the run stops and keeps its last good checkpoint."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint at a step boundary."""


# Exceptions that mean "the user's input is wrong": printed as one line, exit 2.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    BadInput,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    KeyError,
    ValueError,
    TypeError,
    SyntaxError,
    NameError,
)


def _one_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(text.split()) or type(e).__name__


def cli(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a tool's ``main`` so that it returns the documented exit codes instead of raising.

    Bad input prints ``error: <message>`` (one line, no traceback) and returns 2; anything else
    unexpected prints the traceback and returns 4. ``SystemExit`` (argparse) passes through.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except NonFiniteLoss as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return EXIT_NONFINITE
        except Interrupted as e:
            print(_one_line(e), file=sys.stderr)
            return EXIT_INTERRUPTED
        except KeyboardInterrupt:
            print("interrupted (no checkpoint was saved for this step; --resume continues from the last one)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_INTERRUPTED
        except BAD_INPUT_ERRORS as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                traceback.print_exc()
                print("error: unexpected failure (a bug; please report it with the traceback above)", file=sys.stderr)
                return EXIT_UNEXPECTED
            where = f"cannot write {e.filename}: " if e.filename else ""
            print(f"error: {where}the disk is full (or the quota is used up); free some space and run again (a "
                  "training run: with --resume, from its last checkpoint)", file=sys.stderr)  # fmt: skip
            return EXIT_BAD_INPUT
        except Exception:  # a bug: say so, with the traceback
            traceback.print_exc()
            print("error: unexpected failure (a bug; please report it with the traceback above)", file=sys.stderr)
            return EXIT_UNEXPECTED

    return wrapper
