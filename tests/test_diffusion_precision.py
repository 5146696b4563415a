"""The frozen base in low precision (``model.base_precision``), group offloading (``model.offload``) and the
batched cache fill (``task.cache_batch_size``), on tiny pipelines saved to disk and real photos."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from recipes.train.models.diffusers import BASE_PRECISIONS, check_base_precision, group_offload, quantization_config

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
CPU_PRECISIONS = [p for p, (pkg, cpu) in BASE_PRECISIONS.items() if pkg and cpu]  # fp8, int8 (torchao)

BAD_BASE = [  # (base_precision, model.dtype, cuda, message)
    ("int4", None, False, r"unknown value 'int4'.*Known: bf16, fp8, int8, nf4"),
    ("in8", None, False, r"Did you mean 'int8'"),
    ("bf16", "float32", False, r"'bf16' contradicts model.dtype='float32'"),
    ("nf4", "bfloat16", False, r"'nf4' \(bitsandbytes through diffusers\) runs on CUDA only"),
]


@pytest.mark.parametrize(("precision", "dtype", "cuda", "message"), BAD_BASE, ids=[b[0] + str(b[2]) for b in BAD_BASE])
def test_bad_base_precision_is_one_error_naming_it(precision, dtype, cuda, message):
    with pytest.raises(ValueError, match=message):
        check_base_precision(precision, dtype, cuda)


@pytest.mark.parametrize(("precision", "package"), [("int8", "torchao"), ("fp8", "torchao"), ("nf4", "bitsandbytes")])
def test_a_missing_backend_package_names_it_and_the_lowp_extra(monkeypatch, precision, package):
    """The lowp extra is not in [all]: the error says which extra (or package) to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ValueError, match=rf"base_precision='{precision}' needs the {package} package") as e:
        check_base_precision(precision, None, True)
    assert "pip install 'zoo-recipes[lowp]'" in str(e.value) and f"pip install {package})" in str(e.value)


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed")
def test_quantization_config_maps_each_value_to_its_backend():
    import diffusers
    import transformers

    assert quantization_config("bf16", {"transformer": False}, None) is None
    assert quantization_config(None, {"transformer": False}, None) is None
    for precision, want in (("int8", "Int8WeightOnlyConfig"), ("fp8", "Float8WeightOnlyConfig")):
        q = quantization_config(precision, {"transformer": False, "text_encoder_2": True}, "bfloat16").quant_mapping
        assert isinstance(q["transformer"], diffusers.TorchAoConfig)
        assert isinstance(q["text_encoder_2"], transformers.TorchAoConfig)
        assert type(q["transformer"].quant_type).__name__ == want
    q = quantization_config("nf4", {"transformer": False}, "bfloat16").quant_mapping["transformer"]
    assert isinstance(q, diffusers.BitsAndBytesConfig) and q.bnb_4bit_quant_type == "nf4" and q.load_in_4bit


@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed")
def test_pipeline_quantization_covers_the_denoiser_and_uncached_text_encoders(tmp_path):
    import json

    from recipes.train.models.diffusers import pipeline_quantization

    parts = {"transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"]}  # fmt: skip
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline", **parts}))
    for name in parts:
        (tmp_path / name).mkdir()
    m, cpu = {"pretrained": str(tmp_path), "base_precision": "int8"}, torch.device("cpu")
    q, dtype = pipeline_quantization(m, True, False, cpu)
    assert set(q.quant_mapping) == {"transformer", "text_encoder", "text_encoder_2"} and dtype is None
    assert set(pipeline_quantization(m, True, True, cpu)[0].quant_mapping) == {"transformer"}  # cached: not quantized
    assert pipeline_quantization({**m, "base_precision": "bf16"}, True, False, cpu) == (None, "bfloat16")
    assert pipeline_quantization({**m, "base_precision": None}, True, False, cpu) == (None, None)
    with pytest.raises(
        ValueError, match=r"a full fine-tune \(policy.type='full', or no policy\) trains every denoiser weight"
    ):
        pipeline_quantization(m, False, False, cpu)


def test_offload_on_the_cpu_or_not_a_bool_is_an_error():
    model = torch.nn.Linear(2, 2)
    group_offload(model, {}, torch.device("cpu"))  # default: nothing happens
    with pytest.raises(ValueError, match="model.offload=True moves the denoiser.s layers.*remove model.offload"):
        group_offload(model, {"offload": True}, torch.device("cpu"))
    with pytest.raises(ValueError, match="model.offload must be True or False, got 'block'"):
        group_offload(model, {"offload": "block"}, torch.device("cpu"))
    with pytest.raises(ValueError, match="base_precision='nf4'"):
        group_offload(model, {"offload": True, "base_precision": "nf4"}, torch.device("cuda"))


# --- end to end: tools/train.py's Trainer on the tiny Flux.1 pipeline ------------------------------------------
def _lora_output(pipe_dir: str, lora_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh (not quantized) Flux pipeline's transformer output without and with ``load_lora_weights``."""
    import diffusers

    pipe = diffusers.FluxPipeline.from_pretrained(pipe_dir)
    torch.manual_seed(0)
    kw = dict(hidden_states=torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 8, 32),
              pooled_projections=torch.randn(1, 16), timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3),
              txt_ids=torch.zeros(8, 3), guidance=torch.tensor([3.5]))  # fmt: skip
    with torch.no_grad():
        base = pipe.transformer(**kw).sample
        pipe.load_lora_weights(str(lora_dir))
        return base, pipe.transformer(**kw).sample


@pytest.mark.slow  # three tiny Flux LoRA runs of 2 steps (~60 s)
@pytest.mark.skipif(not HAS_TORCHAO, reason="torchao not installed")
def test_lora_on_a_low_precision_base_trains_close_to_bf16_and_loads_in_diffusers(tmp_path):
    from safetensors.torch import load_file

    from tests.test_diffusion_task import config, pipeline_dir, run

    ref, ref_summary = run(config("flux", steps=2), tmp_path / "ref")
    ref_lora = load_file(ref_summary["saved"])
    for precision in CPU_PRECISIONS:
        trainer, summary = run(config("flux", steps=2, **{"model.base_precision": precision}), tmp_path / precision)
        pipe = trainer.task.pipe
        for module in (pipe.transformer.transformer_blocks[0].attn.to_q, pipe.text_encoder_2.encoder.block[0]):
            weight = getattr(module, "base_layer", module)
            weight = weight.weight if hasattr(weight, "weight") else weight.layer[0].SelfAttention.q.weight
            assert type(weight).__module__.startswith("torchao"), (precision, type(weight))  # quantized on load
        losses, want = [h[1] for h in trainer.history], [h[1] for h in ref.history]
        assert losses != want and losses == pytest.approx(want, rel=0.02), (precision, losses, want)
        lora = load_file(summary["saved"])
        assert lora.keys() == ref_lora.keys() and all(v.dtype == ref_lora[k].dtype for k, v in lora.items())
        base, with_lora = _lora_output(pipeline_dir("flux"), summary["saved"].rsplit("/", 1)[0])
        assert not torch.allclose(base, with_lora)  # the trained LoRA acts in a plain diffusers pipeline


def test_cache_batch_size_needs_the_cache_and_a_whole_number():
    from recipes.train.diffusion.cache import cache_batch

    assert cache_batch("work_dirs/cache", None) == 8 and cache_batch("work_dirs/cache", 2) == 2
    for cache_dir, value in ((None, 4), ("c", 0), ("c", True)):
        with pytest.raises(ValueError, match=f"task.cache_batch_size={value!r} needs task.cache_dir"):
            cache_batch(cache_dir, value)


@pytest.mark.slow  # fills two caches of the tiny Flux.1 pipeline (~20 s)
def test_cache_batch_size_changes_the_batching_not_the_cached_values(tmp_path):
    from recipes.train.tasks.base import build_task
    from tests.test_diffusion_task import config

    runs = {}
    for size in (1, 3):
        task = build_task(
            config("flux", **{"task.cache_dir": str(tmp_path / f"c{size}"), "task.cache_batch_size": size})
        )
        calls, latent_params, encode_prompts = [], task.latent_params, task.encode_prompts
        task.latent_params = lambda px, f=latent_params, c=calls: c.append(("vae", len(px), px.device)) or f(px)
        task.encode_prompts = lambda p, d, f=encode_prompts, c=calls: c.append(("text", len(p), d)) or f(p, d)
        train, _ = task.build_datasets()
        runs[size] = calls, [train[i] for i in range(len(train))]
        assert {device for _, _, device in calls} == {task.train_device}  # filled on the training device
        assert task.pipe.text_encoder is None and task.pipe.vae.device.type == "cpu"  # encoders left afterwards
    one, three = runs[1][0], runs[3][0]
    assert {n for _, n, _ in one} == {1} and max(n for _, n, _ in three) == 3 and len(three) < len(one)
    assert sum(n for kind, n, _ in one if kind == "vae") == sum(n for kind, n, _ in three if kind == "vae")
    for a, b in zip(runs[1][1], runs[3][1], strict=True):  # batched entries equal the one-by-one ones
        torch.testing.assert_close(a["latent"], b["latent"], atol=1e-5, rtol=1e-4)
        for key in a["cond"]:
            torch.testing.assert_close(a["cond"][key], b["cond"][key], atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # loads the tiny Flux.1 pipeline for each case (~10 s each)
def test_tools_train_bad_precision_or_offload_is_one_error_line_exit_2(tmp_path, capsys):
    import importlib.util as iu

    from tests.test_diffusion_task import ROOT, photos, pipeline_dir

    spec = iu.spec_from_file_location("train_tool", ROOT / "tools" / "train.py")
    tool = iu.module_from_spec(spec)
    spec.loader.exec_module(tool)
    base = [f"model.pretrained={pipeline_dir('flux')}", f"data_root={photos()}", "data.train.resolution=32",
            "model.dtype=float32", "train.device=cpu", "task.cache_dir=None"]  # fmt: skip
    cases = {"model.base_precision=int4": "model.base_precision: unknown value 'int4'",
             "model.offload=True": "model.offload=True moves the denoiser's layers between the CPU and a CUDA device",
             "model.base_precision=nf4": "model.base_precision='nf4' (bitsandbytes through diffusers) runs on CUDA only"}  # fmt: skip
    for i, (option, message) in enumerate(cases.items()):
        argv = [str(ROOT / "configs" / "diffusion" / "flux_lora.py"), "--work-dir", str(tmp_path / str(i)),
                "--cfg-options", *base, option]  # fmt: skip
        assert tool.main(argv) == 2, option
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and message in err[0], (option, err)
    assert not list(tmp_path.glob("*/checkpoints/*"))  # nothing trained


def _tiny_flux_transformer():
    import diffusers

    torch.manual_seed(0)
    return diffusers.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=2,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                            pooled_projection_dim=16, axes_dims_rope=[2, 2, 4])  # fmt: skip


def _flux_loss(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = dict(hidden_states=torch.randn(1, 16, 16, generator=g), encoder_hidden_states=torch.randn(1, 4, 32, generator=g),
             pooled_projections=torch.randn(1, 16, generator=g), timestep=torch.tensor([0.5]),
             img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(4, 3))  # fmt: skip
    return model(**x, return_dict=False)[0].pow(2).mean()


def test_offloaded_leaves_hold_the_frozen_base_and_never_the_adapter():
    """model.offload: diffusers' groups are made before the adapter is added, so no LoRA tensor is in one (a group
    moves its tensors back to stale CPU copies after each forward: a trained tensor there would lose its updates, and
    one added after the groups made them fail with a KeyError on the GPU). Leaf groups (onload on the CPU here, the
    same hooks as on a GPU) still run the base: the loss and the LoRA gradients equal the plain model's."""
    from diffusers.hooks.group_offloading import _GROUP_OFFLOADING
    from peft import LoraConfig

    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.models.diffusers import offload_leaves, resident_trainable

    config = LoraConfig(r=4, lora_alpha=4, target_modules=FAMILIES["flux"].lora_targets, init_lora_weights=False)
    plain, offloaded = _tiny_flux_transformer(), _tiny_flux_transformer()
    offload_leaves(offloaded, torch.device("cpu"))
    for model in (plain, offloaded):
        model.requires_grad_(False)
        torch.manual_seed(2)
        model.add_adapter(config)
    resident_trainable(offloaded, torch.device("cpu"))
    in_groups, groups = set(), 0
    for module in offloaded.modules():
        hook = module._diffusers_hook.get_hook(_GROUP_OFFLOADING) if hasattr(module, "_diffusers_hook") else None
        if hook is not None:
            groups += 1
            in_groups |= {id(p) for m in hook.group.modules for p in m.parameters()}
            in_groups |= {id(p) for p in hook.group.parameters}
    lora = [p for p in offloaded.parameters() if p.requires_grad]
    frozen = [p for p in offloaded.parameters() if not p.requires_grad]
    assert groups > 10 and lora and not {id(p) for p in lora} & in_groups
    assert {id(p) for p in frozen} <= in_groups  # every base tensor is offloaded
    losses = [_flux_loss(m) for m in (plain, offloaded)]
    for loss in losses:
        loss.backward()
    assert torch.equal(losses[0], losses[1])
    grads = [[p.grad for p in m.parameters() if p.requires_grad] for m in (plain, offloaded)]
    assert all(a is not None and torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_packed_integer_weights_of_a_quantized_base_stay_frozen():
    """bitsandbytes nf4 keeps each Linear's weight as packed uint8: making every denoiser tensor trainable stopped the
    nf4 run at setup on a GPU ("only Tensors of floating point dtype can require gradients"). Only floating-point
    tensors become trainable; the policy then picks the adapter."""
    from torch import nn

    from recipes.train.tasks.base import build_task
    from tests.test_diffusion_task import config

    task = build_task(config("flux"))
    task.pipeline()
    packed = nn.Parameter(torch.zeros(8, dtype=torch.uint8), requires_grad=False)
    task.pipe.transformer.register_parameter("packed_weight", packed)
    model = task.build_model()
    assert not packed.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if n != "packed_weight")


@pytest.mark.slow  # trains the SD 1.5 test pipeline 2 steps on an int8 base: ~15 s on a shared 2-core CPU
def test_text_encoder_lora_trains_on_a_quantized_text_encoder(tmp_path):
    """base_precision int8 quantizes the text encoders too (text-encoder LoRA rules out the cache): peft's torchao
    LoRA layers wrap the int8 CLIP projections, and their LoRA trains."""
    pytest.importorskip("torchao")
    from tests.test_diffusion_task import run
    from tests.test_diffusion_text_lora import _te_config

    trainer, _ = run(_te_config("sd15", 2, **{"model.base_precision": "int8", "policy.text_encoder": True}), tmp_path)
    encoder = trainer.model.text_encoder
    wrapped = [m for n, m in encoder.named_modules() if n.endswith("self_attn.q_proj")]
    assert wrapped and all(type(m).__name__ == "TorchaoLoraLinear" for m in wrapped)
    assert all("torchao" in type(m.base_layer.weight).__module__ for m in wrapped)
    ups = [p for n, p in encoder.named_parameters() if "lora_B" in n]
    assert ups and all(p.requires_grad for p in ups) and any(p.abs().sum() > 0 for p in ups)  # B starts at zero
    assert all(torch.isfinite(torch.tensor(v)) for _, v in trainer.history)
