"""Trainable policies on real timm ViTs: the PEFT comparison's counts, per-role LRs, freeze_lora_steps in the engine."""

from __future__ import annotations

import csv

import pytest
import timm
import torch

from recipes.adapter import canonical_name
from recipes.param_groups import build_param_groups
from recipes.policies import apply_policy, trainable_counts
from recipes.train.engine import Trainer
from tests.test_engine import tiny_cfg


def vit(depth: int = 3, device: str = "cpu", name: str = "vit_tiny_patch16_224", **kw) -> torch.nn.Module:
    with torch.device(device):
        return timm.create_model(name, depth=depth, **kw)


@pytest.mark.parametrize(
    "policy, expected",
    [
        (dict(type="lora_only"), {"lora": 589_824, "norm": 0, "other": 38_500, "total": 628_324}),
        (dict(type="norm_only"), {"lora": 0, "norm": 19_200, "other": 38_500, "total": 57_700}),
        (
            dict(type="hybrid_layerwise", layout="deep_lora"),
            {"lora": 196_608, "norm": 12_288, "other": 38_500, "total": 247_396},
        ),
    ],
    ids=["lora_only", "norm_only", "deep_lora"],
)
def test_trainable_counts_of_the_peft_comparison_on_vit_s16_cifar100(policy, expected):
    with torch.device("meta"):
        model = timm.create_model("vit_small_patch16_224", num_classes=100)
    apply_policy(model, dict(policy, r=8, alpha=16) if policy["type"] != "norm_only" else policy)
    assert trainable_counts(model) == expected  # the "Trainable Params" column of the PEFT comparison's table


def test_deep_lora_layout_is_exactly_as_documented():
    model = vit(depth=3, img_size=32, patch_size=16, num_classes=10)
    apply_policy(model, dict(type="hybrid_layerwise", layout="deep_lora", r=4, lora_blocks=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if canonical_name(n)[1]}
    assert {n.split(".")[1] for n in lora} == {"2"}  # the deepest block only
    assert {n.split(".")[2].split(".")[0] for n in lora} == {"attn", "mlp"}
    assert {canonical_name(n)[0] for n in lora} == {
        f"blocks.2.{m}.weight" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }
    norms = {n for n in trainable if not canonical_name(n)[1] and not n.startswith("head")}
    assert norms == {f"blocks.{b}.{m}.{w}" for b in (0, 1) for m in ("norm1", "norm2") for w in ("weight", "bias")}
    assert {"head.weight", "head.bias"} <= trainable and "norm.weight" not in trainable
    model2 = vit(depth=3, img_size=32, patch_size=16, num_classes=10)
    apply_policy(model2, dict(type="hybrid_layerwise", layout="shallow_lora", r=4, lora_blocks=1))
    assert {n.split(".")[1] for n, p in model2.named_parameters() if p.requires_grad and "lora_" in n} == {"0"}


def test_per_role_lrs_and_loraplus_in_the_groups():
    model = vit(depth=3, img_size=32, patch_size=16, num_classes=10)
    apply_policy(model, dict(type="hybrid_layerwise", layout="deep_lora", r=4, lora_blocks=1))
    recipe = dict(type="flat", lr=1e-3, lr_lora=5e-4, lr_norm=2e-3, loraplus_ratio=4.0, weight_decay=0.05)
    groups = build_param_groups(model, recipe)
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    for name, lr in lr_of.items():
        role = canonical_name(name)[1]
        want = 5e-4 * 4 if role == "lora_B" else 5e-4 if role else 1e-3 if name.startswith("head") else 2e-3
        assert lr == pytest.approx(want, rel=1e-12), name
    # layer decay composes: the LoRA scale is lr_lora / lr on top of the block's decay
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, lr_lora=0.25))
    a = next(g for g in groups for n in g["param_names"] if n.startswith("blocks.2.attn.qkv.lora_A"))
    assert a["lr_scale"] == 0.5 * 0.25


def test_policy_errors_are_clear():
    model = vit(depth=2, img_size=32, patch_size=16, num_classes=10)
    with pytest.raises(ValueError, match="policy.type must be one of"):
        apply_policy(model, dict(type="lora_everything"))
    with pytest.raises(KeyError, match=r"policy.lr_lora: LRs live in the strategy"):
        apply_policy(model, dict(type="lora_only", lr_lora=1e-4))
    with pytest.raises(ValueError, match=r"LoRA targets \['nope'\] match no nn.Linear"):
        apply_policy(model, dict(type="lora_only", targets=["nope"]))


def test_freeze_lora_steps_in_the_engine(tmp_path):
    cfg = tiny_cfg(max_steps=5, ckpt_every=3)
    cfg.model["depth"] = 3
    cfg.policy = dict(type="hybrid_layerwise", layout="deep_lora", r=4, lora_blocks=1, freeze_lora_steps=3)
    cfg.strategy = dict(type="flat", lr=1e-3, lr_lora=5e-4, lr_norm=1e-3, weight_decay=0.05)
    cfg.schedule = dict(type="constant")
    t = Trainer(cfg, tmp_path).setup()
    model = t.model
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert lora and others
    t.train()
    at3 = torch.load(tmp_path / "checkpoints" / "step_0000003.pt", weights_only=True)
    for n, v in lora.items():  # no update, no weight decay during the freeze
        assert torch.equal(at3["model"][n], v), n
    assert any(not torch.equal(at3["model"][n], v) for n, v in others.items())  # norms and head trained
    ids = {id(p): n for n, p in model.named_parameters()}
    order = [ids[id(p)] for g in t.optimizer.param_groups for p in g["params"]]
    state = at3["optimizer"]["state"]
    assert not any("lora_" in order[i] for i in state)  # no AdamW state for LoRA yet
    final = {n: p for n, p in model.named_parameters()}
    assert all(not torch.equal(final[n].detach(), v) for n, v in lora.items() if "lora_B" in n)  # they train after
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    lora_ids = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    group = next(g["name"] for g in t.optimizer.param_groups if all(id(p) in lora_ids for p in g["params"]))
    col = f"lr/{group}"
    assert [float(r[col]) for r in rows] == [0.0, 0.0, 0.0, 5e-4, 5e-4]


def test_show_lr_applies_the_policy(tmp_path, capsys):
    from tools.show_lr import main

    assert main(["configs/classification/vit_s16_cifar100_deep_lora.py", "--out-dir", str(tmp_path), "--steps-per-epoch", "390",
                 "--cfg-options", "model.device=meta", "model.num_classes=100"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "params=247.40K" in out and "lr=0.0005" in out


@pytest.mark.parametrize("name, lora", [("lora_only", 589_824), ("norm_only", 0), ("deep_lora", 196_608)])
def test_peft_comparison_configs_build_the_run_they_describe(name, lora):
    """Each shipped seed-002 config, built by the engine's own setup path (full size, meta device)."""
    from recipes.train.build import prepare_run
    from recipes.train.config import load_config

    cfg = load_config(
        f"configs/classification/vit_s16_cifar100_{name}.py", ["model.device=meta", "model.num_classes=100"]
    )
    plan = prepare_run(cfg, steps_per_epoch=390, data=False)
    counts = trainable_counts(plan.model)
    assert counts["lora"] == lora and counts["other"] == 38_500  # the CIFAR-100 head: 384 x 100 + 100
    lr = {n: g["lr"] for g in plan.groups for n in g["param_names"]}
    assert set(lr) == {n for n, p in plan.model.named_parameters() if p.requires_grad}
    assert {lr[n] for n in lr if canonical_name(n)[1]} == ({5e-4} if lora else set())
    assert {lr[n] for n in lr if not canonical_name(n)[1]} == {1e-3}
    assert plan.total_steps == 15 * 390 and plan.schedule.value(plan.total_steps) == pytest.approx(1e-5)
    assert [r.steps for r in plan.freeze.rules] == ([400] if lora else [])
    assert type(plan.optimizer).__name__ == "AdamW"
    assert all(g["weight_decay"] in (0.0, 0.05) for g in plan.optimizer.param_groups)


@pytest.mark.parametrize(
    ("policy", "key"),
    [
        (dict(type="full", r=8), "r"),
        (dict(type="full", freeze_lora_steps=5), "freeze_lora_steps"),
        (dict(type="norm_only", outside_norms=True), "outside_norms"),
        (dict(type="linear_probe", targets=["qkv"]), "targets"),
        (dict(type="lora_only", layout="deep_lora"), "layout"),
    ],
)
def test_a_key_the_policy_type_does_not_read_is_an_error_naming_it(policy, key):
    from recipes.policies import check_policy

    with pytest.raises(ValueError, match=rf"policy.{key} does nothing with policy.type='{policy['type']}'"):
        check_policy(policy)
    check_policy({k: v for k, v in policy.items() if k != key})  # without it the section is valid
