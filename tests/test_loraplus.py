"""LoRA+ with peft's semantics (``loraplus_mode="peft"``): equal, tensor by tensor, to peft's own
``create_loraplus_optimizer`` on real peft models; the default mode as documented."""

from __future__ import annotations

import pytest
import timm
import torch
import transformers
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer

from recipes.adapter import canonical_name
from recipes.param_groups import build_param_groups


def _peft_reference(model, **kw) -> dict[str, tuple[float, float]]:
    opt = create_loraplus_optimizer(model, torch.optim.AdamW, **kw)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def _ours(model, **strategy) -> dict[str, tuple[float, float]]:
    groups = build_param_groups(model, dict(type="flat", loraplus_mode="peft", **strategy))
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def _assert_equal(ours, ref):
    assert set(ours) == set(ref)
    for name, (lr, wd) in ref.items():
        assert ours[name][0] == pytest.approx(lr, rel=1e-12, abs=0), name
        assert ours[name][1] == wd, name


def _vit():
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=16, depth=2, num_classes=3, embed_dim=16, num_heads=2
    )


@pytest.mark.parametrize(
    "lora",
    [
        dict(target_modules=["qkv", "fc1"]),
        dict(target_modules=["qkv", "fc1"], bias="lora_only"),  # LoRA biases: 1-D, peft gives them the ratio
        dict(target_modules=["qkv", "proj"], modules_to_save=["head", "norm"]),  # a LayerNorm to save
        dict(target_modules=["qkv", "fc2"], use_dora=True, bias="all"),  # DoRA magnitudes are 1-D too
    ],
    ids=["plain", "bias_lora_only", "modules_to_save", "dora_bias_all"],
)
def test_equal_to_peft_on_a_timm_vit(lora):
    model = get_peft_model(_vit(), LoraConfig(r=2, **lora))
    ref = _peft_reference(model, lr=1e-3, loraplus_lr_ratio=16, loraplus_weight_decay=0.05)
    _assert_equal(_ours(model, lr=1e-3, loraplus_ratio=16, weight_decay=0.05), ref)


def _tiny_bert():
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                  vocab_size=64, max_position_embeddings=16, num_labels=3)  # fmt: skip
    return transformers.BertForSequenceClassification(cfg)


def test_equal_to_peft_with_embedding_lora_on_any_transformers_model():
    """LoRA on the word embeddings gets ``loraplus_lr_embedding``; the classifier is a module to save."""
    lora = LoraConfig(r=2, target_modules=["query", "value", "word_embeddings"], modules_to_save=["classifier"],
                      bias="lora_only")  # fmt: skip
    model = get_peft_model(_tiny_bert(), lora)
    assert any("lora_embedding_A" in n for n, _ in model.named_parameters())
    ref = _peft_reference(model, lr=2e-4, loraplus_lr_ratio=8, loraplus_weight_decay=0.01, loraplus_lr_embedding=5e-6)
    _assert_equal(_ours(model, lr=2e-4, loraplus_ratio=8, weight_decay=0.01, loraplus_lr_embedding=5e-6), ref)
    # peft's default embedding LR (1e-6) when none is given
    ref = _peft_reference(model, lr=2e-4, loraplus_lr_ratio=8)
    _assert_equal(_ours(model, lr=2e-4, loraplus_ratio=8), ref)


def test_each_peft_option_changes_the_result():
    model = get_peft_model(_tiny_bert(), LoraConfig(r=2, target_modules=["query", "word_embeddings"], bias="lora_only"))
    base = _ours(model, lr=1e-3, loraplus_ratio=4)
    emb = next(n for n in base if "lora_embedding_A" in n)
    bias = next(n for n in base if n.endswith("query.base_layer.bias"))
    assert base[emb][0] == 1e-6 and _ours(model, lr=1e-3, loraplus_ratio=4, loraplus_lr_embedding=1e-5)[emb][0] == 1e-5
    assert base[bias][0] == 4e-3  # a 1-D trainable: the ratio in peft's mode ...
    default = build_param_groups(model, dict(type="flat", lr=1e-3, loraplus_ratio=4))
    assert next(g["lr"] for g in default if bias in g["param_names"]) == 1e-3  # ... not in the default mode
    a = next(n for n in base if "lora_A" in n and "embedding" not in n)
    assert base[a][1] == 0.0 and _ours(model, lr=1e-3, loraplus_ratio=4, weight_decay=0.1)[a][1] == 0.1


def test_default_mode_gives_the_ratio_to_lora_b_only():
    model = get_peft_model(_vit(), LoraConfig(r=2, target_modules=["qkv"], bias="lora_only", use_dora=True))
    groups = build_param_groups(model, dict(type="flat", lr=1.0, loraplus_ratio=16, weight_decay=0.05))
    for g in groups:
        for n in g["param_names"]:
            assert g["lr"] == (16.0 if canonical_name(n)[1] == "lora_B" else 1.0), n
            if n.endswith("bias") or "magnitude" in n:
                assert g["weight_decay"] == 0.0, n


def test_peft_mode_composes_with_layer_decay():
    model = get_peft_model(_vit(), LoraConfig(r=2, target_modules=["qkv"]))
    groups = build_param_groups(
        model, dict(type="layer_decay", lr=1.0, decay=0.5, loraplus_ratio=16, loraplus_mode="peft")
    )
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert lr["base_model.model.blocks.0.attn.qkv.lora_B.default.weight"] == 0.25 * 16
    assert lr["base_model.model.blocks.1.attn.qkv.lora_A.default.weight"] == 0.5


@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(loraplus_mode="peft"), "needs loraplus_ratio"),
        (dict(loraplus_mode="kohya", loraplus_ratio=4), "loraplus_mode must be one of"),
        (dict(loraplus_lr_embedding=1e-6, loraplus_ratio=4), "only with loraplus_mode='peft'"),
        (dict(loraplus_mode="peft", loraplus_ratio=4, no_decay=["x"]), "peft's weight-decay rule"),
    ],
)
def test_contradictory_loraplus_options_are_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        build_param_groups(_vit(), dict(type="flat", lr=1e-3, **opts))
