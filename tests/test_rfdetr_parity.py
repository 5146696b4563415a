"""The ``rfdetr`` preset against rfdetr 1.11.2's own ``get_param_dict(args, model)``, per parameter.

``rfdetr.training/__init__.py`` imports PyTorch Lightning (the ``[train]`` extra, not installed
here), so ``rfdetr/training/param_groups.py`` is loaded by path; it only needs ``rfdetr.models``.
Models are built offline at full size on the CPU (about 0.3 s each; the meta device is not needed).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

from recipes.param_groups import build_param_groups, resolve_adapter

rfdetr = pytest.importorskip("rfdetr")
VARIANTS = ("RFDETRNano", "RFDETRSmall", "RFDETRMedium", "RFDETRLarge", "RFDETRBase", "RFDETRSegNano",
            "RFDETRKeypointPreview", "RFDETRNano+backbone_lora")  # fmt: skip


@functools.cache
def rf_param_groups() -> ModuleType:
    path = Path(rfdetr.__file__).parent / "training" / "param_groups.py"
    spec = importlib.util.spec_from_file_location("_rfdetr_param_groups", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def build(variant: str) -> tuple[torch.nn.Module, list[int]]:
    """The ``LWDETR`` module of a wrapper, untrained, and its ``out_feature_indexes``."""
    kwargs = {"positional_encoding_size": 40} if variant == "RFDETRBase" else {}
    if variant.endswith("+backbone_lora"):  # rfdetr's own encoder DoRA (rank 16, peft)
        variant, kwargs = variant.split("+")[0], {"backbone_lora": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = getattr(rfdetr, variant)(pretrain_weights=None, **kwargs)
    return wrapper.model.model, list(wrapper.model_config.out_feature_indexes)


def rf_args(out_feature_indexes: list[int], **over: float) -> SimpleNamespace:
    """rfdetr's TrainConfig defaults for the knobs get_param_dict reads."""
    from rfdetr.config import TrainConfig

    keys = ("lr", "lr_encoder", "lr_vit_layer_decay", "lr_component_decay", "weight_decay")
    args = {k: TrainConfig.model_fields[k].default for k in keys}
    return SimpleNamespace(**{**args, **over}, out_feature_indexes=out_feature_indexes)


def per_param(groups: list[dict], default_wd: float) -> dict[int, tuple[float, float]]:
    out = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a parameter in two groups"
            out[id(p)] = (g["lr"], g.get("weight_decay", default_wd))
    return out


def compare(model: torch.nn.Module, args: SimpleNamespace, recipe: dict) -> tuple[float, int, int]:
    """Max relative lr difference, our group count, rfdetr's group count; wd must be equal."""
    theirs_groups = rf_param_groups().get_param_dict(args, model)
    ours_groups = build_param_groups(model, recipe, adapter="rfdetr")
    theirs = per_param(theirs_groups, args.weight_decay)
    ours = per_param(ours_groups, args.weight_decay)
    assert set(ours) == set(theirs) == {id(p) for p in model.parameters() if p.requires_grad}
    names = {id(p): n for n, p in model.named_parameters()}
    worst = 0.0
    for k, (lr, wd) in theirs.items():
        assert ours[k][1] == wd, f"{names[k]}: weight decay {ours[k][1]} != rfdetr's {wd}"
        worst = max(worst, abs(ours[k][0] - lr) / lr)
    assert worst <= 1e-12, worst
    return worst, len(ours_groups), len(theirs_groups)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parity_with_rfdetr_defaults(variant):
    model, ofi = build(variant)
    assert resolve_adapter(model).name == "rfdetr"
    # the preset reads out_feature_indexes from the model: no argument needed
    _, ours, theirs = compare(model, rf_args(ofi), dict(type="rfdetr"))
    assert ours <= theirs


def test_parity_with_other_knobs_and_explicit_indexes():
    model, ofi = build("RFDETRNano")
    knobs = dict(lr=2e-4, lr_encoder=3e-4, lr_vit_layer_decay=0.5, lr_component_decay=0.9, weight_decay=0.05)
    compare(model, rf_args(ofi, **knobs), dict(type="rfdetr", out_feature_indexes=ofi, **knobs))
    # rfdetr's CLI default lr_component_decay=1.0 turns the component decay off
    knobs.update(lr_component_decay=1.0)
    compare(model, rf_args([2, 5, 8, 11], **knobs), dict(type="rfdetr", out_feature_indexes=[2, 5, 8, 11], **knobs))


def test_parity_table_nano():
    """rfdetr's L is 13 on Nano's 12-block encoder: block i gets 0.8 ** (13 - i)."""
    model, _ = build("RFDETRNano")
    groups = build_param_groups(model, dict(type="rfdetr"), adapter="rfdetr")
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    enc = "backbone.0.encoder.encoder."
    assert math.isclose(lr[enc + "embeddings.cls_token"], 1.5e-4 * 0.8**14 * 0.49, rel_tol=1e-12)
    assert math.isclose(lr[enc + "encoder.layer.0.mlp.fc1.weight"], 1.5e-4 * 0.8**13 * 0.49, rel_tol=1e-12)
    assert math.isclose(lr[enc + "encoder.layer.11.mlp.fc1.weight"], 1.5e-4 * 0.8**2 * 0.49, rel_tol=1e-12)
    assert math.isclose(lr[enc + "layernorm.weight"], 1.5e-4 * 0.49, rel_tol=1e-12)
    assert math.isclose(lr["transformer.decoder.norm.weight"], 7e-5, rel_tol=1e-12)
    assert lr["class_embed.weight"] == lr["backbone.0.projector.stages.0.1.weight"] == 1e-4


def test_frozen_encoder_gives_no_encoder_group_and_keeps_the_depth():
    model, ofi = build("RFDETRSmall")
    enc = [p for n, p in model.named_parameters() if n.startswith("backbone.0.encoder.")]
    try:
        for p in enc:
            p.requires_grad_(False)
        groups = build_param_groups(model, dict(type="rfdetr"), adapter="rfdetr")
        frozen = {id(p) for p in enc}
        assert not any(id(p) in frozen for g in groups for p in g["params"])
        assert {g["lr_scale"] for g in groups} == {1.0, 0.7}
        assert resolve_adapter(model).describe(model).stack_sizes == {"encoder": 12}
        compare(model, rf_args(ofi), dict(type="rfdetr"))
    finally:
        for p in enc:
            p.requires_grad_(True)


def test_fixed_preset():
    model, _ = build("RFDETRNano")
    groups = build_param_groups(model, dict(type="rfdetr_fixed"), adapter="rfdetr")
    got = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    enc = "backbone.0.encoder.encoder."
    # depth N = 12 blocks, no component decay on the encoder: the final norm trains at lr_encoder
    assert math.isclose(got[enc + "encoder.layer.11.mlp.fc1.weight"][0], 1.5e-4 * 0.8, rel_tol=1e-12)
    assert math.isclose(got[enc + "embeddings.cls_token"][0], 1.5e-4 * 0.8**13, rel_tol=1e-12)
    assert got[enc + "layernorm.weight"] == (1.5e-4, 0.0)
    assert got[enc + "encoder.layer.0.layer_scale1.lambda1"][1] == 0.0  # rfdetr decays it
    assert got["transformer.decoder.norm.bias"] == (pytest.approx(7e-5, rel=1e-12), 0.0)  # rfdetr: 1e-4
    assert got["transformer.decoder.layers.0.linear1.weight"][1] == 1e-4
    power1 = build_param_groups(model, dict(type="rfdetr_fixed", encoder_component_power=1), adapter="rfdetr")
    lr1 = {n: g["lr"] for g in power1 for n in g["param_names"]}
    assert math.isclose(lr1[enc + "layernorm.weight"], 1.5e-4 * 0.7, rel_tol=1e-12)


def test_preset_errors_are_clear():
    with pytest.raises(KeyError, match=r"`strategy.lr_decay` is not read by anything"):
        build_param_groups(build("RFDETRNano")[0], dict(type="rfdetr", lr_decay=0.5))
    with pytest.raises(ValueError, match="out_feature_indexes"):
        build_param_groups(torch.nn.Linear(2, 2), dict(type="rfdetr"), adapter="rfdetr")
    with pytest.raises(TypeError, match="list of ints"):
        build_param_groups(build("RFDETRNano")[0], dict(type="rfdetr", out_feature_indexes="3,6"))
    with pytest.raises(ValueError, match="encoder_component_power"):
        build_param_groups(build("RFDETRNano")[0], dict(type="rfdetr_fixed", encoder_component_power=3))
