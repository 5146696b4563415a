"""The vision adapters on their real classes: RF-DETR, transformers DINOv2 / VideoMAE / ViT, VideoMAEv2.

Full-size default configs on the meta device (RF-DETR on the CPU: it builds in 0.3 s and does not
build on meta), tiny configs where a forward pass runs. Coverage, no dead rule, auto recognition,
VideoMAEv2's scales on VideoMAE, LoRA / DoRA / LoRA+ with explicit numbers.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from recipes.adapter import Adapter
from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.registry import ADAPTERS

T = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
rfdetr = pytest.importorskip("rfdetr")
MINE = ("rfdetr", "dinov2_hf", "dinov2_registers_hf", "videomae", "videomaev2", "hf_vit")


def hf(cls: str, config: str, device: str = "meta", **kw) -> torch.nn.Module:
    with torch.device(device):
        return getattr(T, cls)(getattr(T, config)(**kw))


def rf(variant: str) -> torch.nn.Module:
    kwargs = {"positional_encoding_size": 40} if variant == "RFDETRBase" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(rfdetr, variant)(pretrain_weights=None, **kwargs).model.model


def timm_meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kw)


_DINO_G = dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True)
# name -> (builder, adapter, {catch-all component: the top-level modules left in it})
E, H = "embed", "head"
_RF_HEAD = {
    "bbox_embed",
    "class_embed",
    "query_feat",
    "refpoint_embed",
    "transformer.enc_out_bbox_embed",
    "transformer.enc_out_class_embed",
    "transformer.enc_output",
    "transformer.enc_output_norm",
}
_KP_HEAD = {
    "keypoint_embed",
    "transformer.enc_out_keypoint_embed",
    "transformer.keypoint_query_initializer",
    "transformer.keypoint_query_initializer_enc",
}
FULL = {
    **{v: (lambda v=v: rf(v), "rfdetr", {H: _RF_HEAD})
       for v in ("RFDETRNano", "RFDETRSmall", "RFDETRMedium", "RFDETRLarge", "RFDETRBase")},
    "RFDETRSegNano": (lambda: rf("RFDETRSegNano"), "rfdetr", {H: _RF_HEAD | {"segmentation_head"}}),
    "RFDETRKeypointPreview": (lambda: rf("RFDETRKeypointPreview"), "rfdetr", {H: _RF_HEAD | _KP_HEAD}),
    "Dinov2Model": (lambda: hf("Dinov2Model", "Dinov2Config"), "dinov2_hf", {E: {"embeddings"}}),
    "Dinov2-giant-cls": (lambda: hf("Dinov2ForImageClassification", "Dinov2Config", **_DINO_G), "dinov2_hf",
                         {E: {"dinov2.embeddings"}, H: {"classifier"}}),
    "Dinov2WithRegisters-cls": (
        lambda: hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig"),
        "dinov2_registers_hf", {E: {"dinov2_with_registers.embeddings"}, H: {"classifier"}}),
    "VideoMAEModel": (lambda: hf("VideoMAEModel", "VideoMAEConfig"), "videomae", {E: {"embeddings"}}),
    "VideoMAE-cls": (lambda: hf("VideoMAEForVideoClassification", "VideoMAEConfig"), "videomae",
                     {E: {"videomae.embeddings"}, H: {"fc_norm", "classifier"}}),
    "VideoMAE-cls-no-mean-pool": (
        lambda: hf("VideoMAEForVideoClassification", "VideoMAEConfig", use_mean_pooling=False), "videomae",
        {E: {"videomae.embeddings"}, H: {"classifier"}}),
    "ViTForImageClassification": (lambda: hf("ViTForImageClassification", "ViTConfig"), "hf_vit",
                                  {E: {"vit.embeddings"}, H: {"classifier"}}),
    "ViTModel": (lambda: hf("ViTModel", "ViTConfig"), "hf_vit", {E: {"embeddings"}, H: {"pooler"}}),
    "ViTForMaskedImageModeling": (lambda: hf("ViTForMaskedImageModeling", "ViTConfig"), "hf_vit",
                                  {E: {"vit.embeddings"}, H: {"decoder"}}),
    # VideoMAEv2 naming on timm's classes (same names), chosen by name: auto gives timm_vit
    "videomaev2-beit": (lambda: timm_meta("beit_base_patch16_224", use_shared_rel_pos_bias=True),
                        "videomaev2", {E: {"cls_token", "patch_embed"}, H: {"fc_norm", "head", "rel_pos_bias"}}),
    "videomaev2-vit": (lambda: timm_meta("vit_base_patch16_224"), "videomaev2",
                       {E: {"cls_token", "pos_embed", "patch_embed"}, H: {"head"}}),
}  # fmt: skip


@functools.cache
def full(key: str) -> torch.nn.Module:
    return FULL[key][0]()


def _top(name: str) -> str:
    return re.match(r"(?:transformer\.|videomae\.|vit\.|dinov2\.|dinov2_with_registers\.)?[^.]+", name).group(0)


def _adapter(key: str) -> Adapter:
    name = FULL[key][1]
    if name == "videomaev2":
        assert resolve_adapter(full(key)).name == "timm_vit"  # never claimed by auto
        return resolve_adapter(full(key), name)
    adp = resolve_adapter(full(key))  # auto: exactly one adapter claims it
    assert adp.name == name
    return adp


@pytest.mark.parametrize("key", sorted(FULL))
def test_full_size_coverage(key):
    model, adp = full(key), _adapter(key)
    mmap = adp.describe(model)
    assert mmap.unmatched == []
    assert len(mmap.params) == sum(1 for _ in model.parameters())
    left: dict[str, set[str]] = {}
    for name, info in mmap.params.items():
        assert 0 <= info.layer_id <= mmap.num_layers + 1 and info.component
        if info.component in adp.catch_all:
            assert info.stack is None, f"{name}: a block parameter in a catch-all"
            left.setdefault(info.component, set()).add(_top(name))
    assert left == FULL[key][2]
    assert mmap.num_layers == (40 if "giant" in key else 12)


@pytest.mark.parametrize("key", sorted(FULL))
def test_groups_invariants_and_frozen_excluded(key):
    model, adp = full(key), _adapter(key)
    frozen = [p for n, p in model.named_parameters() if adp.describe(model).params[n].layer_id == 0]
    try:
        for p in frozen:
            p.requires_grad_(False)
        groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05), adp)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids))  # each once
        assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
        assert frozen and not set(ids) & {id(p) for p in frozen}
        depth = adp.describe(model).num_layers  # still from the architecture
        assert min(g["lr_scale"] for g in groups) == 0.5**depth  # block 1 is the shallowest trained
    finally:
        for p in frozen:
            p.requires_grad_(True)


@pytest.mark.parametrize("adapter", MINE)
def test_no_dead_rule_and_upstream_named(adapter):
    cls = ADAPTERS.get(adapter)
    doc = sys.modules[cls.__module__].__doc__ or ""
    assert cls.upstream and cls.upstream.split(" (")[0] in doc
    hits: dict[str, int] = {}
    for key, (_, name, _) in FULL.items():
        if name == adapter:
            for rule, n in cls().rule_hits(full(key)).items():
                hits[rule] = hits.get(rule, 0) + n
    assert hits and [r for r, n in hits.items() if n == 0] == []


def test_adapters_do_not_import_upstream_at_import_time():
    for adapter in MINE:
        src = Path(sys.modules[ADAPTERS.get(adapter).__module__].__file__).read_text()
        assert not re.search(r"^\s*(?:import|from) (?:transformers|rfdetr|timm)\b", src, re.M), adapter


def test_auto_errors_when_none_or_two_claim():
    with pytest.raises(ValueError, match="no registered adapter recognises torch.nn.modules.linear.Linear"):
        resolve_adapter(torch.nn.Linear(2, 2))
    twin = type("TwinViT", (ADAPTERS.get("hf_vit"),), {"name": "twin_vit"})
    ADAPTERS.register_module("twin_vit", module=twin)
    try:
        with pytest.raises(ValueError, match=r"adapters \['hf_vit', 'twin_vit'\] all claim .*ViTModel"):
            resolve_adapter(full("ViTModel"))
        assert resolve_adapter(full("ViTModel"), "twin_vit").name == "twin_vit"  # the way out
    finally:
        ADAPTERS.module_dict.pop("twin_vit")
    assert resolve_adapter(full("ViTModel"), "beit_style").name == "videomaev2"  # the alias


# transformers 4.x names (not installable beside 5.x): the same rules must place them
LEGACY = [
    ("videomae", "videomae.encoder.layer.3.attention.attention.q_bias", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.attention.v_bias", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.attention.query.weight", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.attention.output.dense.weight", 4, "self_attn"),
    ("videomae", "videomae.encoder.layer.3.output.dense.weight", 4, "ffn"),
    ("dinov2_hf", "encoder.layer.0.attention.attention.query.weight", 1, "self_attn"),
    ("dinov2_hf", "encoder.layer.0.attention.output.dense.weight", 1, "self_attn"),
    ("dinov2_hf", "encoder.layer.0.mlp.weights_in.weight", 1, "ffn"),
    ("dinov2_hf", "embeddings.register_tokens", 0, "embed"),
    ("hf_vit", "vit.encoder.layer.5.attention.attention.key.weight", 6, "self_attn"),
    ("hf_vit", "vit.encoder.layer.5.intermediate.dense.weight", 6, "ffn"),
    ("hf_vit", "vit.encoder.layer.5.output.dense.bias", 6, "ffn"),
    ("hf_vit", "vit.encoder.layer.5.layernorm_after.weight", 6, "norm"),
    ("videomaev2", "blocks.2.attn.q_bias", 3, "self_attn"),
    ("videomaev2", "blocks.2.gamma_2", 3, "ffn"),
    ("videomaev2", "norm.weight", 13, "norm"),
]


@pytest.mark.parametrize(("adapter", "name", "layer_id", "component"), LEGACY)
def test_legacy_and_original_names(adapter, name, layer_id, component):
    padding = [f"blocks.{i}.attn.qkv.weight" for i in range(12)]  # 12 blocks so the head is 13
    if adapter != "videomaev2":
        padding = [name.split(".layer.")[0] + f".layer.{i}.x.weight" for i in range(12)]
    info = ADAPTERS.get(adapter)().describe(None, [name, *padding]).params[name]
    assert (info.layer_id, info.component) == (layer_id, component)
