"""Invariants of every registered adapter, parametrized over ``ADAPTERS`` itself.

A new adapter gets these checks by being registered: the test for it fails until it has a sample
model here (a real upstream class: full size on the meta device, tiny where it does not build there).
Per adapter: the upstream version is named in its module's docstring; ``adapter="auto"`` picks it
(or, for adapters chosen by name only, never); on every sample each parameter gets a layer id and a
component, each trainable parameter lands in exactly one group, frozen ones in none, and the depth
comes from the architecture; over all its samples no rule matches nothing.
"""

from __future__ import annotations

import functools
import sys
import warnings

import pytest
import torch

from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.registry import ADAPTERS

_TXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=99)
_HF = {  # tiny transformers configs (the generic ``hf`` adapter)
    "BertModel": ("BertConfig", _TXT),
    "LlamaForCausalLM": ("LlamaConfig", dict(_TXT, num_key_value_heads=1)),
    "Dinov2ForImageClassification": ("Dinov2Config", dict(_TXT, use_swiglu_ffn=True, image_size=32, patch_size=8)),
    "VideoMAEForVideoClassification": ("VideoMAEConfig", dict(use_mean_pooling=False)),
    "SwinForImageClassification": (
        "SwinConfig",
        dict(image_size=32, patch_size=4, embed_dim=8, depths=[1, 2], num_heads=[1, 2], window_size=2),
    ),
}
_DIFFUSERS = {
    "chroma": ["chroma"],
    "flux": ["flux1-dev", "flux1-schnell"],
    "flux2": ["flux2-dev", "flux2-klein-4b"],
    "hunyuan_video": ["hunyuan-video"],
    "ltx_video": ["ltx-video"],
    "ltx2": ["ltx2"],
    "pixart": ["pixart-sigma"],
    "qwen_image": ["qwen-image"],
    "sana": ["sana-600m"],
    "sd3": ["sd3-medium", "sd35-medium", "sd35-large"],
    "unet": ["sd15", "sdxl"],
    "wan": ["wan21-t2v-1.3b", "wan21-i2v-14b"],
    "zimage": ["zimage-turbo", "zimage-omni"],
}
# adapter -> (auto picks it, sample specs "<source>:<what>")
SAMPLES: dict[str, tuple[bool, list[str]]] = {
    "timm": (True, ["timm:resnet18", "timm:swin_tiny_patch4_window7_224"]),
    "timm_vit": (True, ["timm:vit_base_patch16_224", "timm:deit_base_distilled_patch16_224"]),
    "timm_efficientnet": (False, ["timm:efficientnet_b0"]),
    "hf": (True, ["hf:BertModel", "hf:LlamaForCausalLM", "hf:SwinForImageClassification"]),
    "hf_vit": (True, ["hfmeta:ViTForImageClassification:ViTConfig", "hfmeta:ViTModel:ViTConfig"]),
    "dinov2_hf": (True, ["hfmeta:Dinov2Model:Dinov2Config", "hf:Dinov2ForImageClassification"]),
    "dinov2_registers_hf": (
        True,
        ["hfmeta:Dinov2WithRegistersForImageClassification:Dinov2WithRegistersConfig"],
    ),
    "videomae": (True, ["hfmeta:VideoMAEForVideoClassification:VideoMAEConfig", "hf:VideoMAEForVideoClassification"]),
    "videomaev2": (False, ["timm:beit_base_patch16_224", "timm:vit_base_patch16_224"]),
    "beit_style": (False, ["timm:beit_base_patch16_224", "timm:vit_base_patch16_224"]),
    "rfdetr": (True, ["rfdetr:RFDETRNano", "rfdetr:RFDETRSegNano"]),
    **{family: (True, [f"diffusers:{p}" for p in presets]) for family, presets in _DIFFUSERS.items()},
}
# tests/ registers its own adapters (third_party_toy) inside a test, restored after it
REGISTERED = sorted(ADAPTERS.names())


@functools.cache
def sample(spec: str) -> torch.nn.Module:
    """A real upstream model for ``spec``; the upstream package is imported only here."""
    source, what, *rest = spec.split(":")
    if source == "timm":
        timm = pytest.importorskip("timm")
        with torch.device("meta"):
            return timm.create_model(what, **({"use_shared_rel_pos_bias": True} if "beit" in what else {}))
    if source in ("hf", "hfmeta"):
        T = pytest.importorskip("transformers")  # noqa: N806
        config, kwargs = _HF[what] if source == "hf" else (rest[0], {})
        with torch.device("meta"):
            return getattr(T, what)(getattr(T, config)(**kwargs))
    if source == "rfdetr":
        rfdetr = pytest.importorskip("rfdetr")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(rfdetr, what)(pretrain_weights=None).model.model
    if source == "diffusers":
        pytest.importorskip("diffusers")
        from recipes.train.models.diffusers import build_diffusers_model

        return build_diffusers_model(what, device="meta")
    raise ValueError(f"unknown sample source {source!r}")


def _samples(name: str) -> tuple[bool, list[str]]:
    if name not in SAMPLES:
        pytest.fail(f"adapter {name!r} is registered but has no sample model: add one to SAMPLES in {__file__}")
    return SAMPLES[name]


def test_every_sample_names_a_registered_adapter():
    assert sorted(SAMPLES) == REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_names_its_upstream_and_auto_picks_it_or_never(name):
    cls = ADAPTERS.lookup(name)
    assert cls.upstream and cls.upstream.split(" (")[0] in (sys.modules[cls.__module__].__doc__ or "")
    auto, specs = _samples(name)
    for spec in specs:
        model = sample(spec)
        assert cls.matches(model) is auto, spec
        if auto:
            assert resolve_adapter(model).name == cls.name, spec


@pytest.mark.parametrize("name", REGISTERED)
def test_every_parameter_placed_each_trainable_once_frozen_none(name):
    cls = ADAPTERS.lookup(name)
    for spec in _samples(name)[1]:
        model, adp = sample(spec), cls()
        mmap = adp.describe(model)
        assert mmap.unmatched == [], spec
        assert len(mmap.params) == len({id(p) for p in model.parameters()}), spec
        assert all(0 <= i.layer_id <= mmap.max_layer_id and i.component for i in mmap.params.values()), spec
        assert mmap.num_layers > 0, spec
        frozen = [p for n, p in model.named_parameters() if mmap.params[n].layer_id == 0]
        try:
            for p in frozen:
                p.requires_grad_(False)
            groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.05), cls())
        finally:
            for p in frozen:
                p.requires_grad_(True)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)), spec
        assert set(ids) == {id(p) for p in model.parameters()} - {id(p) for p in frozen}, spec
        assert frozen, spec
        # the depth is the architecture's, frozen stem or not: layer 1 is the shallowest trained
        assert min(g["lr_scale"] for g in groups) == 0.5 ** (mmap.max_layer_id - 1), spec


@pytest.mark.parametrize("name", REGISTERED)
def test_no_dead_rule(name):
    cls = ADAPTERS.lookup(name)
    hits: dict[str, int] = {}
    for spec in _samples(name)[1]:
        adp = cls()
        for rule, n in adp.rule_hits(sample(spec)).items():
            hits[rule] = hits.get(rule, 0) + n
    assert hits and [r for r, n in hits.items() if n == 0] == []
