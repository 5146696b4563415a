"""Diffusion fine-tuning: LoRA (or full) training of a diffusers pipeline's denoiser on captioned images/videos.

Config sketch (configs/diffusion/<family>_lora.py)::

    model = dict(type="diffusers", pretrained="/path/pipeline_folder", dtype="float32")
    task = dict(type="diffusion", lora=dict(r=16, alpha=16), cache_dir="work_dirs/cache",
                samples=dict(prompts=["a photo of sks dog"], seeds=[0], steps=20))
    data = dict(train=dict(type="captioned_images", resolution=512, flip_p=0.5))

The pipeline's VAE and text encoders are loaded with it and frozen; only the denoiser (``unet`` or
``transformer``) is the engine's model, so param groups, checkpoints and resume cover it alone.
LoRA is injected with peft's ``LoraConfig(target_modules=..., use_dora=...)`` through diffusers'
``add_adapter`` (targets: the family's attention and MLP projections, or ``lora.targets``);
``lora=None`` trains every denoiser weight. Objectives: see ``recipes/train/diffusion/objectives.py``.
With ``cache_dir`` the latents and text embeddings are computed once (see ``diffusion/cache.py``) and
the text encoders are dropped. Each evaluation logs a fixed-noise loss and writes a PNG grid (GIF
for video) of the sample prompts/seeds through the real pipeline (also to TensorBoard with
``train.tensorboard``); at the end the LoRA is saved in diffusers' format (or kohya's), a full
fine-tune with ``save_pretrained``, under ``<work_dir>/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recipes.train.config import build_with_keys, check_keys
from recipes.train.diffusion.families import Family, family_of
from recipes.train.diffusion.lora_io import FORMATS
from recipes.train.diffusion.objectives import DDPMObjective, FlowObjective, weighted_mse
from recipes.train.registry import MODELS, TASKS
from recipes.train.tasks.base import Task

LORA_KEYS = ("r", "alpha", "dropout", "targets", "dora")
SAMPLE_KEYS = ("prompts", "seeds", "steps", "guidance_scale", "height", "width", "num_frames")
DEFAULT_LORA = {"r": 16, "alpha": 16}
#: flow-matching options and their defaults; another value on a DDPM family is an error
FLOW_DEFAULTS = {"timestep_sampling": "logit_normal", "logit_mean": 0.0, "logit_std": 1.0, "shift": "auto"}
DDPM_ONLY = ("prediction_type", "min_snr_gamma")  # None: the scheduler's prediction type, no SNR weighting


@TASKS.register_module("diffusion")
class DiffusionTask(Task):
    """Denoising loss on captioned images/videos; see the module docstring.

    A DDPM-only option set on a flow family, or a flow option changed from its default on a DDPM
    family, is an error naming it.
    """

    primary_metric = "loss"
    higher_is_better = False
    metrics = ("loss",)

    def __init__(
        self,
        cfg: Any,
        *,
        lora: Mapping[str, Any] | None = DEFAULT_LORA,
        prediction_type: str | None = None,
        min_snr_gamma: float | None = None,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float | str | None = "auto",
        guidance_scale: float | None = None,
        caption_dropout: float = 0.0,
        cache_dir: str | None = None,
        samples: Mapping[str, Any] | None = None,
        save_format: str = "diffusers",
        gradient_checkpointing: bool = False,
        expert: str | None = None,
    ) -> None:
        super().__init__(cfg)
        self.lora = None if lora is None else dict(lora)
        if self.lora is not None:
            check_keys("task.lora.", self.lora, LORA_KEYS)
            if cfg.get("policy"):
                raise ValueError("task.lora and a `policy` section both set what trains; keep one (task.lora=None "
                                 "for the policy)")  # fmt: skip
        self.samples = dict(samples or {})
        check_keys("task.samples.", self.samples, SAMPLE_KEYS)
        p = float(caption_dropout)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"task.caption_dropout must lie in [0, 1), got {p}")
        if save_format not in FORMATS:
            raise ValueError(f"task.save_format must be one of {FORMATS}, got {save_format!r}")
        #: the objective's options, checked against the family once the pipeline is loaded
        self.objective_options = dict(prediction_type=prediction_type, min_snr_gamma=min_snr_gamma,
                                      timestep_sampling=timestep_sampling, logit_mean=logit_mean,
                                      logit_std=logit_std, shift=shift)  # fmt: skip
        self.guidance_scale, self.cache_dir, self.save_format = guidance_scale, cache_dir, save_format
        self.gradient_checkpointing, self.expert = bool(gradient_checkpointing), expert  # expert: Wan 2.2's to train
        self.caption_dropout, self.step = p, 0
        self.pipe: Any = None
        self._cond_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._device: torch.device | None = None
        self._media: dict[str, Any] = {}

    # --- pipeline and model -------------------------------------------------------------------
    def pipeline(self) -> Any:
        if self.pipe is None:
            from recipes.train.models.diffusers import load_pipeline

            m = dict(self.model_cfg)
            if m.get("type") != "diffusers" or not m.get("pretrained"):
                raise ValueError("task diffusion: set model=dict(type='diffusers', pretrained=DIR) with DIR a diffusers "
                                 "pipeline folder (e.g. --cfg-options model.pretrained=/path/to/pipeline)")  # fmt: skip
            extra = sorted(set(m) - {"type", "pretrained", "dtype", "preset"})
            if extra:
                raise ValueError(f"model: {extra} apply to random weights; the diffusion task loads model.pretrained")
            self.pipe = load_pipeline(m["pretrained"], m.get("dtype"))
            self.pipe.set_progress_bar_config(disable=True)
            self.family: Family = family_of(type(self.pipe).__name__, f"model.pretrained={m['pretrained']!r}")
            self.family = self.family.for_pipeline(self.pipe, self.expert)
            self._check_preset(m.get("preset"), type(getattr(self.pipe, self.family.denoiser)).__name__)
            self.vae_factor = int(getattr(self.pipe, "vae_scale_factor_spatial", 0) or self.pipe.vae_scale_factor)
            self.objective = self._objective()
            self._check_guidance()
            for name, module in self.pipe.components.items():
                if isinstance(module, nn.Module) and name != self.family.denoiser:
                    module.requires_grad_(False).eval()
        return self.pipe

    def _check_guidance(self) -> None:
        """``task.guidance_scale`` feeds a guidance-distilled denoiser's guidance input (Flux.1 / Flux.2 [dev]):
        default 3.5 there (diffusers' Flux LoRA example); on a denoiser without that input, setting it is an error."""
        has_input = bool(getattr(getattr(self.pipe, self.family.denoiser).config, "guidance_embeds", False))
        if self.guidance_scale is None:
            self.guidance_scale = 3.5 if has_input else None
        elif not has_input:
            raise ValueError(f"task.guidance_scale={self.guidance_scale} does nothing: this {self.family.name} "
                             "denoiser has no guidance input (only guidance-distilled models such as Flux.1 [dev] "
                             "and Flux.2 [dev] take one); remove it")  # fmt: skip
        else:
            self.guidance_scale = float(self.guidance_scale)

    def _check_preset(self, preset: str | None, found: str) -> None:
        from recipes.train.models.diffusers import PRESETS

        if preset is not None and (preset not in PRESETS or PRESETS[preset][0] != found):
            want = PRESETS[preset][0] if preset in PRESETS else "an unknown preset"
            raise ValueError(
                f"model.preset={preset!r} is {want}, but model.pretrained holds a {found}; fix one of them"
            )

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
        if self.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        if self.lora is None:
            return model.requires_grad_(True)
        from peft import LoraConfig

        targets = self.lora.get("targets") or family.lora_targets
        config = LoraConfig(r=int(self.lora.get("r", 16)), lora_alpha=float(self.lora.get("alpha", 16)),
                            lora_dropout=float(self.lora.get("dropout", 0.0)), target_modules=targets,
                            use_dora=bool(self.lora.get("dora", False)))  # fmt: skip
        model.requires_grad_(False)
        try:
            if hasattr(model, "add_adapter"):
                model.add_adapter(config)
            else:  # a transformer without diffusers' LoRA support (PixArt): peft injects the same layers
                __import__("peft").inject_adapter_in_model(config, model)
        except ValueError as e:
            raise ValueError(f"task.lora.targets={targets!r} match no module of the {type(model).__name__} "
                             f"(peft: {str(e)[:200]}); give module-name suffixes or one full-match regex") from None  # fmt: skip
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LoRA weights train in float32 on a bf16/fp16 base
        return model

    # --- data ---------------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Any, Any]:
        if not self.data_cfg.get("train"):
            raise KeyError("config: the `data.train` section is missing (e.g. dict(type='captioned_images'))")
        train = self.build_dataset("train", seed=self.seed)  # before the pipeline: a missing data root says so first
        self.pipeline()
        self._check_sizes(train)
        self.train_targets, self.num_frames = train.targets, getattr(train, "num_frames", 1)
        val = self.build_dataset("val", seed=self.seed) or train
        if self.cache_dir:
            from recipes.train.diffusion.cache import cache_datasets

            train, val = cache_datasets(self, train, val)
        return train, val

    def _check_sizes(self, ds: Any) -> None:
        multiple = self.vae_factor * self.family.pack
        p = getattr(getattr(self.pipe, self.family.denoiser).config, "patch_size", 1) or 1
        multiple *= p if isinstance(p, int) else p[-1]
        bad = sorted({t for t in ds.targets if t[0] % multiple or t[1] % multiple})
        if bad:
            raise ValueError(f"data.resolution: sizes {bad} are not multiples of {multiple} (this {self.family.name} "
                             f"pipeline's VAE factor x patch size); use e.g. {bad[0][0] // multiple * multiple or multiple}")  # fmt: skip
        if self.family.video != hasattr(ds, "num_frames"):
            want = "captioned_videos" if self.family.video else "captioned_images"
            raise ValueError(f"data.train: {self.family.name} trains on {want}, got {type(ds).__name__}")
        t = getattr(self.pipe, "vae_scale_factor_temporal", None)
        if self.family.video and t and (ds.num_frames - 1) % t:
            raise ValueError(
                f"data.num_frames={ds.num_frames}: the VAE needs 1 + a multiple of {t} frames (e.g. {t + 1})"
            )

    def collate(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {k: [b[k] for b in batch] for k in batch[0] if k not in ("pixels", "latent", "cond")}
        for key in ("pixels", "latent"):
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

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        self._encoders_to(device)
        return self.family.encode_prompts(self.pipe, prompts, device)

    @torch.no_grad()
    def latent_params(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE's latent distribution (mean and log-variance stacked on channels), as diffusers stores it."""
        vae = self.pipe.vae
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters

    def latents(
        self, batch: dict[str, Any], device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        self._encoders_to(device)
        params = batch["latent"].to(device) if "latent" in batch else self.latent_params(batch["pixels"].to(device))
        x0 = DiagonalGaussianDistribution(params).sample(generator)
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
        if prompt not in self._cond_cache:
            self._cond_cache[prompt] = {k: v[0].cpu() for k, v in self.encode_prompts([prompt], device).items()}
        return {k: v.to(device) for k, v in self._cond_cache[prompt].items()}

    def empty_cond(self, device: torch.device) -> dict[str, torch.Tensor]:
        return self.prompt_cond("", device)

    def sample_size(self) -> tuple[int, int]:
        s = self.samples
        h, w = self.train_targets[0]
        return int(s.get("height", h)), int(s.get("width", w))

    def train_frames(self) -> int:
        return int(getattr(self, "num_frames", 1))

    def loss(self, model: nn.Module, batch: dict[str, Any], device: torch.device,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:  # fmt: skip
        """The training loss of a batch; noise, timesteps and dropout from ``generator`` (else the global RNG)."""
        x0 = self.latents(batch, device, generator)
        n = x0.shape[0]
        drop = torch.rand(n, generator=generator, device=device) < self.caption_dropout
        cond = self.conditions(batch, device, drop)
        noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        if isinstance(self.objective, DDPMObjective):
            t = torch.randint(0, self.objective.num_train_timesteps, (n,), generator=generator, device=device)
            nb = self.objective.noise(x0, noise, t)
        else:
            seq = self.family.image_seq_len(x0, model)
            u = torch.randn(n, generator=generator, device=device) if self.objective.sampling == "logit_normal" else \
                torch.rand(n, generator=generator, device=device)  # fmt: skip
            nb = self.objective.noise(x0, noise, seq, self._sigmas(u, seq))
        dtype = next(p.dtype for n, p in model.named_parameters() if "lora_" not in n)  # the base weights' dtype
        extra = {"vae_factor": self.vae_factor, "original_size": batch["original_size"],
                 "crop_top_left": batch["crop_top_left"], "guidance_scale": self.guidance_scale}  # fmt: skip
        pred = self.family.predict(
            model, nb.noisy.to(dtype), nb.timesteps, {k: v.to(dtype) for k, v in cond.items()}, extra
        )
        return weighted_mse(pred, nb.target, nb.weights), nb

    def _sigmas(self, u: torch.Tensor, seq: int) -> torch.Tensor:
        o = self.objective
        t = torch.sigmoid(u * o.logit_std + o.logit_mean) if o.sampling == "logit_normal" else u
        lo, hi = self.family.sigma_range()  # an expert (Wan 2.2) sees its own noise levels only
        return lo + (hi - lo) * o.shift_sigmas(t.clamp(1e-5, 1.0), seq)

    def on_step(self, model: nn.Module, optimizer: Any, step: int) -> None:
        self.step = step

    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        loss, _ = self.loss(model, batch, device)
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Loss with fixed noise and timesteps (seed 0, the same every evaluation), then the sample grid."""
        was = model.training
        model.eval()
        gen, total, count = torch.Generator(device).manual_seed(0), 0.0, 0
        for batch in loader:
            loss, _ = self.loss(model, batch, device, gen)
            total, count = total + float(loss) * len(batch["caption"]), count + len(batch["caption"])
        if self.samples.get("prompts"):
            from recipes.train.diffusion.sampling import write_samples

            self._media = write_samples(self, model, device)[1]
        model.train(was)
        return {"loss": total / max(1, count)}

    def evaluation_media(self) -> dict[str, Any]:
        """The last evaluation's sample grid (``samples``) and, for video, each prompt's frames (``samples/p<i>``)."""
        media, self._media = self._media, {}
        return media

    def output_dir(self) -> Path:
        if self.work_dir is None:
            raise ValueError("task diffusion: no work dir to write samples and weights to; run through tools/train.py")
        return Path(self.work_dir)

    def final_report(self, model: nn.Module, device: torch.device, make_loader: Any) -> dict[str, Any]:
        """Save the trained weights: LoRA in diffusers' (or kohya's) format, or the full denoiser."""
        out = self.output_dir()
        if self.lora is None:
            path = out / self.family.denoiser
            if path.exists():
                raise FileExistsError(f"{path} exists; the trainer never overwrites a saved model")
            model.save_pretrained(str(path))
            return {"saved": str(path)}
        from recipes.train.diffusion.lora_io import save_lora

        fmt = self.save_format
        where = out / ("lora" if fmt == "diffusers" else "lora_kohya")
        if where.exists():  # a resumed run that had finished before: keep the earlier file
            where = where.with_name(f"{where.name}_step_{self.step + 1}")
        path = save_lora(type(self.pipe), model, where, self.family.lora_save_key, fmt)
        (path.parent / "training.json").write_text(json.dumps({"step": self.step + 1, "family": self.family.name,
                                                               "lora": dict(self.lora)}, default=str))  # fmt: skip
        return {"saved": str(path)}
