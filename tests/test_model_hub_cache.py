"""``model.pretrained=True`` reads timm's weights from the local hub cache, and never through a changed environment."""

from __future__ import annotations

import os

import pytest
import torch

TINY = dict(img_size=8, patch_size=4, depth=2, embed_dim=32, num_heads=2, num_classes=10)
REPO = "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def test_pretrained_true_loads_the_hub_cache_copy_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    from recipes.train.models.timm import build_timm_model, hub_cache_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no local copy of 'vit_tiny_patch16_224'.*pass model.pretrained_file"):
        build_timm_model("vit_tiny_patch16_224", pretrained=True, **TINY)
    source = timm.create_model("vit_tiny_patch16_224", **TINY)
    snapshot = tmp_path / REPO / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (tmp_path / REPO / "refs").mkdir()
    (tmp_path / REPO / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "model.safetensors"))
    assert hub_cache_file("vit_tiny_patch16_224") == snapshot / "model.safetensors"
    env = dict(os.environ)
    model = build_timm_model("vit_tiny_patch16_224", pretrained=True, **TINY)
    assert dict(os.environ) == env  # no HF_HUB_OFFLINE (or anything else) set for the rest of the process
    same = [torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items() if k.startswith("blocks.")]
    assert same and all(same)
    fresh = timm.create_model("vit_tiny_patch16_224", **TINY)  # random weights differ: the file was read
    assert not torch.equal(fresh.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
