# LoRA fine-tuning of a PixArt-Sigma transformer on captioned images (.txt beside each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/pixart_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (pipeline.save_pretrained). diffusers has no LoRA loader for
# PixArt: the LoRA lands in <work_dir>/lora/ as a peft adapter (adapter_config.json + adapter_model.safetensors);
# load it with peft.inject_adapter_in_model(LoraConfig.from_pretrained(dir), pipe.transformer) and
# set_peft_model_state_dict. Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/pixart_lora.py --cfg-options model.device=meta model.pretrained=None
model = dict(type="diffusers", preset="pixart-sigma", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=20, guidance_scale=4.5),
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0001, "cross_attn": 5e-05, "ffn": 0.0001, "norm": 2e-05},
    depth_strategy="cosine",
    min_depth_factor=0.3,
    default_lr=0.0001,
)  # sd15_lora.py's self-attention / cross-attention / MLP ratios: a starting point chosen here, not measured
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
