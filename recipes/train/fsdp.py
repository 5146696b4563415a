"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for ``train.fsdp=True`` under ``torchrun``.

Every rank first takes rank 0's weights (:func:`broadcast_from_rank0`, as DDP does). Each transformer
block is one FSDP unit (the classes the model lists in ``_no_split_modules``, as diffusers and
transformers models do; else every entry of the model's ``nn.ModuleList``s), then the root holds the
rest. Sharding replaces each parameter by a ``DTensor`` parameter of the same name, so the engine
re-points its parameter groups by name (:func:`repoint_groups`: every group keeps its ``lr``,
``lr_scale``, ``weight_decay`` and name) and builds the optimizer on the shards.

Checkpoints stay one ``weights_only`` file written atomically by rank 0: the weights, the EMA and the
optimizer state are gathered to full, unsharded tensors on rank 0's CPU (``torch.distributed.checkpoint
.state_dict`` with ``full_state_dict=True, cpu_offload=True``; the optimizer keyed by parameter name),
and every rank reads them back on resume. Rank 0 therefore needs host memory for the full state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from recipes.train.checkpoint import all_finite
from recipes.train.checkpoint_entries import load_optimizer
from recipes.train.distributed import gather_objects
from recipes.train.errors import BadInput
from recipes.train.trainable_state import frozen_names

log = logging.getLogger("recipes.train")


# Options that are each valid but do not work with train.fsdp=True: (section, key, is it set, why).
_CONFLICTS = (
    ("train", "compile", bool, "torch.compile of the sharded model is not tested here"),
    ("train", "log_grad_norms", bool, "the per-group gradient diagnostics read whole tensors, not shards"),
    ("strategy", "log_grad_norms", bool, "the per-group gradient diagnostics read whole tensors, not shards"),
)
QUANTIZED = ("fp8", "int8", "nf4")


def check_conflicts(train: Mapping[str, Any], strategy: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """Every option ``train.fsdp=True`` does not work with, one error naming both; called by the config check
    (before torchrun, data or weights) and again at engine start. Nothing to check without ``train.fsdp``."""
    if not train.get("fsdp"):
        return
    sections = {"train": train, "strategy": strategy}
    for section, key, is_set, why in _CONFLICTS:
        if is_set(sections[section].get(key)):
            raise BadInput(f"config: {section}.{key} with train.fsdp=True is not supported ({why}); remove one of them")
    if train.get("amp") == "fp16":
        raise BadInput("config: train.amp='fp16' with train.fsdp=True is not supported (its gradient scaler does not "
                       "read sharded gradients); use train.amp='bf16'")  # fmt: skip
    if model.get("offload"):
        raise BadInput("config: model.offload=True with train.fsdp=True: group offloading moves the base layers between "
                       "host and GPU, FSDP2 shards them over processes; use one (FSDP2 already spreads the weights)")  # fmt: skip
    if model.get("base_precision") in QUANTIZED:
        raise BadInput(f"config: model.base_precision={model['base_precision']!r} with train.fsdp=True is not "
                       "supported (sharding torchao / bitsandbytes weight tensors is not tested here); a quantized "
                       "base fits one GPU: use DDP (train.fsdp=False) under torchrun")  # fmt: skip


def check_options(opts: Mapping[str, Any], world: int, strategy: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """Engine start with ``train.fsdp=True``: the option conflicts again (a guard; the config check ran them), then
    one process (not launched by torchrun) is an error."""
    if not opts["fsdp"]:
        return
    check_conflicts(opts, strategy, model)
    if world < 2 or "LOCAL_RANK" not in os.environ:
        raise BadInput("train.fsdp=True shards the model over processes: launch with torchrun, e.g. torchrun "
                       "--nproc_per_node=2 tools/train.py CONFIG (for one process set train.fsdp=False)")  # fmt: skip


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules that become one FSDP unit each, in order: the model's blocks."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if m is not model and type(m).__name__ in names]
    if not units:  # the entries of the outermost ModuleLists (a block's own lists stay inside its unit)
        lists: list[str] = []
        for name, lst in model.named_modules():  # pre-order: an outer list comes before the lists inside it
            if isinstance(lst, nn.ModuleList) and not any(name.startswith(f"{outer}.") for outer in lists):
                lists.append(name)
                units += list(lst)
    if not units:
        raise BadInput(f"train.fsdp=True: {type(model).__name__} lists no block classes (_no_split_modules) and "
                       "has no nn.ModuleList of blocks to shard; train it with DDP (train.fsdp=False)")  # fmt: skip
    return units


@torch.no_grad()
def broadcast_from_rank0(model: nn.Module, device: torch.device) -> None:
    """Every rank takes rank 0's weights and buffers, as DDP does when it wraps: a random init (LoRA's A
    matrices) differs per rank, and each rank keeps its own shard of what it holds. One tensor at a time
    through ``device`` (NCCL reads device memory only), so the whole model is never on the accelerator."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "meta":
            continue
        staged = t.data if t.device == device or device.type == "cpu" else t.data.to(device)
        torch.distributed.broadcast(staged, src=0)
        if staged is not t.data:
            t.data.copy_(staged)


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """``fully_shard`` every block, then the root, over all processes on ``device``'s type."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def repoint_groups(groups: Sequence[Mapping[str, Any]], names: Mapping[int, str], model: nn.Module) -> list[dict]:
    """``groups`` with each parameter replaced by the parameter of the same name in (sharded) ``model``.

    ``names``: ``id(old parameter) -> name``, taken before sharding. Every other key is kept as it was.
    """
    now = dict(model.named_parameters())
    return [{**g, "params": [now[names[id(p)]] for p in g["params"]]} for g in groups]


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's whole ``state_dict`` on CPU: gathered to rank 0 when sharded (collective; ``{}`` on the
    other ranks), else the plain ``state_dict()``."""
    if not is_sharded(module):
        return module.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, gathered to rank 0 (collective; ``{}`` elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=opts)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a name-keyed full optimizer state (every rank holds it) into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------- the engine's FSDP steps
def place(model: nn.Module, device: torch.device, sharded: bool) -> None:
    """Without FSDP: the model to ``device``. With: every rank takes rank 0's weights; ``fully_shard`` moves them."""
    if sharded:
        broadcast_from_rank0(model, device)
    else:
        model.to(device)


def load_plain_optimizer(optimizer: torch.optim.Optimizer, ckpt: dict[str, Any], sharded: bool) -> None:
    """Resume: the optimizer state of a run without FSDP; a checkpoint of the other kind is an error."""
    if bool(ckpt.get("fsdp")) != sharded:
        raise BadInput(f"checkpoint {ckpt['path']!r} was written with train.fsdp={bool(ckpt.get('fsdp'))}; resume it "
                       "with the same setting")  # fmt: skip
    if not sharded:
        load_optimizer(optimizer, ckpt.get("optimizer"), ckpt["path"])


def shard_run(model: nn.Module, trainer: Any, ckpt: dict[str, Any] | None) -> nn.Module:
    """Shard the model and the trainer's EMA; set ``trainer.optimizer`` (built on the shards, groups re-pointed by
    name, a resumed state loaded) and ``trainer.freeze`` (on the new parameters); return the sharded model."""
    from recipes.train.build import FreezePlan
    from recipes.train.optimizers import build_optimizer

    names, units = {id(p): n for n, p in model.named_parameters()}, len(shard_units(model))
    model = shard(model, trainer.device)
    if trainer.ema is not None:
        trainer.ema.module = shard(trainer.ema.module, trainer.device)
        trainer.ema.repoint()
    trainer.optimizer = build_optimizer(repoint_groups(trainer.groups, names, model), trainer.cfg.get("optimizer"))
    if ckpt is not None:
        load_optimizer_state(model, trainer.optimizer, ckpt["optimizer"])
    trainer.freeze = FreezePlan(trainer.freeze.rules, model)
    log.info(f"[fsdp] {type(model).__name__}: {units} blocks + the root sharded over {trainer.world} processes")
    return model


def run_state(model: nn.Module, ema: Any, optimizer: torch.optim.Optimizer) -> tuple[dict, dict, str | None]:
    """What a checkpoint saves: the whole weights and EMA, the optimizer state, and the first non-finite tensor's
    name (or None). Sharded: gathered to rank 0 (collective) and rank 0's verdict on every rank."""
    whole = {"model": full_state(model), "ema": full_state(ema.module) if ema is not None else {}}
    sharded = is_sharded(model)
    state = full_optimizer_state(model, optimizer) if sharded else optimizer.state_dict()
    bad = all_finite(whole)
    return whole, state, gather_objects(bad)[0] if sharded else bad


def trainable_only(state: dict[str, torch.Tensor], model: nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """``state`` without ``model``'s frozen parameters, unless ``full`` (``train.save_frozen``)."""
    skip = set() if full else frozen_names(model)
    return {k: v for k, v in state.items() if k not in skip}
