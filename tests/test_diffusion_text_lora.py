"""Text-encoder LoRA (``policy.text_encoder``, recipes/train/diffusion/text_lora.py) on SD 1.5 / SDXL: what trains,
the encoders' own LRs, the export diffusers' ``load_lora_weights`` reads, exact resume, DDP and bad input."""

from __future__ import annotations

import pytest
import torch

from recipes.train.diffusion.adapters import DIFFUSION_DEFAULTS, adapter_settings
from recipes.train.diffusion.text_lora import TEXT_TARGETS, attach_text_encoders, check_text_run, text_encoder_settings

LORA = dict(DIFFUSION_DEFAULTS, r=4, alpha=8)


def test_settings_default_to_the_denoisers_rank_and_diffusers_targets():
    assert text_encoder_settings(True, LORA) == {"r": 4, "alpha": 8, "targets": list(TEXT_TARGETS)}
    assert text_encoder_settings(dict(r=2, targets=["q_proj"]), LORA) == {"r": 2, "alpha": 8, "targets": ["q_proj"]}
    assert text_encoder_settings(None, LORA) is None and text_encoder_settings(False, LORA) is None
    assert adapter_settings(dict(type="lora_only", r=4))["text_encoder"] is None


@pytest.mark.parametrize(
    ("policy", "fmt", "message"),
    [
        (dict(text_encoder=dict(rank=4)), "diffusers", "policy.text_encoder.rank is not a text-encoder LoRA option"),
        (dict(text_encoder=dict(r=0)), "diffusers", "policy.text_encoder.r must be a positive integer, got 0"),
        (dict(text_encoder=dict(alpha=-1)), "diffusers", "policy.text_encoder.alpha must be a positive number"),
        (dict(text_encoder=dict(targets="q_proj")), "diffusers", "policy.text_encoder.targets must be a list"),
        (dict(text_encoder="yes"), "diffusers", "policy.text_encoder must be True or dict("),
        (dict(text_encoder=True, kind="lokr"), "diffusers", "policy.kind='lokr'"),
        (dict(text_encoder=True, dora=True), "diffusers", "policy.dora=True"),
        (dict(text_encoder=True), "kohya", "task.save_format='kohya': policy.text_encoder is exported in diffusers"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_error_naming_the_key(policy, fmt, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        adapter_settings(dict(type="lora_only", **policy), fmt)


def test_full_fine_tune_with_text_encoder_is_an_error():
    with pytest.raises(ValueError, match=r"policy.type='full' .*\['text_encoder'\]"):
        adapter_settings(dict(type="full", text_encoder=True))


def test_cache_fsdp_and_other_families_are_errors_naming_both():
    lora = dict(LORA, text_encoder=text_encoder_settings(True, LORA))
    assert check_text_run(lora, None, {}) and not check_text_run(dict(LORA, text_encoder=None), "c", {"fsdp": True})
    with pytest.raises(ValueError, match="policy.text_encoder .*task.cache_dir"):
        check_text_run(lora, "work_dirs/cache", {})
    with pytest.raises(ValueError, match="policy.text_encoder with train.fsdp=True"):
        check_text_run(lora, None, {"fsdp": True})
    with pytest.raises(ValueError, match=r"policy.text_encoder applies to \['sd15', 'sdxl'\].*the flux family"):
        attach_text_encoders(torch.nn.Module(), None, "flux", lora["text_encoder"])


@pytest.fixture(scope="module")
def sdxl():
    from recipes.train.diffusion.testing import build_test_pipeline

    return build_test_pipeline("sdxl")


def _attached(pipe, settings):
    import copy

    unet = copy.deepcopy(pipe.unet).requires_grad_(False)  # as add_adapter leaves its base
    encoders = {n: copy.deepcopy(getattr(pipe, n)) for n in ("text_encoder", "text_encoder_2")}
    return attach_text_encoders(unet, type("Pipe", (), encoders), "sdxl", settings)


def test_attached_encoders_train_their_lora_only_with_the_settings_given(sdxl):
    model = _attached(sdxl, text_encoder_settings(dict(r=2, alpha=6, targets=["q_proj", "v_proj"]), LORA))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    for name in ("text_encoder", "text_encoder_2"):
        mine = [n for n in trained if n.startswith(name + ".")]
        assert mine and all(".lora_" in n for n in mine)
        assert {n.split(".self_attn.")[1].split(".")[0] for n in mine} == {"q_proj", "v_proj"}
        config = getattr(model, name).peft_config["default"]
        assert (config.r, config.lora_alpha) == (2, 6)
        a = next(p for n, p in model.named_parameters() if n.startswith(name) and "lora_A" in n)
        assert a.shape[0] == 2 and a.dtype == torch.float32
    assert not [n for n in trained if not n.startswith("text_encoder")]  # no denoiser adapter was added here


def test_encoders_are_their_own_components_with_their_own_lr(sdxl):
    from recipes.param_groups import build_param_groups
    from zoo.unet import UNet

    model = _attached(sdxl, text_encoder_settings(True, LORA))
    model.requires_grad_(False)
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_" in n or n.startswith("down_blocks."))
    lrs = {"text_encoder": 1e-5, "text_encoder_2": 3e-5, "self_attn": 1e-4}
    strategy = dict(type="component_depth", component_lr=lrs, default_lr=2e-4)
    groups = build_param_groups(model, strategy, UNet())
    ids = {name: {id(p) for n, p in model.named_parameters() if n.startswith(name + ".") and p.requires_grad}
           for name in ("text_encoder", "text_encoder_2")}  # fmt: skip
    for name, want in ids.items():
        got = sorted({g["lr"] for g in groups if {id(p) for p in g["params"]} & want})
        assert got == pytest.approx([lrs[name]]), name  # no depth factor: the component's LR itself
    mmap = UNet().describe(model)
    infos = [i for n, i in mmap.params.items() if n.startswith("text_encoder_2.")]
    assert infos and {(i.component, i.layer_id) for i in infos} == {("text_encoder_2", 0)}
    assert not any(n.startswith("text_encoder") for n in mmap.unmatched)
