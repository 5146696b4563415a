"""PixArt-Sigma: one step of the pipeline reproduced with the family's denoiser call, and a training run on the shipped
config whose LoRA (a peft adapter: the pipeline has no ``load_lora_weights``) peft loads back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipes.train.diffusion.families import FAMILIES
from recipes.train.diffusion.objectives import DDPMObjective
from recipes.train.diffusion.testing import build_test_pipeline

pytestmark = pytest.mark.slow  # a tiny pipeline with a 300-token T5 prompt: 10-60 s each on a shared 2-core CPU


def test_pixart_step_is_the_schedulers_step_on_the_family_prediction():
    """``PixArtSigmaPipeline.__call__`` with one timestep steps the scheduler on the learned-sigma output's noise half:
    the same as stepping it on the family's prediction; the full output (8 channels) is not what it uses."""
    from diffusers import DDPMScheduler

    pipe, fam = build_test_pipeline("pixart"), FAMILIES["pixart"]
    pipe.set_progress_bar_config(disable=True)
    obj = DDPMObjective(DDPMScheduler.from_config(pipe.scheduler.config), None, None)
    x0 = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = fam.encode_prompts(pipe, ["a photo of a cat"], torch.device("cpu"))
        assert cond["prompt_attention_mask"].sum() < fam.max_sequence_length == cond["prompt_embeds"].shape[1]
        for t in (999, 500):
            nb = obj.noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), torch.tensor([t]))
            pred = fam.predict(pipe.transformer, nb.noisy, nb.timesteps, cond, {})
            stepped = pipe(prompt_embeds=cond["prompt_embeds"], prompt_attention_mask=cond["prompt_attention_mask"],
                           latents=nb.noisy, timesteps=[t], guidance_scale=1.0, height=32, width=32,
                           use_resolution_binning=False, output_type="latent").images  # fmt: skip
            assert pipe.scheduler.timesteps.tolist() == [t]
            pipe.scheduler.set_timesteps(timesteps=[t])
            want = pipe.scheduler.step(pred, t, nb.noisy).prev_sample
            torch.testing.assert_close(stepped, want, atol=1e-5, rtol=1e-5)
            assert pred.shape == x0.shape and pipe.transformer.config.out_channels == 8


def test_pixart_config_trains_and_its_peft_adapter_loads_back(tmp_path):
    import diffusers
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    from recipes.train.config import load_config
    from recipes.train.diffusion.testing import save_test_pipeline
    from tests.test_diffusion_task import ROOT, TMP, photos, run

    pipe_dir = TMP / "pipelines" / "pixart"
    if not (pipe_dir / "model_index.json").exists():
        save_test_pipeline("pixart", pipe_dir)
    opts = [f"model.pretrained={pipe_dir}", f"data_root={photos()}", "model.dtype=float32", "train.max_steps=2",
            "train.batch_size=2", "train.grad_accum=1", "train.progress=False", "train.tensorboard=False",
            "train.ckpt_every=1", "train.log_every=1", "task.cache_dir=None", "task.samples.steps=2",
            "task.samples.seeds=[0]", "schedule.warmup_steps=0", "data.train.resolution=32"]  # fmt: skip
    trainer, summary = run(load_config(ROOT / "configs" / "diffusion" / "pixart_lora.py", opts), tmp_path / "wd")
    assert torch.isfinite(torch.tensor(summary["final_loss"])) and list((tmp_path / "wd" / "samples").glob("*.png"))
    task, model = trainer.task, trainer.bare_model().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn_like(p) * 0.05)  # LoRA B starts at zero: make the adapter's effect visible
    saved = Path(task.final_report(model, torch.device("cpu"), None)["saved"])
    assert saved.name == "adapter_model.safetensors" and (saved.parent / "adapter_config.json").is_file()
    fresh = diffusers.PixArtTransformer2DModel.from_pretrained(str(pipe_dir), subfolder="transformer").eval()
    base = diffusers.PixArtTransformer2DModel.from_pretrained(str(pipe_dir), subfolder="transformer").eval()
    inject_adapter_in_model(LoraConfig.from_pretrained(str(saved.parent)), fresh)
    assert not set_peft_model_state_dict(fresh, load_file(str(saved))).unexpected_keys
    batch = task.collate([trainer.train_set[0]])
    losses = []
    with torch.no_grad():
        for m in (model, fresh, base):
            losses.append(float(task.loss(m, batch, torch.device("cpu"), torch.Generator().manual_seed(1))[0]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-7)
    assert abs(losses[2] - losses[0]) > 1e-5  # the LoRA changes the prediction, so the match means something
