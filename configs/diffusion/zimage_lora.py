# LoRA fine-tuning of a Z-Image transformer (Qwen3 text encoder, single-stream DiT) on captioned images (.txt beside
# each, or metadata.jsonl), rank 16, per-component x depth LRs.
#   python tools/train.py configs/diffusion/zimage_lora.py --cfg-options model.pretrained=/path/to/pipeline data_root=/path/to/images
# model.pretrained is a local diffusers pipeline folder (ZImagePipeline, pipeline.save_pretrained); the LoRA lands in
# <work_dir>/lora/ for pipeline.load_lora_weights(). Show the LR grid without weights:
#   python tools/show_lr.py configs/diffusion/zimage_lora.py --cfg-options model.device=meta model.pretrained=None
model = dict(type="diffusers", preset="zimage-turbo", pretrained=None, dtype="bfloat16")
task = dict(
    type="diffusion",
    lora=dict(r=16, alpha=16),  # the family's attention + MLP projections (recipes/train/diffusion/families.py)
    caption_dropout=0.05,  # empty captions keep classifier-free guidance working
    cache_dir="work_dirs/cache",  # latents + text embeddings, keyed by file content, model and resolution
    samples=dict(prompts=["a photo of sks dog"], seeds=[0, 1], steps=8, guidance_scale=0.0),  # Turbo: 8 steps, no CFG
)
data = dict(train=dict(type="captioned_images", resolution=1024, flip_p=0.5))
strategy = dict(
    type="component_depth",
    component_lr={"self_attn": 0.0004, "ffn": 0.00025, "norm": 3e-05},
    depth_strategy="inverted_u",
    min_depth_factor=0.35,
    peak_position=0.45,
    default_lr=0.00025,
)  # the LRs of the recipe's Z-Image Turbo LoRA example (configs/diffusion/zimage_turbo_lora.py)
schedule = dict(type="cosine", warmup_steps=100, min_lr_ratio=0.1)
train = dict(max_steps=2000, batch_size=1, grad_accum=4, clip_grad=1.0, ckpt_every=250, log_every=10)
