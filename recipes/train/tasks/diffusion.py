"""Diffusion fine-tuning: LoRA (or full) training of a diffusers pipeline's denoiser on captioned images/videos.

Config sketch (configs/diffusion/<family>_lora.py)::

    model = dict(type="diffusers", pretrained="/path/pipeline_folder", dtype="float32")
    policy = dict(type="lora_only", r=16, alpha=16)   # kind="lokr" / "loha", dora=True; type="full": every weight
    task = dict(type="diffusion", cache_dir="work_dirs/cache",
                samples=dict(prompts=["a photo of sks dog"], seeds=[0], steps=20))
    data = dict(train=dict(type="captioned_images", resolution=512, flip_p=0.5))

The denoiser (``unet`` / ``transformer``) is the engine's model; the VAE and text encoders are frozen (text-encoder
LoRA: ``diffusion/text_lora.py``). What trains is the ``policy`` section (``diffusion/adapters.py``): ``lora_only``
injects peft's LoRA / LoKr / LoHa through diffusers' ``add_adapter`` (the family's projections or ``policy.targets``);
``type="full"`` or no policy trains every weight. Objectives: ``diffusion/objectives.py``. ``cache_dir`` computes
latents and text embeddings once (``diffusion/cache.py``). Each evaluation logs a fixed-noise loss and a sample grid
(PNG, GIF for video; TensorBoard too); at the end the LoRA is saved in diffusers' (or kohya's) format, a full
fine-tune with ``save_pretrained``, under ``<work_dir>/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recipes.train.config import build_with_keys, check_keys
from recipes.train.data.captioned import validation_set  # also registers the datasets
from recipes.train.data.captioned_mix import prior_weights
from recipes.train.diffusion import draws
from recipes.train.diffusion.adapters import adapter_settings, add_adapter, check_diffusion_policy
from recipes.train.diffusion.cache import cache_batch
from recipes.train.diffusion.checks import (
    check_numbers,
    check_preset,
    check_sample_steps,
    check_sizes,
    guidance_for,
    report_data,
)
from recipes.train.diffusion.draws import Draw
from recipes.train.diffusion.families import Family, family_of
from recipes.train.diffusion.lora_io import FORMATS, ready_to_save
from recipes.train.diffusion.objectives import DDPMObjective, FlowObjective, weighted_mse
from recipes.train.diffusion.text_lora import attach_text_encoders, check_text_run
from recipes.train.models.diffusers import group_offload, resident_trainable
from recipes.train.registry import MODELS, TASKS
from recipes.train.tasks.base import Task

SAMPLE_KEYS = ("prompts", "seeds", "steps", "guidance_scale", "height", "width", "num_frames")
#: flow-matching options and their defaults; another value on a DDPM family is an error
FLOW_DEFAULTS = {"timestep_sampling": "logit_normal", "logit_mean": 0.0, "logit_std": 1.0, "shift": "auto"}
DDPM_ONLY = ("prediction_type", "min_snr_gamma")  # None: the scheduler's prediction type, no SNR weighting
#: validation loss: the mean over these points of the noise schedule (fraction of the DDPM timesteps, or the flow
#: time before the family's shift), each with noise drawn from one fixed seed, so evaluations compare like for like
VAL_TIMES = (0.25, 0.5, 0.75)


@TASKS.register_module("diffusion")
class DiffusionTask(Task):
    """Denoising loss on captioned images/videos; see the module docstring.

    A DDPM-only option set on a flow family, or a flow option changed from its default on a DDPM
    family, is an error naming it.
    """

    primary_metric = "loss"
    higher_is_better = False
    metrics = ("loss", "loss_t25", "loss_t50", "loss_t75")  # see VAL_TIMES

    def __init__(
        self,
        cfg: Any,
        *,
        prediction_type: str | None = None,
        min_snr_gamma: float | None = None,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float | str | None = "auto",
        guidance_scale: float | None = None,
        caption_dropout: float = 0.0,
        noise_offset: float = 0.0,
        cache_dir: str | None = None,
        cache_batch_size: int | None = None,
        samples: Mapping[str, Any] | None = None,
        sample_every: int | None = None,
        save_format: str = "diffusers",
        expert: str | None = None,
    ) -> None:
        super().__init__(cfg)
        want = (cfg.get("train") or {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self.train_device = torch.device(want)  # the cache fills here; quantized bases and offloading depend on it
        self.progress = bool((cfg.get("train") or {}).get("progress", True))  # the cache fill's bar too
        self.cache_batch_size = cache_batch(cache_dir, cache_batch_size)
        #: the adapter the ``policy`` section puts on the denoiser (defaults filled), None for a full fine-tune
        self.lora = adapter_settings(cfg.get("policy"), save_format)
        self.text_trains = check_text_run(self.lora, cache_dir, cfg.get("train") or {})  # policy.text_encoder
        self.samples = dict(samples or {})
        check_keys("task.samples.", self.samples, SAMPLE_KEYS)
        check_numbers(caption_dropout, noise_offset, sample_every, self.samples)
        #: sample grids every N steps (and at train.max_steps); None: at every evaluation
        self.sample_every, self.max_steps = sample_every, (cfg.get("train") or {}).get("max_steps")
        p = float(caption_dropout)
        if save_format not in FORMATS:
            raise ValueError(f"task.save_format must be one of {FORMATS}, got {save_format!r}")
        #: the objective's options, checked against the family once the pipeline is loaded
        self.objective_options = dict(prediction_type=prediction_type, min_snr_gamma=min_snr_gamma,
                                      timestep_sampling=timestep_sampling, logit_mean=logit_mean,
                                      logit_std=logit_std, shift=shift)  # fmt: skip
        self.guidance_scale, self.cache_dir, self.save_format = guidance_scale, cache_dir, save_format
        self.expert = expert  # Wan 2.2: which of the two experts trains
        self.caption_dropout, self.step = p, 0
        #: kohya's noise offset: a per-channel constant added to the noise, so the model learns to shift mean
        #: brightness (very dark or bright images); training only, not the validation loss
        self.noise_offset = float(noise_offset)
        self.pipe: Any = None
        self._cond_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._device: torch.device | None = None
        self._media: dict[str, Any] = {}

    # --- pipeline and model -------------------------------------------------------------------
    def pipeline(self) -> Any:
        if self.pipe is None:
            from recipes.train.models.diffusers import load_pipeline, pipeline_quantization

            m = dict(self.model_cfg)
            if m.get("type") != "diffusers" or not m.get("pretrained"):
                raise ValueError("task diffusion: set model=dict(type='diffusers', pretrained=DIR) with DIR a diffusers "
                                 "pipeline folder (e.g. --cfg-options model.pretrained=/path/to/pipeline)")  # fmt: skip
            extra = sorted(set(m) - {"type", "pretrained", "dtype", "preset", "base_precision", "offload"})
            if extra:
                raise ValueError(f"model: {extra} apply to random weights; the diffusion task loads model.pretrained")
            quantize, dtype = pipeline_quantization(m, self.lora is not None, bool(self.cache_dir), self.train_device)
            self.pipe = load_pipeline(m["pretrained"], dtype, quantize)
            self.pipe.set_progress_bar_config(disable=True)
            self.family: Family = family_of(type(self.pipe).__name__, f"model.pretrained={m['pretrained']!r}")
            self.family = self.family.for_pipeline(self.pipe, self.expert)
            check_preset(m.get("preset"), self.family, self.pipe)
            self.vae_factor = self.family.vae_factors(self.pipe)[0]
            self.objective = self._objective()
            self.guidance_scale = guidance_for(self.guidance_scale, self.pipe, self.family)
            check_sample_steps(self.samples, self.pipe)
            for name, module in self.pipe.components.items():
                if isinstance(module, nn.Module) and name != self.family.denoiser:
                    module.requires_grad_(False).eval()
        return self.pipe

    def _objective(self) -> Any:
        o = self.objective_options
        if self.family.objective == "ddpm":
            from diffusers import DDPMScheduler

            for key, default in FLOW_DEFAULTS.items():
                if o[key] != default:
                    raise ValueError(f"task.{key} applies to flow-matching families; {self.family.name} uses DDPM")
            sched = DDPMScheduler.from_config(self.pipe.scheduler.config)
            return DDPMObjective(sched, o["prediction_type"], o["min_snr_gamma"])
        for key in DDPM_ONLY:
            if o[key] is not None:
                raise ValueError(
                    f"task.{key} applies to DDPM families (sd15, sdxl); {self.family.name} is a flow model"
                )
        return FlowObjective(self.pipe.scheduler.config, o["timestep_sampling"], float(o["logit_mean"]),
                             float(o["logit_std"]), o["shift"], mu=self.family.dynamic_mu(self.pipe))  # fmt: skip

    def build_model(self) -> nn.Module:
        """The pipeline's denoiser with LoRA added; without ``model.pretrained`` (``tools/show_lr.py``), the
        ``model.preset`` denoiser with random weights (e.g. ``model.device='meta'``), LoRA added the same way."""
        if self.model_cfg.get("pretrained") is None and self.pipe is None:
            from recipes.train.diffusion.families import family_of_preset

            family = family_of_preset(self.model_cfg.get("preset"))
            kw = dict(self.model_cfg)
            model = build_with_keys(MODELS.lookup(kw.pop("type")), kw, "model.")
        else:
            self.pipeline()
            family = self.family
            model = getattr(self.pipe, family.denoiser)
        group_offload(model, self.model_cfg, self.train_device)  # the frozen base's leaves, before the adapter
        self._family = family  # the adapter's default targets, the export's names
        for p in model.parameters():  # a quantized base's packed integer weights (bitsandbytes nf4) cannot train
            p.requires_grad_(p.is_floating_point())
        return model

    def finish_model(self, model: nn.Module) -> nn.Module:  # model.offload: the adapter (on CPU leaves) to the GPU
        return resident_trainable(model, self.train_device) if self.model_cfg.get("offload") else model

    check_policy = staticmethod(check_diffusion_policy)  # full or lora_only, with the adapter's keys

    def apply_policy(self, model: nn.Module, policy: Mapping[str, Any]) -> nn.Module:
        """The adapter through diffusers' ``add_adapter`` (so ``save_lora_weights`` sees it), or every weight."""
        if self.lora is None:
            return self._family.train_all(model)
        model = ready_to_save(add_adapter(model, self.lora, self._family.lora_targets), self._family.name,
                              self.save_format)  # fmt: skip
        return attach_text_encoders(model, self.pipe, self._family.name, self.lora["text_encoder"])

    # --- data ---------------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Any, Any]:
        if not self.data_cfg.get("train"):
            raise KeyError("config: the `data.train` section is missing (e.g. dict(type='captioned_images'))")
        train = self.build_dataset("train", seed=self.seed)  # before the pipeline: a missing data root says so first
        val = validation_set(train, self.build_dataset("val", seed=self.seed))
        self.pipeline()
        for ds in {id(train): train, id(val): val}.values():
            for part in getattr(ds, "parts", [ds]):  # captioned_mix: each folder's sizes
                check_sizes(part, self.pipe, self.family, self.vae_factor)
        self.train_targets, self.num_frames = train.targets, getattr(train, "num_frames", 1)
        print(f"[objective] {self.describe_objective()}")
        report_data(train, val)
        if self.cache_dir and train.caption_options.varies:
            raise ValueError("data.shuffle_tags / data.tag_dropout change a file's caption each epoch, but "
                             "task.cache_dir keeps one text embedding per file; set task.cache_dir=None")  # fmt: skip
        if self.cache_dir:
            from recipes.train.diffusion.cache import cache_datasets

            train, val = cache_datasets(self, train, val)
        return train, val

    def describe_objective(self) -> str:
        """The setup report's objective line: prediction, timesteps, shift (mu at the first training size), guidance."""
        text = self.objective.describe()
        if getattr(self.objective, "dynamic", False):  # mu at the first training size's token count, as the loss has it
            h, w = self.train_targets[0]
            c = self.pipe.vae.config  # AutoencoderKL: latent_channels; the Wan / Qwen-Image VAEs: z_dim
            z = torch.zeros(1, c.get("latent_channels") or c["z_dim"], h // self.vae_factor, w // self.vae_factor)
            model = getattr(self.pipe, self.family.denoiser)
            text = self.objective.describe(self.family.image_seq_len(self.family.normalize(self.pipe.vae, z), model))
        guidance = "none" if self.guidance_scale is None else f"{self.guidance_scale:g} (denoiser guidance input)"
        return f"{self.family.name}: {text}; guidance {guidance}; caption dropout {self.caption_dropout:g}"

    def collate(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        stacked = ("pixels", "latent", "mask")
        out: dict[str, Any] = {k: [b[k] for b in batch] for k in batch[0] if k not in (*stacked, "cond")}
        for key in stacked:
            if key in batch[0]:
                out[key] = torch.stack([b[key] for b in batch])
        if "cond" in batch[0]:
            out["cond"] = {k: torch.stack([b["cond"][k] for b in batch]) for k in batch[0]["cond"]}
        return out

    # --- steps --------------------------------------------------------------------------------
    def _encoders_to(self, device: torch.device) -> None:
        if self._device != device:
            for name, module in self.pipe.components.items():
                if isinstance(module, nn.Module) and name != self.family.denoiser:
                    module.to(device)
            self._device = device

    def encode_prompts(self, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        self._encoders_to(device)  # policy.text_encoder: with gradients through the encoders' LoRA while training
        with torch.set_grad_enabled(self.text_trains and torch.is_grad_enabled()):
            return self.family.encode_prompts(self.pipe, prompts, device)

    @torch.no_grad()
    def latent_params(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE's latent distribution (mean and log-variance stacked on channels), as diffusers stores it."""
        return self.family.latent_params(self.pipe.vae, pixels)

    def latents(self, batch: dict[str, Any], device: torch.device, generator: Draw = None) -> torch.Tensor:
        if "latent" not in batch:  # cached latents: the VAE stays where the cache left it (the CPU)
            self._encoders_to(device)
        params = batch["latent"].to(device) if "latent" in batch else self.latent_params(batch["pixels"].to(device))
        x0 = self.family.sample_latents(params, generator)
        return self.family.normalize(self.pipe.vae, x0)

    def conditions(self, batch: dict[str, Any], device: torch.device, drop: torch.Tensor) -> dict[str, torch.Tensor]:
        if "cond" in batch:
            cond = {k: v.to(device) for k, v in batch["cond"].items()}
            if drop.any():
                empty = self.empty_cond(device)
                cond = {k: torch.where(drop.view(-1, *[1] * (v.dim() - 1)), empty[k].to(v.dtype), v)
                        for k, v in cond.items()}  # fmt: skip
            return cond
        captions = ["" if d else c for c, d in zip(batch["caption"], drop.tolist(), strict=True)]
        return self.encode_prompts(captions, device)

    def prompt_cond(self, prompt: str, device: torch.device) -> dict[str, torch.Tensor]:
        """One prompt's embeddings (no batch dim), kept in memory: sample prompts and the empty caption."""
        if prompt not in self._cond_cache or self.text_trains:  # a training text encoder: never a stale one
            self._cond_cache[prompt] = {k: v[0].cpu() for k, v in self.encode_prompts([prompt], device).items()}
        return {k: v.to(device) for k, v in self._cond_cache[prompt].items()}

    def empty_cond(self, device: torch.device) -> dict[str, torch.Tensor]:
        return self.prompt_cond("", device)

    def sample_size(self) -> tuple[int, int]:
        h, w = self.train_targets[0]
        return int(self.samples.get("height", h)), int(self.samples.get("width", w))

    def train_frames(self) -> int:
        return int(getattr(self, "num_frames", 1))

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device,
             generator: Draw = None, at: float | None = None) -> tuple[torch.Tensor, Any]:  # fmt: skip
        """The loss of a batch; noise, timesteps and dropout from ``generator`` (one, or one per sample: draws.py).

        ``at`` (validation): every sample at this point of the noise schedule (see ``VAL_TIMES``), no caption dropout.
        """
        x0 = self.latents(batch, device, generator)
        n = x0.shape[0]
        drop = draws.rand(n, generator, device) < (self.caption_dropout if at is None else 0.0)
        cond = self.conditions(batch, device, drop)
        noise = draws.randn(x0.shape, generator, device, x0.dtype)
        if self.noise_offset and at is None:
            per_channel = (*x0.shape[:2], *[1] * (x0.dim() - 2))
            noise = noise + self.noise_offset * draws.randn(per_channel, generator, device, x0.dtype)
        if isinstance(self.objective, DDPMObjective):
            last = self.objective.num_train_timesteps
            t = draws.randint(last, n, generator, device) if at is None else \
                torch.full((n,), round(at * (last - 1)), device=device, dtype=torch.long)  # fmt: skip
            nb = self.objective.noise(x0, noise, t)
        else:
            seq = self.family.image_seq_len(x0, model)
            u = draws.randn((n,), generator, device, torch.float32) if self.objective.sampling == "logit_normal" else \
                draws.rand(n, generator, device)  # fmt: skip
            sigmas = self._sigmas(u, seq) if at is None else self.objective.shift_sigmas(torch.full_like(u, at), seq)
            nb = self.objective.noise(x0, noise, seq, sigmas)
        dtype = next(p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.is_floating_point())
        extra = {"vae_factor": self.vae_factor, "original_size": batch["original_size"],
                 "crop_top_left": batch["crop_top_left"], "guidance_scale": self.guidance_scale}  # fmt: skip
        pred = self.family.predict(
            model, nb.noisy.to(dtype), nb.timesteps, {k: v.to(dtype) for k, v in cond.items()}, extra
        )
        weights = nb.weights if at is not None else prior_weights(batch, nb.weights)  # regularisation images
        if "mask" in batch:  # <name>.mask.png: each latent pixel's error weighted by the mask's mean over it (kohya)
            m = torch.nn.functional.interpolate(batch["mask"].to(device, torch.float32), size=pred.shape[-2:],
                                                mode="area")  # fmt: skip
            per_sample = ((pred.float() - nb.target.float()).pow(2) * m).flatten(1).mean(1)
            return (per_sample * weights).mean(), nb
        return weighted_mse(pred, nb.target, weights), nb

    def _sigmas(self, u: torch.Tensor, seq: int) -> torch.Tensor:
        o = self.objective
        t = torch.sigmoid(u * o.logit_std + o.logit_mean) if o.sampling == "logit_normal" else u
        lo, hi = self.family.sigma_range()  # an expert (Wan 2.2) sees its own noise levels only
        return lo + (hi - lo) * o.shift_sigmas(t.clamp(1e-5, 1.0), seq)

    def on_step(self, model: nn.Module, optimizer: Any, step: int) -> None:
        self.step = step

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        loss, _ = self.loss(model, batch, device, draws.sample_generators(self.seed, self.step, batch["index"], device))
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Validation loss at the fixed points ``VAL_TIMES`` with fixed noise (seed 0 and each sample's index, the same
        every evaluation): ``loss`` (their mean, which picks best.pt) and ``loss_t<percent>``; then samples when due."""
        was = model.training
        model.eval()
        totals, count = [0.0] * len(VAL_TIMES), 0
        for batch in loader:
            n = len(batch["caption"])
            for i, at in enumerate(VAL_TIMES):  # per-sample noise (seed 0, by dataset index): the same for any batching
                draw = draws.sample_generators(0, 0, batch["index"], device)
                totals[i] += float(self.loss(model, batch, device, draw, at=at)[0]) * n
            count += n
        if self.samples.get("prompts") and self._samples_due():
            from recipes.train.diffusion.sampling import write_samples

            self._media = write_samples(self, model, device)[1]
        model.train(was)
        per_time = {
            f"loss_t{round(at * 100)}": total / max(1, count) for at, total in zip(VAL_TIMES, totals, strict=True)
        }
        return {"loss": sum(per_time.values()) / len(per_time), **per_time}

    def _samples_due(self) -> bool:
        done = self.step + 1
        return self.sample_every is None or done % self.sample_every == 0 or done == self.max_steps

    def evaluation_media(self) -> dict[str, Any]:
        """The last evaluation's sample grid (``samples``) and, for video, each prompt's frames (``samples/p<i>``)."""
        media, self._media = self._media, {}
        return media

    def output_dir(self) -> Path:
        if self.work_dir is None:
            raise ValueError("task diffusion: no work dir to write samples and weights to; run through tools/train.py")
        return Path(self.work_dir)

    def final_report(self, model: nn.Module, device: torch.device, make_loader: Any) -> dict[str, Any]:
        """Save the trained weights (with ``train.ema``, the EMA's): LoRA in diffusers' (or kohya's) format, or the
        full denoiser; rank 0 writes (under FSDP every rank first takes part in gathering the shards)."""
        from recipes.train.diffusion.lora_io import save_trained
        from recipes.train.distributed import is_main_process
        from recipes.train.fsdp import full_state, is_sharded

        model, weights = (model, "model") if self.ema is None else (self.ema.module, "ema")  # train.ema: its average
        state = full_state(model) if is_sharded(model) else None
        if not is_main_process():
            return {}
        info = {"step": self.step + 1, "family": self.family.name, "lora": self.lora, "weights": weights}
        path = save_trained(model, self.output_dir(), type(self.pipe), self.family, self.save_format, info, state)
        return {"saved": str(path)}
