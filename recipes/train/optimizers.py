"""The ``OPTIMIZERS`` entries: ``optimizer = dict(type=NAME, **kwargs)`` in a config.

- every ``torch.optim`` optimizer by its class name (``AdamW``, ``SGD``, ``Adafactor``, ...);
- every timm optimizer by its timm name (``lamb``, ``lion``, ``adan``, ``adopt``, ``lars``, ``mars``,
  ``kron``...: ``timm.optim.list_optimizers()``), with timm's bound defaults (e.g. ``sgd`` = Nesterov);
- ``AdamW8bit`` from bitsandbytes where it is installed (a ``ValueError`` naming the package where not).

Each entry is ``f(param_groups, **kwargs) -> torch.optim.Optimizer``. The groups carry ``lr`` and
``weight_decay`` (the strategy's), so a config's ``optimizer.lr`` / ``optimizer.weight_decay`` is an
error (:func:`recipes.train.config_check.check_config`); other keys are checked against the optimizer's signature.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from recipes.train.config import build_with_keys
from recipes.train.registry import OPTIMIZERS


def _torch_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    return {
        name: cls
        for name, cls in vars(torch.optim).items()
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer
    }


for _name, _cls in _torch_optimizers().items():
    OPTIMIZERS.register_module(_name, module=_cls)


def _timm_optimizer(name: str, params: Sequence[Any], **kwargs: Any) -> torch.optim.Optimizer:
    from timm.optim import get_optimizer_class

    try:
        cls = get_optimizer_class(name, bind_defaults=True)
    except ImportError as e:  # bitsandbytes / apex / deepspeed backed entries: a config choice, so bad input
        raise ValueError(f"optimizer.type={name!r} needs a package that is not installed: {e}") from None
    except AssertionError as e:  # timm asserts CUDA for bitsandbytes entries before importing it
        raise ValueError(f"optimizer.type={name!r} cannot run here: {e}") from None
    return build_with_keys(functools.partial(cls, params), kwargs, "optimizer.")


def _register_timm() -> None:
    try:
        from timm.optim import list_optimizers
    except ImportError:  # timm is in the [train] extra; without it only torch's optimizers exist
        return
    for name in list_optimizers():
        factory = functools.partial(_timm_optimizer, name)
        factory.options = functools.partial(_timm_options, name)  # type: ignore[attr-defined]
        OPTIMIZERS.register_module(name, module=factory)


def _timm_options(name: str) -> frozenset[str] | None:
    """The keywords of the class behind a timm optimizer name (None when it cannot be imported here)."""
    from timm.optim import get_optimizer_class

    from recipes.options import accepted_options

    try:
        return accepted_options(get_optimizer_class(name, bind_defaults=False), skip=("self", "params"))
    except (ImportError, AssertionError):
        return None


_register_timm()


@OPTIMIZERS.register_module("AdamW8bit")
def adamw_8bit(params: Sequence[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """bitsandbytes' 8-bit AdamW (optimizer state in 8 bits; CUDA)."""
    try:
        import bitsandbytes as bnb
    except ImportError:  # a config choice this machine cannot run: bad input (exit 2), not a crash
        raise ValueError(
            "optimizer.type='AdamW8bit' needs the bitsandbytes package (pip install bitsandbytes; CUDA only); "
            "it is not installed here. Use 'AdamW' or a timm optimizer instead"
        ) from None
    return build_with_keys(functools.partial(bnb.optim.AdamW8bit, params), kwargs, "optimizer.")


def build_optimizer(groups: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """``OPTIMIZERS.lookup(cfg.type)(groups, **rest)``; default AdamW; unknown keys name ``optimizer.<key>``.

    >>> p = torch.nn.Parameter(torch.zeros(2))
    >>> type(build_optimizer([dict(params=[p], lr=0.1)], dict(type="lamb"))).__name__
    'Lamb'
    """
    kwargs = dict(cfg or {})
    name = kwargs.pop("type", "AdamW")
    factory = OPTIMIZERS.lookup(name)
    try:
        if isinstance(factory, type):
            return build_with_keys(functools.partial(factory, list(groups)), kwargs, "optimizer.")
        return factory(list(groups), **kwargs)
    except ValueError as e:  # the optimizer's own argument checks, named
        if str(e).startswith("optimizer"):
            raise
        raise ValueError(f"optimizer {name!r}: {e}") from None
