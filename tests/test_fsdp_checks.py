"""train.fsdp=True: every option it does not work with fails in the config check (before torchrun, data or
weights), from the one list in recipes.train.fsdp.check_conflicts, and again as a guard at engine start."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipes.train.config import TRAIN_DEFAULTS, load_config
from recipes.train.config_check import check_config
from recipes.train.errors import BadInput
from recipes.train.fsdp import check_options

ROOT = Path(__file__).resolve().parents[1]
FLUX_FULL = ROOT / "configs" / "diffusion" / "flux_full.py"  # a shipped config with train.fsdp=True
CONFLICTS = [
    (["train.compile=True"], r"config: train.compile with train.fsdp=True is not supported"),
    (["train.log_grad_norms=True"], r"config: train.log_grad_norms with train.fsdp=True is not supported"),
    (["strategy.log_grad_norms=True"], r"config: strategy.log_grad_norms with train.fsdp=True is not supported"),
    (["train.amp=fp16"], r"config: train.amp='fp16' with train.fsdp=True is not supported"),
    (["model.offload=True"], r"config: model.offload=True with train.fsdp=True"),
    (["model.base_precision=int8"], r"config: model.base_precision='int8' with train.fsdp=True is not supported"),
    (["model.base_precision=fp8"], r"config: model.base_precision='fp8' with train.fsdp=True is not supported"),
    (["model.base_precision=nf4"], r"config: model.base_precision='nf4' with train.fsdp=True is not supported"),
]


@pytest.mark.parametrize(("options", "match"), CONFLICTS, ids=[c[0][0] for c in CONFLICTS])
def test_each_fsdp_conflict_fails_in_the_config_check(options, match):
    assert load_config(FLUX_FULL).train.fsdp is True
    with pytest.raises(BadInput, match=match):
        check_config(load_config(FLUX_FULL, options))
    check_config(load_config(FLUX_FULL, [*options, "train.fsdp=False"]))  # each option alone is valid


def test_the_conflicts_are_not_diffusion_specific():
    cfg = ROOT / "configs" / "classification" / "dinov2_s14_cifar10_layer_decay_cpu.py"
    check_config(load_config(cfg, ["train.fsdp=True"]))
    with pytest.raises(BadInput, match=r"train.compile with train.fsdp=True"):
        check_config(load_config(cfg, ["train.fsdp=True", "train.compile=True"]))


@pytest.mark.parametrize(
    ("train", "strategy", "model", "match"),
    [
        ({"amp": "fp16"}, {}, {}, r"train.amp='fp16' with train.fsdp=True"),
        ({}, {"log_grad_norms": True}, {}, r"strategy.log_grad_norms with train.fsdp=True"),
        ({}, {}, {"offload": True}, r"model.offload=True with train.fsdp=True"),
        ({}, {}, {"base_precision": "nf4"}, r"model.base_precision='nf4' with train.fsdp=True"),
        ({}, {}, {}, r"train.fsdp=True shards the model over processes: launch with torchrun"),
    ],
)
def test_engine_start_guard_runs_the_same_checks_then_the_launch(monkeypatch, train, strategy, model, match):
    """The engine's guard: a conflict is named even in one process (before the launch error), the same text."""
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(BadInput, match=match):
        check_options({**TRAIN_DEFAULTS, "fsdp": True, **train}, 1, strategy, model)
    check_options({**TRAIN_DEFAULTS, **train}, 1, strategy, model)  # without fsdp: nothing to check
