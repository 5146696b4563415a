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
        (dict(text_encoder=dict(targets=["text_projection"])), "kohya", "not in kohya's text-encoder layout"),
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


@pytest.mark.slow  # builds the SDXL test pipeline (its two CLIP encoders): 5-25 s on the shared CPU
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


@pytest.mark.slow  # builds the SDXL test pipeline (its two CLIP encoders): 5-25 s on the shared CPU
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
        assert got == pytest.approx([lrs[name]]), name  # no depth factor (no tower_depth): the component's LR itself
    mmap = UNet().describe(model)
    infos = [i for n, i in mmap.params.items() if n.startswith("text_encoder_2.")]
    assert infos and {(i.component, i.tower) for i in infos} == {("text_encoder_2", "text_encoder_2")}
    own = set(range(mmap.towers["text_encoder_2"] + 2))  # its own layer ids (tests/test_diffusion_text_depth.py)
    assert {i.layer_id for i in infos} == own
    assert not any(n.startswith("text_encoder") for n in mmap.unmatched)


# ------------------------------------------------------------------------------------------- training runs
def _te_config(family: str, steps: int, **options):
    from recipes.train.config import load_config
    from tests.test_diffusion_task import ROOT, photos, pipeline_dir

    name = "sdxl_lora_te" if family == "sdxl" else "sd15_lora"
    opts = [f"model.pretrained={pipeline_dir(family)}", f"data_root={photos()}", "model.dtype=float32",
            f"train.max_steps={steps}", "train.batch_size=2", "train.grad_accum=1", "train.progress=False",
            "train.tensorboard=False", "train.ckpt_every=1", "train.log_every=1", "task.cache_dir=None",
            "task.samples.prompts=[]", "schedule.warmup_steps=0", "data.train.resolution=32"]  # fmt: skip
    opts += [f"{k}={v}" for k, v in options.items()]
    return load_config(ROOT / "configs" / "diffusion" / f"{name}.py", opts)


def _encode(encoder, ids):
    with torch.no_grad():
        return encoder(ids, output_hidden_states=True).hidden_states[-2]


@pytest.mark.slow  # trains the SDXL test pipeline 2 steps and reloads the LoRA: ~60 s on a shared 2-core CPU
def test_sdxl_text_encoders_train_and_load_into_the_pipeline(tmp_path):
    import diffusers
    from safetensors import safe_open

    from tests.test_diffusion_task import pipeline_dir, resave_with_visible_lora, run

    trainer, _ = run(_te_config("sdxl", 2), tmp_path / "te")
    model = trainer.bare_model()
    for name in ("text_encoder", "text_encoder_2"):  # trained: the LoRA Bs moved off their zero start
        bs = {n: p for n, p in model.named_parameters() if n.startswith(name + ".") and "lora_B" in n}
        still = {n for n, p in bs.items() if not p.abs().max() > 0}
        last = f".layers.{getattr(model, name).config.num_hidden_layers - 1}."
        # SDXL reads text_encoder's penultimate layer, so its last one has no adapter (it would get no gradient, and
        # DDP stops on such parameters); text_encoder_2's pooled output comes from its last layer: all of it trains
        assert bs and not still, (name, still)
        assert any(last in n for n in bs) == (name == "text_encoder_2"), name
    plain, _ = run(_te_config("sdxl", 2, **{"policy.text_encoder": None}), tmp_path / "unet_only")
    assert not [n for n, _ in plain.bare_model().named_parameters() if n.startswith("text_encoder")]
    base = diffusers.StableDiffusionXLPipeline.from_pretrained(pipeline_dir("sdxl"))
    ids = base.tokenizer(["a photo of sks dog"], padding="max_length", return_tensors="pt").input_ids
    for name in ("text_encoder", "text_encoder_2"):  # the denoiser-only run's encoders are the pipeline's
        torch.testing.assert_close(_encode(getattr(plain.task.pipe, name), ids), _encode(getattr(base, name), ids))

    from tools import export_diffusion  # best.pt -> the same three parts

    te = tmp_path / "te"
    assert export_diffusion.main([str(te / "config.py"), str(te / "best.pt"), "--out", str(tmp_path / "exp")]) == 0
    with safe_open(str(tmp_path / "exp" / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"unet", "text_encoder", "text_encoder_2"}
    model, _ = resave_with_visible_lora(trainer, tmp_path / "te")  # B nudged: the encoders' change is visible
    with safe_open(str(tmp_path / "te" / "lora" / "pytorch_lora_weights.safetensors"), "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    base.load_lora_weights(str(tmp_path / "te" / "lora"))
    fresh = diffusers.StableDiffusionXLPipeline.from_pretrained(pipeline_dir("sdxl"))
    for name in ("text_encoder", "text_encoder_2"):
        want = _encode(getattr(model, name).eval(), ids)
        torch.testing.assert_close(_encode(getattr(base, name), ids), want, atol=1e-5, rtol=1e-5)
        assert (_encode(getattr(fresh, name), ids) - want).abs().max() > 1e-4, name


@pytest.mark.slow  # 4 + 2 steps of the SD 1.5 test pipeline with its text encoder training: ~60 s
def test_exact_resume_with_the_text_encoder_training(tmp_path):
    from tests.test_diffusion_task import run

    opts = {"policy.r": 1, "policy.alpha": 1, "policy.text_encoder.r": 2, "task.caption_dropout": 0.5,
            "strategy.component_lr.text_encoder": 3e-4}  # fmt: skip
    straight, _ = run(_te_config("sd15", 4, **opts), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "step_0000002.pt"
    resumed, _ = run(_te_config("sd15", 4, **opts), tmp_path / "b", resume=ckpt)
    a = {n: p for n, p in straight.bare_model().named_parameters() if p.requires_grad}
    b = dict(resumed.bare_model().named_parameters())
    assert any(n.startswith("text_encoder.") for n in a)
    assert all(torch.equal(p, b[n]) for n, p in a.items())
    assert [x[1] for x in straight.history[2:]] == [x[1] for x in resumed.history]


@pytest.mark.slow  # one process and two torchrun processes training SD 1.5 with its text encoder: ~60-120 s
def test_ddp_two_processes_give_the_one_process_losses_with_the_text_encoder(tmp_path):
    from tests.test_diffusion_distributed import config_path, logged_losses, one_process, options, torchrun

    extra = {"policy.text_encoder": "True"}
    ref = one_process("sd15", tmp_path / "one", options("sd15", 3, batch=2, **extra))
    assert any(n.startswith("text_encoder.") for n, p in ref.bare_model().named_parameters() if p.requires_grad)
    done = torchrun(config_path("sd15"), tmp_path / "two", options("sd15", 3, batch=1, **extra))
    assert done.returncode == 0, done.stderr[-3000:]
    assert logged_losses(tmp_path / "two") == pytest.approx([loss for _, loss in ref.history], rel=1e-4, abs=1e-6)


def test_export_checks_the_encoders_rank_against_policy_text_encoder():
    from recipes.train.errors import BadInput
    from tools.export_diffusion import check_lora_rank

    ckpt = {"path": "best.pt", "model": {"text_encoder.m.lora_A.weight": torch.zeros(8, 4),
                                         "down_blocks.m.lora_A.weight": torch.zeros(16, 4)}}  # fmt: skip
    policy = dict(type="lora_only", r=16, alpha=16)
    check_lora_rank({"policy": dict(policy, text_encoder=dict(r=8))}, ckpt)
    with pytest.raises(BadInput, match=r"'text_encoder.m.lora_A.weight' has rank 8, .*policy.text_encoder.r=4"):
        check_lora_rank({"policy": dict(policy, text_encoder=dict(r=4))}, ckpt)
    with pytest.raises(BadInput, match="is a text-encoder LoRA tensor, but the config has no policy.text_encoder"):
        check_lora_rank({"policy": policy}, ckpt)
