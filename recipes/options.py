"""The one "not read by anything" error and the one way to ask what keywords a function or class takes.

Every config section (strategy, schedule, policy, optimizer, model, data, task, train) reports a key
nothing reads through :func:`unknown_key_error`, and learns what it may hold through
:func:`accepted_options`, in the library and in the training framework alike.

>>> check_keys("schedule.", {"warmup_step": 10}, {"warmup_steps", "lr"})
Traceback (most recent call last):
...
KeyError: "config: `schedule.warmup_step` is not read by anything (did you mean 'warmup_steps'?); known: lr, warmup_steps"
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any


def unknown_key_error(where: str, key: str, known: Iterable[str], why: str = "") -> KeyError:
    """``KeyError``: ``config: `<where><key>` is not read by anything (did you mean <nearest>?); known: ...``."""
    known = sorted(set(known))
    near = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    shown = ", ".join(known) if len(known) <= 30 else ", ".join(known[:30]) + ", ..."
    listed = f"; known: {shown}" if known else ""
    return KeyError(f"config: `{where}{key}` is not read by anything{hint}{why}{listed}")


def check_keys(where: str, given: Iterable[Any], known: Iterable[str]) -> None:
    """Raise :func:`unknown_key_error` for the first key of ``given`` outside ``known`` (``_private`` keys pass)."""
    known = set(known)
    for key in given:
        if not str(key).startswith("_") and key not in known:
            raise unknown_key_error(where, str(key), known)


_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_options(obj: Any, skip: Iterable[str] = ("self",)) -> frozenset[str] | None:
    """The keyword names ``obj`` (a function, ``functools.partial`` or class) takes, minus ``skip``.

    One meaning of ``**kwargs``: a class's ``__init__`` is followed up its bases while it passes
    ``**kwargs`` on (``super().__init__(**kw)``), stopping before ``object``; a function marked with
    :func:`forwards_kwargs` adds the keywords of what it forwards them to. When what is left still
    takes ``**kwargs``, the answer is None: its keys can only be checked by calling it. ``*args`` /
    ``**kwargs`` themselves are never options.
    """
    skip = set(skip)
    names: set[str] = set()
    target = getattr(obj, "kwargs_to", None)
    if target is not None:  # a function marked by forwards_kwargs: its own keywords and its target's
        inner = accepted_options(target[0], skip)
        if inner is None:
            return None
        own = {p.name for p in inspect.signature(obj).parameters.values() if p.kind in _KEYWORD}
        return frozenset(own - skip) | (inner - target[1])
    if isinstance(obj, type):
        chain = [k.__init__ for k in obj.__mro__ if k is not object and "__init__" in vars(k)]
    else:
        chain = [obj]
    open_ended = False
    for fn in chain:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in _KEYWORD}
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
        if not open_ended:
            break  # this signature does not pass options on
    return None if open_ended else frozenset(names - skip)


def forwards_kwargs(target: Any, filled: Iterable[str] = ()) -> Any:
    """Mark a function (or class) whose ``**kwargs`` go to ``target`` (minus the ``filled`` keywords it sets itself), so that
    :func:`accepted_options` can list them before it is called.

    >>> def make(a, b=1, c=2): ...
    >>> @forwards_kwargs(make, filled=("a",))
    ... def build(x, **kw): return make(x, **kw)
    >>> sorted(accepted_options(build))
    ['b', 'c', 'x']
    """

    def mark(fn: Any) -> Any:
        fn.kwargs_to = (target, frozenset(filled))
        return fn

    return mark
