"""``task.save_format="kohya"`` with ``policy.text_encoder`` (SD 1.5 / SDXL): the encoders' LoRA under kohya sd-scripts'
``networks/lora.py`` names (``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` + the module's path in the transformers 4.44
CLIP models kohya loads), checked on the releases' CLIP trees (meta device), through diffusers' own kohya converter
(``_convert_non_diffusers_lora_to_diffusers``, what ``load_lora_weights`` applies to such a file) and by a pipeline's
``load_lora_weights`` reproducing the trained encoders; and ``tools/export_diffusion.py --format``."""

from __future__ import annotations

import re

import pytest
import torch

from recipes.train.diffusion.adapters import DIFFUSION_DEFAULTS, adapter_settings
from recipes.train.diffusion.kohya_keys import TEXT_LINEARS, kohya_text_state, text_kohya_name
from recipes.train.diffusion.text_lora import attach_text_encoders, release_encoders, text_encoder_settings
from tests.test_diffusion_kohya import randomize_lora

LORA = dict(DIFFUSION_DEFAULTS, r=2, alpha=8)
#: kohya's text-encoder modules (``networks/lora.py``: the Linear children of CLIPAttention and CLIPMLP), as ComfyUI's
#: ``LORA_CLIP_MAP`` (``comfy/lora.py``) spells them after ``lora_te*_text_model_encoder_layers_<i>_``
KOHYA_CLIP = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2")
ALL_SIX = dict(r=3, alpha=5, targets=list(TEXT_LINEARS))  # alpha / r = 5 / 3, not the U-Net's 8 / 2


def _release_text_state(family: str):
    """The releases' CLIP encoders on the meta device with LoRA on all six kohya layers, as the trainer attaches
    them (SDXL's text_encoder without its last layer); returns ({encoder: peft state dict}, {encoder: config})."""
    from peft import get_peft_model_state_dict

    names = ("text_encoder",) if family == "sd15" else ("text_encoder", "text_encoder_2")
    holder = attach_text_encoders(torch.nn.Module(), release_encoders(names, "meta"), family,
                                  text_encoder_settings(ALL_SIX, LORA))  # fmt: skip
    states = {n: get_peft_model_state_dict(getattr(holder, n)) for n in names}
    return states, {n: getattr(holder, n).peft_config["default"] for n in names}


@pytest.mark.parametrize(
    ("family", "layers"),
    [("sd15", {"lora_te": range(12)}), ("sdxl", {"lora_te1": range(11), "lora_te2": range(32)})],
)  # fmt: skip
def test_release_encoders_get_kohyas_names_alpha_and_diffusers_maps_them_back(family, layers):
    """On the releases' CLIP-L (12 layers) and OpenCLIP bigG (32 layers) as transformers 5 builds them: every kohya
    name is the expected one (SDXL's text_encoder has no adapter on its unread last layer), every module has
    ``.alpha`` / rank = the encoder's 5 / 3, and diffusers' kohya converter puts each module back on the encoder
    module peft trained (``text_model.`` removed where transformers 5's ``CLIPTextModel`` lacks it, as diffusers'
    loader does)."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft

    states, configs = _release_text_state(family)
    kohya = {}
    for name, state in states.items():
        kohya |= kohya_text_state(state, family, name, configs[name])
    want = {
        f"{prefix}_text_model_encoder_layers_{i}_{m}" for prefix, ids in layers.items() for i in ids for m in KOHYA_CLIP
    }
    assert {k.split(".")[0] for k in kohya} == want
    assert {k.partition(".")[2] for k in kohya} == {"lora_down.weight", "lora_up.weight", "alpha"}
    for stem in want:
        rank = kohya[f"{stem}.lora_down.weight"].shape[0]
        assert rank == 3 and float(kohya[f"{stem}.alpha"]) / rank == pytest.approx(5 / 3), stem

    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(kohya))
    assert len(alphas) == len(want) and all(a == pytest.approx(5.0) for a in alphas.values())
    for name, state in states.items():
        part = {k.removeprefix(name + "."): v for k, v in converted.items() if k.startswith(name + ".")}
        peft_keys = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        flat = {k.removeprefix("text_model."): v for k, v in peft_keys.items()}
        mine = {k.removeprefix("text_model."): v for k, v in state.items()}
        assert flat.keys() == mine.keys(), name
        assert all(flat[k].shape == v.shape for k, v in mine.items()), name


def test_kohya_text_names_follow_the_transformers_4_module_path():
    # text_encoder (CLIPTextModel, flattened in transformers 5) and text_encoder_2 (CLIPTextModelWithProjection)
    assert (
        text_kohya_name("sd15", "text_encoder", "encoder.layers.3.mlp.fc2")
        == "lora_te_text_model_encoder_layers_3_mlp_fc2"
    )
    assert (text_kohya_name("sdxl", "text_encoder", "encoder.layers.0.self_attn.out_proj")
            == "lora_te1_text_model_encoder_layers_0_self_attn_out_proj")  # fmt: skip
    assert (text_kohya_name("sdxl", "text_encoder_2", "text_model.encoder.layers.31.self_attn.q_proj")
            == "lora_te2_text_model_encoder_layers_31_self_attn_q_proj")  # fmt: skip


def test_kohya_text_errors_name_the_module_the_encoder_or_the_target():
    with pytest.raises(ValueError, match=r"'text_projection' has no name in kohya's text-encoder layout"):
        text_kohya_name("sdxl", "text_encoder_2", "text_projection")
    with pytest.raises(ValueError, match=r"no kohya text-encoder prefix for 'text_encoder_2' of the sd15 family"):
        text_kohya_name("sd15", "text_encoder_2", "encoder.layers.0.mlp.fc1")
    policy = dict(type="lora_only", text_encoder=dict(targets=["q_proj", "text_projection"]))
    assert adapter_settings(policy, "diffusers")["text_encoder"]["targets"] == ["q_proj", "text_projection"]
    msg = r"task.save_format='kohya': policy.text_encoder.targets \['text_projection'\] are not in kohya's"
    with pytest.raises(ValueError, match=msg):
        adapter_settings(policy, "kohya")
    kept = adapter_settings(dict(type="lora_only", text_encoder=dict(targets=["self_attn.q_proj", "fc1"])), "kohya")
    assert kept["text_encoder"]["targets"] == ["self_attn.q_proj", "fc1"]


# ------------------------------------------------------------------------------------------- tiny pipelines
def _trained(family: str):
    """The family's tiny pipeline, its U-Net with LoRA (r 2, alpha 8) and the encoders with LoRA on all six kohya
    layers (r 3, alpha 5) attached, every A and B random (so each module's change is visible)."""
    from recipes.train.diffusion.adapters import add_adapter
    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe = build_test_pipeline(family)
    unet = add_adapter(pipe.unet, LORA, FAMILIES[family].lora_targets)
    attach_text_encoders(unet, pipe, family, text_encoder_settings(ALL_SIX, LORA))
    randomize_lora(unet)
    return pipe, unet


def _encoded(encoder, ids):
    with torch.no_grad():
        out = encoder.eval()(ids, output_hidden_states=True)
    return torch.cat([out.hidden_states[-2], out.last_hidden_state])


@pytest.mark.parametrize("family", ["sd15", "sdxl"])  # the tiny pipelines: about 1 s each
def test_kohya_file_loads_the_trained_encoders_and_unet_into_a_pipeline(family, tmp_path):
    """A pipeline's ``load_lora_weights`` of the kohya file gives each encoder the trained outputs (the base's
    differ), at the encoders' alpha / r (5 / 3) beside the U-Net's (8 / 2), and the U-Net of the diffusers file."""
    from safetensors import safe_open

    from recipes.train.diffusion.families import FAMILIES
    from recipes.train.diffusion.lora_io import save_lora
    from recipes.train.diffusion.testing import build_test_pipeline

    pipe, unet = _trained(family)
    key = FAMILIES[family].lora_save_key
    path = save_lora(type(pipe), unet, tmp_path / "kohya", key, "kohya", family=family)
    save_lora(type(pipe), unet, tmp_path / "diffusers", key, "diffusers", family=family)
    with safe_open(str(path), "pt") as f:
        prefixes = {re.match(r"lora_(unet|te\d?)_", k).group(1) for k in f.keys()}
        assert f.metadata()["ss_network_dim"] == "2"
    assert prefixes == ({"unet", "te"} if family == "sd15" else {"unet", "te1", "te2"})
    loaded, base = build_test_pipeline(family), build_test_pipeline(family)
    loaded.load_lora_weights(str(tmp_path / "kohya"))
    ids = loaded.tokenizer(["a photo of sks dog"], padding="max_length", return_tensors="pt").input_ids
    for name in ("text_encoder",) if family == "sd15" else ("text_encoder", "text_encoder_2"):
        want = _encoded(getattr(unet, name), ids)
        torch.testing.assert_close(_encoded(getattr(loaded, name), ids), want, atol=1e-6, rtol=1e-6, msg=name)
        assert (_encoded(getattr(base, name), ids) - want).abs().max() > 1e-2, name
    from_diffusers = build_test_pipeline(family)
    from_diffusers.load_lora_weights(str(tmp_path / "diffusers"))
    for p in (loaded, from_diffusers):
        p.fuse_lora(components=["unet"])
    fused, weights = (_base_weights(from_diffusers.unet), _base_weights(loaded.unet))
    assert weights.keys() == fused.keys()
    for n, w in weights.items():
        torch.testing.assert_close(w, fused[n], atol=1e-5, rtol=1e-5, msg=n)
    changed = [n for n, w in base.unet.named_parameters() if not torch.equal(w, weights[n])]
    lora_modules = [n for n, m in unet.named_modules() if hasattr(m, "lora_A") and not n.startswith("text_encoder")]
    assert sorted(changed) == sorted(f"{n}.weight" for n in lora_modules)  # the file acts on every U-Net module


def _base_weights(unet) -> dict[str, torch.Tensor]:
    return {n.replace(".base_layer", ""): p for n, p in unet.named_parameters() if "lora_" not in n}


# ------------------------------------------------------------------------------------------- the export tool
def test_export_format_becomes_task_save_format_and_contradictions_are_errors(tmp_path, capsys):
    from recipes.train.errors import BadInput
    from tests.test_diffusion_task import ROOT
    from tools import export_diffusion

    assert export_diffusion.with_format(["a=1"], None) == ["a=1"]
    assert export_diffusion.with_format(["a=1"], "kohya") == ["a=1", "task.save_format=kohya"]
    assert export_diffusion.with_format(["task.save_format='kohya'"], "kohya")[-1] == "task.save_format=kohya"
    with pytest.raises(BadInput, match="--format kohya and --cfg-options task.save_format=diffusers disagree"):
        export_diffusion.with_format(["task.save_format=diffusers"], "kohya")
    config = str(ROOT / "configs" / "diffusion" / "sd15_lora.py")
    out = tmp_path / "out"
    args = [config, str(tmp_path / "never_read.pt"), "--out", str(out), "--format", "kohya"]
    assert export_diffusion.main([*args, "--cfg-options", "policy=None"]) == 2  # a full fine-tune has one layout
    assert "--format kohya: the config fine-tunes the whole denoiser" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow  # trains the SD 1.5 test pipeline 2 steps with its text encoder and exports 3 times: ~30-60 s
def test_a_text_encoder_run_saves_kohya_names_and_the_tool_exports_either_layout(tmp_path):
    """A run with ``policy.text_encoder`` and ``save_format='kohya'`` ends with ``lora_unet_`` + ``lora_te_`` modules
    holding the trained tensors; ``tools/export_diffusion.py`` writes the same file from the last step checkpoint,
    ``--format diffusers`` the diffusers layout instead, and never writes into a folder that holds files."""
    import diffusers
    from safetensors.torch import load_file

    from recipes.train.diffusion.kohya_keys import text_kohya_name
    from tests.test_diffusion_task import pipeline_dir, run
    from tests.test_diffusion_text_lora import _te_config
    from tools import export_diffusion

    opts = {"task.save_format": "kohya", "policy.r": 2, "policy.alpha": 4, "policy.text_encoder.r": 3,
            "policy.text_encoder.alpha": 5, "strategy.component_lr.text_encoder": 1e-3}  # fmt: skip
    trainer, summary = run(_te_config("sd15", 2, **opts), tmp_path / "wd")
    saved, model = load_file(summary["saved"]), trainer.bare_model().eval()
    assert {k.split("_")[1] for k in saved} == {"unet", "te"}
    module = "encoder.layers.0.self_attn.q_proj"
    stem, lora = text_kohya_name("sd15", "text_encoder", module), model.text_encoder.get_submodule(module)
    assert torch.equal(saved[f"{stem}.lora_down.weight"], lora.lora_A["default"].weight.detach())
    assert torch.equal(saved[f"{stem}.lora_up.weight"], lora.lora_B["default"].weight.detach())
    assert lora.lora_B["default"].weight.abs().max() > 0 and float(saved[f"{stem}.alpha"]) == pytest.approx(5.0)

    wd, step = tmp_path / "wd", sorted((tmp_path / "wd" / "checkpoints").glob("step_*.pt"))[-1]
    tool = [str(wd / "config.py"), str(step), "--out"]
    assert export_diffusion.main([*tool, str(tmp_path / "k")]) == 0
    exported = load_file(tmp_path / "k" / "pytorch_lora_weights.safetensors")
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
    assert export_diffusion.main([*tool, str(tmp_path / "d"), "--format", "diffusers"]) == 0
    assert {k.split(".")[0] for k in load_file(tmp_path / "d" / "pytorch_lora_weights.safetensors")} == {
        "unet", "text_encoder"}  # fmt: skip
    assert export_diffusion.main([*tool, str(tmp_path / "k"), "--format", "kohya"]) == 2  # holds a file: kept
    assert torch.equal(load_file(tmp_path / "k" / "pytorch_lora_weights.safetensors")[f"{stem}.alpha"],
                       saved[f"{stem}.alpha"])  # fmt: skip

    fresh = diffusers.StableDiffusionPipeline.from_pretrained(pipeline_dir("sd15"))
    ids = fresh.tokenizer(["a photo of sks dog"], padding="max_length", return_tensors="pt").input_ids
    moved = (_encoded(fresh.text_encoder, ids) - _encoded(model.text_encoder, ids)).abs().max()
    assert moved > 1e-3  # two steps at 1e-3 moved the encoder visibly (0.038 measured)
    fresh.load_lora_weights(str(tmp_path / "k"))
    torch.testing.assert_close(_encoded(fresh.text_encoder, ids), _encoded(model.text_encoder, ids), atol=1e-6,
                               rtol=1e-6)  # fmt: skip
