"""What trains in a diffusion run: the ``policy`` section on a diffusers denoiser, and saving LoKr / LoHa.

``policy=dict(type="lora_only", kind="lora", r=16, alpha=16, dropout=0.0, targets=None, dora=False)`` puts an
adapter on the family's attention and MLP projections (``targets=None``; or peft ``target_modules``:
suffixes, or one full-match regex) in every block; ``type="full"`` (or no ``policy``) trains every
denoiser weight. The adapter is peft's ``LoraConfig`` / ``LoKrConfig`` / ``LoHaConfig``
(``recipes.policies.adapter_config``), injected through diffusers' ``add_adapter`` so the pipeline's
``save_lora_weights`` / ``load_lora_weights`` see it.

Saved adapters (``save_lycoris``; LoRA itself: ``lora_io.save_lora``), checked against diffusers 0.42.1's
``loaders/lora_pipeline.py``: only the Z-Image and Flux.2 loaders read LoKr (``.lokr_`` keys ->
``loaders/peft.py`` ``_create_lokr_config(state_dict, metadata)`` = ``LoKrConfig(**metadata)``); every
other loader rejects keys without ``lora`` in them, and none reads LoHa. So:

- LoKr on Z-Image / Flux.2: the pipeline's ``save_lora_weights`` with the ``LoKrConfig`` as adapter
  metadata, for ``pipeline.load_lora_weights(DIR)``.
- LoKr elsewhere, and LoHa: a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``),
  read back onto a denoiser by :func:`load_adapter_folder` (peft's ``inject_adapter_in_model`` with the
  saved config, then ``set_peft_model_state_dict``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: diffusers 0.42 loaders that read LoKr tensors (their ``lora_state_dict`` accepts ``.lokr_`` keys)
LOKR_LOADERS = ("ZImageLoraLoaderMixin", "Flux2LoraLoaderMixin")
#: the policy types a diffusion run reads; the layer-wise ones need a classifier head and norms to train
DIFFUSION_POLICIES = ("full", "lora_only")
#: keys of the policy section a diffusion run reads (the adapter's, and the engine's freeze_lora_steps)
DIFFUSION_KEYS = ("type", "kind", "r", "alpha", "dropout", "targets", "dora", "freeze_lora_steps", "text_encoder")
#: the adapter defaults of a diffusion LoRA when the policy leaves them out (kohya / diffusers examples: 16 / 16)
DIFFUSION_DEFAULTS = {"kind": "lora", "r": 16, "alpha": 16, "dropout": 0.0, "targets": None, "dora": False}


def check_diffusion_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The ``policy`` section of a diffusion run: the types and keys that act here, then the library's checks."""
    from recipes.policies import check_policy

    if not isinstance(policy, Mapping) or "type" not in policy:
        return check_policy(policy)  # the library's error for a section without a type
    cfg = dict(policy)  # this task's own rules first: their errors say what a diffusion run reads
    if cfg["type"] not in DIFFUSION_POLICIES:
        raise ValueError(f"policy.type={cfg['type']!r} does not apply to the diffusion task (a denoiser has no "
                         f"classifier head); use one of {DIFFUSION_POLICIES}")  # fmt: skip
    for key in cfg:
        if key not in DIFFUSION_KEYS:
            raise ValueError(f"policy.{key} does not apply to the diffusion task (the adapter goes on the family's "
                             f"targets in every block); it reads {DIFFUSION_KEYS}")  # fmt: skip
    if cfg["type"] == "full":
        given = sorted(set(cfg) - {"type"})
        if given:
            raise ValueError(f"policy.type='full' trains every denoiser weight: {given} would do nothing; remove "
                             "them (over a base config's LoRA: policy=dict(_delete_=True, type='full'), or "
                             "--cfg-options policy=None), or set type='lora_only'")  # fmt: skip
    check_policy({k: v for k, v in cfg.items() if k != "text_encoder"})  # text_lora.py checks its own key
    return cfg


def adapter_settings(policy: Mapping[str, Any] | None, save_format: str = "diffusers") -> dict[str, Any] | None:
    """The adapter a diffusion run trains (defaults filled), or None for a full fine-tune; checked against the
    export format it will be saved in."""
    if not policy:
        return None
    cfg = check_diffusion_policy(policy)
    if cfg["type"] == "full":
        return None
    out = {**DIFFUSION_DEFAULTS, **{k: v for k, v in cfg.items() if k in DIFFUSION_DEFAULTS}}
    from recipes.train.diffusion.text_lora import text_encoder_settings

    out["text_encoder"] = text_encoder_settings(cfg.get("text_encoder"), out)  # None: the denoiser alone
    if out["text_encoder"] and save_format == "kohya":  # lora_te_ / lora_te1_ / lora_te2_ modules
        from recipes.train.diffusion.kohya_keys import check_text_targets

        check_text_targets(out["text_encoder"]["targets"])
    if out["kind"] != "lora" and save_format != "diffusers":
        raise ValueError(f"task.save_format={save_format!r} writes LoRA tensors only; policy.kind={out['kind']!r} "
                         "is saved with save_format='diffusers' (see docs/diffusion.md, What trains)")  # fmt: skip
    return out


def add_adapter(model: Any, settings: Mapping[str, Any], default_targets: Any) -> Any:
    """The adapter on a diffusers denoiser through its peft integration (``add_adapter``): the base frozen, the
    adapter's tensors in float32 on a bf16 / fp16 / quantized base."""
    from recipes.policies import adapter_config

    targets = settings.get("targets") or default_targets
    config = adapter_config(settings, targets)
    model.requires_grad_(False)
    try:
        if hasattr(model, "add_adapter"):
            model.add_adapter(config)
        else:  # a transformer without diffusers' LoRA support (PixArt): peft injects the same layers
            __import__("peft").inject_adapter_in_model(config, model)
    except ValueError as e:
        raise ValueError(f"policy.targets={targets!r} match no module of the {type(model).__name__} "
                         f"(peft: {str(e)[:200]}); give module-name suffixes or one full-match regex") from None  # fmt: skip
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # adapter weights train in float32 on a bf16/fp16 base
    return model


def is_lycoris(config: Any) -> bool:
    """A peft LoKr / LoHa config (not LoRA's)."""
    return getattr(getattr(config, "peft_type", None), "value", "LORA") in ("LOKR", "LOHA")


def save_lycoris(pipeline_cls: Any, state: dict[str, torch.Tensor], config: Any, out_dir: Path, save_key: str,
                 fmt: str) -> Path:  # fmt: skip
    """A LoKr adapter as diffusers loads it, a LoHa one as a peft adapter folder (see the module docstring)."""
    from recipes.train.diffusion.lora_io import WEIGHT_NAME, readable_as_umask_says, save_peft_adapter

    kind = config.peft_type.value.lower().replace("lokr", "LoKr").replace("loha", "LoHa")
    if fmt != "diffusers":
        raise ValueError(f"task.save_format={fmt!r} writes LoRA tensors only; a {kind} adapter is saved with "
                         "save_format='diffusers' (LoKr: load_lora_weights; LoHa: a peft adapter folder)")  # fmt: skip
    if kind == "LoHa" or not any(c.__name__ in LOKR_LOADERS for c in pipeline_cls.__mro__):
        return save_peft_adapter(state, config, out_dir)
    meta_key = save_key.replace("_layers", "_adapter_metadata")
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.to_dict().items()}
    pipeline_cls.save_lora_weights(str(out_dir), **{save_key: state, meta_key: meta}, safe_serialization=True)
    return readable_as_umask_says(out_dir / WEIGHT_NAME)


def load_adapter_folder(model: Any, folder: str | Path) -> Any:
    """A peft adapter folder (LoHa, LoKr off Z-Image / Flux.2, PixArt's LoRA) onto ``model``: the saved config's
    adapter injected, then its tensors loaded (``weights_only``: safetensors). Returns ``model``."""
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    config = PeftConfig.from_pretrained(str(folder))
    inject_adapter_in_model(config, model)
    result = set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise ValueError(f"{folder}: {len(result.unexpected_keys)} saved tensors fit no module of the "
                         f"{type(model).__name__} (e.g. {result.unexpected_keys[0]!r}); wrong model?")  # fmt: skip
    return model
